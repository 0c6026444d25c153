"""The balances domain's assets: wiring only, over ``balances_etl.pipeline``.

observe_noah_day (defs/observe.py)  ->  balances/warehouse_table  ->  balances/reconciliation
  balances/noah_pages: every page as received
  balances/parquet_partition: the checked, normalized day (the store of record)
"""


from collections.abc import Iterator

import dagster as dg

from balances_etl.defs.metadata import asset_key, check_result, check_specs, column_schema, noah_asset_specs, preview, stats_metadata, table_md
from balances_etl.defs.partitions import daily_partitions, partition_date
from balances_etl.defs.resources import PipelineStorageResource
from balances_etl.domain.balances import COLUMNS
from balances_etl.domain.checks import BALANCE_PARTITION_CHECKS, RECONCILIATION_CHECKS
from balances_etl.domain.names import BalancesAsset, Check, Orchestration
from balances_etl.pipeline.reconciliation import reconcile_published_day
from balances_etl.pipeline.observe import sync_failure
from balances_etl.pipeline.snapshot import DaySnapshot, Landing, blocking_failure_message
from balances_etl.storage.warehouse import load_partition

RAW_PAGES = asset_key(BalancesAsset.RAW_PAGES)
PARTITION = asset_key(BalancesAsset.PARTITION)
WAREHOUSE = asset_key(BalancesAsset.WAREHOUSE)
RECONCILIATION = asset_key(BalancesAsset.RECONCILIATION)
PREVIEW_COLUMNS = ("account_type", "crypto_currency", "available", "total", "pending_outflow")


def snapshot_specs() -> list[dg.AssetSpec]:
    return noah_asset_specs(
        "balances", RAW_PAGES, PARTITION, pages="Every page of GET /v1/balances",
        partition_description="The day's balances, normalized to exact decimal strings and DECIMAL(38,18): the store of record.",
    )


SNAPSHOT_CHECK_SPECS = check_specs(BALANCE_PARTITION_CHECKS, BalancesAsset.PARTITION)


def snapshot_results(snapshot: DaySnapshot) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """The snapshot's landing and partition as materializations with their checks; a blocking
    failure raises (nothing was published)."""
    if snapshot.landing is not None:
        yield landing_result(snapshot.landing)
    if snapshot.partition is None:
        return
    checks = [check_result(outcome, BalancesAsset.PARTITION) for outcome in snapshot.partition.outcomes]
    if snapshot.published is None:
        yield from checks
        raise dg.Failure(description=blocking_failure_message(snapshot.day, snapshot.blocking_failures))
    yield dg.MaterializeResult(asset_key=PARTITION, metadata=_partition_metadata(snapshot), check_results=checks)


def landing_result(landing: Landing) -> dg.MaterializeResult:
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
    description="The day's partition loaded into DuckDB table balance_snapshots, with the day's transactions sync "
    "when one was published, in one transaction; views re-applied; the analysts' warehouse.duckdb republished atomically.",
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
            "transaction_rows_loaded": result.transactions if result.transactions is not None else "no sync published",
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
def reconciliation(
    context: dg.AssetExecutionContext, storage: PipelineStorageResource
) -> Iterator[dg.MaterializeResult]:
    """The day's breaks; the day's last step, so it also fails the run when the day's transactions
    sync failed (the balances were published and loaded regardless; the next sync catches up)."""
    data_dir, day = storage.settings().data_dir, partition_date(context)
    summary, new_breaks = reconcile_published_day(data_dir, day)
    yield dg.MaterializeResult(
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
    failure = sync_failure(data_dir, day)
    if failure is not None:
        raise dg.Failure(description=f"The transactions sync failed (the balances were published): {failure}")
