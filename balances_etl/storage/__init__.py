"""Storage layer: raw landings, atomic Parquet partitions (the store of record), the DuckDB warehouse."""

from balances_etl.storage.parquet import PartitionFile, partition_path, publish_partition, read_partition
from balances_etl.storage.raw import (
    RawLanding,
    RawManifest,
    latest_raw_landing,
    read_raw_bodies,
    read_raw_manifest,
)
from balances_etl.storage.warehouse import (
    LoadResult,
    RebuildResult,
    connect_read_only,
    load_partition,
    rebuild_from_parquet,
    warehouse_path,
)

__all__ = [
    "LoadResult",
    "PartitionFile",
    "RawLanding",
    "RawManifest",
    "RebuildResult",
    "connect_read_only",
    "latest_raw_landing",
    "load_partition",
    "partition_path",
    "publish_partition",
    "read_partition",
    "read_raw_bodies",
    "read_raw_manifest",
    "rebuild_from_parquet",
    "warehouse_path",
]
