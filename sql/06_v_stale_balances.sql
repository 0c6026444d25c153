-- Question: which balances look frozen? Keys whose total, as of the key's latest snapshot, has not
-- changed for more than reconciliation_settings.stale_after_days days (written by the loader from
-- BALANCES_ETL_STALE_AFTER_DAYS).
CREATE OR REPLACE VIEW v_stale_balances AS
WITH latest AS (
    SELECT * FROM v_balance_changes WHERE next_snapshot_date IS NULL
)
SELECT
    latest.account_type,
    latest.crypto_currency,
    latest.total_unchanged_since AS unchanged_since,
    latest.days_total_unchanged AS days_unchanged,
    latest.snapshot_date AS as_of_date,
    latest.total,
    latest.total_amount,
    settings.stale_after_days
FROM latest
CROSS JOIN reconciliation_settings AS settings
WHERE latest.days_total_unchanged > settings.stale_after_days;
