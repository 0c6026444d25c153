-- known_before.sql when no sync on or after day $day is loaded (the daily case), at a cost that
-- follows the sync, not the history: each transaction's status after the syncs before $day is then
-- its current one, the transactions table's (the status of its last change in
-- transaction_status_history), and the table is stored newest first (load_sync.sql), so DuckDB
-- skips the row groups created before $since by their min/max created_at.
-- storage/transaction_reads.py chooses between the two; both give the same rows.
SELECT
    transaction_id,
    created_at,
    status,
    $horizon IS NULL OR created_at >= $horizon AS inside_horizon
FROM transactions
WHERE $since IS NULL OR created_at >= $since
ORDER BY transaction_id;
