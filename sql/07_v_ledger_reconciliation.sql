-- Question: where does NOAH disagree with our own ledger? One row per key on every date the ledger
-- asserts (other dates are out of scope). difference = noah - expected, exact DECIMAL; MATCH when
-- |difference| <= tolerance (0 unless the ledger row sets one) and, when the ledger asserts
-- expected_available, |available_difference| <= tolerance too.
-- A NOAH amount too wide for DECIMAL(38,18) cannot be compared exactly: a compared one makes the
-- row a BREAK with difference NULL and note 'amount_too_wide' (unverifiable is not a match).
CREATE OR REPLACE VIEW v_ledger_reconciliation AS
WITH noah AS (
    SELECT snapshot_date, account_type, crypto_currency, total, total_amount, available, available_amount
    FROM balance_snapshots
    WHERE snapshot_date IN (SELECT as_of_date FROM ledger_expected_balances)
),
joined AS (
    SELECT
        coalesce(l.as_of_date, n.snapshot_date) AS as_of_date,
        coalesce(l.account_type, n.account_type) AS account_type,
        coalesce(l.crypto_currency, n.crypto_currency) AS crypto_currency,
        l.as_of_date IS NOT NULL AS in_ledger,
        n.snapshot_date IS NOT NULL AS at_noah,
        l.expected_total,
        l.expected_total_amount,
        l.expected_available,
        l.expected_available_amount,
        coalesce(l.tolerance_amount, 0) AS tolerance,
        n.total AS noah_total_canonical,
        n.total_amount,
        n.available AS noah_available_canonical,
        n.available_amount,
        n.total_amount - l.expected_total_amount AS difference,
        n.available_amount - l.expected_available_amount AS available_difference,
        -- an amount NOAH sent that DECIMAL(38,18) cannot hold (canonical string present, amount NULL)
        n.total_amount IS NULL AND n.total IS NOT NULL AS total_too_wide,
        n.available_amount IS NULL AND n.available IS NOT NULL AS available_too_wide,
        l.source_file,
        l.source_line
    FROM ledger_expected_balances AS l
    FULL OUTER JOIN noah AS n
        ON n.snapshot_date = l.as_of_date
        AND n.account_type = l.account_type
        AND n.crypto_currency = l.crypto_currency
),
classified AS (
    SELECT
        *,
        CASE
            WHEN NOT at_noah THEN 'MISSING_AT_NOAH'
            WHEN NOT in_ledger THEN 'MISSING_IN_LEDGER'
            WHEN total_too_wide OR (expected_available IS NOT NULL AND available_too_wide) THEN 'BREAK'
            WHEN abs(difference) > tolerance THEN 'BREAK'
            WHEN expected_available IS NOT NULL AND abs(available_difference) > tolerance THEN 'BREAK'
            ELSE 'MATCH'
        END AS status
    FROM joined
)
SELECT
    as_of_date,
    account_type,
    crypto_currency,
    expected_total_amount AS expected_total,
    total_amount AS noah_total,
    difference,
    tolerance,
    status,
    expected_available_amount AS expected_available,
    available_amount AS noah_available,
    available_difference,
    CASE WHEN total_too_wide OR available_too_wide THEN 'amount_too_wide' END AS note,
    noah_total_canonical,
    noah_available_canonical,
    -- human-readable reason for anything but a MATCH, from the exact canonical strings
    CASE status
        WHEN 'MISSING_AT_NOAH' THEN 'ledger expects total ' || expected_total || ', NOAH reported no balance'
        WHEN 'MISSING_IN_LEDGER' THEN 'NOAH total ' || noah_total_canonical || ', no ledger assertion for this key'
        WHEN 'BREAK' THEN concat_ws(
            '; ',
            'NOAH total ' || noah_total_canonical || ' vs ledger ' || expected_total,
            'difference ' || regexp_replace(CAST(difference AS VARCHAR), '\.?0+$', ''),
            'NOAH available ' || noah_available_canonical || ' vs ledger ' || expected_available,
            'available difference ' || regexp_replace(CAST(available_difference AS VARCHAR), '\.?0+$', ''),
            CASE WHEN tolerance > 0 THEN 'tolerance ' || regexp_replace(CAST(tolerance AS VARCHAR), '\.?0+$', '') END,
            CASE WHEN total_too_wide OR available_too_wide THEN 'amount too wide for DECIMAL(38,18)' END
        )
    END AS detail,
    source_file,
    source_line
FROM classified;
