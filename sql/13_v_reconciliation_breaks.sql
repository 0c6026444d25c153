-- Question: what needs attention? One row per problem, per snapshot date, from all the views.
-- check_name values are the constants of balances_etl.domain.names.ReconciliationCheck.
-- Not problems, so not here: APPEARED keys (a newly enabled currency; see v_currency_changes) and
-- ledger MATCH rows. Checks that describe a state (stale_balance, snapshot_gap) have a row on every
-- date the state holds, so "new since yesterday" only fires when the state starts.
-- rollforward_unexplained and pending_unexplained come from v_balance_rollforward and
-- v_pending_explained (status unexplained: a timing pair is not a break, and a window that cannot
-- be computed says so in those views' status and detail, not here).
-- The daily reconciliation reads the rows of one day (and the snapshot date before) through
-- sql/queries/breaks_on_dates.sql, which restates the snapshot_gap, currency_disappeared,
-- stale_balance, rollforward_unexplained and pending_unexplained checks without windows over all
-- history: change a check here, change it there too (a property test holds the two equal).
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
    'snapshot_gap',
    missing_date,
    account_type,
    crypto_currency,
    CASE WHEN whole_day_missing THEN 'no snapshot at all on this day' ELSE 'key absent from this day''s snapshot' END
        || ' (key reported on ' || prev_snapshot_date || ' and ' || next_snapshot_date || ')'
FROM v_snapshot_gaps

UNION ALL
SELECT
    'currency_disappeared',
    snapshot_date,
    account_type,
    crypto_currency,
    'reported on ' || prev_snapshot_date || ', absent from this snapshot'
FROM v_currency_changes
WHERE change = 'DISAPPEARED'

UNION ALL
SELECT
    'stale_balance',
    c.snapshot_date,
    c.account_type,
    c.crypto_currency,
    'total ' || c.total || ' unchanged since ' || c.total_unchanged_since
        || ' (' || c.days_total_unchanged || ' days, more than ' || s.stale_after_days || ')'
FROM v_balance_changes AS c
CROSS JOIN reconciliation_settings AS s
WHERE c.days_total_unchanged > s.stale_after_days

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
SELECT
    'rollforward_unexplained',
    period_end_date,
    account_type,
    crypto_currency,
    detail
FROM v_balance_rollforward
WHERE status = 'unexplained'

UNION ALL
SELECT
    'pending_unexplained',
    snapshot_date,
    account_type,
    crypto_currency,
    detail
FROM v_pending_explained
WHERE status = 'unexplained';
