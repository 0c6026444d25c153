-- The transactions tables derived from the syncs' rows (transaction_observations, whose columns are
-- balances_etl/domain/transactions.py's). The loader creates them (IF NOT EXISTS) before every load,
-- so the views can always read them, and maintains them one sync at a time.

-- One row per sync: a sync that saw no transaction at all still counts as a sync.
CREATE TABLE IF NOT EXISTS transaction_syncs (
    snapshot_date DATE NOT NULL,            -- UTC day of the run
    observed_at TIMESTAMPTZ NOT NULL,       -- when the sync read NOAH
    horizon TIMESTAMPTZ,                    -- NULL: the sync read every transaction NOAH has
    transactions INTEGER NOT NULL           -- items observed
);

-- One row per transaction: its latest observed state.
CREATE TABLE IF NOT EXISTS transactions (
    transaction_id VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    status VARCHAR NOT NULL,
    direction VARCHAR NOT NULL,
    crypto_currency VARCHAR NOT NULL,
    amount VARCHAR,
    amount_raw VARCHAR,
    amount_value DECIMAL(38,18),
    network_fee VARCHAR,
    network_fee_raw VARCHAR,
    network_fee_value DECIMAL(38,18),
    network VARCHAR NOT NULL,
    public_id VARCHAR,
    external_id VARCHAR,
    customer_id VARCHAR,
    first_observed_at TIMESTAMPTZ NOT NULL, -- the first sync that saw it
    status_observed_at TIMESTAMPTZ NOT NULL -- the first sync that saw its current status
);

-- One row per status change observed: the first observation of each transaction, then every change.
CREATE TABLE IF NOT EXISTS transaction_status_history (
    transaction_id VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    observed_at TIMESTAMPTZ NOT NULL,
    snapshot_date DATE NOT NULL
);
