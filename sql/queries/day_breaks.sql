-- Every break dated on one snapshot date (parameter: the date), in a stable order for sampling.
SELECT check_name, snapshot_date, account_type, crypto_currency, detail
FROM v_reconciliation_breaks
WHERE snapshot_date = ?
ORDER BY check_name, account_type, crypto_currency, detail;
