-- previous_sync.sql when no sync on or after the new sync's day is loaded (the daily case), for the
-- latest sync before it, $previous (its snapshot_date): the newest Created it saw and the earliest
-- Created among the transactions still Pending. A transaction's status after the syncs before the
-- day is then its current one, the transactions table's (the status of its last change in
-- transaction_status_history), so the history is not aggregated again; and $previous is a constant,
-- so DuckDB skips the other syncs' row groups of transaction_observations.
-- storage/transaction_reads.py chooses between the two; both give the same values.
SELECT
    (SELECT max(created_at) FROM transaction_observations WHERE snapshot_date = $previous) AS newest_created,
    (SELECT min(created_at) FROM transactions WHERE status = 'Pending') AS earliest_pending;
