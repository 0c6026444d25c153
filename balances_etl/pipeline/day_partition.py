"""A day's partition built while its pages arrive: normalized, checked and written chunk by chunk.

The fetch spends most of its time waiting for NOAH, so a background thread turns each full chunk
of items into normalized rows, judges them with the row-wise checks and appends them to the
day's Parquet file (Arrow releases the GIL for all three). When the last page is in, only the last
chunk, the whole-day checks and the file's verification remain. The thread runs at Linux's
``SCHED_IDLE`` priority, so it only ever takes a core nothing else wants: the request loop (and,
on a small machine, the emulator) always comes first. Once the last page is in, the thread only
finishes the chunk it holds and the caller's thread does the rest at its own priority (on a host
kept busy by other work, that one chunk is the only wait). Chunks are processed in order, each
once, so the result is exactly that of normalizing, checking and writing the whole day at once.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from balances_etl.noah.endpoints import BALANCES
from balances_etl.domain.balances import ARROW_SCHEMA
from balances_etl.storage.parquet import (
    ROW_GROUP_ROWS,
    PartitionWriter,
    StagedPartition,
    read_partition,
)
from balances_etl.transforms.checks import CheckOutcome, SnapshotChecks
from balances_etl.transforms.normalize import normalize_table

# One chunk is one row group of the file (the last one may be smaller).
CHUNK_ROWS = ROW_GROUP_ROWS


@dataclass(frozen=True)
class CheckedPartition:
    """The day's normalized frame, its check outcomes and, unless a blocking check failed, its
    partition written and verified but not yet published."""

    frame: pd.DataFrame
    outcomes: list[CheckOutcome]
    staged: StagedPartition | None

    @property
    def blocking_failures(self) -> list[CheckOutcome]:
        return [outcome for outcome in self.outcomes if outcome.blocking and not outcome.passed]


class DayPartitionBuilder:
    """Takes a day's items page by page (``add``) and returns the checked partition (``finish``).

    Use it as a context manager: on leaving, the thread is stopped and an unpublished file removed.
    ``finish`` raises the normalization error of the first invalid row (``AmountValidationError``);
    a failed write is raised only when no blocking check failed (a failed check says more).
    """

    def __init__(
        self, data_dir: Path, day: dt.date, *, taken_at: dt.datetime, is_late: bool, environment: str
    ) -> None:
        self._data_dir = data_dir
        self._day = day
        self._row_values = {"snapshot_date": day, "snapshot_at": taken_at, "is_late": is_late, "environment": environment}
        self._writer = PartitionWriter(data_dir, day)
        self._checks = SnapshotChecks()
        self._normalized: list[pa.Table] = []
        self._rows = 0
        self._rows_added = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._chunks: collections.deque[pa.Table] = collections.deque()
        self._ready = threading.Condition()
        self._closing = False
        self._error: BaseException | None = None
        self._write_error: Exception | None = None
        self._worker = threading.Thread(target=self._work, name="day-partition", daemon=True)
        self._worker.start()

    def __enter__(self) -> DayPartitionBuilder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop_worker()
        self._writer.close()

    def add(self, items: pa.RecordBatch) -> None:
        """The next page's items (``BALANCES.items.arrow_schema``); a full chunk goes to the thread."""
        self._pending.append(items)
        self._pending_rows += items.num_rows
        self._rows_added += items.num_rows
        if self._pending_rows >= CHUNK_ROWS:
            pending = self._take_pending()
            self._pending = pending.slice(CHUNK_ROWS).to_batches()
            self._pending_rows = pending.num_rows - CHUNK_ROWS
            with self._ready:
                self._chunks.append(pending.slice(0, CHUNK_ROWS))
                self._ready.notify()

    def finish(self) -> CheckedPartition:
        """Process what is left (on this thread, at normal priority) and judge the whole day."""
        self._stop_worker()
        while self._chunks:
            self._process(self._chunks.popleft())
        if self._pending:
            self._process(self._take_pending())
        if self._error is not None:
            raise self._error
        if self._rows != self._rows_added:
            raise RuntimeError(f"{self._rows_added} items were added for {self._day} but {self._rows} rows normalized")
        rows = pa.concat_tables(self._normalized) if self._normalized else ARROW_SCHEMA.empty_table()
        frame = rows.to_pandas(types_mapper=pd.ArrowDtype)
        outcomes = self._checks.outcomes(frame, read_partition(self._data_dir, self._day - dt.timedelta(days=1)))
        checked = CheckedPartition(frame, outcomes, None)
        if checked.blocking_failures:
            return checked
        if self._write_error is not None:
            raise self._write_error
        return CheckedPartition(frame, outcomes, self._writer.finish())

    def _take_pending(self) -> pa.Table:
        items = pa.Table.from_batches(self._pending, schema=BALANCES.items.arrow_schema).combine_chunks()
        self._pending, self._pending_rows = [], 0
        return items

    def _work(self) -> None:
        _run_only_on_idle_cores()
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._chunks or self._closing)
                if self._closing:
                    return
                chunk = self._chunks.popleft()
            self._process(chunk)

    def _stop_worker(self) -> None:
        """Let the thread finish the chunk it holds, and take no other."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._worker.join()

    def _process(self, items: pa.Table) -> None:
        if self._error is not None:
            return  # the day already failed; the first invalid row is the one reported
        try:
            rows = normalize_table(items, first_row=self._rows, **self._row_values)
            self._checks.add_rows(rows)
        except BaseException as error:  # noqa: BLE001 - raised by finish(), on the caller's thread
            self._error = error
            return
        self._rows += rows.num_rows
        self._normalized.append(rows)
        if self._write_error is None:
            try:
                self._writer.write(rows)
            except Exception as error:  # noqa: BLE001 - raised by finish() unless a blocking check failed
                self._write_error = error


def _run_only_on_idle_cores() -> None:
    """Put the calling thread in Linux's SCHED_IDLE class; elsewhere (or where refused) keep its priority."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        pass
