-- The earliest date whose history breaks a load of the dates in the list (parameter: the days whose
-- balances or transactions sync the load replaces) can change, or NULL when no stored row can.
-- Loading day C changes rows dated C and later, and, for every key with a snapshot on or after C,
-- the rows dated on its last snapshot before C (its roll-forward window closing there can become half
-- of a timing pair, its pending check with it; a gap before C now has a snapshot after it). Keys
-- whose last snapshot is before C are untouched. Run before the load (keys it removes) and after it
-- (keys it adds); the earliest changed day bounds the others, so it alone is needed.
WITH changed AS (
    SELECT min(day) AS day FROM unnest(CAST(? AS DATE[])) AS t(day)
),
keys AS (
    SELECT
        max(b.snapshot_date) FILTER (WHERE b.snapshot_date < c.day) AS before_changed,
        max(b.snapshot_date) AS last_snapshot_date
    FROM balance_snapshots AS b, changed AS c
    GROUP BY b.account_type, b.crypto_currency
)
SELECT least(
    (SELECT day FROM changed),
    (SELECT min(k.before_changed) FROM keys AS k, changed AS c WHERE k.last_snapshot_date >= c.day)
)
