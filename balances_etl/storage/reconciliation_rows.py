"""The reconciliation rows every load stores, for the dates it can change.

Two questions are too costly to answer from scratch over years of history: the roll-forward of
every window (it sums every transaction again) and the five checks of ``v_reconciliation_breaks``
that read each key's history (gaps, currencies gone, stale totals, unexplained roll-forwards and
pending outflows). Their rows only change on the dates a load touches, so the load recomputes those
dates inside its transaction and stores them: ``rollforward_windows`` (what ``v_balance_rollforward``
shows) and ``history_breaks`` (read by ``v_reconciliation_breaks``). The definitions stay in SQL:
the table macro ``rollforward_since`` in ``sql/10_v_balance_rollforward.sql`` and
``sql/queries/history_breaks_since.sql``. For the breaks, the daily case (one new day right after the
last) takes ``history_breaks_on_dates.sql``, which restates them for two dates with per-key
aggregates. Anything else (a day loaded out of order or replayed, a key back after an absence, a
missed day) recomputes from the earliest date it can change; an upgrade of the SQL or a new
``stale_after_days`` recomputes everything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path

import duckdb

from balances_etl.domain.names import Table, View
from balances_etl.settings import packaged_sql

# what the stored rows are computed from: the macro and the views the breaks' definition reads
_MACRO = "rollforward_since"
_VIEWS_READ = (View.BALANCE_CHANGES, View.SNAPSHOT_GAPS, View.CURRENCY_CHANGES, View.PENDING_EXPLAINED)


class Refresh(StrEnum):
    """How a load brought the stored rows up to date."""

    NOTHING = "nothing"  # nothing to compute: no row can be dated on or after the earliest changed date
    DAY = "day"  # the latest day and the snapshot date before it (per-key aggregates for the breaks)
    SINCE = "since"  # every date from the earliest one the load can change, through the views
    ALL = "all"  # every date: the SQL or the settings changed, or the tables are new
    UNDEFINED = "undefined"  # the SQL directory (BALANCES_ETL_SQL_DIR) does not define them: none stored


@dataclass(frozen=True)
class Refreshed:
    how: Refresh
    since: date | None  # the earliest date recomputed (None: nothing)


def _query(name: str) -> str:
    return packaged_sql("queries", name)


def earliest_affected(con: duckdb.DuckDBPyConnection, changed: Sequence[date]) -> date | None:
    """The earliest date whose stored rows a load of ``changed`` can change (None: none can).

    Call it before the load replaces anything and again after: each sees keys the other cannot.
    """
    if not changed:
        return None
    return con.execute(_query("history_breaks_floor"), [sorted(changed)]).fetchone()[0]


def made_from(con: duckdb.DuckDBPyConnection, fingerprint: str) -> bool:
    """Whether the warehouse's views and stored rows were made from what ``fingerprint`` stands for
    (``fingerprint_of``): then a load need not apply the views again."""
    return con.execute(f"SELECT fingerprint FROM {Table.RECONCILIATION_ROWS_STATE}").fetchall() == [(fingerprint,)]


def refresh(
    con: duckdb.DuckDBPyConnection, changed: Sequence[date], affected_before: date | None, fingerprint: str
) -> Refreshed:
    """Recompute the stored rows a load of ``changed`` can change; run inside the load's transaction,
    after the view files ``fingerprint`` was taken of are applied. ``affected_before`` is
    ``earliest_affected`` taken before the load."""
    everything = not made_from(con, fingerprint)
    if everything and not _defined(con):
        con.execute(f"DROP TABLE IF EXISTS {Table.ROLLFORWARD_WINDOWS}")  # created by the roll-forward's file
        for table in (Table.HISTORY_BREAKS, Table.RECONCILIATION_ROWS_STATE):
            con.execute(f"DELETE FROM {table}")
        return Refreshed(Refresh.UNDEFINED, None)
    floors = [d for d in (affected_before, earliest_affected(con, changed)) if d is not None]
    if not everything and not floors:
        return Refreshed(Refresh.NOTHING, None)
    first, before_latest, latest = con.execute(
        f"SELECT min(snapshot_date), max(snapshot_date) FILTER (WHERE snapshot_date < (SELECT max(snapshot_date) "
        f"FROM {Table.BALANCE_SNAPSHOTS})), max(snapshot_date) FROM {Table.BALANCE_SNAPSHOTS}"
    ).fetchone()
    removed_from = date.min if everything else min(floors)  # rows from here on may be wrong now
    # No row is dated before the first snapshot or after the last.
    since = max(removed_from, first) if first is not None else removed_from
    nothing = latest is None or since > latest
    # Only the latest day and the one before it can change, and no day lies between them.
    day_only = not nothing and (before_latest is None or (since >= before_latest and latest - before_latest == timedelta(days=1)))
    if day_only:
        since = before_latest or latest
    if everything:
        # Recreated: a new version of the macro may have changed its columns.
        con.execute(f"CREATE OR REPLACE TABLE {Table.ROLLFORWARD_WINDOWS} AS SELECT * FROM {_MACRO}(?)", [since])
        con.execute(f"DELETE FROM {Table.HISTORY_BREAKS}")
        con.execute(f"DELETE FROM {Table.RECONCILIATION_ROWS_STATE}")
        con.execute(f"INSERT INTO {Table.RECONCILIATION_ROWS_STATE} VALUES (?)", [fingerprint])
    else:
        con.execute(f"DELETE FROM {Table.ROLLFORWARD_WINDOWS} WHERE period_end_date >= ?", [removed_from])
        con.execute(f"DELETE FROM {Table.HISTORY_BREAKS} WHERE snapshot_date >= ?", [removed_from])
        if not nothing:
            con.execute(f"INSERT INTO {Table.ROLLFORWARD_WINDOWS} SELECT * FROM {_MACRO}(?)", [since])
    # the breaks after the roll-forward: they read it (through v_balance_rollforward)
    if nothing:
        how = Refresh.NOTHING
    elif day_only:
        con.execute(f"INSERT INTO {Table.HISTORY_BREAKS} {_query('history_breaks_on_dates')}", [latest])
        how = Refresh.DAY
    else:
        con.execute(f"INSERT INTO {Table.HISTORY_BREAKS} {_query('history_breaks_since')}", [since])
        how = Refresh.SINCE
    return Refreshed(Refresh.ALL if everything else how, None if nothing else since)


def recompute_all(con: duckdb.DuckDBPyConnection, views: Sequence[Path]) -> Refreshed:
    """Store every row from scratch (a warehouse built outside the loader from the view files
    ``views``, as the tests build them)."""
    con.execute(f"DELETE FROM {Table.RECONCILIATION_ROWS_STATE}")
    return refresh(con, [], None, fingerprint_of(con, views))


def _defined(con: duckdb.DuckDBPyConnection) -> bool:
    views = {name for (name,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    macros = {name for (name,) in con.execute("SELECT function_name FROM duckdb_functions() WHERE NOT internal").fetchall()}
    return views.issuperset(_VIEWS_READ) and _MACRO in macros


def fingerprint_of(con: duckdb.DuckDBPyConnection, views: Sequence[Path]) -> str:
    """What the views and the stored rows depend on besides the data: the view files (the views and
    macros they create), the queries that define the rows, the settings."""
    digest = hashlib.sha256()
    for name in ("history_breaks_since", "history_breaks_on_dates", "history_breaks_floor"):
        digest.update(_query(name).encode())
    for view in views:
        digest.update(f"\0{view.name}\0".encode())
        digest.update(view.read_bytes())
    digest.update(repr(con.execute(f"SELECT * FROM {Table.RECONCILIATION_SETTINGS} ORDER BY ALL").fetchall()).encode())
    return digest.hexdigest()
