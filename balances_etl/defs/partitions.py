"""Daily UTC partitions: partition D holds the balances at the end of day D."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from balances_etl.settings import PipelineSettings

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=PipelineSettings.from_env().start_date.isoformat(), timezone="UTC"
)


def partition_date(context: dg.AssetExecutionContext) -> dt.date:
    return dt.date.fromisoformat(context.partition_key)
