-- Question: what is pending? total - available per key and snapshot. NEGATIVE flags available > total
-- (impossible for a sound feed); AMOUNT_TOO_WIDE means an amount does not fit DECIMAL(38,18), so
-- the comparison cannot be made exactly and pending_outflow is NULL rather than a wrong number.
CREATE OR REPLACE VIEW v_pending_outflows AS
SELECT
    snapshot_date,
    account_type,
    crypto_currency,
    available,
    total,
    available_amount,
    total_amount,
    pending_outflow,
    CASE
        WHEN available_amount IS NULL OR total_amount IS NULL THEN 'AMOUNT_TOO_WIDE'
        WHEN available_amount > total_amount THEN 'NEGATIVE'
        ELSE 'OK'
    END AS status
FROM balance_snapshots;
