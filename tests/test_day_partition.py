"""The day's partition built chunk by chunk while pages arrive gives exactly what building it whole gives."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import balances_etl.pipeline.day_partition as day_partition
from balances_etl.pipeline.day_partition import DayPartitionBuilder
from balances_etl.domain.names import Check
from balances_etl.noah.endpoints import BALANCES
from balances_etl.storage.parquet import PartitionWriter, parquet_root, partition_path, publish_partition, read_partition
from balances_etl.transforms.checks import evaluate_snapshot_checks
from balances_etl.transforms.normalize import AmountValidationError, normalize_snapshot

DAY = dt.date(2026, 3, 14)
ROW_VALUES = {
    "taken_at": dt.datetime(2026, 3, 15, 0, 5, tzinfo=dt.UTC),
    "is_late": False,
    "environment": "production",
}
CHUNK = 4


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def pages(count: int, per_page: int, amounts: Callable[[int], tuple[str, str]]) -> list[pa.RecordBatch]:
    """``count`` pages of ``per_page`` items; item ``n`` of the day gets ``amounts(n)`` (available, total)."""
    batches = []
    for page in range(count):
        numbers = range(page * per_page, (page + 1) * per_page)
        batches.append(pa.record_batch(
            [
                ["Current" if n % 3 else "Savings" for n in numbers],
                [{1: "BTC_TEST", 2: "USDC_TEST"}.get(n, f"COIN{n}_TEST") for n in numbers],
                [amounts(n)[0] for n in numbers],
                [amounts(n)[1] for n in numbers],
                [page + 1] * per_page,
                list(range(per_page)),
            ],
            schema=BALANCES.items.arrow_schema,
        ))
    return batches


def some_available_above_total(n: int) -> tuple[str, str]:
    return (f"{n + 2}.5", f"{n}.25") if n % 7 == 3 else (f"0.{n:03d}", f"{n}.000")


def whole_day(batches: list[pa.RecordBatch], previous=None):  # noqa: ANN001, ANN201
    frame = normalize_snapshot(
        pa.Table.from_batches(batches, schema=BALANCES.items.arrow_schema), snapshot_date=DAY,
        snapshot_at=ROW_VALUES["taken_at"], is_late=False, environment="production",
    )
    return frame, evaluate_snapshot_checks(frame, previous)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Chunks of 4 rows; records which thread normalized each chunk and at what scheduling policy."""
    monkeypatch.setattr(day_partition, "CHUNK_ROWS", CHUNK)
    normalized: list[tuple[str, int]] = []
    original = day_partition.normalize_table

    def recorded(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        normalized.append((threading.current_thread().name, os.sched_getscheduler(0)))
        return original(*args, **kwargs)

    monkeypatch.setattr(day_partition, "normalize_table", recorded)
    return normalized


def test_chunk_by_chunk_while_pages_arrive_equals_the_whole_day_at_once(data_dir: Path, small_chunks) -> None:  # noqa: ANN001
    gone = pa.record_batch([["Current"], ["GONE_TEST"], ["1"], ["2"], [1], [0]], schema=BALANCES.items.arrow_schema)
    publish_partition(data_dir, DAY - dt.timedelta(days=1), whole_day([gone])[0].assign(snapshot_date=DAY - dt.timedelta(days=1)))
    batches = pages(5, 3, some_available_above_total)  # 15 rows: chunks of 4, 4, 4 and 3
    with DayPartitionBuilder(data_dir, DAY, **ROW_VALUES) as builder:
        for batch in batches:
            builder.add(batch)
        deadline = time.monotonic() + 10
        while len(small_chunks) < 3 and time.monotonic() < deadline:  # the thread takes full chunks as they come
            time.sleep(0.01)
        checked = builder.finish()
        assert checked.staged is None  # available above total on three rows: blocking

    frame, outcomes = whole_day(batches, read_partition(data_dir, DAY - dt.timedelta(days=1)))
    assert checked.frame.equals(frame)
    assert checked.outcomes == outcomes
    by_name = {o.name: o for o in checked.outcomes}
    assert by_name[Check.AVAILABLE_NOT_ABOVE_TOTAL].failing_rows == 2  # rows 3 and 10, in two chunks
    unknown = by_name[Check.UNKNOWN_CURRENCY]
    assert unknown.failing_rows == 13 and [r["crypto_currency"] for r in unknown.sample[:3]] == ["COIN0_TEST", "COIN3_TEST", "COIN4_TEST"]
    assert by_name[Check.CURRENCY_DISAPPEARED].failing_rows == 1
    if hasattr(os, "SCHED_IDLE"):
        assert small_chunks[:3] == [("day-partition", os.SCHED_IDLE)] * 3  # the full chunks, on idle cores only
    assert small_chunks[3][0] == threading.current_thread().name  # the last, partial one: after the fetch
    assert partition_path(data_dir, DAY).exists() is False and list(parquet_root(data_dir).glob(".writing-*")) == []


def test_the_file_is_written_as_the_chunks_come_and_reads_back_as_the_frame(data_dir: Path, small_chunks) -> None:  # noqa: ANN001
    batches = pages(4, 5, lambda n: (f"{n}.1", f"{n}.10"))  # 20 rows
    with DayPartitionBuilder(data_dir, DAY, **ROW_VALUES) as builder:
        for batch in batches:
            builder.add(batch)
        checked = builder.finish()
        assert checked.blocking_failures == [] and checked.staged is not None
        published = checked.staged.publish()
    assert read_partition(data_dir, DAY).equals(whole_day(batches)[0])
    assert [pq.ParquetFile(published.path).metadata.row_group(i).num_rows for i in range(5)] == [CHUNK] * 5
    assert published.rows == 20 and list(parquet_root(data_dir).glob(".writing-*")) == []


def test_an_invalid_amount_in_a_later_chunk_names_the_days_row_and_nothing_is_left(data_dir: Path, small_chunks) -> None:  # noqa: ANN001
    batches = pages(3, 5, lambda n: ("1e3", "2") if n == 11 else ("1", "2"))
    with pytest.raises(AmountValidationError) as caught, DayPartitionBuilder(data_dir, DAY, **ROW_VALUES) as builder:
        for batch in batches:
            builder.add(batch)
        builder.finish()
    assert (caught.value.row, caught.value.page_number, caught.value.item_index) == (11, 3, 1)
    assert "page 3, item 1 (row 11)" in str(caught.value)
    assert not partition_path(data_dir, DAY).exists() and list(parquet_root(data_dir).glob(".writing-*")) == []


@pytest.mark.parametrize("blocking_failure", [False, True])
def test_a_failed_write_fails_the_day_unless_a_blocking_check_says_more(
    data_dir: Path, small_chunks, monkeypatch: pytest.MonkeyPatch, blocking_failure: bool  # noqa: ANN001
) -> None:
    original, writes = PartitionWriter.write, []

    def disk_full_on_the_second_chunk(writer: PartitionWriter, rows: pa.Table) -> None:
        writes.append(rows.num_rows)
        if len(writes) == 2:
            raise OSError(28, "No space left on device")
        original(writer, rows)

    monkeypatch.setattr(PartitionWriter, "write", disk_full_on_the_second_chunk)
    amounts = some_available_above_total if blocking_failure else (lambda n: ("1", "2"))
    with DayPartitionBuilder(data_dir, DAY, **ROW_VALUES) as builder:
        for batch in pages(4, 3, amounts):
            builder.add(batch)
        if blocking_failure:
            checked = builder.finish()
            assert [o.name for o in checked.blocking_failures] == [Check.AVAILABLE_NOT_ABOVE_TOTAL]
            assert checked.staged is None and len(checked.frame) == 12
        else:
            with pytest.raises(OSError, match="No space left"):
                builder.finish()
    assert writes == [CHUNK, CHUNK]  # nothing written after the failed write
    assert not partition_path(data_dir, DAY).exists() and list(parquet_root(data_dir).glob(".writing-*")) == []


def test_a_day_without_items_publishes_an_empty_partition_with_the_zero_items_warning(data_dir: Path) -> None:
    with DayPartitionBuilder(data_dir, DAY, **ROW_VALUES) as builder:
        checked = builder.finish()
        assert checked.staged is not None
        checked.staged.publish()
    assert len(read_partition(data_dir, DAY)) == 0 and len(checked.frame) == 0
    assert [o.name for o in checked.outcomes if not o.passed] == [Check.ZERO_ITEMS]
