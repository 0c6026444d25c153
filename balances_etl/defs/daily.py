"""The daily job and its schedule: shortly after each UTC day ends, take that day."""

from __future__ import annotations

import dagster as dg

from balances_etl.defs.metadata import asset_key
from balances_etl.defs.partitions import daily_partitions
from balances_etl.domain.names import BalancesAsset, Check, Orchestration, TransactionsAsset
from balances_etl.settings import PipelineSettings

daily_job = dg.define_asset_job(
    Orchestration.DAILY_JOB.value,
    # Every check on these assets but the freshness check, which its own sensor evaluates (defs/catchup.py).
    selection=dg.AssetSelection.assets(*(asset_key(asset) for asset in (*BalancesAsset, *TransactionsAsset)))
    - dg.AssetSelection.checks(dg.AssetCheckKey(asset_key(BalancesAsset.PARTITION), Check.FRESHNESS.value)),
    partitions_def=daily_partitions,
    description="Snapshot NOAH balances for one UTC day, then sync its transactions; publish Parquet, load DuckDB, reconcile.",
)

_settings = PipelineSettings.from_env()  # the schedule's time is part of the definitions, read at load

# A schedule built from a daily-partitioned job targets the partition of the day that just ended.
daily_schedule = dg.build_schedule_from_partitioned_job(
    daily_job,
    name=Orchestration.DAILY_SCHEDULE.value,
    hour_of_day=_settings.schedule_hour,
    minute_of_hour=_settings.schedule_minute,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
