"""Tables in Dagster metadata and terminal reports show amounts exactly, as a person reads them."""

from __future__ import annotations

from decimal import Decimal

from balances_etl.markdown import markdown_table


def test_tables_show_exact_decimals_in_plain_notation():
    table = markdown_table([{"difference": Decimal("-1E-18"), "total": Decimal("100.000"), "zero": Decimal("0E-18")}])
    assert table.splitlines()[-1] == "| -0.000000000000000001 | 100 | 0 |"
