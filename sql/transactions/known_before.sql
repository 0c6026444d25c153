-- The transactions the syncs before day $day saw, created at or after $since (NULL: all), with their
-- status after those syncs and whether they were created at or after the new sync's $horizon (NULL:
-- the sync reads everything), so NOAH must still list them. Columns: domain.transactions.KNOWN_SCHEMA.
SELECT
    t.transaction_id,
    t.created_at,
    arg_max(h.status, h.observed_at) AS status,
    $horizon IS NULL OR t.created_at >= $horizon AS inside_horizon
FROM transactions AS t
JOIN transaction_status_history AS h USING (transaction_id)
WHERE h.snapshot_date < $day
  AND ($since IS NULL OR t.created_at >= $since)
GROUP BY t.transaction_id, t.created_at
ORDER BY t.transaction_id;
