-- Question: which keys appeared or disappeared? Compares each snapshot date with the previous
-- snapshot date (over the set of all snapshot dates, so a day with no snapshot at all is skipped,
-- not reported as every key disappearing). Keys present on the first snapshot date did not "appear".
CREATE OR REPLACE VIEW v_currency_changes AS
WITH snapshot_days AS (
    SELECT
        snapshot_date,
        row_number() OVER (ORDER BY snapshot_date) AS day_seq,
        lag(snapshot_date) OVER (ORDER BY snapshot_date) AS prev_day,
        lead(snapshot_date) OVER (ORDER BY snapshot_date) AS next_day
    FROM (SELECT DISTINCT snapshot_date FROM balance_snapshots)
),
key_days AS (
    -- position of each key's snapshots in the sequence of all snapshot dates
    SELECT
        b.account_type,
        b.crypto_currency,
        b.snapshot_date,
        d.day_seq,
        d.prev_day,
        d.next_day,
        lag(d.day_seq) OVER key_history AS prev_key_seq,
        lead(d.day_seq) OVER key_history AS next_key_seq
    FROM balance_snapshots AS b
    JOIN snapshot_days AS d USING (snapshot_date)
    WINDOW key_history AS (PARTITION BY b.account_type, b.crypto_currency ORDER BY b.snapshot_date)
)
-- present now, absent on the previous snapshot date
SELECT snapshot_date, account_type, crypto_currency, 'APPEARED' AS change, prev_day AS prev_snapshot_date
FROM key_days
WHERE prev_day IS NOT NULL AND (prev_key_seq IS NULL OR prev_key_seq < day_seq - 1)
UNION ALL
-- present now, absent on the next snapshot date: the change is dated on that next date
SELECT next_day, account_type, crypto_currency, 'DISAPPEARED', snapshot_date
FROM key_days
WHERE next_day IS NOT NULL AND (next_key_seq IS NULL OR next_key_seq > day_seq + 1);
