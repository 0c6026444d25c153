"""The business's own expected balances (ledger CSV files) loaded into DuckDB.

Placeholder with the final signature; the reconciliation work fills in parsing and validation.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from balances_etl.names import LEDGER_TABLE


def replace_ledger_table(con: duckdb.DuckDBPyConnection, ledger_dir: Path) -> int:
    """Replace the ledger table with the rows of every CSV in ``ledger_dir``; returns rows loaded."""
    con.execute(
        f"CREATE OR REPLACE TABLE {LEDGER_TABLE} ("
        "as_of_date DATE, account_type VARCHAR, crypto_currency VARCHAR, "
        "expected_total VARCHAR, expected_total_amount DECIMAL(38,18), "
        "expected_available VARCHAR, expected_available_amount DECIMAL(38,18), "
        "tolerance_amount DECIMAL(38,18), source_file VARCHAR, source_line INTEGER)"
    )
    return 0
