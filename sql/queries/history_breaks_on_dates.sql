-- The rows of sql/queries/history_breaks_since.sql (the history checks of v_reconciliation_breaks)
-- dated on a snapshot date D (parameter) and on the snapshot date before it, without running the
-- views' windows over all history: after the daily load of D these are the only dates whose rows
-- can change (balances_etl/storage/reconciliation_rows.py says when), and the load's cost should
-- follow the day, not the years behind it. snapshot_gap, currency_disappeared, stale_balance and
-- pending_unexplained are restated for the two dates with per-key aggregates (the status rules and
-- the detail text are v_pending_explained's: change them there, change them here too);
-- rollforward_unexplained and the timing pairs come from the roll-forward windows the load stored
-- just before. tests/test_properties.py holds the result equal to history_breaks_since.sql's.
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
        count(*) FILTER (WHERE b.snapshot_date = d.day) AS on_the_day
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
            WHEN r.status = 'timing' AND decimal_units(r.unexplained_total) = c.unexplained_units THEN 'timing'
            ELSE 'unexplained'
        END AS status
    FROM pe_compared AS c
    LEFT JOIN rollforward_windows AS r
        ON r.period_end_date = c.snapshot_date AND r.account_type = c.account_type AND r.crypto_currency = c.crypto_currency
)
SELECT
    'snapshot_gap' AS check_name,
    k.day AS snapshot_date,
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
SELECT 'rollforward_unexplained', period_end_date, account_type, crypto_currency, detail
FROM rollforward_windows
WHERE status = 'unexplained' AND period_end_date IN (SELECT day FROM dates)

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
