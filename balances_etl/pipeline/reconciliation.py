"""Daily reconciliation over the warehouse views, in plain Python (the Dagster asset wraps it).

The questions live in SQL: the views in ``sql/*.sql`` and the queries here in
``sql/queries/*.sql`` (not applied as views). Rows come back through ``fetchall`` so amounts stay
exact; everything handed out is a string.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

from balances_etl.settings import packaged_sql
from balances_etl.storage.warehouse import reading_published

SAMPLE_SIZE = 20


@dataclass(frozen=True)
class DayReconciliation:
    """Breaks dated on one snapshot date."""

    snapshot_date: date
    breaks_by_check: dict[str, int]
    sample: list[dict[str, str]]  # the first SAMPLE_SIZE breaks, in check_name, key order

    @property
    def total_breaks(self) -> int:
        return sum(self.breaks_by_check.values())


def load_query(name: str) -> str:
    """The text of ``sql/queries/<name>.sql``."""
    return packaged_sql("queries", name)


def summarize_day(con: duckdb.DuckDBPyConnection, snapshot_date: date) -> DayReconciliation:
    """Break counts per check for ``snapshot_date`` and the first breaks as a sample."""
    breaks = _fetch_breaks(con, "day_breaks", snapshot_date)
    counts = Counter(row["check_name"] for row in breaks)
    return DayReconciliation(snapshot_date, dict(counts), breaks[:SAMPLE_SIZE])


def new_breaks_vs_previous_day(con: duckdb.DuckDBPyConnection, snapshot_date: date) -> list[dict[str, str]]:
    """Breaks on ``snapshot_date`` whose (check_name, account_type, crypto_currency) had none on the
    previous snapshot date; all of them when there is no earlier snapshot date."""
    return _fetch_breaks(con, "new_breaks_vs_previous_day", snapshot_date)


def reconcile_day(con: duckdb.DuckDBPyConnection, snapshot_date: date) -> tuple[DayReconciliation, list[dict[str, str]]]:
    """``summarize_day`` and ``new_breaks_vs_previous_day`` together.

    Their cost follows the day: ``v_reconciliation_breaks`` reads the history checks' rows the load
    stored (``storage/reconciliation_rows.py``) instead of running windows over all history.
    """
    return summarize_day(con, snapshot_date), new_breaks_vs_previous_day(con, snapshot_date)


def reconcile_published_day(data_dir: Path, snapshot_date: date) -> tuple[DayReconciliation, list[dict[str, str]]]:
    """``reconcile_day`` on the published warehouse, read-only, on a connection of its own."""
    with reading_published(data_dir) as con:
        return reconcile_day(con, snapshot_date)


def _fetch_breaks(con: duckdb.DuckDBPyConnection, query: str, snapshot_date: date) -> list[dict[str, str]]:
    cursor = con.execute(load_query(query), [snapshot_date])
    columns = [d[0] for d in cursor.description]
    return [{c: "" if v is None else str(v) for c, v in zip(columns, row, strict=True)} for row in cursor.fetchall()]
