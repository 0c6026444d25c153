-- Question: what does NOAH hold right now? The latest snapshot of each (account_type, crypto_currency).
-- A key that stopped being reported keeps its last row; age_days shows how old it is.
CREATE OR REPLACE VIEW v_latest_balances AS
SELECT
    account_type,
    crypto_currency,
    asset,
    environment,
    snapshot_date,
    snapshot_at,
    is_late,
    available,
    total,
    available_amount,
    total_amount,
    pending_outflow,
    -- snapshot dates are UTC days, so age is measured against today's UTC date, whatever the
    -- querying session's TimeZone is
    CAST(timezone('UTC', now()) AS DATE) - snapshot_date AS age_days
FROM balance_snapshots
QUALIFY row_number() OVER (PARTITION BY account_type, crypto_currency ORDER BY snapshot_date DESC) = 1;
