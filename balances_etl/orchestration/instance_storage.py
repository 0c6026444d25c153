"""Dagster's SQLite run and event storage, reusing SQLAlchemy engines (wired in dagster_home/dagster.yaml).

Dagster's SQLite storages build a new SQLAlchemy engine for every connection, so every recorded
event compiles its INSERT afresh: a daily run records about 55 events, and that was a fifth of a
one-balance run's CPU. These subclasses keep one engine per database file and process (still
without a connection pool: each use opens and closes its own SQLite connection, as before), so
statements compile once. The files, schema and locking are Dagster's own, unchanged; a home
written by either class can be read by the other. dagster is pinned exactly in pyproject.toml
because ``_connect``/``connect`` are not public API.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from dagster._config import Field, StringSource
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.runs import SqliteRunStorage
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes import ConfigurableClassData
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

ENGINES_KEPT = 16  # event shards are one file per run; a long-lived webserver must not keep them all
_OPTIONAL_BASE_DIR = {"base_dir": Field(StringSource, is_required=False)}


def _under_dagster_home(*parts: str) -> str:
    """Dagster's default location for a storage, when dagster.yaml gives no base_dir."""
    return os.path.join(os.path.abspath(os.environ["DAGSTER_HOME"]), *parts)


class _Engines:
    """Engines by (process, database URL), least recently used dropped first (and disposed)."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._engines: OrderedDict[tuple[int, str], Engine] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, url: str, **options: Any) -> Engine:
        key = (os.getpid(), url)  # an engine must not cross a fork
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                engine = self._engines[key] = create_engine(url, poolclass=NullPool, **options)
                while len(self._engines) > self._keep:
                    self._engines.popitem(last=False)[1].dispose()
            self._engines.move_to_end(key)
            return engine


class SqliteEventLogStorageReusingEngines(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` (one SQLite file per run plus an index) with engines reused."""

    def __init__(self, base_dir: str | None = None, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines = _Engines(ENGINES_KEPT)
        super().__init__(base_dir or _under_dagster_home("history", "runs"), inst_data)

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

    @classmethod
    def config_type(cls) -> Mapping[str, Field]:
        return _OPTIONAL_BASE_DIR

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]):  # type: ignore[override]
        return cls.from_local(config_value.get("base_dir") or _under_dagster_home("history"), inst_data=inst_data)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._engines.get(self._conn_string).connect() as conn, conn.begin():
            yield conn
