-- Load one transactions sync (its Parquet partition) into the warehouse, inside the load's
-- transaction (balances_etl/storage/warehouse.py sets the variables): the day's
-- transaction_observations are replaced, then only the transactions the sync touches are derived
-- again from their observations, so a re-run of the day gives the same tables and a replay of every
-- sync in date order gives the tables the daily loads gave.
--
-- Cost follows the sync, not the history: Created never changes, so the touched transactions'
-- observations and rows lie at or after the earliest Created among them (DuckDB skips the row groups
-- of older transactions by their min/max), and their status history changes only from the earliest
-- observed_at of the day's old and new rows on.

-- the transactions this day's sync observes, and those an earlier load of the same day observed
CREATE OR REPLACE TEMP TABLE sync_touched AS
SELECT transaction_id, min(created_at) AS created_at, min(observed_at) AS observed_at
FROM (
    SELECT transaction_id, created_at, observed_at
    FROM transaction_observations
    WHERE snapshot_date = getvariable('transaction_sync_date')
    UNION ALL
    SELECT transaction_id, created_at, observed_at
    FROM read_parquet(getvariable('transaction_sync_file'), hive_partitioning = false)
)
GROUP BY transaction_id;

SET VARIABLE transaction_sync_since = (SELECT min(created_at) FROM sync_touched);
SET VARIABLE transaction_sync_from = (SELECT min(observed_at) FROM sync_touched);

DELETE FROM transaction_observations WHERE snapshot_date = getvariable('transaction_sync_date');
INSERT INTO transaction_observations BY NAME
SELECT * FROM read_parquet(getvariable('transaction_sync_file'), hive_partitioning = false);

-- every observation of the touched transactions, in the order NOAH was read, each marked when it is
-- the transaction's first or shows a status other than the one before
CREATE OR REPLACE TEMP TABLE sync_touched_observations AS
SELECT
    o.*,
    lag(o.status) OVER (PARTITION BY o.transaction_id ORDER BY o.observed_at, o.snapshot_date)
        IS DISTINCT FROM o.status AS status_changed
FROM transaction_observations AS o
WHERE o.created_at >= getvariable('transaction_sync_since')
  AND o.transaction_id IN (SELECT transaction_id FROM sync_touched);

DELETE FROM transaction_status_history
WHERE observed_at >= getvariable('transaction_sync_from')
  AND transaction_id IN (SELECT transaction_id FROM sync_touched);
INSERT INTO transaction_status_history
SELECT transaction_id, status, observed_at, snapshot_date
FROM sync_touched_observations
WHERE status_changed AND observed_at >= getvariable('transaction_sync_from');

-- latest observed state; first_observed_at the first sync that saw it, status_observed_at the first
-- that saw its current status (its last change)
DELETE FROM transactions
WHERE created_at >= getvariable('transaction_sync_since')
  AND transaction_id IN (SELECT transaction_id FROM sync_touched);
INSERT INTO transactions
SELECT
    transaction_id, created_at, status, direction, crypto_currency, amount, amount_raw, amount_value,
    network_fee, network_fee_raw, network_fee_value, network, public_id, external_id, customer_id,
    min(observed_at) OVER by_transaction AS first_observed_at,
    max(observed_at) FILTER (WHERE status_changed) OVER by_transaction AS status_observed_at
FROM sync_touched_observations
WINDOW by_transaction AS (PARTITION BY transaction_id)
QUALIFY row_number() OVER (PARTITION BY transaction_id ORDER BY observed_at DESC, snapshot_date DESC) = 1
-- stored newest first, so the row groups' min/max created_at let the syncs' reads from a Created on
-- (known_before.sql) skip the older ones
ORDER BY created_at DESC;

DELETE FROM transaction_syncs WHERE snapshot_date = getvariable('transaction_sync_date');
INSERT INTO transaction_syncs VALUES (
    getvariable('transaction_sync_date'),
    getvariable('transaction_sync_observed_at'),
    getvariable('transaction_sync_horizon'),
    getvariable('transaction_sync_rows')
);

DROP TABLE sync_touched_observations;
DROP TABLE sync_touched;
