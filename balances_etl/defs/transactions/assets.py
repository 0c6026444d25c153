"""The transactions domain's assets: wiring only, over ``balances_etl.pipeline.transactions_sync``.

observe_noah_day (defs/observe.py, right after the balance snapshot)  ->  transactions/warehouse_tables
  transactions/noah_pages: every page of GET /v1/transactions the sync read, as received
  transactions/parquet_partition: the sync's checked rows (the store of record)
balances/warehouse_table loads the sync with the day's balances in one transaction, so analysts never
see a day's balances without its movements; transactions/warehouse_tables reports what that left.
"""

from collections.abc import Iterator

import dagster as dg

from balances_etl.defs.metadata import asset_key, check_result, check_specs, column_schema, noah_asset_specs, preview, stats_metadata
from balances_etl.defs.partitions import daily_partitions, partition_date
from balances_etl.defs.resources import PipelineStorageResource
from balances_etl.domain.checks import TRANSACTION_SYNC_CHECKS
from balances_etl.domain.names import BalancesAsset, TransactionsAsset
from balances_etl.domain.transactions import COLUMNS
from balances_etl.pipeline.transactions_sync import TransactionSync, TransactionSyncFailed
from balances_etl.storage.transaction_reads import transactions_day_summary

RAW_PAGES = asset_key(TransactionsAsset.RAW_PAGES)
PARTITION = asset_key(TransactionsAsset.PARTITION)
WAREHOUSE = asset_key(TransactionsAsset.WAREHOUSE)
PREVIEW_COLUMNS = ("created_at", "status", "direction", "crypto_currency", "amount", "network_fee")

def sync_specs() -> list[dg.AssetSpec]:
    return noah_asset_specs(
        "transactions", RAW_PAGES, PARTITION,
        pages="Every page of GET /v1/transactions the day's sync read (newest first, down to its horizon)",
        partition_description="Every transaction the day's sync observed, with its status then, amounts as exact "
        "strings and DECIMAL(38,18): the store of record.",
    )


SYNC_CHECK_SPECS = check_specs(TRANSACTION_SYNC_CHECKS, TransactionsAsset.PARTITION)


def sync_results(
    sync: TransactionSync | None, failure: TransactionSyncFailed | None
) -> Iterator[dg.MaterializeResult]:
    """The sync's landing and partition as materializations with their checks. A failed sync yields
    only its landing: the day's last step fails the run with its cause, after the balances are loaded
    (blocking check results here would skip that load)."""
    if failure is not None:
        if failure.landing is not None:
            yield dg.MaterializeResult(asset_key=RAW_PAGES, metadata={"landing": dg.MetadataValue.path(str(failure.landing))})
        return
    if sync is None:
        return
    if sync.landing is not None:
        yield dg.MaterializeResult(
            asset_key=RAW_PAGES,
            metadata={
                **stats_metadata(sync.stats.as_metadata()),
                "landing": dg.MetadataValue.path(str(sync.landing)),
                "observed_at": sync.observed_at.isoformat(),
                "horizon": "everything" if sync.horizon is None else sync.horizon.isoformat(),
            },
        )
    assert sync.published is not None  # a sync whose blocking checks failed is a TransactionSyncFailed
    yield dg.MaterializeResult(
        asset_key=PARTITION,
        metadata={
            **stats_metadata(sync.stats.as_metadata()),
            "dagster/row_count": sync.rows,
            "dagster/column_schema": column_schema(COLUMNS),
            "preview": preview(sync.table, PREVIEW_COLUMNS),
            "path": dg.MetadataValue.path(str(sync.published.path)),
            "bytes": sync.published.bytes,
            "sha256": sync.published.sha256,
            "observed_at": sync.observed_at.isoformat(),
            "horizon": "everything" if sync.horizon is None else sync.horizon.isoformat(),
            "previous_sync": "none" if sync.previous is None else sync.previous.snapshot_date.isoformat(),
        },
        check_results=[check_result(outcome, TransactionsAsset.PARTITION) for outcome in sync.outcomes],
    )


@dg.asset(
    key=WAREHOUSE,
    deps=[PARTITION, asset_key(BalancesAsset.WAREHOUSE)],
    partitions_def=daily_partitions,
    group_name="transactions",
    kinds={"duckdb"},
    description="The day's sync in the DuckDB tables transactions (latest observed state per transaction) and "
    "transaction_status_history (one row per status change), loaded with the day's balances.",
)
def warehouse_tables(context: dg.AssetExecutionContext, storage: PipelineStorageResource) -> dg.MaterializeResult:
    summary = transactions_day_summary(storage.settings().data_dir, partition_date(context))
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": summary["transactions"],
            "sync_rows": summary["sync_rows"],
            "status_changes": summary["status_changes"],
            "pending": summary["pending"],
        }
    )
