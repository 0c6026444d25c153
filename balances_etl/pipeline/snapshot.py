"""A day's balance snapshot as plain code: fetch (or replay), land, build, check, publish.

The Dagster asset only turns a :class:`DaySnapshot` into materializations and check results; the
tests, the selftest and the benchmarks call :func:`take_day_snapshot` without Dagster.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from balances_etl.domain.timing import SnapshotTimingError, snapshot_timing
from balances_etl.noah import BALANCES, FetchStats, NoahClient, NoahError, RawPage, replay
from balances_etl.noah.client import PageConsumer
from balances_etl.pipeline.day_partition import CheckedPartition, DayPartitionBuilder
from balances_etl.storage.parquet import PartitionFile
from balances_etl.storage.raw import RawLanding, latest_raw_landing, read_raw_bodies, read_raw_manifest
from balances_etl.transforms.checks import CheckOutcome
from balances_etl.transforms.normalize import AmountValidationError


class SnapshotFailed(RuntimeError):
    """The day could not be taken or published; the message names the cause.

    ``landing`` is the raw landing published before the failure, if any: raw pages are kept even
    when the partition cannot be built, so the day can be replayed once the cause is fixed.
    """

    def __init__(self, message: str, landing: Landing | None = None) -> None:
        super().__init__(message)
        self.landing = landing


@dataclass(frozen=True)
class Observation:
    """When and where the snapshot was taken: what every row of the day records."""

    taken_at: dt.datetime
    is_late: bool
    environment: str


@dataclass(frozen=True)
class Landing:
    """A published raw landing: the pages as received, and what fetching them cost."""

    path: Path
    observation: Observation
    stats: FetchStats


@dataclass(frozen=True)
class DaySnapshot:
    day: dt.date
    observation: Observation
    stats: FetchStats
    landing: Landing | None  # None when the pages were replayed from an earlier landing
    partition: CheckedPartition | None  # None when the partition was not asked for
    published: PartitionFile | None  # None when not built or when a blocking check failed

    @property
    def blocking_failures(self) -> list[CheckOutcome]:
        return [] if self.partition is None else self.partition.blocking_failures


class DaySource(Protocol):
    """Where a day's pages come from: NOAH now, or an earlier raw landing."""

    observation: Observation
    lands: bool  # whether the pages are new, so must be landed

    def pages(self, on_page: PageConsumer) -> FetchStats:
        """Hand every valid page and its items to ``on_page``, in order; raise SnapshotFailed."""


class NoahDaySource:
    """Today's balances from NOAH, as the snapshot of ``day`` taken ``now`` (the lateness rule decides
    whether that is allowed and whether it is late)."""

    lands = True

    def __init__(self, client: NoahClient, day: dt.date, now: dt.datetime, *, lateness: dt.timedelta,
                 allow_late: bool) -> None:
        try:
            timing = snapshot_timing(day, now, lateness=lateness, allow_late=allow_late)
        except SnapshotTimingError as err:
            raise SnapshotFailed(str(err)) from None
        self.observation = Observation(timing.taken_at, timing.is_late, client.config.environment)
        self._client = client

    def pages(self, on_page: PageConsumer) -> FetchStats:
        try:
            return self._client.fetch(BALANCES, on_page=on_page).stats
        except NoahError as err:
            raise SnapshotFailed(str(err)) from None


class LandedDaySource:
    """The day's latest raw landing, validated again exactly like a live fetch: re-builds a day's
    partition without calling NOAH, with the observation the landing recorded."""

    lands = False

    def __init__(self, data_dir: Path, day: dt.date) -> None:
        landing = latest_raw_landing(data_dir, day)
        if landing is None:
            raise SnapshotFailed(f"No raw landing for {day}: fetch that day's pages from NOAH first.")
        manifest = read_raw_manifest(landing)
        self.observation = Observation(
            manifest.taken_at, bool(manifest.stats["is_late"]), str(manifest.stats["environment"])
        )
        self._bodies = read_raw_bodies(landing)

    def pages(self, on_page: PageConsumer) -> FetchStats:
        try:
            snapshot = replay(BALANCES, self._bodies)
        except NoahError as err:
            raise SnapshotFailed(f"the raw landing cannot be replayed: {err}") from None
        for page, items in zip(snapshot.pages, snapshot.columns.batches(), strict=True):
            on_page(page, items)
        return snapshot.stats


def take_day_snapshot(
    source: DaySource, data_dir: Path, day: dt.date, *, run_id: str, build_partition: bool = True
) -> DaySnapshot:
    """Take ``day`` from ``source``: land new pages, build and check the partition while they arrive,
    and publish it unless a blocking check fails. Nothing half-done is ever published: the landing's
    and the partition's temporaries are removed unless published, and earlier days are untouched."""
    observation = source.observation
    with ExitStack() as unpublished:
        landing = unpublished.enter_context(RawLanding(data_dir, day, observation.taken_at, run_id)) if source.lands else None
        builder = None
        if build_partition:
            builder = unpublished.enter_context(
                DayPartitionBuilder(data_dir, day, taken_at=observation.taken_at, is_late=observation.is_late,
                                    environment=observation.environment)
            )

        def take_page(page: RawPage, items: pa.RecordBatch) -> None:
            if landing is not None:
                landing.add_page(page)
            if builder is not None:
                builder.add(items)

        stats = source.pages(take_page)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-landing") as pool:
            landing_job = None
            if landing is not None:
                landing_metadata = {**stats.as_metadata(), "environment": observation.environment,
                                    "is_late": observation.is_late}
                landing_job = pool.submit(landing.publish, landing_metadata)
            # While the landing is made durable (waiting on the disk), finish the partition (CPU).
            # Nothing is published before the landing is, and the landing's own failure is raised first.
            failure: Exception | None = None
            partition = None
            if builder is not None:
                try:
                    partition = builder.finish()
                except Exception as error:  # noqa: BLE001 - raised below, once the landing is done
                    failure = error
            landed = _landed(landing_job, observation, stats)
        if failure is not None:
            reason = str(failure) if isinstance(failure, AmountValidationError) else f"{type(failure).__name__}: {failure}"
            raise SnapshotFailed(reason, landing=landed) from failure
        published = None
        if partition is not None and not partition.blocking_failures:
            assert partition.staged is not None  # written and verified whenever no blocking check failed
            published = partition.staged.publish()
    return DaySnapshot(day, observation, stats, landed, partition, published)


def _landed(job: Future[Path] | None, observation: Observation, stats: FetchStats) -> Landing | None:
    return None if job is None else Landing(job.result(), observation, stats)


def blocking_failure_message(day: dt.date, failed: list[CheckOutcome]) -> str:
    parts = [f"{o.name} ({o.failing_rows} rows): {o.description}\n{o.sample_markdown()}" for o in failed]
    return (
        f"Blocking checks failed for {day}; nothing was published (the previous Parquet "
        "partition and the warehouse are untouched):\n" + "\n".join(parts)
    )


def snapshot_now(simulated_now: str | None, *, noah_is_loopback: bool) -> dt.datetime:
    """Now, or the simulated now the demo and tests give: accepted only against the embedded emulator."""
    if simulated_now is None:
        return dt.datetime.now(dt.UTC)
    if not noah_is_loopback:
        raise SnapshotFailed("simulated_now is only accepted against the embedded emulator (a loopback NOAH_BASE_URL).")
    now = dt.datetime.fromisoformat(simulated_now)
    return now if now.tzinfo else now.replace(tzinfo=dt.UTC)
