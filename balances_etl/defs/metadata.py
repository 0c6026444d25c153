"""Plain results as Dagster metadata and check results, for every domain's assets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dagster as dg
import pandas as pd
import pyarrow as pa

from balances_etl.domain.amounts import AMOUNT_PATTERN
from balances_etl.domain.balances import Column
from balances_etl.domain.checks import CheckInfo
from balances_etl.markdown import markdown_table
from balances_etl.transforms.checks import CheckOutcome

PREVIEW_ROWS = 10
AMOUNT_STRING_COLUMNS = frozenset(
    {"available", "total", "available_raw", "total_raw", "amount", "amount_raw", "network_fee", "network_fee_raw"}
)


def asset_key(asset: str) -> dg.AssetKey:
    """The key of an asset named by its path (``balances/noah_pages``)."""
    return dg.AssetKey.from_user_string(asset)


def noah_asset_specs(
    group: str, raw_pages: dg.AssetKey, partition: dg.AssetKey, *, pages: str, partition_description: str
) -> list[dg.AssetSpec]:
    """A domain's two NOAH assets, both made by the day's op: the pages as received, and the checked
    Parquet partition built from them. Called, not module-level: the defs loader takes specs for assets."""
    return [
        dg.AssetSpec(raw_pages, description=f"{pages}, exactly as NOAH sent it, with request metadata (no secrets).",
                     group_name=group, kinds={"json"}, skippable=True),
        dg.AssetSpec(partition, deps=[raw_pages], description=partition_description, group_name=group,
                     kinds={"parquet"}, skippable=True),
    ]


def check_specs(checks: Sequence[CheckInfo], asset: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(info.name.value, asset=asset_key(asset), blocking=info.blocking, description=info.description)
        for info in checks
    ]


def check_result(outcome: CheckOutcome, asset: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset_key(asset),
        check_name=str(outcome.name),
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR if outcome.blocking else dg.AssetCheckSeverity.WARN,
        description=outcome.description,
        metadata={
            "failing_rows": outcome.failing_rows,
            "first_failing_rows": dg.MetadataValue.md(outcome.sample_markdown()),
        },
    )


def column_schema(columns: Sequence[Column]) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=column.name,
                type=column.duckdb_type,
                description=column.description,
                constraints=dg.TableColumnConstraints(
                    nullable=column.nullable,
                    other=[f"matches {AMOUNT_PATTERN}", "at most 38 characters"]
                    if column.name in AMOUNT_STRING_COLUMNS
                    else None,
                ),
            )
            for column in columns
        ]
    )


def stats_metadata(stats: Mapping[str, object]) -> dict[str, object]:
    """A fetch's statistics under ``noah/``; lists (page hashes, NOAH Instance references) as JSON."""
    return {f"noah/{key}": dg.MetadataValue.json(value) if isinstance(value, list) else value for key, value in stats.items()}


def preview(rows: pd.DataFrame | pa.Table, columns: Sequence[str]) -> dg.MetadataValue:
    head = (
        rows.slice(0, PREVIEW_ROWS).to_pandas(types_mapper=pd.ArrowDtype) if isinstance(rows, pa.Table)
        else rows.head(PREVIEW_ROWS)
    )
    return dg.MetadataValue.md(markdown_table([{c: row[c] for c in columns} for _, row in head.iterrows()]))


def table_md(rows: Sequence[Mapping[str, object]]) -> dg.MetadataValue:
    return dg.MetadataValue.md(markdown_table(rows) or "none")
