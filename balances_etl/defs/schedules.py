"""The daily job and its schedule: shortly after each UTC day ends, snapshot that day."""

from __future__ import annotations

import dagster as dg

from balances_etl.defs.partitions import daily_partitions
from balances_etl.names import DAILY_JOB, DAILY_SCHEDULE, PARQUET_ASSET, RAW_ASSET, RECONCILIATION_ASSET, WAREHOUSE_ASSET
from balances_etl.settings import PipelineSettings

daily_balances_job = dg.define_asset_job(
    DAILY_JOB,
    selection=dg.AssetSelection.assets(RAW_ASSET, PARQUET_ASSET, WAREHOUSE_ASSET, RECONCILIATION_ASSET),
    partitions_def=daily_partitions,
    description="Snapshot NOAH balances for one UTC day, publish Parquet, load DuckDB, reconcile.",
)

_settings = PipelineSettings.from_env()

# A schedule built from a daily-partitioned job targets the partition of the day that just ended.
daily_balances_schedule = dg.build_schedule_from_partitioned_job(
    daily_balances_job,
    name=DAILY_SCHEDULE,
    hour_of_day=_settings.schedule_hour,
    minute_of_hour=_settings.schedule_minute,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
