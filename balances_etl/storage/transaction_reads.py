"""What the published warehouse knows of the transactions syncs before a day: the next sync's
horizon (``previous_transaction_sync``), the transactions it judges against (``known_transactions``)
and a day's summary for Dagster (``transactions_day_summary``).

A sync makes both its reads on one connection (``published_syncs``): attaching the file costs more
than either query.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from balances_etl.domain.names import Table
from balances_etl.domain.transactions import KNOWN_SCHEMA
from balances_etl.settings import DEFAULT_LOCK_TIMEOUT_SECONDS, packaged_sql
from balances_etl.storage.warehouse import (
    ATTACH_ALIAS,
    PreviousSync,
    reading_published,
    warehouse_path,
    writer_lock,
    writer_path,
)
from balances_etl.storage.warehouse_store import restore_published


def _query(name: str) -> str:
    return packaged_sql("transactions", name)


# The published warehouse when it holds the syncs' tables; None when it does not (no sync before).
PublishedSyncs = duckdb.DuckDBPyConnection | None


@contextmanager
def published_syncs(data_dir: Path) -> Iterator[PublishedSyncs]:
    """A read-only connection to the published warehouse when it holds the syncs' tables, else None."""
    if not warehouse_path(data_dir).exists():
        with writer_lock(data_dir, DEFAULT_LOCK_TIMEOUT_SECONDS):
            restore_published(warehouse_path(data_dir), writer_path(data_dir))
    if not warehouse_path(data_dir).exists():
        yield None
        return
    with reading_published(data_dir) as con:
        has_syncs = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
            [ATTACH_ALIAS, Table.TRANSACTION_SYNCS.value],
        ).fetchall() == [(1,)]
        yield con if has_syncs else None


def _later_syncs(syncs: duckdb.DuckDBPyConnection, day: date) -> bool:
    """Whether a sync on or after ``day`` is loaded (a re-run or replay of an earlier day). If not (a
    daily sync), each transaction's status after the syncs before ``day`` is its current one, and
    the ``_latest`` queries read it from the transactions table instead of aggregating the whole
    status history again (a scan growing with every day loaded); both give the same rows."""
    query = "SELECT count(*) FROM transaction_status_history WHERE snapshot_date >= ?"
    return syncs.execute(query, [day]).fetchall() != [(0,)]


def previous_transaction_sync(syncs: PublishedSyncs, day: date) -> PreviousSync | None:
    """The latest sync before ``day`` in the published warehouse; None without one (or a warehouse)."""
    if syncs is None:
        return None
    if _later_syncs(syncs, day):
        rows = syncs.execute(_query("previous_sync"), {"day": day}).fetchall()
        return PreviousSync(*rows[0]) if rows else None
    latest = syncs.execute(
        "SELECT snapshot_date, observed_at FROM transaction_syncs WHERE snapshot_date < ? ORDER BY snapshot_date DESC LIMIT 1",
        [day],
    ).fetchall()
    if not latest:
        return None
    [(snapshot_date, observed_at)] = latest
    [(newest_created, earliest_pending)] = syncs.execute(
        _query("previous_sync_latest"), {"previous": snapshot_date}
    ).fetchall()
    return PreviousSync(snapshot_date, observed_at, newest_created, earliest_pending)


def known_transactions(syncs: PublishedSyncs, day: date, *, since: datetime | None, horizon: datetime | None) -> pa.Table:
    """The transactions the syncs before ``day`` saw, created at or after ``since`` (None: all), with
    their status after those syncs and whether they lie inside ``horizon`` (``KNOWN_SCHEMA``)."""
    if syncs is None:
        return KNOWN_SCHEMA.empty_table()
    params = {"since": since, "horizon": horizon}
    if _later_syncs(syncs, day):
        query, params = _query("known_before"), {"day": day, **params}
    else:
        query = _query("known_before_latest")
    known = syncs.sql(query, params=params).to_arrow_table()
    return known.cast(KNOWN_SCHEMA)


def transactions_day_summary(data_dir: Path, day: date) -> dict[str, int | None]:
    """The published warehouse's transactions tables after ``day``'s sync (``sql/transactions/day_summary.sql``)."""
    with published_syncs(data_dir) as syncs:
        if syncs is None:
            raise FileNotFoundError(f"the published warehouse holds no transactions sync (looking for {day})")
        cursor = syncs.execute(_query("day_summary"), {"day": day})
        names = [column[0] for column in cursor.description]
        return dict(zip(names, cursor.fetchone(), strict=True))
