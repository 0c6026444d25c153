-- The rows of v_reconciliation_breaks dated on a snapshot date D (parameter) and on the snapshot
-- date before it, without running the views' windows over all history: the daily reconciliation
-- reads only these two dates, and its cost should follow the day, not the years behind it.
-- The checks built on windows (snapshot_gap, currency_disappeared, stale_balance,
-- rollforward_unexplained, pending_unexplained) are restated here for the two dates with per-key
-- aggregates; tests/test_properties.py holds them equal to the views over generated histories. The
-- other checks are read from the view itself (filtering on check_name drops the window branches
-- from the plan).
-- rollforward_unexplained needs, per key on a date, the window closing on it and its two
-- neighbours (a timing pair is not a break): the key's two snapshots before the date and the one
-- after. The status rules and the detail text are v_balance_rollforward's and v_pending_explained's.
WITH params AS (
    SELECT CAST(? AS DATE) AS day
),
dates AS (
    SELECT day FROM params
    UNION
    SELECT max(b.snapshot_date) FROM balance_snapshots AS b, params WHERE b.snapshot_date < params.day
),
snapshot_days AS (
    SELECT DISTINCT snapshot_date FROM balance_snapshots
),
-- snapshot_gap: the key has snapshots before and after the date, none on it
key_around AS (
    SELECT
        d.day,
        b.account_type,
        b.crypto_currency,
        max(b.snapshot_date) FILTER (WHERE b.snapshot_date < d.day) AS prev_snapshot_date,
        min(b.snapshot_date) FILTER (WHERE b.snapshot_date > d.day) AS next_snapshot_date,
        count(*) FILTER (WHERE b.snapshot_date = d.day) AS on_the_day,
        max(b.snapshot_date, 2) FILTER (WHERE b.snapshot_date < d.day) AS two_before  -- latest first
    FROM balance_snapshots AS b
    CROSS JOIN dates AS d
    WHERE d.day IS NOT NULL
    GROUP BY d.day, b.account_type, b.crypto_currency
),
-- currency_disappeared: keys of the previous snapshot date absent from this one
previous_days AS (
    SELECT s.snapshot_date AS day, max(p.snapshot_date) AS prev_day
    FROM snapshot_days AS s
    JOIN dates AS d ON d.day = s.snapshot_date
    JOIN snapshot_days AS p ON p.snapshot_date < s.snapshot_date
    GROUP BY s.snapshot_date
),
-- stale_balance: the start of the run of equal totals that ends on the date
on_the_day AS (
    SELECT b.snapshot_date AS day, b.account_type, b.crypto_currency, b.total
    FROM balance_snapshots AS b
    JOIN dates AS d ON d.day = b.snapshot_date
),
key_history AS (
    SELECT
        t.day,
        t.account_type,
        t.crypto_currency,
        t.total,
        b.snapshot_date,
        b.total IS DISTINCT FROM t.total AS differs
    FROM on_the_day AS t
    JOIN balance_snapshots AS b
        ON b.account_type = t.account_type AND b.crypto_currency = t.crypto_currency AND b.snapshot_date <= t.day
),
last_change AS (
    SELECT day, account_type, crypto_currency, max(snapshot_date) FILTER (WHERE differs) AS changed_on
    FROM key_history
    GROUP BY day, account_type, crypto_currency
),
runs AS (
    SELECT h.day, h.account_type, h.crypto_currency, h.total, min(h.snapshot_date) AS unchanged_since
    FROM key_history AS h
    JOIN last_change AS c USING (day, account_type, crypto_currency)
    WHERE c.changed_on IS NULL OR h.snapshot_date > c.changed_on
    GROUP BY h.day, h.account_type, h.crypto_currency, h.total
),
synced_days AS (
    SELECT DISTINCT snapshot_date FROM transaction_syncs
),
-- rollforward_unexplained: the key's windows closing on its previous snapshot (-1), on the date (0)
-- and on its next snapshot (1)
rf_windows AS (
    SELECT day, account_type, crypto_currency, -1 AS position, two_before[2] AS period_start_date, two_before[1] AS period_end_date
    FROM key_around WHERE on_the_day > 0 AND len(two_before) = 2
    UNION ALL
    SELECT day, account_type, crypto_currency, 0, prev_snapshot_date, day
    FROM key_around WHERE on_the_day > 0 AND prev_snapshot_date IS NOT NULL
    UNION ALL
    SELECT day, account_type, crypto_currency, 1, day, next_snapshot_date
    FROM key_around WHERE on_the_day > 0 AND next_snapshot_date IS NOT NULL
),
rf_range AS (
    SELECT min(period_start_date) AS low, max(period_end_date) AS high FROM rf_windows
),
-- transactions first observed Settled in a sync inside the windows' range
rf_settled AS (
    SELECT h.transaction_id, min(h.snapshot_date) AS settled_seen_on
    FROM transaction_status_history AS h, rf_range AS r
    WHERE h.status = 'Settled' AND h.snapshot_date > r.low AND h.snapshot_date <= r.high
        AND NOT EXISTS (
            SELECT 1 FROM transaction_status_history AS e
            WHERE e.transaction_id = h.transaction_id AND e.status = 'Settled' AND e.snapshot_date <= r.low
        )
    GROUP BY h.transaction_id
),
rf_flows AS (
    SELECT
        w.day,
        w.account_type,
        w.crypto_currency,
        w.position,
        sum(decimal_units(t.amount_value)) FILTER (WHERE t.direction = 'In') AS in_units,
        sum(decimal_units(t.amount_value)) FILTER (WHERE t.direction = 'Out') AS out_units,
        sum(decimal_units(coalesce(t.network_fee_value, 0))) FILTER (WHERE t.direction = 'Out') AS fee_units,
        count(*) FILTER (WHERE t.direction = 'In') AS in_count,
        count(*) FILTER (WHERE t.direction = 'Out') AS out_count,
        count(*) FILTER (WHERE t.direction = 'In' AND t.amount_value IS NULL) AS in_unknown,
        count(*) FILTER (WHERE t.direction = 'Out' AND t.amount_value IS NULL) AS out_unknown,
        count(*) FILTER (WHERE t.direction = 'Out' AND t.network_fee IS NOT NULL AND t.network_fee_value IS NULL) AS fee_unknown,
        count(*) FILTER (WHERE t.amount IS NULL) AS missing,
        count(*) FILTER (
            WHERE (t.amount IS NOT NULL AND t.amount_value IS NULL)
                OR (t.direction = 'Out' AND t.network_fee IS NOT NULL AND t.network_fee_value IS NULL)
        ) AS too_wide
    FROM rf_windows AS w
    JOIN rf_settled AS s ON s.settled_seen_on > w.period_start_date AND s.settled_seen_on <= w.period_end_date
    JOIN transactions AS t
        ON t.transaction_id = s.transaction_id AND t.crypto_currency = w.crypto_currency AND w.account_type = 'Current'
    GROUP BY w.day, w.account_type, w.crypto_currency, w.position
),
rf_summed AS (
    SELECT
        w.*,
        o.total AS opening_text,
        o.total_amount AS opening_total,
        c.total AS closing_text,
        c.total_amount AS closing_total,
        w.period_start_date IN (SELECT snapshot_date FROM synced_days) AS opening_synced,
        w.period_end_date IN (SELECT snapshot_date FROM synced_days) AS closing_synced,
        coalesce(f.in_count, 0) AS in_count,
        coalesce(f.out_count, 0) AS out_count,
        coalesce(f.missing, 0) AS missing,
        coalesce(f.too_wide, 0) AS too_wide,
        CASE WHEN coalesce(f.in_unknown, 0) = 0 THEN coalesce(f.in_units, CAST(0 AS BIGNUM)) END AS in_units,
        CASE WHEN coalesce(f.out_unknown, 0) = 0 THEN coalesce(f.out_units, CAST(0 AS BIGNUM)) END AS out_units,
        CASE WHEN coalesce(f.fee_unknown, 0) = 0 THEN coalesce(f.fee_units, CAST(0 AS BIGNUM)) END AS fee_units
    FROM rf_windows AS w
    JOIN balance_snapshots AS o
        ON o.account_type = w.account_type AND o.crypto_currency = w.crypto_currency AND o.snapshot_date = w.period_start_date
    JOIN balance_snapshots AS c
        ON c.account_type = w.account_type AND c.crypto_currency = w.crypto_currency AND c.snapshot_date = w.period_end_date
    LEFT JOIN rf_flows AS f
        ON f.day = w.day AND f.account_type = w.account_type AND f.crypto_currency = w.crypto_currency
        AND f.position = w.position
),
rf_computed AS (
    SELECT
        *,
        decimal_units(opening_total) + in_units - out_units - fee_units AS expected_units,
        decimal_units(closing_total) - (decimal_units(opening_total) + in_units - out_units - fee_units) AS unexplained_units
    FROM rf_summed
),
rf_classified AS (
    SELECT
        *,
        CASE
            WHEN NOT opening_synced THEN 'no_sync_at_opening'
            WHEN NOT closing_synced THEN 'no_sync_at_closing'
            WHEN missing > 0 THEN 'amount_missing'
            WHEN opening_total IS NULL OR closing_total IS NULL OR too_wide > 0 THEN 'amount_too_wide'
            WHEN units_decimal(in_units) IS NULL OR units_decimal(out_units) IS NULL OR units_decimal(fee_units) IS NULL
                OR units_decimal(expected_units) IS NULL OR units_decimal(unexplained_units) IS NULL THEN 'sum_too_wide'
            WHEN unexplained_units = CAST(0 AS BIGNUM) THEN 'balanced'
            ELSE 'computed'
        END AS base_status
    FROM rf_computed
),
-- the window closing on the date, with its neighbours' unexplained totals where they could be computed
rf_on_the_day AS (
    SELECT
        w.*,
        CASE
            WHEN w.base_status <> 'computed' THEN w.base_status
            WHEN w.unexplained_units = -p.unexplained_units OR w.unexplained_units = -n.unexplained_units THEN 'timing'
            ELSE 'unexplained'
        END AS status
    FROM rf_classified AS w
    LEFT JOIN rf_classified AS p
        ON p.day = w.day AND p.account_type = w.account_type AND p.crypto_currency = w.crypto_currency
        AND p.position = -1 AND p.base_status IN ('balanced', 'computed')
    LEFT JOIN rf_classified AS n
        ON n.day = w.day AND n.account_type = w.account_type AND n.crypto_currency = w.crypto_currency
        AND n.position = 1 AND n.base_status IN ('balanced', 'computed')
    WHERE w.position = 0
),
-- pending_unexplained: the keys on the dates against the Out transactions Pending in their syncs
pe_pending AS (
    SELECT
        o.snapshot_date,
        o.crypto_currency,
        sum(decimal_units(o.amount_value) + decimal_units(coalesce(o.network_fee_value, 0))) AS pending_units,
        count(*) AS transactions,
        count(*) FILTER (WHERE o.amount IS NULL) AS missing,
        count(*) FILTER (
            WHERE (o.amount IS NOT NULL AND o.amount_value IS NULL) OR (o.network_fee IS NOT NULL AND o.network_fee_value IS NULL)
        ) AS too_wide
    FROM transaction_observations AS o
    JOIN dates AS d ON d.day = o.snapshot_date
    WHERE o.status = 'Pending' AND o.direction = 'Out'
    GROUP BY o.snapshot_date, o.crypto_currency
),
pe_compared AS (
    SELECT
        b.snapshot_date,
        b.account_type,
        b.crypto_currency,
        b.total,
        b.available,
        b.pending_outflow,
        b.snapshot_date IN (SELECT snapshot_date FROM synced_days) AS synced,
        coalesce(p.transactions, 0) AS transactions,
        coalesce(p.missing, 0) AS missing,
        coalesce(p.too_wide, 0) AS too_wide,
        coalesce(p.pending_units, CAST(0 AS BIGNUM)) AS pending_units,
        decimal_units(b.pending_outflow) - coalesce(p.pending_units, CAST(0 AS BIGNUM)) AS unexplained_units
    FROM balance_snapshots AS b
    JOIN dates AS d ON d.day = b.snapshot_date
    LEFT JOIN pe_pending AS p
        ON b.account_type = 'Current' AND p.snapshot_date = b.snapshot_date AND p.crypto_currency = b.crypto_currency
),
pe_classified AS (
    SELECT
        c.*,
        CASE
            WHEN NOT c.synced THEN 'no_sync'
            WHEN c.missing > 0 THEN 'amount_missing'
            WHEN c.pending_outflow IS NULL OR c.too_wide > 0 THEN 'amount_too_wide'
            WHEN units_decimal(c.pending_units) IS NULL OR units_decimal(c.unexplained_units) IS NULL THEN 'sum_too_wide'
            WHEN c.unexplained_units = CAST(0 AS BIGNUM) THEN 'balanced'
            WHEN r.status = 'timing' AND r.unexplained_units = c.unexplained_units THEN 'timing'
            ELSE 'unexplained'
        END AS status
    FROM pe_compared AS c
    LEFT JOIN rf_on_the_day AS r
        ON r.day = c.snapshot_date AND r.account_type = c.account_type AND r.crypto_currency = c.crypto_currency
)
SELECT check_name, snapshot_date, account_type, crypto_currency, detail
FROM main.v_reconciliation_breaks  -- the view, even where a temporary table of that name shadows it
WHERE snapshot_date IN (SELECT day FROM dates)
    AND check_name NOT IN (
        'snapshot_gap', 'currency_disappeared', 'stale_balance', 'rollforward_unexplained', 'pending_unexplained'
    )

UNION ALL
SELECT
    'snapshot_gap',
    k.day,
    k.account_type,
    k.crypto_currency,
    CASE WHEN s.snapshot_date IS NULL THEN 'no snapshot at all on this day' ELSE 'key absent from this day''s snapshot' END
        || ' (key reported on ' || k.prev_snapshot_date || ' and ' || k.next_snapshot_date || ')'
FROM key_around AS k
LEFT JOIN snapshot_days AS s ON s.snapshot_date = k.day
WHERE k.on_the_day = 0 AND k.prev_snapshot_date IS NOT NULL AND k.next_snapshot_date IS NOT NULL

UNION ALL
SELECT
    'currency_disappeared',
    p.day,
    b.account_type,
    b.crypto_currency,
    'reported on ' || p.prev_day || ', absent from this snapshot'
FROM previous_days AS p
JOIN balance_snapshots AS b ON b.snapshot_date = p.prev_day
WHERE NOT EXISTS (
    SELECT 1 FROM balance_snapshots AS t
    WHERE t.snapshot_date = p.day AND t.account_type = b.account_type AND t.crypto_currency = b.crypto_currency
)

UNION ALL
SELECT
    'stale_balance',
    r.day,
    r.account_type,
    r.crypto_currency,
    'total ' || r.total || ' unchanged since ' || r.unchanged_since
        || ' (' || (r.day - r.unchanged_since) || ' days, more than ' || s.stale_after_days || ')'
FROM runs AS r
CROSS JOIN reconciliation_settings AS s
WHERE r.day - r.unchanged_since > s.stale_after_days

UNION ALL
SELECT
    'rollforward_unexplained',
    day,
    account_type,
    crypto_currency,
    'closing total ' || closing_text || ' on ' || period_end_date
        || ', expected ' || units_text(expected_units) || ' = opening total ' || opening_text || ' on ' || period_start_date
        || ' + in ' || units_text(in_units) || ' - out ' || units_text(out_units) || ' - fees ' || units_text(fee_units)
        || ' (' || (in_count + out_count) || ' transaction(s) first seen Settled in the syncs after ' || period_start_date
        || ' up to ' || period_end_date || '): unexplained ' || units_text(unexplained_units)
        || '; look for a movement without a transaction, or a transaction GET /v1/transactions did not return'
FROM rf_on_the_day
WHERE status = 'unexplained'

UNION ALL
SELECT
    'pending_unexplained',
    snapshot_date,
    account_type,
    crypto_currency,
    'pending outflow ' || decimal_text(pending_outflow) || ' (total ' || total || ' - available ' || available
        || ') vs ' || units_text(pending_units) || ' in the ' || transactions
        || ' Out transaction(s) Pending in the ' || snapshot_date || ' sync: unexplained ' || units_text(unexplained_units)
        || '; look for a Pending Out transaction GET /v1/transactions did not return, or a hold without one'
FROM pe_classified
WHERE status = 'unexplained'
