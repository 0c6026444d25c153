"""The warehouse is a cache: rebuild it from the store of record in one process, without a Dagster run
per day. Either from the Parquet partitions as they are, or first the partitions themselves from the
raw landings (``--from-raw``), replaying each landing through the normalisation and the blocking
checks exactly as the daily run's replay does.

A transactions sync is checked against what the syncs before it left (``known_before.sql``), so when
a day's sync is replayed the warehouse is brought up to that day before the next one is replayed;
balances need no such order. The final warehouse is always built whole from the Parquet store, beside
the old one, and swapped in only once complete and verified.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from balances_etl.noah.endpoints import BALANCES, TRANSACTIONS
from balances_etl.pipeline.observe import landed_transactions, observe_day
from balances_etl.pipeline.snapshot import LandedDaySource, SnapshotFailed, blocking_failure_message
from balances_etl.settings import PipelineSettings
from balances_etl.storage.parquet import BALANCE_SNAPSHOTS, TRANSACTION_SYNCS, published_partition, stored_partition_dates
from balances_etl.storage.raw import RawIntegrityError, landed_dates, latest_raw_landing
from balances_etl.storage.warehouse import RebuildResult, load_partition, rebuild_from_parquet

DayDone = Callable[[dt.date], None]
Progress = Callable[[str, dt.date], None]  # (what was done, the day it was done for)


class RebuildError(RuntimeError):
    """A day that could not be replayed: nothing after it was replayed, the warehouse is untouched."""


@dataclass(frozen=True)
class Rebuilt:
    replayed_days: list[dt.date]  # balances partitions rebuilt from their raw landings
    replayed_syncs: list[dt.date]  # transactions syncs rebuilt from their raw landings
    warehouse: RebuildResult
    seconds: float


def landed_days(data_dir: Path, endpoint: str, start: dt.date | None, end: dt.date | None) -> list[dt.date]:
    """The days with a complete raw landing of ``endpoint`` (here or in the store) from ``start`` to ``end``."""
    return [day for day in landed_dates(data_dir, endpoint) if (start is None or day >= start)
            and (end is None or day <= end) and latest_raw_landing(data_dir, day, endpoint) is not None]


def rebuild(
    settings: PipelineSettings, *, from_raw: bool = False, start: dt.date | None = None,
    end: dt.date | None = None, progress: Progress | None = None,
) -> Rebuilt:
    """Rebuild ``warehouse.duckdb`` from the Parquet store; with ``from_raw``, first replay the raw
    landings of the days from ``start`` to ``end`` into their partitions. ``progress`` is told of each
    day replayed and each partition made ready here (copied from an S3 store when only it has it)."""
    report: Progress = progress or (lambda _what, _day: None)
    started = time.perf_counter()
    data_dir = settings.data_dir
    warehouse = {"lock_timeout_seconds": settings.lock_timeout_seconds, "stale_after_days": settings.stale_after_days}
    days: list[dt.date] = []
    syncs: list[dt.date] = []
    if from_raw:
        days = landed_days(data_dir, BALANCES.name, start, end)
        syncs = landed_days(data_dir, TRANSACTIONS.name, start, end)
        _replay(data_dir, days, set(syncs), lambda day: report("replayed from raw", day),
                lambda day: load_partition(data_dir, day, settings.sql_dir, **warehouse))
    elif start is not None or end is not None:
        raise ValueError("--start and --end choose the days replayed from raw landings: use them with --from-raw "
                         "(the warehouse itself is always rebuilt whole from the Parquet store)")
    for dataset in (BALANCE_SNAPSHOTS, TRANSACTION_SYNCS):
        for day in stored_partition_dates(data_dir, dataset):
            published_partition(data_dir, day, dataset)
            report(f"{dataset.name} partition ready", day)
    result = rebuild_from_parquet(data_dir, settings.sql_dir, **warehouse)
    return Rebuilt(days, syncs, result, time.perf_counter() - started)


def _replay(data_dir: Path, days: list[dt.date], syncs: set[dt.date], replayed: DayDone, load: DayDone) -> None:
    run_id = f"rebuild-{uuid.uuid4()}"
    for day in sorted(set(days) | syncs):
        try:
            balances = LandedDaySource(data_dir, day) if day in days else None
            observed = observe_day(balances, landed_transactions(data_dir, day) if day in syncs else None,
                                   data_dir, day, run_id=run_id)
        except (SnapshotFailed, RawIntegrityError) as failure:
            raise RebuildError(f"{day}: the balances raw landing could not be replayed: {failure}") from failure
        if observed.sync_failure is not None:
            raise RebuildError(f"{day}: the transactions raw landing could not be replayed: {observed.sync_failure}")
        if observed.snapshot is not None and observed.snapshot.blocking_failures:
            raise RebuildError(blocking_failure_message(day, observed.snapshot.blocking_failures))
        if day in syncs:
            load(day)  # the next sync is checked against this one
        replayed(day)
