-- Question: is each snapshot's pending outflow (total - available) exactly the Out transactions
-- NOAH still had Pending? One row per snapshot and key.
--
-- The model (see v_balance_rollforward): an Out transaction lowers Available by Amount + NetworkFee
-- while it is Pending and Total by the same when it settles; a Failed one gives Available back; an
-- In transaction moves nothing until it settles. Transactions belong to account type Current
-- (keys of another account type have no pending transactions). Exact DECIMAL, tolerance 0.
--
-- pending_out_transactions = sum of Amount + NetworkFee (fee 0 when absent) of the Out transactions
-- the snapshot date's sync observed Pending (transaction_observations of that snapshot_date);
-- unexplained_pending = pending_outflow - pending_out_transactions. pending_out_transactions is NULL
-- when one of the amounts is unknown or the sum does not fit, unexplained_pending unless the status
-- is balanced, timing or unexplained: never a wrong number.
--
-- status, first that applies:
--   no_sync          the snapshot date had no transactions sync: nothing to compare with
--   amount_missing   a Pending Out transaction has no Amount
--   amount_too_wide  pending_outflow is NULL (a balance amount does not fit DECIMAL(38,18)), or a
--                    Pending Out Amount or NetworkFee does not fit
--   sum_too_wide     the sum or the difference does not fit DECIMAL(38,18) (detail has the exact text)
--   balanced         unexplained_pending is exactly 0
--   timing           unexplained_pending equals the unexplained_total of the key's roll-forward
--                    window closing on this date, and that window is a timing pair: an Out
--                    transaction settled between the balance fetch and the sync (still Pending in
--                    the balance, already Settled in the sync)
--   unexplained      anything else (the pending_unexplained break)
-- sql/queries/history_breaks_on_dates.sql restates this for two dates: change one, change the other.
CREATE OR REPLACE VIEW v_pending_explained AS
WITH synced_days AS (
    SELECT DISTINCT snapshot_date FROM transaction_syncs
),
pending AS (
    SELECT
        snapshot_date,
        crypto_currency,
        sum(decimal_units(amount_value) + decimal_units(coalesce(network_fee_value, 0))) AS pending_units,
        count(*) AS transactions,
        count(*) FILTER (WHERE amount IS NULL) AS missing,
        min(transaction_id) FILTER (WHERE amount IS NULL) AS missing_example,
        count(*) FILTER (
            WHERE (amount IS NOT NULL AND amount_value IS NULL) OR (network_fee IS NOT NULL AND network_fee_value IS NULL)
        ) AS too_wide,
        min(transaction_id) FILTER (
            WHERE (amount IS NOT NULL AND amount_value IS NULL) OR (network_fee IS NOT NULL AND network_fee_value IS NULL)
        ) AS too_wide_example
    FROM transaction_observations
    WHERE status = 'Pending' AND direction = 'Out'
    GROUP BY snapshot_date, crypto_currency
),
compared AS (
    SELECT
        b.snapshot_date,
        b.account_type,
        b.crypto_currency,
        b.total,
        b.available,
        b.pending_outflow,
        b.snapshot_date IN (SELECT snapshot_date FROM synced_days) AS synced,
        coalesce(p.transactions, 0) AS transactions,
        coalesce(p.missing, 0) AS missing,
        p.missing_example,
        coalesce(p.too_wide, 0) AS too_wide,
        p.too_wide_example,
        coalesce(p.pending_units, CAST(0 AS BIGNUM)) AS pending_units,
        -- NULL when the exact sum does not fit DECIMAL(38,18)
        CASE WHEN p.snapshot_date IS NULL THEN CAST(0 AS DECIMAL(38, 18)) ELSE units_decimal(p.pending_units) END AS pending_total
    FROM balance_snapshots AS b
    LEFT JOIN pending AS p
        ON b.account_type = 'Current' AND p.snapshot_date = b.snapshot_date AND p.crypto_currency = b.crypto_currency
),
classified AS (
    SELECT
        *,
        TRY(pending_outflow - pending_total) AS unexplained,
        CASE
            WHEN NOT synced THEN 'no_sync'
            WHEN missing > 0 THEN 'amount_missing'
            WHEN pending_outflow IS NULL OR too_wide > 0 THEN 'amount_too_wide'
            WHEN pending_total IS NULL OR TRY(pending_outflow - pending_total) IS NULL THEN 'sum_too_wide'
            WHEN pending_outflow = pending_total THEN 'balanced'
            ELSE 'computed'
        END AS base_status
    FROM compared
),
final AS (
    SELECT
        c.*,
        CASE
            WHEN c.base_status <> 'computed' THEN c.base_status
            WHEN r.period_end_date IS NOT NULL THEN 'timing'
            ELSE 'unexplained'
        END AS status,
        r.period_start_date
    FROM classified AS c
    LEFT JOIN (
        SELECT account_type, crypto_currency, period_start_date, period_end_date, unexplained_total
        FROM v_balance_rollforward
        WHERE status = 'timing'
    ) AS r
        ON c.base_status = 'computed' AND r.account_type = c.account_type AND r.crypto_currency = c.crypto_currency
        AND r.period_end_date = c.snapshot_date AND r.unexplained_total = c.unexplained
)
SELECT
    snapshot_date,
    account_type,
    crypto_currency,
    pending_outflow,
    CASE WHEN synced AND missing = 0 AND too_wide = 0 THEN pending_total END AS pending_out_transactions,
    CASE WHEN status IN ('balanced', 'timing', 'unexplained') THEN unexplained END AS unexplained_pending,
    status,
    CASE WHEN synced THEN transactions END AS pending_out_count,
    CASE status
        WHEN 'no_sync' THEN 'no transactions sync on ' || snapshot_date || ': pending outflow not compared'
        WHEN 'amount_missing' THEN
            missing || ' Pending Out transaction(s) without an Amount (e.g. ' || missing_example || '): not compared'
        WHEN 'amount_too_wide' THEN concat_ws(
            '; ',
            CASE WHEN pending_outflow IS NULL THEN 'total ' || total || ' or available ' || available || ' does not fit DECIMAL(38,18)' END,
            CASE WHEN too_wide > 0 THEN too_wide || ' Pending Out transaction(s) with an Amount or NetworkFee too wide for DECIMAL(38,18) (e.g. '
                || too_wide_example || ')' END
        ) || ': not compared'
        WHEN 'sum_too_wide' THEN
            'sums do not fit DECIMAL(38,18): Pending Out transactions ' || units_text(pending_units)
            || ', unexplained ' || units_text(decimal_units(pending_outflow) - pending_units)
        WHEN 'balanced' THEN NULL
        ELSE
            'pending outflow ' || decimal_text(pending_outflow) || ' (total ' || total || ' - available ' || available
            || ') vs ' || decimal_text(pending_total) || ' in the ' || transactions
            || ' Out transaction(s) Pending in the ' || snapshot_date || ' sync: unexplained ' || decimal_text(unexplained)
            || CASE
                WHEN status = 'timing' THEN
                    ', as in the roll-forward from ' || period_start_date || ': settled between the balance fetch and the sync'
                ELSE '; look for a Pending Out transaction GET /v1/transactions did not return, or a hold without one'
            END
    END AS detail
FROM final;
