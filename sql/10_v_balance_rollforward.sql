-- Question: does each key's total roll forward exactly, from one snapshot to the next, through the
-- transactions that settled in between? One row per key and pair of consecutive snapshots of it.
--
-- The model: NOAH's Total includes outflows not yet settled and Available excludes them. An Out
-- transaction lowers Available by Amount + NetworkFee while it is Pending and Total by the same
-- when it settles (a Failed one gives Available back and never touches Total); an In transaction
-- raises both by Amount when it settles. Transactions carry no account type: they belong to
-- Current, the only documented one (keys of another account type have no flows). Exact DECIMAL
-- arithmetic, tolerance 0, never through float.
--
-- Flows of the window (period_start_date, period_end_date] are the transactions first observed
-- Settled (a transaction_status_history row with status Settled) in a sync whose snapshot_date is
-- after the opening snapshot's date and up to the closing one's. expected_closing_total =
-- opening_total + settled_in - settled_out - network_fees (the Out transactions' fees, 0 when
-- absent); unexplained_total = closing_total - expected_closing_total.
--
-- status, first that applies:
--   no_sync_at_opening  the opening snapshot date had no transactions sync: the first snapshot with
--                       a sync is the baseline, nothing before it is rolled forward
--   no_sync_at_closing  the closing snapshot date has no sync (yet)
--   amount_missing      a settled transaction of the window has no Amount
--   amount_too_wide     an opening/closing total, or a settled Amount or NetworkFee, does not fit
--                       DECIMAL(38,18)
--   sum_too_wide        a sum or the expected/unexplained total does not fit DECIMAL(38,18)
--                       (detail gives the exact figures as text)
--   balanced            unexplained_total is exactly 0
--   timing              a consecutive window of the key has exactly the opposite unexplained_total:
--                       a movement that settled between the balance fetch and the sync
--   unexplained         anything else (the rollforward_unexplained break)
-- Flows are NULL for the two no_sync statuses, a flow sum is NULL when one of its amounts is
-- unknown or the sum does not fit, expected and unexplained are NULL unless the window is
-- balanced, timing or unexplained: never a wrong number.
--
-- Sums are exact whatever their size: transaction amounts are summed as BIGNUM counts of 10^-18
-- (DuckDB's sum() over DECIMAL(38,18) raises "Overflow in HUGEINT" past 10^20) by the macros below,
-- which v_pending_explained and v_daily_balances use too; only those sums, proportional to the
-- transactions, are BIGNUM. Each window's arithmetic is DECIMAL under TRY (NULL on overflow), with
-- the exact BIGNUM figure only where an intermediate overflows.
--
-- The rows are computed by the table macro rollforward_since(since) below (the windows closing on or
-- after since, from only the rows and transactions they need) and stored by every load in the table
-- rollforward_windows for the windows it can change (balances_etl/storage/reconciliation_rows.py); the
-- view reads that table, so years of windows come back without summing every transaction again. A
-- property test holds the stored rows equal to rollforward_since over all history after every load.

-- DECIMAL(38,18) -> exact BIGNUM count of 10^-18 (NULL stays NULL). DECIMAL(38,18) prints with
-- exactly 18 fraction digits, so dropping the point is the scaled integer.
CREATE OR REPLACE MACRO decimal_units(x) AS
    CAST(replace(CAST(CAST(x AS DECIMAL(38, 18)) AS VARCHAR), '.', '') AS BIGNUM);

-- BIGNUM count of 10^-18 -> exact DECIMAL(38,18), or NULL when it does not fit (38 digits at
-- most): the integer's DECIMAL(38,0) times 10^-18 is the same integer read at scale 18, exactly.
CREATE OR REPLACE MACRO units_decimal(u) AS
    TRY_CAST(TRY_CAST(CAST(u AS VARCHAR) AS HUGEINT) AS DECIMAL(38, 0)) * CAST('0.000000000000000001' AS DECIMAL(18, 18));

-- BIGNUM count of 10^-18 -> exact plain decimal text, whatever its size (no exponent, no trailing
-- zeros): the digits padded to at least 19 (not lpad, which truncates longer strings), the last 18
-- being the fraction.
CREATE OR REPLACE MACRO units_text(u) AS
    CASE WHEN u < CAST(0 AS BIGNUM) THEN '-' ELSE '' END || list_transform(
        [repeat('0', greatest(0, 19 - length(ltrim(CAST(u AS VARCHAR), '-')))) || ltrim(CAST(u AS VARCHAR), '-')],
        lambda d: left(d, length(d) - 18) || CASE WHEN rtrim(right(d, 18), '0') = '' THEN '' ELSE '.' || rtrim(right(d, 18), '0') END
    )[1];

-- DECIMAL -> exact plain text, for details: DECIMAL(38,18) prints all 18 fraction digits, so
-- trailing zeros, then a bare point, are dropped (the same text as units_text(decimal_units(x))).
CREATE OR REPLACE MACRO decimal_text(x) AS rtrim(rtrim(CAST(CAST(x AS DECIMAL(38, 18)) AS VARCHAR), '0'), '.');

CREATE OR REPLACE MACRO rollforward_since(since) AS TABLE
WITH params AS (
    SELECT CAST(since AS DATE) AS since_day
),
synced_days AS (
    SELECT DISTINCT snapshot_date FROM transaction_syncs
),
-- Only the rows a window closing on or after since needs: per key, from its second-latest snapshot
-- before since (the window before the first one emitted decides whether that one is half of a timing
-- pair); a key without one from since on. With since the earliest date, every row.
cutoffs AS (
    SELECT
        account_type,
        crypto_currency,
        coalesce(
            max(snapshot_date, 2) FILTER (WHERE snapshot_date < since_day)[2],
            max(snapshot_date, 2) FILTER (WHERE snapshot_date < since_day)[1],
            since_day
        ) AS cutoff
    FROM balance_snapshots, params
    GROUP BY account_type, crypto_currency, since_day
),
key_rows AS (
    SELECT b.*
    FROM balance_snapshots AS b
    JOIN cutoffs AS c USING (account_type, crypto_currency)
    WHERE b.snapshot_date >= c.cutoff
),
-- flows settled on or before every key's cutoff belong to no window computed here
low AS (
    SELECT coalesce((SELECT min(cutoff) FROM cutoffs), since_day) AS day FROM params
),
-- the key's consecutive snapshots
windows AS (
    SELECT *
    FROM (
        SELECT
            account_type,
            crypto_currency,
            lag(snapshot_date) OVER key_history AS period_start_date,
            snapshot_date AS period_end_date,
            lag(total) OVER key_history AS opening_text,
            lag(total_amount) OVER key_history AS opening_total,
            total AS closing_text,
            total_amount AS closing_total
        FROM key_rows
        WINDOW key_history AS (PARTITION BY account_type, crypto_currency ORDER BY snapshot_date)
    )
    WHERE period_start_date IS NOT NULL
),
-- the sync day on which each transaction was first observed Settled, for those first observed
-- Settled after low
settled_after_low AS (
    SELECT transaction_id, min(snapshot_date) AS settled_seen_on
    FROM transaction_status_history
    WHERE status = 'Settled' AND snapshot_date > (SELECT day FROM low)
    GROUP BY transaction_id
),
first_settled AS (
    SELECT *
    FROM settled_after_low
    WHERE transaction_id NOT IN (
        SELECT transaction_id
        FROM transaction_status_history
        WHERE status = 'Settled' AND snapshot_date <= (SELECT day FROM low)
            AND transaction_id IN (SELECT transaction_id FROM settled_after_low)
    )
),
-- per currency and sync day, as exact BIGNUM sums
daily_flows AS (
    SELECT
        t.crypto_currency,
        s.settled_seen_on,
        sum(decimal_units(t.amount_value)) FILTER (WHERE t.direction = 'In') AS in_units,
        sum(decimal_units(t.amount_value)) FILTER (WHERE t.direction = 'Out') AS out_units,
        sum(decimal_units(coalesce(t.network_fee_value, 0))) FILTER (WHERE t.direction = 'Out') AS fee_units,
        count(*) FILTER (WHERE t.direction = 'In') AS in_count,
        count(*) FILTER (WHERE t.direction = 'Out') AS out_count,
        count(*) FILTER (WHERE t.direction = 'In' AND t.amount_value IS NULL) AS in_unknown,
        count(*) FILTER (WHERE t.direction = 'Out' AND t.amount_value IS NULL) AS out_unknown,
        count(*) FILTER (WHERE t.direction = 'Out' AND t.network_fee IS NOT NULL AND t.network_fee_value IS NULL) AS fee_unknown,
        count(*) FILTER (WHERE t.amount IS NULL) AS missing,
        min(t.transaction_id) FILTER (WHERE t.amount IS NULL) AS missing_example,
        count(*) FILTER (
            WHERE (t.amount IS NOT NULL AND t.amount_value IS NULL)
                OR (t.direction = 'Out' AND t.network_fee IS NOT NULL AND t.network_fee_value IS NULL)
        ) AS too_wide,
        min(t.transaction_id) FILTER (
            WHERE (t.amount IS NOT NULL AND t.amount_value IS NULL)
                OR (t.direction = 'Out' AND t.network_fee IS NOT NULL AND t.network_fee_value IS NULL)
        ) AS too_wide_example
    FROM first_settled AS s
    JOIN transactions AS t USING (transaction_id)
    GROUP BY t.crypto_currency, s.settled_seen_on
),
-- each flow day belongs to the window of the currency's Current key that closes on the first
-- snapshot date on or after it (flows before a key's first snapshot find no window)
window_flows AS (
    SELECT
        b.account_type,
        b.crypto_currency,
        b.snapshot_date AS period_end_date,
        coalesce(sum(f.in_units), CAST(0 AS BIGNUM)) AS in_units,
        coalesce(sum(f.out_units), CAST(0 AS BIGNUM)) AS out_units,
        coalesce(sum(f.fee_units), CAST(0 AS BIGNUM)) AS fee_units,
        sum(f.in_count) AS in_count,
        sum(f.out_count) AS out_count,
        sum(f.in_unknown) AS in_unknown,
        sum(f.out_unknown) AS out_unknown,
        sum(f.fee_unknown) AS fee_unknown,
        sum(f.missing) AS missing,
        min(f.missing_example) AS missing_example,
        sum(f.too_wide) AS too_wide,
        min(f.too_wide_example) AS too_wide_example
    FROM daily_flows AS f
    ASOF JOIN (SELECT account_type, crypto_currency, snapshot_date FROM key_rows WHERE account_type = 'Current') AS b
        ON f.crypto_currency = b.crypto_currency AND f.settled_seen_on <= b.snapshot_date
    GROUP BY b.account_type, b.crypto_currency, b.snapshot_date
),
summed AS (
    SELECT
        w.*,
        w.period_start_date IN (SELECT snapshot_date FROM synced_days) AS opening_synced,
        w.period_end_date IN (SELECT snapshot_date FROM synced_days) AS closing_synced,
        coalesce(f.in_count, 0) AS in_count,
        coalesce(f.out_count, 0) AS out_count,
        coalesce(f.missing, 0) AS missing,
        f.missing_example,
        coalesce(f.too_wide, 0) AS too_wide,
        f.too_wide_example,
        coalesce(f.in_units, CAST(0 AS BIGNUM)) AS in_units,
        coalesce(f.out_units, CAST(0 AS BIGNUM)) AS out_units,
        coalesce(f.fee_units, CAST(0 AS BIGNUM)) AS fee_units,
        -- NULL when an amount is unknown or the exact sum does not fit DECIMAL(38,18)
        CASE WHEN f.period_end_date IS NULL THEN CAST(0 AS DECIMAL(38, 18))
            WHEN f.in_unknown = 0 THEN units_decimal(f.in_units) END AS in_total,
        CASE WHEN f.period_end_date IS NULL THEN CAST(0 AS DECIMAL(38, 18))
            WHEN f.out_unknown = 0 THEN units_decimal(f.out_units) END AS out_total,
        CASE WHEN f.period_end_date IS NULL THEN CAST(0 AS DECIMAL(38, 18))
            WHEN f.fee_unknown = 0 THEN units_decimal(f.fee_units) END AS fee_total
    FROM windows AS w
    LEFT JOIN window_flows AS f USING (account_type, crypto_currency, period_end_date)
),
computed AS (
    SELECT
        *,
        -- DECIMAL arithmetic; only where an intermediate overflows, the exact BIGNUM one
        coalesce(
            TRY(opening_total + in_total - out_total - fee_total),
            units_decimal(decimal_units(opening_total) + in_units - out_units - fee_units)
        ) AS expected_total
    FROM summed
),
classified AS (
    SELECT
        *,
        TRY(closing_total - expected_total) AS unexplained,
        CASE
            WHEN NOT opening_synced THEN 'no_sync_at_opening'
            WHEN NOT closing_synced THEN 'no_sync_at_closing'
            WHEN missing > 0 THEN 'amount_missing'
            WHEN opening_total IS NULL OR closing_total IS NULL OR too_wide > 0 THEN 'amount_too_wide'
            WHEN in_total IS NULL OR out_total IS NULL OR fee_total IS NULL
                OR expected_total IS NULL OR TRY(closing_total - expected_total) IS NULL THEN 'sum_too_wide'
            WHEN closing_total = expected_total THEN 'balanced'
            ELSE 'computed'
        END AS base_status
    FROM computed
),
-- only windows with a non-zero unexplained total can offset each other: a consecutive window of
-- the key with exactly the opposite one
offsets AS (
    SELECT
        account_type,
        crypto_currency,
        period_end_date,
        CASE WHEN lag(period_end_date) OVER key_windows = period_start_date
            AND lag(unexplained) OVER key_windows = -unexplained THEN lag(period_start_date) OVER key_windows END
            AS prev_period_start_date,
        CASE WHEN lead(period_start_date) OVER key_windows = period_end_date
            AND lead(unexplained) OVER key_windows = -unexplained THEN lead(period_end_date) OVER key_windows END
            AS next_period_end_date
    FROM classified
    WHERE base_status = 'computed'
    WINDOW key_windows AS (PARTITION BY account_type, crypto_currency ORDER BY period_end_date)
),
final AS (
    SELECT
        c.*,
        o.prev_period_start_date,
        o.next_period_end_date,
        CASE
            WHEN c.base_status <> 'computed' THEN c.base_status
            WHEN o.prev_period_start_date IS NOT NULL OR o.next_period_end_date IS NOT NULL THEN 'timing'
            ELSE 'unexplained'
        END AS status,
        c.opening_synced AND c.closing_synced AS flows_known
    FROM classified AS c
    LEFT JOIN (
        SELECT * FROM offsets WHERE prev_period_start_date IS NOT NULL OR next_period_end_date IS NOT NULL
    ) AS o USING (account_type, crypto_currency, period_end_date)
)
SELECT
    account_type,
    crypto_currency,
    period_start_date,
    period_end_date,
    opening_total,
    CASE WHEN flows_known THEN in_total END AS settled_in,
    CASE WHEN flows_known THEN out_total END AS settled_out,
    CASE WHEN flows_known THEN fee_total END AS network_fees,
    CASE WHEN status IN ('balanced', 'timing', 'unexplained') THEN expected_total END AS expected_closing_total,
    closing_total,
    CASE WHEN status IN ('balanced', 'timing', 'unexplained') THEN unexplained END AS unexplained_total,
    status,
    CASE WHEN flows_known THEN in_count END AS settled_in_transactions,
    CASE WHEN flows_known THEN out_count END AS settled_out_transactions,
    CASE status
        WHEN 'no_sync_at_opening' THEN
            'no transactions sync on ' || period_start_date || ' (the opening snapshot date): not rolled forward'
        WHEN 'no_sync_at_closing' THEN
            'no transactions sync on ' || period_end_date || ' (the closing snapshot date) yet: not rolled forward'
        WHEN 'amount_missing' THEN
            missing || ' transaction(s) settled without an Amount (e.g. ' || missing_example || '): not rolled forward'
        WHEN 'amount_too_wide' THEN concat_ws(
            '; ',
            CASE WHEN opening_total IS NULL THEN 'opening total ' || opening_text || ' does not fit DECIMAL(38,18)' END,
            CASE WHEN closing_total IS NULL THEN 'closing total ' || closing_text || ' does not fit DECIMAL(38,18)' END,
            CASE WHEN too_wide > 0 THEN too_wide || ' settled transaction(s) with an Amount or NetworkFee too wide for DECIMAL(38,18) (e.g. '
                || too_wide_example || ')' END
        ) || ': not rolled forward'
        WHEN 'sum_too_wide' THEN
            'sums do not fit DECIMAL(38,18): in ' || units_text(in_units) || ', out ' || units_text(out_units)
            || ', fees ' || units_text(fee_units) || ', expected closing total '
            || units_text(decimal_units(opening_total) + in_units - out_units - fee_units)
            || ', unexplained ' || units_text(decimal_units(closing_total) - (decimal_units(opening_total) + in_units - out_units - fee_units))
        WHEN 'balanced' THEN NULL
        ELSE
            'closing total ' || closing_text || ' on ' || period_end_date
            || ', expected ' || decimal_text(expected_total) || ' = opening total ' || opening_text || ' on ' || period_start_date
            || ' + in ' || decimal_text(in_total) || ' - out ' || decimal_text(out_total) || ' - fees ' || decimal_text(fee_total)
            || ' (' || (in_count + out_count) || ' transaction(s) first seen Settled in the syncs after ' || period_start_date
            || ' up to ' || period_end_date || '): unexplained ' || decimal_text(unexplained)
            || CASE
                WHEN status = 'timing' AND prev_period_start_date IS NOT NULL THEN
                    ', offset by the window ' || prev_period_start_date || ' to ' || period_start_date
                    || ': settled between the balance fetch and the sync'
                WHEN status = 'timing' THEN
                    ', offset by the window ' || period_end_date || ' to ' || next_period_end_date
                    || ': settled between the balance fetch and the sync'
                ELSE '; look for a movement without a transaction, or a transaction GET /v1/transactions did not return'
            END
    END AS detail
FROM final
WHERE period_end_date >= (SELECT since_day FROM params);

-- What v_balance_rollforward shows: every window's row, stored by each load for the windows it can
-- change (balances_etl/storage/reconciliation_rows.py) from rollforward_since above, so that reading years of
-- windows does not sum every transaction again. Created empty here the first time.
CREATE TABLE IF NOT EXISTS rollforward_windows AS SELECT * FROM rollforward_since(DATE '9999-12-31');

CREATE OR REPLACE VIEW v_balance_rollforward AS
SELECT * FROM rollforward_windows;
