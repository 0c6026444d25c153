"""Dagster assets: wiring only. The work is done by the plain-Python client, transforms and storage.

snapshot_balances (one op, two assets)  ->  balance_snapshots (DuckDB)  ->  balance_reconciliation
  noah_balance_pages: raw pages as received
  balance_snapshots_parquet: the checked, normalized partition (store of record)
"""


import datetime as dt
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import dagster as dg
import pandas as pd
import pyarrow as pa
from pydantic import Field

from balances_etl import schema
from balances_etl.day_partition import CheckedPartition, DayPartitionBuilder
from balances_etl.defs.partitions import daily_partitions, partition_date
from balances_etl.defs.resources import NoahApiResource, PipelineStorageResource
from balances_etl.markdown import markdown_table
from balances_etl.names import (
    DUCKDB_POOL,
    PARQUET_ASSET,
    RAW_ASSET,
    RECONCILIATION_ASSET,
    WAREHOUSE_ASSET,
    Check,
)
from balances_etl.noah import BalanceSnapshot, NoahError, RawPage, ReplaySource
from balances_etl.reconciliation import reconcile_day
from balances_etl.storage.raw import RawLanding, latest_raw_landing, read_raw_bodies, read_raw_manifest
from balances_etl.storage.warehouse import connect_read_only, load_partition
from balances_etl.timing import SnapshotTimingError, snapshot_timing
from balances_etl.transforms.checks import CheckOutcome
from balances_etl.transforms.normalize import AmountValidationError

PREVIEW_ROWS = 10


class SnapshotRunConfig(dg.Config):
    allow_late: bool = Field(
        default=False,
        description="Record a snapshot for a day that ended longer ago than the lateness allows (rows get is_late=true).",
    )
    simulated_now: str | None = Field(
        default=None,
        description="Emulator only (loopback base URL): the UTC time to treat as now, ISO 8601. The demo uses it.",
    )


_CHECK_DESCRIPTIONS = {
    Check.SCHEMA: "Columns, order and types match the published schema; required columns have no nulls.",
    Check.AMOUNTS_VALID: "Available/Total are 1-38 characters and match NOAH's PositiveDecimal pattern (ASCII digits).",
    Check.KEYS_UNIQUE: "(snapshot_date, account_type, crypto_currency) is unique.",
    Check.AVAILABLE_NOT_ABOVE_TOTAL: "Available never exceeds Total.",
    Check.CANONICAL_MATCHES_DECIMAL: "The canonical string and the exact DECIMAL(38,18) agree wherever both exist.",
    Check.AMOUNT_TOO_WIDE: "Warning: an amount is valid but not representable as DECIMAL(38,18) (kept as a string).",
    Check.UNKNOWN_CURRENCY: "Warning: a currency code outside NOAH's documented list.",
    Check.CURRENCY_DISAPPEARED: "Warning: a currency present the previous day is missing.",
    Check.ZERO_ITEMS: "Warning: NOAH returned no balances.",
}


def column_schema() -> dg.TableSchema:
    from balances_etl.amounts import AMOUNT_PATTERN

    amount_strings = {"available", "total", "available_raw", "total_raw"}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=column.name,
                type=column.duckdb_type,
                description=column.description,
                constraints=dg.TableColumnConstraints(
                    nullable=column.nullable,
                    other=[f"matches {AMOUNT_PATTERN}", "at most 38 characters"]
                    if column.name in amount_strings
                    else None,
                ),
            )
            for column in schema.COLUMNS
        ]
    )


def _check_result(outcome: CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=PARQUET_ASSET,
        check_name=outcome.name,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR if outcome.blocking else dg.AssetCheckSeverity.WARN,
        description=outcome.description,
        metadata={
            "failing_rows": outcome.failing_rows,
            "first_failing_rows": dg.MetadataValue.md(outcome.sample_markdown() or "none"),
        },
    )


def _blocking_failure_message(failed: list[CheckOutcome], snapshot_date: dt.date) -> str:
    parts = [f"{o.name} ({o.failing_rows} rows): {o.description}\n{o.sample_markdown()}" for o in failed]
    return (
        f"Blocking checks failed for {snapshot_date}; nothing was published (the previous Parquet "
        "partition and the warehouse are untouched):\n" + "\n".join(parts)
    )


def _snapshot_metadata(snapshot: BalanceSnapshot, extra: dict[str, object]) -> dict[str, object]:
    stats = snapshot.stats.as_metadata()
    return {
        **{f"noah/{key}": dg.MetadataValue.json(value) if isinstance(value, list) else value for key, value in stats.items()},
        **extra,
    }


@dg.multi_asset(
    name="snapshot_balances",
    specs=[
        dg.AssetSpec(
            RAW_ASSET,
            description="Every page of GET /v1/balances exactly as NOAH sent it, with request metadata (no secrets).",
            group_name="noah",
            kinds={"json"},
            skippable=True,
        ),
        dg.AssetSpec(
            PARQUET_ASSET,
            deps=[RAW_ASSET],
            description="The day's balances, normalized to exact decimal strings and DECIMAL(38,18): the store of record.",
            group_name="balances",
            kinds={"parquet", "pandas"},
            skippable=True,
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(name, asset=PARQUET_ASSET, blocking=name in Check.BLOCKING, description=_CHECK_DESCRIPTIONS[name])
        for name in Check.BLOCKING + Check.WARNINGS
    ],
    partitions_def=daily_partitions,
    can_subset=True,
)
def snapshot_balances(
    context: dg.AssetExecutionContext,
    config: SnapshotRunConfig,
    noah: NoahApiResource,
    storage: PipelineStorageResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Fetch (or, when only the Parquet asset is selected, replay from the raw landing) and publish one day."""
    settings = storage.settings()
    day = partition_date(context)
    selected = context.selected_asset_keys
    wants_parquet = dg.AssetKey(PARQUET_ASSET) in selected
    checked: CheckedPartition | Exception | None = None

    with ExitStack() as unpublished:  # the landing's and the partition's temporaries, removed unless published
        if dg.AssetKey(RAW_ASSET) in selected:
            noah_config = noah.config()
            now = _now(config, noah_config.is_loopback)
            try:
                timing = snapshot_timing(day, now, lateness=settings.lateness, allow_late=config.allow_late)
            except SnapshotTimingError as err:
                raise dg.Failure(description=str(err)) from None
            environment, taken_at, is_late = noah_config.environment, timing.taken_at, timing.is_late
            # Each page is landed, and its items normalized, checked and written in chunks, while the
            # next page is fetched.
            landing = unpublished.enter_context(RawLanding(settings.data_dir, day, taken_at, context.run_id))
            builder = None
            if wants_parquet:
                builder = unpublished.enter_context(
                    DayPartitionBuilder(settings.data_dir, day, taken_at=taken_at, is_late=is_late, environment=environment)
                )

            def take_page(page: RawPage, items: pa.RecordBatch) -> None:
                landing.add_page(page)
                if builder is not None:
                    builder.add(items)

            try:
                with noah.open_client(noah_config) as client:
                    snapshot = client.fetch_snapshot(on_page=take_page)
            except NoahError as err:
                raise dg.Failure(description=str(err)) from None
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-landing") as pool:
                landing_job = pool.submit(
                    landing.publish, {**snapshot.stats.as_metadata(), "environment": environment, "is_late": is_late}
                )
                # While the landing is made durable (waiting on the disk), finish the partition (CPU).
                # Nothing is published before the landing is, and failures are reported in the
                # order of the steps: the landing's first.
                if builder is not None:
                    try:
                        checked = _finished(builder)
                    except Exception as error:  # noqa: BLE001 - re-raised below, once the landing is done
                        checked = error
                landed = landing_job.result()
            yield dg.MaterializeResult(
                asset_key=RAW_ASSET,
                metadata=_snapshot_metadata(
                    snapshot,
                    {"landing": dg.MetadataValue.path(str(landed)), "snapshot_at": taken_at.isoformat(), "is_late": is_late},
                ),
            )
        else:
            landed_before = latest_raw_landing(settings.data_dir, day)
            if landed_before is None:
                raise dg.Failure(description=f"No raw landing for {day}: materialize {RAW_ASSET} for that day first.")
            manifest = read_raw_manifest(landed_before)
            snapshot = ReplaySource(read_raw_bodies(landed_before)).fetch_snapshot()
            environment = manifest.stats["environment"]
            is_late = bool(manifest.stats["is_late"])
            taken_at = manifest.taken_at
            if wants_parquet:
                builder = unpublished.enter_context(
                    DayPartitionBuilder(settings.data_dir, day, taken_at=taken_at, is_late=is_late, environment=environment)
                )
                for items in snapshot.columns.batches():
                    builder.add(items)
                checked = _finished(builder)

        if checked is None:  # the Parquet asset is not selected
            return
        if isinstance(checked, Exception):
            raise checked
        results = [_check_result(outcome) for outcome in checked.outcomes]
        if checked.blocking_failures:
            yield from results
            raise dg.Failure(description=_blocking_failure_message(checked.blocking_failures, day))
        assert checked.staged is not None  # present whenever no blocking check failed
        published = checked.staged.publish()
        frame = checked.frame
        yield dg.MaterializeResult(
            asset_key=PARQUET_ASSET,
            metadata=_snapshot_metadata(
                snapshot,
                {
                    "dagster/row_count": len(frame),
                    "dagster/column_schema": column_schema(),
                    "preview": dg.MetadataValue.md(_preview(frame)),
                    "path": dg.MetadataValue.path(str(published.path)),
                    "bytes": published.bytes,
                    "sha256": published.sha256,
                    "snapshot_at": taken_at.isoformat(),
                    "is_late": is_late,
                    "environment": environment,
                },
            ),
            check_results=results,
        )


def _finished(builder: DayPartitionBuilder) -> CheckedPartition:
    try:
        return builder.finish()
    except AmountValidationError as err:
        raise dg.Failure(description=str(err)) from None


def _now(config: SnapshotRunConfig, base_url_is_loopback: bool) -> dt.datetime:
    if config.simulated_now is None:
        return dt.datetime.now(dt.UTC)
    if not base_url_is_loopback:
        raise dg.Failure(description="simulated_now is only accepted against the embedded emulator (a loopback NOAH_BASE_URL).")
    now = dt.datetime.fromisoformat(config.simulated_now)
    return now if now.tzinfo else now.replace(tzinfo=dt.UTC)


def _preview(frame: pd.DataFrame) -> str:
    head = frame.head(PREVIEW_ROWS)
    columns = ["account_type", "crypto_currency", "available", "total", "pending_outflow"]
    return markdown_table([{c: row[c] for c in columns} for _, row in head.iterrows()])


@dg.asset(
    name=WAREHOUSE_ASSET,
    deps=[PARQUET_ASSET],
    partitions_def=daily_partitions,
    pool=DUCKDB_POOL,
    group_name="balances",
    kinds={"duckdb"},
    description="The day's partition loaded into DuckDB table balance_snapshots (replaced in one transaction); views re-applied; the analysts' warehouse.duckdb republished atomically.",
)
def balance_snapshots(context: dg.AssetExecutionContext, storage: PipelineStorageResource) -> dg.MaterializeResult:
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
            "dagster/column_schema": column_schema(),
            "warehouse_rows": result.total_rows,
            "warehouse_partitions": result.partitions,
            "ledger_rows": result.ledger_rows,
            "views": ", ".join(result.views_applied),
            "warehouse": dg.MetadataValue.path(str(result.published_path)),
            "publish_seconds": round(result.publish_seconds, 4),
        }
    )


@dg.asset(
    name=RECONCILIATION_ASSET,
    deps=[WAREHOUSE_ASSET],
    partitions_def=daily_partitions,
    group_name="reconciliation",
    kinds={"duckdb"},
    check_specs=[
        dg.AssetCheckSpec(
            Check.NO_NEW_BREAKS,
            asset=RECONCILIATION_ASSET,
            description="Fails (as a warning) when the day has reconciliation breaks the previous snapshot day did not.",
        )
    ],
    description="The day's reconciliation: open breaks per check from v_reconciliation_breaks.",
)
def balance_reconciliation(context: dg.AssetExecutionContext, storage: PipelineStorageResource) -> dg.MaterializeResult:
    settings = storage.settings()
    day = partition_date(context)
    con = connect_read_only(settings.data_dir)
    try:
        summary, new_breaks = reconcile_day(con, day)
    finally:
        con.close()
    return dg.MaterializeResult(
        metadata={
            "total_breaks": summary.total_breaks,
            **{f"breaks/{check}": count for check, count in sorted(summary.breaks_by_check.items())},
            "first_breaks": dg.MetadataValue.md(markdown_table(summary.sample) or "none"),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=Check.NO_NEW_BREAKS,
                passed=not new_breaks,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "new_breaks": len(new_breaks),
                    "first_new_breaks": dg.MetadataValue.md(markdown_table(new_breaks) or "none"),
                },
            )
        ],
    )
