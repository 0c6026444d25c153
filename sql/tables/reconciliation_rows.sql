-- The breaks of the checks that read each key's history (snapshot_gap, currency_disappeared,
-- stale_balance, rollforward_unexplained, pending_unexplained), stored by every load for the dates
-- it can change (balances_etl/storage/reconciliation_rows.py), so that v_reconciliation_breaks and
-- v_reconciliation_summary read rows instead of running windows over years of history.
CREATE TABLE IF NOT EXISTS history_breaks (
    check_name VARCHAR NOT NULL,
    snapshot_date DATE NOT NULL,
    account_type VARCHAR NOT NULL,
    crypto_currency VARCHAR NOT NULL,
    detail VARCHAR
);

-- What the stored rows (these and rollforward_windows, which sql/10_v_balance_rollforward.sql
-- creates) were computed with: a hash of the SQL that defines them and of reconciliation_settings. A
-- load that finds another one (an upgrade, a new stale_after_days, a new warehouse) recomputes every row.
CREATE TABLE IF NOT EXISTS reconciliation_rows_state (
    fingerprint VARCHAR NOT NULL
);
