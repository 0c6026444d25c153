-- Breaks dated on a snapshot date D (parameter) whose (check_name, account_type, crypto_currency)
-- had no break on the previous snapshot date (the latest snapshot_date before D). With no previous
-- snapshot date, every break of D is new.
WITH params AS (
    SELECT CAST(? AS DATE) AS day
),
previous AS (
    SELECT max(b.snapshot_date) AS day
    FROM balance_snapshots AS b, params
    WHERE b.snapshot_date < params.day
),
relevant AS (
    SELECT * FROM v_reconciliation_breaks
    WHERE snapshot_date IN (SELECT day FROM params UNION ALL SELECT day FROM previous)
)
SELECT today.check_name, today.snapshot_date, today.account_type, today.crypto_currency, today.detail
FROM relevant AS today
WHERE today.snapshot_date = (SELECT day FROM params)
    AND NOT EXISTS (
        SELECT 1
        FROM relevant AS before
        WHERE before.snapshot_date = (SELECT day FROM previous)
            AND before.check_name = today.check_name
            AND before.account_type = today.account_type
            AND before.crypto_currency = today.crypto_currency
    )
ORDER BY today.check_name, today.account_type, today.crypto_currency, today.detail;
