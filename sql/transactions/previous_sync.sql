-- What the syncs before day $day leave the next sync to read again: the latest of them, the newest
-- Created it saw, and the earliest Created among the transactions still Pending after them.
-- No row when no sync came before $day.
WITH previous AS (
    SELECT snapshot_date, observed_at
    FROM transaction_syncs
    WHERE snapshot_date < $day
    ORDER BY snapshot_date DESC
    LIMIT 1
),
status_before AS (
    SELECT transaction_id, arg_max(status, observed_at) AS status
    FROM transaction_status_history
    WHERE snapshot_date < $day
    GROUP BY transaction_id
)
SELECT
    p.snapshot_date,
    p.observed_at,
    (SELECT max(created_at) FROM transaction_observations AS o WHERE o.snapshot_date = p.snapshot_date) AS newest_created,
    (
        SELECT min(t.created_at)
        FROM status_before AS s
        JOIN transactions AS t USING (transaction_id)
        WHERE s.status = 'Pending'
    ) AS earliest_pending
FROM previous AS p;
