-- Question: how many problems of each kind per day? Counts of v_reconciliation_breaks; a
-- (date, check) with no break has no row.
CREATE OR REPLACE VIEW v_reconciliation_summary AS
SELECT snapshot_date, check_name, count(*) AS breaks
FROM v_reconciliation_breaks
GROUP BY snapshot_date, check_name;
