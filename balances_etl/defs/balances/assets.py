"""The balances domain's assets: wiring only, over ``balances_etl.pipeline``.

take_balances_snapshot (one op, two assets)  ->  balances/warehouse_table  ->  balances/reconciliation
  balances/noah_pages: every page as received
  balances/parquet_partition: the checked, normalized day (the store of record)
"""


from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from balances_etl.defs.metadata import asset_key, check_result, check_specs, column_schema, preview, stats_metadata, table_md
from balances_etl.defs.partitions import daily_partitions, partition_date
from balances_etl.defs.resources import NoahApiResource, PipelineStorageResource
from balances_etl.domain.balances import COLUMNS
from balances_etl.domain.checks import BALANCE_PARTITION_CHECKS, RECONCILIATION_CHECKS
from balances_etl.domain.names import BalancesAsset, Check, Op, Orchestration
from balances_etl.noah import NoahClient
from balances_etl.pipeline.reconciliation import reconcile_published_day
from balances_etl.pipeline.snapshot import (
    DaySnapshot,
    Landing,
    LandedDaySource,
    NoahDaySource,
    SnapshotFailed,
    blocking_failure_message,
    snapshot_now,
    take_day_snapshot,
)
from balances_etl.storage.warehouse import load_partition

RAW_PAGES = asset_key(BalancesAsset.RAW_PAGES)
PARTITION = asset_key(BalancesAsset.PARTITION)
WAREHOUSE = asset_key(BalancesAsset.WAREHOUSE)
RECONCILIATION = asset_key(BalancesAsset.RECONCILIATION)
PREVIEW_COLUMNS = ("account_type", "crypto_currency", "available", "total", "pending_outflow")


class SnapshotRunConfig(dg.Config):
    allow_late: bool = Field(
        default=False,
        description="Record a snapshot for a day that ended longer ago than the lateness allows (rows get is_late=true).",
    )
    simulated_now: str | None = Field(
        default=None,
        description="Emulator only (loopback base URL): the UTC time to treat as now, ISO 8601. The demo uses it.",
    )


@dg.multi_asset(
    name=Op.TAKE_BALANCES_SNAPSHOT.value,
    specs=[
        dg.AssetSpec(
            RAW_PAGES,
            description="Every page of GET /v1/balances exactly as NOAH sent it, with request metadata (no secrets).",
            group_name="balances",
            kinds={"json"},
            skippable=True,
        ),
        dg.AssetSpec(
            PARTITION,
            deps=[RAW_PAGES],
            description="The day's balances, normalized to exact decimal strings and DECIMAL(38,18): the store of record.",
            group_name="balances",
            kinds={"parquet"},
            skippable=True,
        ),
    ],
    check_specs=check_specs(BALANCE_PARTITION_CHECKS, BalancesAsset.PARTITION),
    partitions_def=daily_partitions,
    can_subset=True,
)
def take_balances_snapshot(
    context: dg.AssetExecutionContext,
    config: SnapshotRunConfig,
    noah: NoahApiResource,
    storage: PipelineStorageResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Fetch the day from NOAH (or, with only the partition selected, replay its raw landing) and publish it."""
    settings = storage.settings()
    day = partition_date(context)
    build_partition = PARTITION in context.selected_asset_keys
    try:
        if RAW_PAGES in context.selected_asset_keys:
            noah_config = noah.config()
            now = snapshot_now(config.simulated_now, noah_is_loopback=noah_config.is_loopback)
            with NoahClient(noah_config) as client:
                source = NoahDaySource(client, day, now, lateness=settings.lateness, allow_late=config.allow_late)
                snapshot = take_day_snapshot(source, settings.data_dir, day, run_id=context.run_id,
                                             build_partition=build_partition)
        else:
            snapshot = take_day_snapshot(LandedDaySource(settings.data_dir, day), settings.data_dir, day,
                                         run_id=context.run_id)
    except SnapshotFailed as failure:
        if failure.landing is not None:
            yield _landing_result(failure.landing)
        raise dg.Failure(description=str(failure)) from None
    if snapshot.landing is not None:
        yield _landing_result(snapshot.landing)
    if snapshot.partition is None:
        return
    checks = [check_result(outcome, BalancesAsset.PARTITION) for outcome in snapshot.partition.outcomes]
    if snapshot.published is None:
        yield from checks
        raise dg.Failure(description=blocking_failure_message(day, snapshot.blocking_failures))
    yield dg.MaterializeResult(asset_key=PARTITION, metadata=_partition_metadata(snapshot), check_results=checks)


def _landing_result(landing: Landing) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        asset_key=RAW_PAGES,
        metadata={
            **stats_metadata(landing.stats.as_metadata()),
            "landing": dg.MetadataValue.path(str(landing.path)),
            "snapshot_at": landing.observation.taken_at.isoformat(),
            "is_late": landing.observation.is_late,
        },
    )


def _partition_metadata(snapshot: DaySnapshot) -> dict[str, object]:
    assert snapshot.partition is not None and snapshot.published is not None
    frame, published, observation = snapshot.partition.frame, snapshot.published, snapshot.observation
    return {
        **stats_metadata(snapshot.stats.as_metadata()),
        "dagster/row_count": len(frame),
        "dagster/column_schema": column_schema(COLUMNS),
        "preview": preview(frame, PREVIEW_COLUMNS),
        "path": dg.MetadataValue.path(str(published.path)),
        "bytes": published.bytes,
        "sha256": published.sha256,
        "snapshot_at": observation.taken_at.isoformat(),
        "is_late": observation.is_late,
        "environment": observation.environment,
    }


@dg.asset(
    key=WAREHOUSE,
    deps=[PARTITION],
    partitions_def=daily_partitions,
    pool=Orchestration.DUCKDB_POOL.value,
    group_name="balances",
    kinds={"duckdb"},
    description="The day's partition loaded into DuckDB table balance_snapshots (replaced in one transaction); "
    "views re-applied; the analysts' warehouse.duckdb republished atomically.",
)
def warehouse_table(context: dg.AssetExecutionContext, storage: PipelineStorageResource) -> dg.MaterializeResult:
    settings = storage.settings()
    result = load_partition(
        settings.data_dir,
        partition_date(context),
        settings.sql_dir,
        lock_timeout_seconds=settings.lock_timeout_seconds,
        stale_after_days=settings.stale_after_days,
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": result.rows,
            "dagster/column_schema": column_schema(COLUMNS),
            "warehouse_rows": result.total_rows,
            "warehouse_partitions": result.partitions,
            "ledger_rows": result.ledger_rows,
            "views": ", ".join(result.views_applied),
            "warehouse": dg.MetadataValue.path(str(result.published_path)),
            "publish_seconds": round(result.publish_seconds, 4),
        }
    )


@dg.asset(
    key=RECONCILIATION,
    deps=[WAREHOUSE],
    partitions_def=daily_partitions,
    group_name="balances",
    kinds={"duckdb"},
    check_specs=check_specs(RECONCILIATION_CHECKS, BalancesAsset.RECONCILIATION),
    description="The day's reconciliation: open breaks per check from v_reconciliation_breaks.",
)
def reconciliation(context: dg.AssetExecutionContext, storage: PipelineStorageResource) -> dg.MaterializeResult:
    summary, new_breaks = reconcile_published_day(storage.settings().data_dir, partition_date(context))
    return dg.MaterializeResult(
        metadata={
            "total_breaks": summary.total_breaks,
            **{f"breaks/{check}": count for check, count in sorted(summary.breaks_by_check.items())},
            "first_breaks": table_md(summary.sample),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=Check.NO_NEW_BREAKS.value,
                passed=not new_breaks,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"new_breaks": len(new_breaks), "first_new_breaks": table_md(new_breaks)},
            )
        ],
    )
