-- Question: what is missing? Every day between a key's first and last snapshot without a row for
-- that key. Days are generated only inside gaps (between consecutive snapshots of a key that are
-- more than one day apart), never for the whole range of every key.
-- whole_day_missing tells a day with no snapshot at all from a key missing on a snapshotted day.
CREATE OR REPLACE VIEW v_snapshot_gaps AS
WITH key_snapshots AS (
    SELECT
        account_type,
        crypto_currency,
        snapshot_date AS next_snapshot_date,
        lag(snapshot_date) OVER (
            PARTITION BY account_type, crypto_currency ORDER BY snapshot_date
        ) AS prev_snapshot_date
    FROM balance_snapshots
),
gap_days AS (
    SELECT
        account_type,
        crypto_currency,
        prev_snapshot_date,
        next_snapshot_date,
        prev_snapshot_date + CAST(unnest(range(1, next_snapshot_date - prev_snapshot_date)) AS INTEGER)
            AS missing_date
    FROM key_snapshots
    WHERE next_snapshot_date - prev_snapshot_date > 1
),
snapshot_days AS (
    SELECT DISTINCT snapshot_date FROM balance_snapshots
)
SELECT
    g.account_type,
    g.crypto_currency,
    g.missing_date,
    g.prev_snapshot_date,
    g.next_snapshot_date,
    d.snapshot_date IS NULL AS whole_day_missing
FROM gap_days AS g
LEFT JOIN snapshot_days AS d ON d.snapshot_date = g.missing_date;
