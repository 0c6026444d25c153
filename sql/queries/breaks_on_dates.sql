-- The rows of v_reconciliation_breaks dated on a snapshot date D (parameter) and on the snapshot
-- date before it, without running the views' windows over all history: the daily reconciliation
-- reads only these two dates, and its cost should follow the day, not the years behind it.
-- The three checks built on windows (snapshot_gap, currency_disappeared, stale_balance) are
-- restated here for the two dates with per-key aggregates; tests/test_properties.py holds them
-- equal to the views over generated histories. The other checks are read from the view itself
-- (filtering on check_name drops the window branches from the plan).
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
)
SELECT check_name, snapshot_date, account_type, crypto_currency, detail
FROM main.v_reconciliation_breaks  -- the view, even where a temporary table of that name shadows it
WHERE snapshot_date IN (SELECT day FROM dates)
    AND check_name NOT IN ('snapshot_gap', 'currency_disappeared', 'stale_balance')

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
