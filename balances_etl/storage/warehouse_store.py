"""The warehouse where every run is a fresh container (an S3 store): the published ``warehouse.duckdb``
is kept in the object store beside the partitions, brought into an empty working directory before a
run reads or loads it, and uploaded again, whole, after every load. Analysts attach that object
(or a copy of it) read-only.

A run that published its partitions but died before uploading the warehouse leaves the store's
warehouse behind its partitions: the next load notices and rebuilds from the store instead of
loading only its own day.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb

from balances_etl.domain.names import Table
from balances_etl.storage.files import atomic_replace, make_dirs_durable
from balances_etl.storage.parquet import BALANCE_SNAPSHOTS, TRANSACTION_SYNCS, stored_partition_dates
from balances_etl.storage.store import object_store

WAREHOUSE_KEY = "warehouse.duckdb"  # under the store's prefix, beside raw/ and parquet/


def restore_published(published: Path, writer: Path) -> bool:
    """Download the store's warehouse into a working directory that has neither the published file nor
    the writer; True when it did. Call under the writer lock."""
    store = object_store()
    if store is None or published.exists() or writer.exists() or not store.exists(WAREHOUSE_KEY):
        return False
    make_dirs_durable(published.parent)
    with atomic_replace(published) as tmp:
        store.get_file(WAREHOUSE_KEY, tmp)
    return True


def upload_published(published: Path) -> None:
    """Put the newly published warehouse in the store as one object (visible only once complete)."""
    store = object_store()
    if store is not None:
        store.put_file(WAREHOUSE_KEY, published)


def behind_the_store(data_dir: Path, writer: Path, day: date) -> bool:
    """Whether the store holds a partition of a day other than ``day`` that the writer lacks (always
    False with a local store, where the writer and the partitions live together)."""
    store = object_store()
    if store is None:
        return False
    stored = {dataset: set(stored_partition_dates(data_dir, dataset)) - {day}
              for dataset in (BALANCE_SNAPSHOTS, TRANSACTION_SYNCS)}
    if not any(stored.values()):
        return False
    if not writer.exists():
        return True
    with duckdb.connect(str(writer), read_only=True) as con:
        tables = {name for (name,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        loaded = {
            dataset: {d for (d,) in con.execute(f"SELECT DISTINCT snapshot_date FROM {table}").fetchall()}
            if table in tables else set()
            for dataset, table in ((BALANCE_SNAPSHOTS, Table.BALANCE_SNAPSHOTS), (TRANSACTION_SYNCS, Table.TRANSACTION_SYNCS))
        }
    return any(stored[dataset] - loaded[dataset] for dataset in stored)
