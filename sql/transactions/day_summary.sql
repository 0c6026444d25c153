-- What the warehouse holds after the sync of day $day: the sync's rows, the status changes it
-- observed, and the transactions still Pending after it (the Dagster asset's metadata).
SELECT
    (SELECT transactions FROM transaction_syncs WHERE snapshot_date = $day) AS sync_rows,
    (SELECT count(*) FROM transaction_status_history WHERE snapshot_date = $day) AS status_changes,
    (SELECT count(*) FROM transactions) AS transactions,
    (SELECT count(*) FROM transactions WHERE status = 'Pending') AS pending;
