-- Question: what was each key's total at the end of every UTC day, including days without a
-- snapshot? One row per key and day from the key's first snapshot to its last.
--
-- The model (see v_balance_rollforward): a settled In transaction raises Total by Amount, a settled
-- Out transaction lowers it by Amount + NetworkFee (fee 0 when absent); Pending and Failed ones
-- leave Total alone. Transactions belong to account type Current. Exact DECIMAL, never float.
--
-- source = 'snapshot': the snapshot's total_amount. source = 'estimated' (a day E between two
-- consecutive snapshots of the key, previous_snapshot_date < E < next_snapshot_date): the previous
-- snapshot's total plus the flows (in - out - fees) of the transactions created before the end of
-- E (created_at < E + 1 day, 00:00 UTC) that were first observed Settled in a sync after the
-- previous snapshot date and up to the next one. A transaction created by the end of E that settled
-- only later is counted as if settled on E, so an estimate is exact when everything created by the
-- end of E had settled or failed by then. Estimates live only in this view, never in
-- balance_snapshots.
-- total is NULL, and note says why, when the day cannot be estimated: no transactions sync on the
-- previous or the next snapshot date, a settled transaction without an Amount, or an amount (or
-- the sum) too wide for DECIMAL(38,18); on a snapshot day, when the total does not fit.
CREATE OR REPLACE VIEW v_daily_balances AS
WITH synced_days AS (
    SELECT DISTINCT snapshot_date FROM transaction_syncs
),
key_snapshots AS (
    SELECT
        account_type,
        crypto_currency,
        snapshot_date,
        total,
        total_amount,
        lag(snapshot_date) OVER key_history AS prev_date,
        lag(total) OVER key_history AS prev_text,
        lag(total_amount) OVER key_history AS prev_total
    FROM balance_snapshots
    WINDOW key_history AS (PARTITION BY account_type, crypto_currency ORDER BY snapshot_date)
),
-- consecutive snapshots of a key more than a day apart: the days between them are estimated
gaps AS (
    SELECT account_type, crypto_currency, prev_date, snapshot_date AS next_date, prev_text, prev_total
    FROM key_snapshots
    WHERE snapshot_date - prev_date > 1
),
gap_days AS (
    SELECT *, prev_date + CAST(unnest(range(1, next_date - prev_date)) AS INTEGER) AS balance_date
    FROM gaps
),
first_settled AS (
    SELECT transaction_id, min(snapshot_date) AS settled_seen_on
    FROM transaction_status_history
    WHERE status = 'Settled'
    GROUP BY transaction_id
),
-- each settled transaction's signed effect on Total, exact, NULL when unknown
settled_flows AS (
    SELECT
        t.transaction_id,
        t.crypto_currency,
        s.settled_seen_on,
        CAST(timezone('UTC', t.created_at) AS DATE) AS created_on,
        CASE t.direction
            WHEN 'In' THEN decimal_units(t.amount_value)
            WHEN 'Out' THEN -(decimal_units(t.amount_value) + decimal_units(coalesce(t.network_fee_value, 0)))
        END AS units,
        t.amount IS NULL AS missing,
        (t.amount IS NOT NULL AND t.amount_value IS NULL)
            OR (t.direction = 'Out' AND t.network_fee IS NOT NULL AND t.network_fee_value IS NULL) AS too_wide
    FROM first_settled AS s
    JOIN transactions AS t USING (transaction_id)
),
gap_flows AS (
    SELECT
        g.account_type,
        g.crypto_currency,
        g.next_date,
        f.created_on,
        sum(f.units) AS units,
        count(*) AS transactions,
        count(*) FILTER (WHERE f.missing) AS missing,
        min(f.transaction_id) FILTER (WHERE f.missing) AS missing_example,
        count(*) FILTER (WHERE f.too_wide) AS too_wide,
        min(f.transaction_id) FILTER (WHERE f.too_wide) AS too_wide_example
    FROM gaps AS g
    JOIN settled_flows AS f
        ON g.account_type = 'Current'
        AND f.crypto_currency = g.crypto_currency
        AND f.settled_seen_on > g.prev_date
        AND f.settled_seen_on <= g.next_date
    GROUP BY g.account_type, g.crypto_currency, g.next_date, f.created_on
),
estimated AS (
    SELECT
        d.account_type,
        d.crypto_currency,
        d.balance_date,
        d.prev_date,
        d.next_date,
        d.prev_text,
        d.prev_total,
        d.prev_date IN (SELECT snapshot_date FROM synced_days) AS prev_synced,
        d.next_date IN (SELECT snapshot_date FROM synced_days) AS next_synced,
        coalesce(sum(f.transactions), 0) AS transactions,
        coalesce(sum(f.missing), 0) AS missing,
        min(f.missing_example) AS missing_example,
        coalesce(sum(f.too_wide), 0) AS too_wide,
        min(f.too_wide_example) AS too_wide_example,
        decimal_units(d.prev_total) + coalesce(sum(f.units), CAST(0 AS BIGNUM)) AS total_units
    FROM gap_days AS d
    LEFT JOIN gap_flows AS f
        ON f.account_type = d.account_type
        AND f.crypto_currency = d.crypto_currency
        AND f.next_date = d.next_date
        AND f.created_on <= d.balance_date
    GROUP BY d.account_type, d.crypto_currency, d.balance_date, d.prev_date, d.next_date, d.prev_text, d.prev_total
),
explained AS (
    SELECT
        *,
        CASE
            WHEN NOT prev_synced THEN 'no transactions sync on ' || prev_date || ' (the previous snapshot date)'
            WHEN NOT next_synced THEN 'no transactions sync on ' || next_date || ' (the next snapshot date)'
            WHEN missing > 0 THEN missing || ' settled transaction(s) without an Amount (e.g. ' || missing_example || ')'
            WHEN prev_total IS NULL THEN 'previous total ' || prev_text || ' does not fit DECIMAL(38,18)'
            WHEN too_wide > 0 THEN too_wide || ' settled transaction(s) with an Amount or NetworkFee too wide for DECIMAL(38,18) (e.g. '
                || too_wide_example || ')'
            WHEN units_decimal(total_units) IS NULL THEN 'estimated total ' || units_text(total_units) || ' does not fit DECIMAL(38,18)'
        END AS why_not
    FROM estimated
)
SELECT
    snapshot_date AS balance_date,
    account_type,
    crypto_currency,
    total_amount AS total,
    'snapshot' AS source,
    CAST(NULL AS DATE) AS previous_snapshot_date,  -- the snapshots an estimate is made from
    CAST(NULL AS DATE) AS next_snapshot_date,
    CAST(NULL AS BIGINT) AS settled_transactions,
    CASE WHEN total_amount IS NULL THEN 'total ' || total || ' does not fit DECIMAL(38,18)' END AS note
FROM key_snapshots

UNION ALL
SELECT
    balance_date,
    account_type,
    crypto_currency,
    CASE WHEN why_not IS NULL THEN units_decimal(total_units) END,
    'estimated',
    prev_date,
    next_date,
    CASE WHEN prev_synced AND next_synced THEN transactions END,
    CASE WHEN why_not IS NOT NULL THEN 'not estimated: ' || why_not END
FROM explained;
