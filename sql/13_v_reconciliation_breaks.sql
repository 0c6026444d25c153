-- Question: what needs attention? One row per problem, per snapshot date, from all the views.
-- check_name values are the constants of balances_etl.domain.names.ReconciliationCheck.
-- Not problems, so not here: APPEARED keys (a newly enabled currency; see v_currency_changes) and
-- ledger MATCH rows. Checks that describe a state (stale_balance, snapshot_gap) have a row on every
-- date the state holds, so "new since yesterday" only fires when the state starts.
-- The checks that read each key's history (snapshot_gap, currency_disappeared, stale_balance,
-- rollforward_unexplained from v_balance_rollforward, pending_unexplained from v_pending_explained)
-- are defined in sql/queries/history_breaks_since.sql and stored by every load in the history_breaks
-- table for the dates it can change, so this view reads rows instead of running windows over all
-- history; the checks on one row (amounts, pending outflow) and the ledger's are computed here.
CREATE OR REPLACE VIEW v_reconciliation_breaks AS
SELECT
    'amount_too_wide' AS check_name,
    snapshot_date,
    account_type,
    crypto_currency,
    concat_ws(
        '; ',
        CASE WHEN available_amount IS NULL THEN 'available ' || available || ' does not fit DECIMAL(38,18)' END,
        CASE WHEN total_amount IS NULL THEN 'total ' || total || ' does not fit DECIMAL(38,18)' END
    ) AS detail
FROM balance_snapshots
WHERE available_amount IS NULL OR total_amount IS NULL

UNION ALL
SELECT
    'negative_pending_outflow',
    snapshot_date,
    account_type,
    crypto_currency,
    'available ' || available || ' is greater than total ' || total
FROM v_pending_outflows
WHERE status = 'NEGATIVE'

UNION ALL
SELECT
    CASE status
        WHEN 'BREAK' THEN 'ledger_break'
        WHEN 'MISSING_AT_NOAH' THEN 'missing_at_noah'
        WHEN 'MISSING_IN_LEDGER' THEN 'missing_in_ledger'
    END,
    as_of_date,
    account_type,
    crypto_currency,
    detail
FROM v_ledger_reconciliation
WHERE status <> 'MATCH'

UNION ALL
SELECT check_name, snapshot_date, account_type, crypto_currency, detail
FROM history_breaks;
