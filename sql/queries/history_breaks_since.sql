-- The rows of the history checks (the v_reconciliation_breaks branches that need each key's
-- history) dated on or after a date (parameter), computed from the views over all history. This is
-- their definition: a load stores these rows in the history_breaks table for the dates it can
-- change (balances_etl/storage/reconciliation_rows.py); sql/queries/history_breaks_on_dates.sql restates
-- them for the common daily case without windows (a property test holds the stored rows equal to
-- this query's after every load). Checks that describe a state (stale_balance, snapshot_gap) have a
-- row on every date the state holds.
SELECT check_name, snapshot_date, account_type, crypto_currency, detail
FROM (
    SELECT
        'snapshot_gap' AS check_name,
        missing_date AS snapshot_date,
        account_type,
        crypto_currency,
        CASE WHEN whole_day_missing THEN 'no snapshot at all on this day' ELSE 'key absent from this day''s snapshot' END
            || ' (key reported on ' || prev_snapshot_date || ' and ' || next_snapshot_date || ')' AS detail
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

    -- a timing pair is not a break, and a window that cannot be computed says so in those views'
    -- status and detail, not here
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
    WHERE status = 'unexplained'
)
WHERE snapshot_date >= CAST(? AS DATE)
