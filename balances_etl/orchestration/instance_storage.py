"""Dagster's SQLite run, event and schedule storage, created once and reusing SQLAlchemy engines.

Wired in dagster_home/dagster.yaml; they apply to the SQLite instance only (the PostgreSQL one,
deploy/dagster-postgres.yaml, uses dagster-postgres's own classes).

Created once: Dagster creates a SQLite storage's tables and stamps its alembic revision the first
time a process opens it, without a lock, so processes opening a new DAGSTER_HOME at the same moment
raced ("Version table 'alembic_version' has more than one head present", "table ... already
exists"). Each class here creates its database under ``instance_lock``, an exclusive ``flock`` on
``$DAGSTER_HOME/.instance.lock`` (re-entrant within a process), whoever opens the instance: the
CLI, ``dagster job execute``, the daemon, the webserver.

Dagster's SQLite storages build a new SQLAlchemy engine, and open a new SQLite connection, for
every use, so every recorded event compiles its INSERT afresh and re-reads the database schema (a
daily run of both domains records about 90 events and opens about 375 connections). These
subclasses keep one engine per database file and process, with a small pool of open connections
(``_POOLED_CONNECTIONS``; more open while threads need them, closed when returned). An idle pooled
connection holds no lock between transactions, so other processes see no difference. The files,
schema and locking are Dagster's own, unchanged; a home written by either class can be read by the
other.

What it saves, measured on ``balances-etl materialize --date D`` against the embedded emulator
(whole process, a Dagster home that has already run the previous day, these classes vs Dagster's
own storages in alternating pairs, 2 shared cores): a 1-balance run about 6 % faster (median of
the pair ratios 0.93 over 61 pairs; 0.92-0.98 over six batches of 15-61 pairs; 0.13-0.19 s of
2.5-3.4 s, about the same in CPU time), a 1,000-balance run about 6 % (0.3 s CPU), the first run
on an empty home about 1 %. Measured Dec 2026 on dagster 1.13.27: re-measure before re-verifying.
Pooling the connections as well, on the daily job of both domains (``balances-etl materialize``
with 1 balance, alternating runs with and without the pool on one home): 3.50 s vs 3.99 s median
wall, the run itself 1.07 s vs 1.46 s (Dagster's own timestamps); against Dagster's own storages
(two homes, alternating, 11 pairs): 3.35 s vs 3.91 s, median pair ratio 0.84. 2026-12-04.

They override private Dagster API (``_connect``, ``_initdb``, ``_db_lock``, ``_initialized_dbs``,
``conn_string_for_shard``, ``connect``, ``_conn_string``, ``from_local``), so they refuse to start
on any Dagster but the one they were verified against (``VERIFIED_DAGSTER_VERSION``), or when that
API's shape changed: ``UnverifiedDagsterError`` says which, and what to do. Without them (delete
``run_storage`` and ``event_log_storage`` from dagster.yaml) Dagster uses its own classes on the
same files.
"""

from __future__ import annotations

import fcntl
import inspect
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import dagster
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

# The one Dagster release these subclasses were checked against (tests/test_instance_storage.py).
VERIFIED_DAGSTER_VERSION = "1.13.27"
ENGINES_KEPT = 16  # event shards are one file per run; a long-lived webserver must not keep them all
_POOLED_CONNECTIONS = 2  # kept open per engine: a run's events come from one or two threads at a time


class UnverifiedDagsterError(RuntimeError):
    """The installed Dagster is not the one the engine-reusing storages were verified against."""


def _dagster_yaml() -> str:
    home = os.environ.get("DAGSTER_HOME")
    return os.path.join(os.path.abspath(home), "dagster.yaml") if home else "$DAGSTER_HOME/dagster.yaml"


def unverified_message(problems: Sequence[str]) -> str:
    """What a user reads when the guard fires: the versions, what changed, and the ways out."""
    installed = getattr(dagster, "__version__", "unknown")
    config = _dagster_yaml()
    versions = (
        f"was verified against dagster {VERIFIED_DAGSTER_VERSION} only, and dagster {installed} is installed."
        if installed != VERIFIED_DAGSTER_VERSION
        else f"was verified against dagster {VERIFIED_DAGSTER_VERSION}, which is installed, but not in this shape."
    )
    lines = [
        f"balances-etl's SQLite run/event storage (balances_etl.orchestration.instance_storage, named in {config}) "
        f"{versions} It overrides private Dagster internals, which may change in any release without notice.",
        *(["What changed:", *(f"  - {problem}" for problem in problems)] if problems else [
            "The names and parameters it uses look unchanged, but what they do was not re-checked."]),
        "Do one of:",
        f"  - install the verified release: pip install 'dagster=={VERIFIED_DAGSTER_VERSION}' "
        f"'dagster-webserver=={VERIFIED_DAGSTER_VERSION}' 'dagster-dg-cli=={VERIFIED_DAGSTER_VERSION}';",
        f"  - or use Dagster's own SQLite storage (same files, nothing to migrate): delete the run_storage and "
        f"event_log_storage sections from {config};",
        f"  - or re-verify the subclasses against dagster {installed} (tests/test_instance_storage.py) and set "
        "VERIFIED_DAGSTER_VERSION in balances_etl/orchestration/instance_storage.py.",
    ]
    return "\n".join(lines)


try:  # private modules: a release that moves them must fail with the same message, not an ImportError
    from dagster._config import Field, StringSource
    from dagster._core.storage.event_log import SqliteEventLogStorage
    from dagster._core.storage.runs import SqliteRunStorage
    from dagster._core.storage.schedules import SqliteScheduleStorage
    from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
    from dagster._serdes import ConfigurableClassData
except ImportError as err:  # pragma: no cover - only on another Dagster
    raise UnverifiedDagsterError(unverified_message([f"cannot import {err.name or err}: {err}"])) from err

_OPTIONAL_BASE_DIR = {"base_dir": Field(StringSource, is_required=False)}

# The private (and public) API the subclasses call or override, with the parameters they rely on.
_EXPECTED_METHODS: tuple[tuple[type, str, tuple[str, ...]], ...] = (
    (SqliteEventLogStorage, "__init__", ("self", "base_dir", "inst_data")),
    (SqliteEventLogStorage, "_connect", ("self", "shard")),
    (SqliteEventLogStorage, "_initdb", ("self", "engine", "for_index_shard")),
    (SqliteEventLogStorage, "conn_string_for_shard", ("self", "shard_name")),
    (SqliteRunStorage, "__init__", ("self", "conn_string", "inst_data")),
    (SqliteRunStorage, "connect", ("self",)),
    (SqliteRunStorage, "from_local", ("base_dir", "inst_data")),  # a classmethod: cls is bound
)
# Attributes set by the base classes' __init__ that the overrides read.
_EXPECTED_EVENT_LOG_ATTRIBUTES = ("_db_lock", "_initialized_dbs")
_EXPECTED_RUN_ATTRIBUTES = ("_conn_string",)


def _parameters(function: Callable[..., Any]) -> tuple[str, ...] | None:
    try:
        return tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return None


def private_api_problems() -> list[str]:
    """How the private API these classes use differs from the verified one (names and parameters)."""
    problems = []
    for cls, name, expected in _EXPECTED_METHODS:
        where = f"{cls.__module__}.{cls.__name__}.{name}"
        function = getattr(cls, name, None)
        if not callable(function):
            problems.append(f"{where} no longer exists")
        elif (found := _parameters(function)) != expected:
            problems.append(f"{where} takes ({', '.join(found or ('?',))}), expected ({', '.join(expected)})")
    return problems


def _missing_attributes(storage: object, names: Sequence[str]) -> list[str]:
    base = type(storage).__mro__[1]
    return [f"{base.__module__}.{base.__name__} no longer sets {name}" for name in names if not hasattr(storage, name)]


def check_private_api(instance_problems: Sequence[str] = ()) -> None:
    """Raise ``UnverifiedDagsterError`` (the message a user sees) unless the private API is as verified."""
    problems = [*private_api_problems(), *instance_problems]
    if problems or getattr(dagster, "__version__", None) != VERIFIED_DAGSTER_VERSION:
        raise UnverifiedDagsterError(unverified_message(problems))


LOCK_FILE_NAME = ".instance.lock"
_locks_held: dict[str, int] = {}  # lock file -> depth, in this process
_locks_guard = threading.RLock()  # held while a lock is: threads of one process queue too


def lock_path(home: str | os.PathLike[str] | None = None) -> str:
    """The instance's lock file: in ``home``, else in $DAGSTER_HOME."""
    folder = home if home is not None else os.environ.get("DAGSTER_HOME")
    if not folder:
        raise RuntimeError("DAGSTER_HOME is not set: no instance to lock")
    return os.path.join(os.path.abspath(folder), LOCK_FILE_NAME)


@contextmanager
def instance_lock(home: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """Exclusive across processes (``flock``, released if the holder dies) and re-entrant in one.

    Held while an instance's storage is created or migrated, never while a run executes.
    """
    path = lock_path(home)
    with _locks_guard:
        if path in _locks_held:  # this process holds it already (open_instance, then a storage class)
            _locks_held[path] += 1
            try:
                yield
            finally:
                _locks_held[path] -= 1
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _locks_held[path] = 1
            try:
                yield
            finally:
                del _locks_held[path]
        finally:
            os.close(fd)  # releases the flock


def _lock_home(base_dir: str) -> str:
    """Where a storage's lock lives: $DAGSTER_HOME when set (one lock per instance), else its own folder."""
    return os.environ.get("DAGSTER_HOME") or base_dir


def _under_dagster_home(*parts: str) -> str:
    """Dagster's default location for a storage, when dagster.yaml gives no base_dir."""
    return os.path.join(os.path.abspath(os.environ["DAGSTER_HOME"]), *parts)


class _Engines:
    """Pooled engines by (process, database URL), least recently used dropped first (and disposed)."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._engines: OrderedDict[tuple[int, str], Engine] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, url: str, connect_args: Mapping[str, Any] | None = None) -> Engine:
        key = (os.getpid(), url)  # an engine must not cross a fork
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                # check_same_thread off: the pool hands a connection to one thread at a time, not
                # always the thread that opened it; max_overflow=-1: never wait for a connection.
                engine = self._engines[key] = create_engine(
                    url, poolclass=QueuePool, pool_size=_POOLED_CONNECTIONS, max_overflow=-1, pool_use_lifo=True,
                    connect_args={**(connect_args or {}), "check_same_thread": False},
                )
                while len(self._engines) > self._keep:
                    (pid, _url), evicted = self._engines.popitem(last=False)
                    evicted.dispose(close=pid == os.getpid())  # a forked child leaves its parent's connections be
            self._engines.move_to_end(key)
            return engine


class SqliteEventLogStorageReusingEngines(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` (one SQLite file per run plus an index) with engines reused."""

    def __init__(self, base_dir: str | None = None, inst_data: ConfigurableClassData | None = None) -> None:
        check_private_api()
        self._engines = _Engines(ENGINES_KEPT)
        base_dir = base_dir or _under_dagster_home("history", "runs")
        with instance_lock(_lock_home(base_dir)):  # creates the index shard when new
            super().__init__(base_dir, inst_data)
        check_private_api(_missing_attributes(self, _EXPECTED_EVENT_LOG_ATTRIBUTES))

    @classmethod
    def config_type(cls) -> Mapping[str, Field]:
        return _OPTIONAL_BASE_DIR

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]):  # type: ignore[override]
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engines.get(
                self.conn_string_for_shard(shard), connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
            )
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn


class SqliteRunStorageReusingEngines(SqliteRunStorage):
    """``SqliteRunStorage`` (``history/runs.db``) with its engine reused."""

    _engines = _Engines(2)

    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None) -> None:
        check_private_api()
        super().__init__(conn_string, inst_data)
        check_private_api(_missing_attributes(self, _EXPECTED_RUN_ATTRIBUTES))

    @classmethod
    def config_type(cls) -> Mapping[str, Field]:
        return _OPTIONAL_BASE_DIR

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]):  # type: ignore[override]
        check_private_api()  # before from_local writes anything
        base_dir = config_value.get("base_dir") or _under_dagster_home("history")
        with instance_lock(_lock_home(base_dir)):  # creates runs.db when new
            return cls.from_local(base_dir, inst_data=inst_data)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._engines.get(self._conn_string).connect() as conn, conn.begin():
            yield conn


class SqliteScheduleStorageCreatedOnce(SqliteScheduleStorage):
    """Dagster's ``SqliteScheduleStorage`` (``schedules/schedules.db``), created under ``instance_lock``.

    Only public API (``from_config_value``, ``from_local``): no version guard needed.
    """

    @classmethod
    def config_type(cls) -> Mapping[str, Field]:
        return _OPTIONAL_BASE_DIR

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]):  # type: ignore[override]
        base_dir = config_value.get("base_dir") or _under_dagster_home("schedules")
        with instance_lock(_lock_home(base_dir)):
            return cls.from_local(base_dir, inst_data=inst_data)
