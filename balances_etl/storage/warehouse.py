"""The DuckDB warehouse analysts query, loaded from the Parquet store of record.

Why two database files: DuckDB's file lock lets a read-only holder (an analyst's notebook) block
any read-write open of the same file. So the pipeline writes only its private
``state/warehouse.writer.duckdb`` (under an exclusive ``flock``, one writer at a time), checkpoints
it, and publishes a copy onto ``warehouse.duckdb`` with ``os.replace``. Analysts holding the old
file keep reading a consistent old snapshot; every new connection sees the new one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

from balances_etl.domain.names import Table
from balances_etl.domain import transactions
from balances_etl.domain.balances import COLUMN_NAMES, COLUMNS, Column
from balances_etl.settings import DEFAULT_STALE_AFTER_DAYS, PACKAGED_SQL_DIR
from balances_etl.storage.files import atomic_replace, clone_file, exclusive_lock, remove_stale_temps
from balances_etl.storage.ledger import replace_ledger_table, write_reconciliation_settings
from balances_etl.storage.parquet import partition_dates, partition_path, partition_rows

WAREHOUSE_FILE = "warehouse.duckdb"
STATE_DIR = "state"
WRITER_FILE = "warehouse.writer.duckdb"
LOCK_FILE = "warehouse.lock"
ATTACH_ALIAS = "warehouse"
# Row groups a quarter of DuckDB's default: a day's insert then writes compressed row groups as it
# goes (on all threads) instead of compressing one big one at COMMIT: 100,000 rows load in 0.18 s
# instead of 0.25 s, for a file 3% larger. Must be a multiple of DuckDB's vector size (2,048).
_ROW_GROUP_ROWS = 32_768

_COLUMN_LIST = ", ".join(COLUMN_NAMES)


def _create_table(name: str, columns: Sequence[Column]) -> str:
    """DDL of a table that holds a domain's Parquet partitions, from the domain's column table."""
    definitions = ", ".join(f"{c.name} {c.duckdb_type}{'' if c.nullable else ' NOT NULL'}" for c in columns)
    return f"CREATE TABLE IF NOT EXISTS {name} ({definitions})"


# The tables of partitions, from their domains' columns; derived tables are in sql/tables/.
_CREATE_TABLES = (
    _create_table(Table.BALANCE_SNAPSHOTS, COLUMNS),
    _create_table(Table.TRANSACTION_OBSERVATIONS, transactions.COLUMNS),
)


def _differs(amount: str, text: str) -> str:
    """SQL: the DECIMAL(38,18) ``amount`` is not exactly the number written in ``text``.

    Parsing the text is exact only while it has at most 18 fraction digits (DuckDB's cast rounds
    the rest away silently), so longer fractions count as different; so does text that does not
    parse. Parsing text is about three times cheaper than printing every DECIMAL back to text.
    """
    parsed = f"TRY_CAST({text} AS DECIMAL(38,18))"
    too_long = f"(strpos({text}, '.') > 0 AND length({text}) - strpos({text}, '.') > 18)"
    return f"({amount} IS NOT NULL AND ({parsed} IS NULL OR {parsed} <> {amount} OR {too_long}))"


# Rows per day and rows whose DECIMAL differs from the exact string it was parsed from.
_VERIFY = f"""
SELECT snapshot_date, count(*),
       count(*) FILTER (WHERE {_differs('total_amount', 'total')})
     + count(*) FILTER (WHERE {_differs('available_amount', 'available')})
FROM {Table.BALANCE_SNAPSHOTS}
WHERE list_contains(?, snapshot_date)
GROUP BY snapshot_date
"""

_VERIFY_ROWS = f"""
SELECT snapshot_date, count(*), 0 FROM {Table.BALANCE_SNAPSHOTS} WHERE list_contains(?, snapshot_date) GROUP BY snapshot_date
"""


@dataclass(frozen=True)
class LoadResult:
    snapshot_date: date
    rows: int
    total_rows: int
    partitions: int
    ledger_rows: int
    published_path: Path
    publish_seconds: float
    views_applied: list[str]


@dataclass(frozen=True)
class RebuildResult:
    rows: int
    partitions: int
    ledger_rows: int
    published_path: Path
    publish_seconds: float
    views_applied: list[str]


class WarehouseLoadError(RuntimeError):
    """A load was refused or failed verification; it was rolled back and nothing was published."""


@dataclass(frozen=True)
class _Written:
    rows: int
    total_rows: int
    partitions: int
    ledger_rows: int
    views_applied: list[str]


def warehouse_path(data_dir: Path) -> Path:
    """The published, analyst-facing database; only ever replaced whole, never opened read-write."""
    return data_dir / WAREHOUSE_FILE


def writer_path(data_dir: Path) -> Path:
    """The pipeline's private database; analysts never open it, so their locks never block a load."""
    return data_dir / STATE_DIR / WRITER_FILE


def _wal(database: Path) -> Path:
    return database.with_name(database.name + ".wal")


def connect_read_only(data_dir: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the current published warehouse.

    Attached into a fresh in-memory instance because ``duckdb.connect(path)`` reuses an instance
    already open on that path in this process, which still shows the replaced (old) file.
    """
    path = warehouse_path(data_dir).resolve()
    if not path.exists():
        raise FileNotFoundError(f"no published warehouse at {path}; run a load first")
    return _attached(path, "READ_ONLY")


def _attached(path: Path, options: str) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB with ``path`` attached (with ``options``) and in use."""
    con = duckdb.connect()
    quoted = str(path).replace("'", "''")
    con.execute(f"ATTACH '{quoted}' AS {ATTACH_ALIAS} ({options})")
    con.execute(f"USE {ATTACH_ALIAS}")
    return con


def load_partition(
    data_dir: Path,
    snapshot_date: date,
    sql_dir: Path,
    *,
    lock_timeout_seconds: float = 600,
    stale_after_days: int = DEFAULT_STALE_AFTER_DAYS,
) -> LoadResult:
    """Replace one day in the warehouse from its Parquet partition, refresh ledger and views, publish.

    All-or-nothing: any failure (bad view, row-count or exactness mismatch, kill) leaves both the
    writer database and the published warehouse as they were. Safe to re-run.
    """
    source = partition_path(data_dir, snapshot_date)
    if not source.exists():
        raise FileNotFoundError(f"no Parquet partition for {snapshot_date}: {source}")
    with _writer_lock(data_dir, lock_timeout_seconds):
        _seed_writer(data_dir)
        written = _write(writer_path(data_dir), data_dir, sql_dir, [snapshot_date], stale_after_days)
        publish_seconds = _publish(data_dir)
    return LoadResult(
        snapshot_date=snapshot_date,
        rows=written.rows,
        total_rows=written.total_rows,
        partitions=written.partitions,
        ledger_rows=written.ledger_rows,
        published_path=warehouse_path(data_dir),
        publish_seconds=publish_seconds,
        views_applied=written.views_applied,
    )


def rebuild_from_parquet(
    data_dir: Path,
    sql_dir: Path,
    *,
    lock_timeout_seconds: float = 600,
    stale_after_days: int = DEFAULT_STALE_AFTER_DAYS,
) -> RebuildResult:
    """Recreate the writer database from every Parquet partition and publish it (disaster recovery).

    The new database is built beside the old one and swapped in only once complete and verified.
    """
    days = partition_dates(data_dir)
    if not days:
        raise FileNotFoundError(f"no Parquet partitions under {data_dir} to rebuild from")
    with _writer_lock(data_dir, lock_timeout_seconds):
        with _replacing_database(writer_path(data_dir)) as tmp:
            written = _write(tmp, data_dir, sql_dir, days, stale_after_days)
        publish_seconds = _publish(data_dir)
    return RebuildResult(
        rows=written.rows,
        partitions=written.partitions,
        ledger_rows=written.ledger_rows,
        published_path=warehouse_path(data_dir),
        publish_seconds=publish_seconds,
        views_applied=written.views_applied,
    )


@contextmanager
def _writer_lock(data_dir: Path, timeout_seconds: float) -> Iterator[None]:
    """One writer at a time across processes; leftovers of killed writers are removed under the lock."""
    with exclusive_lock(data_dir / STATE_DIR / LOCK_FILE, timeout_seconds):
        remove_stale_temps(writer_path(data_dir))
        remove_stale_temps(warehouse_path(data_dir))
        yield


@contextmanager
def _replacing_database(target: Path) -> Iterator[Path]:
    """Yield a temporary database path to fill; then atomically put it in place of ``target``."""
    with atomic_replace(target) as tmp:
        yield tmp
        # A WAL left beside the old file would be replayed against the new one, and DuckDB then
        # refuses to open it ("WAL does not match database file").
        _wal(target).unlink(missing_ok=True)


def _seed_writer(data_dir: Path) -> None:
    """First run after an upgrade: start the writer from the published warehouse rather than empty."""
    writer, published = writer_path(data_dir), warehouse_path(data_dir)
    if writer.exists() or not published.exists():
        return
    with _replacing_database(writer) as tmp:
        clone_file(published, tmp)


def _publish(data_dir: Path) -> float:
    """Copy (reflink when possible) the checkpointed writer over the published warehouse; returns seconds."""
    started = time.perf_counter()
    with _replacing_database(warehouse_path(data_dir)) as tmp:
        clone_file(writer_path(data_dir), tmp)
    return time.perf_counter() - started


def _write(
    database: Path, data_dir: Path, sql_dir: Path, days: Sequence[date], stale_after_days: int
) -> _Written:
    """In one transaction replace ``days`` from Parquet, reload ledger and settings, reapply views, verify."""
    sources = [partition_path(data_dir, day).resolve() for day in days]
    expected = {day: partition_rows(path) for day, path in zip(days, sources, strict=True)}
    views = sorted(sql_dir.glob("*.sql"))
    con = _attached(database, f"ROW_GROUP_SIZE {_ROW_GROUP_ROWS}")
    try:
        for create in _CREATE_TABLES:
            con.execute(create)
        for tables in sorted((PACKAGED_SQL_DIR / "tables").glob("*.sql")):
            con.execute(tables.read_text(encoding="utf-8"))
        _check_table_columns(con, database)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"DELETE FROM {Table.BALANCE_SNAPSHOTS} WHERE list_contains(?, snapshot_date)", [list(days)])
            con.execute(
                f"INSERT INTO {Table.BALANCE_SNAPSHOTS} ({_COLUMN_LIST}) "
                f"SELECT {_COLUMN_LIST} FROM read_parquet(?, hive_partitioning = false)",
                [[str(path) for path in sources]],
            )
            ledger_rows = replace_ledger_table(con, data_dir / "ledger")
            _check_transaction_alive(con, "replace_ledger_table")
            write_reconciliation_settings(con, stale_after_days)
            for view in views:
                _apply_view(con, view)
            _verify(con, expected)
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise
        # After an error swallowed inside the transaction, COMMIT quietly rolls back: check it stuck.
        # Row counts suffice here: the values were verified exact inside the transaction.
        _verify(con, expected, exactness=False)
        total_rows, partitions = con.execute(
            f"SELECT count(*), count(DISTINCT snapshot_date) FROM {Table.BALANCE_SNAPSHOTS}"
        ).fetchone()
        con.execute("CHECKPOINT")
    finally:
        con.close()
    if _wal(database).exists():
        raise WarehouseLoadError(f"{database} still has a WAL after CHECKPOINT; refusing to publish a partial file")
    return _Written(
        rows=sum(expected.values()),
        total_rows=total_rows,
        partitions=partitions,
        ledger_rows=ledger_rows,
        views_applied=[view.name for view in views],
    )


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Undo the open transaction; a COMMIT that itself failed has already ended it, which is fine."""
    with suppress(duckdb.TransactionException):
        con.execute("ROLLBACK")


def _check_transaction_alive(con: duckdb.DuckDBPyConnection, step: str) -> None:
    """Blame the right step when code we call swallowed an error (DuckDB then aborts the transaction)."""
    try:
        con.execute("SELECT 1")
    except duckdb.TransactionException as error:
        raise WarehouseLoadError(f"{step} hid an error that aborted the load's transaction: {error}") from error


def _check_table_columns(con: duckdb.DuckDBPyConnection, database: Path) -> None:
    """Refuse to load into a table of an older schema; the fix is ``rebuild_from_parquet``."""
    names = tuple(row[0] for row in con.execute(f"DESCRIBE {Table.BALANCE_SNAPSHOTS}").fetchall())
    if names != COLUMN_NAMES:
        raise WarehouseLoadError(
            f"{database}: {Table.BALANCE_SNAPSHOTS} has columns {names}, expected {COLUMN_NAMES}; run rebuild_from_parquet"
        )


def _apply_view(con: duckdb.DuckDBPyConnection, view: Path) -> None:
    try:
        con.execute(view.read_text())
    except duckdb.Error as error:
        raise WarehouseLoadError(f"view file {view} failed: {error}") from error


def _verify(con: duckdb.DuckDBPyConnection, expected: dict[date, int], *, exactness: bool = True) -> None:
    """Every loaded day holds exactly its Parquet row count and (``exactness``) its DECIMALs equal their exact strings."""
    query = _VERIFY if exactness else _VERIFY_ROWS
    actual = {day: (rows, inexact) for day, rows, inexact in con.execute(query, [list(expected)]).fetchall()}
    problems = []
    for day, rows in expected.items():
        loaded, inexact = actual.get(day, (0, 0))
        if loaded != rows:
            problems.append(f"{day}: {loaded} rows in DuckDB, {rows} in Parquet")
        if inexact:
            problems.append(f"{day}: {inexact} DECIMAL values differ from their exact text")
    if problems:
        raise WarehouseLoadError("warehouse verification failed: " + "; ".join(problems))
