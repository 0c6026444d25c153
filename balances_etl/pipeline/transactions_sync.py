"""A day's transactions sync as plain code: fetch (or replay) newest first down to the horizon, land,
normalize, check, publish.

NOAH's ``GET /v1/transactions`` has no date filter, so a sync reads newest first and stops after the
first page lying entirely before its horizon: the earlier of the earliest Created still Pending
after the previous sync and the previous sync's newest Created minus the overlap (what the
published warehouse knows; without a previous sync it reads everything). The Dagster asset only
turns a :class:`TransactionSync` into metadata and check results; a failure raises
:class:`TransactionSyncFailed` and publishes no partition, so it never costs the day's balances.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from balances_etl.domain.transactions import ARROW_SCHEMA, SyncMetadata
from balances_etl.noah import TRANSACTIONS, FetchStats, NoahClient, NoahError, RawPage, replay
from balances_etl.noah.client import PageConsumer, StopCondition
from balances_etl.pipeline.snapshot import blocking_failure_message
from balances_etl.settings import DEFAULT_TRANSACTIONS_OVERLAP
from balances_etl.storage.parquet import COMPRESSION, TRANSACTION_SYNCS, PartitionFile, PartitionWriter, StagedPartition
from balances_etl.storage.raw import RawLanding, latest_raw_landing, read_raw_bodies, read_raw_manifest
from balances_etl.storage.transaction_reads import (
    PublishedSyncs,
    known_transactions,
    previous_transaction_sync,
    published_syncs,
)
from balances_etl.storage.warehouse import PreviousSync
from balances_etl.transforms.checks import CheckOutcome, PartitionChecks, evaluate_checks
from balances_etl.transforms.normalize import AmountValidationError
from balances_etl.transforms.transactions import TRANSACTION_CHECKS, normalize_transactions, page_created_before

ENDPOINT = TRANSACTIONS.name  # the raw landing's folder
_HORIZON = "horizon"  # the landing manifest's stats key: a replay uses the horizon the fetch used
_DAILY_SYNC_ROWS = 50_000  # below: checks inline, overlapped with the partition write
_DAILY_SYNC_PAGES = 100  # landed durably one by one as they arrive; further pages at the end


class TransactionSyncFailed(RuntimeError):
    """The sync could not be taken or published; the message names the cause. Nothing was published
    but, when the pages were fetched, their raw ``landing`` (kept for a replay once the cause is
    fixed); ``sync`` is the unpublished result when the checks ran (their outcomes for Dagster)."""

    def __init__(self, message: str, landing: Path | None = None, sync: TransactionSync | None = None) -> None:
        super().__init__(message)
        self.landing = landing
        self.sync = sync


@dataclass(frozen=True)
class TransactionSync:
    day: dt.date
    observed_at: dt.datetime
    horizon: dt.datetime | None  # None: the sync read every transaction NOAH has
    previous: PreviousSync | None  # what the horizon came from
    stats: FetchStats
    landing: Path | None  # None when the pages were replayed from an earlier landing
    table: pa.Table  # the sync's rows (``domain.transactions.COLUMNS``)
    outcomes: list[CheckOutcome]
    published: PartitionFile | None  # None when a blocking check failed

    @property
    def rows(self) -> int:
        return self.table.num_rows

    @property
    def pages(self) -> int:
        return self.stats.pages

    @property
    def blocking_failures(self) -> list[CheckOutcome]:
        return [outcome for outcome in self.outcomes if outcome.blocking and not outcome.passed]

    def as_metadata(self) -> dict[str, object]:
        """Plain JSON-able values for Dagster metadata."""
        return {
            **self.stats.as_metadata(),
            "rows": self.rows,
            "observed_at": self.observed_at.isoformat(),
            "horizon": None if self.horizon is None else self.horizon.isoformat(),
            "previous_sync": None if self.previous is None else self.previous.snapshot_date.isoformat(),
            "landing": None if self.landing is None else str(self.landing),
            "partition": None if self.published is None else str(self.published.path),
        }


def sync_horizon(previous: PreviousSync | None, overlap: dt.timedelta) -> dt.datetime | None:
    """The earliest Created the next sync must read: the earlier of the oldest transaction still
    Pending and the previous sync's newest Created minus ``overlap``; None (everything) without one."""
    if previous is None:
        return None
    candidates = [previous.earliest_pending]
    if previous.newest_created is not None:
        candidates.append(previous.newest_created - overlap)
    return min((c for c in candidates if c is not None), default=None)


def stop_at_horizon(horizon: Callable[[], dt.datetime | None], not_after: dt.datetime) -> StopCondition:
    """Stop after the first page lying entirely before the horizon (None: read every page).

    ``horizon()`` may wait for the warehouse read it comes from; it is asked only about a page lying
    entirely before ``not_after``, which no horizon is later than, so the newer pages (a daily
    sync's all but the last few) are fetched while the warehouse is read. The pages read are the
    same as with the horizon known from the start."""

    def stop(document: object) -> bool:
        if not page_created_before(document, not_after):
            return False
        limit = horizon()
        return limit is not None and page_created_before(document, limit)

    return stop


def _set_up_arrow() -> None:
    """Arrow's one-time set-up of the Parquet writer's codec, which a process pays on first use,
    done while the pages are fetched rather than after."""
    pq.write_table(ARROW_SCHEMA.empty_table(), io.BytesIO(), compression=COMPRESSION)


class TransactionsSource(Protocol):
    """Where a sync's pages come from: NOAH now, or an earlier raw landing."""

    observed_at: dt.datetime
    lands: bool  # whether the pages are new, so must be landed

    def horizon(self, previous: PreviousSync | None) -> dt.datetime | None:
        """The horizon the pages are read down to."""

    def pages(self, on_page: PageConsumer, horizon: Callable[[], dt.datetime | None]) -> FetchStats:
        """Hand every valid page and its items to ``on_page``, in order, down to ``horizon()`` (which
        may wait for the warehouse read); raise TransactionSyncFailed."""


class NoahTransactionsSource:
    """The transactions NOAH lists now, read down to the horizon the previous sync leaves."""

    lands = True

    def __init__(self, client: NoahClient, now: dt.datetime, *, overlap: dt.timedelta = DEFAULT_TRANSACTIONS_OVERLAP) -> None:
        if now.utcoffset() is None:
            raise ValueError(f"now must be timezone-aware, got {now!r}")
        self.observed_at = now
        self._client = client
        self._overlap = overlap

    def horizon(self, previous: PreviousSync | None) -> dt.datetime | None:
        return sync_horizon(previous, self._overlap)

    def pages(self, on_page: PageConsumer, horizon: Callable[[], dt.datetime | None]) -> FetchStats:
        # No horizon is later than now minus the overlap: the previous sync's newest Created was
        # listed before now (NOAH's clock running that far ahead of ours would only cost more pages).
        stop_after = stop_at_horizon(horizon, not_after=self.observed_at - self._overlap)
        try:
            return self._client.fetch(TRANSACTIONS, on_page=on_page, stop_after=stop_after).stats
        except NoahError as err:
            raise TransactionSyncFailed(f"NOAH transactions: {err}") from None


class LandedTransactionsSource:
    """The day's latest transactions landing, validated again exactly like a live fetch, with the
    instant and horizon the fetch recorded: re-builds a day's sync without calling NOAH."""

    lands = False

    def __init__(self, data_dir: Path, day: dt.date) -> None:
        landing = latest_raw_landing(data_dir, day, ENDPOINT)
        if landing is None:
            raise TransactionSyncFailed(f"No transactions raw landing for {day}: fetch that day's pages from NOAH first.")
        manifest = read_raw_manifest(landing)
        self.observed_at = manifest.taken_at
        recorded = manifest.stats[_HORIZON]
        self._horizon = None if recorded is None else dt.datetime.fromisoformat(recorded)
        self._stopped_early = bool(manifest.stats["stopped_early"])
        self._bodies = read_raw_bodies(landing)

    def horizon(self, previous: PreviousSync | None) -> dt.datetime | None:
        return self._horizon

    def pages(self, on_page: PageConsumer, horizon: Callable[[], dt.datetime | None]) -> FetchStats:
        try:
            fetched = replay(TRANSACTIONS, self._bodies, stopped_early=self._stopped_early)
        except NoahError as err:
            raise TransactionSyncFailed(f"the transactions raw landing cannot be replayed: {err}") from None
        for page, items in zip(fetched.pages, fetched.columns.batches(), strict=True):
            on_page(page, items)
        return fetched.stats


def sync_transactions(source: TransactionsSource, data_dir: Path, day: dt.date, *, run_id: str) -> TransactionSync:
    """The transactions sync of ``day`` from ``source``: read down to the horizon, land new pages,
    normalize, check against what the warehouse knows, publish the day's partition (replacing a
    previous one). Raises :class:`TransactionSyncFailed` and publishes no partition on any failure.

    A daily sync reads a few dozen pages, so its fixed costs count: both warehouse reads share one
    connection, opened and read for the horizon on a thread while the first pages are fetched;
    each page is written and fsynced as it lands (on the landing's thread); the landing is
    published, the known transactions read and the partition written (privately) on threads while
    the rows are normalized and judged (fsync, DuckDB and Parquet leave the GIL). The partition is
    published only once the landing is durable and if no blocking check failed.
    """
    observed_at = source.observed_at.astimezone(dt.UTC)
    batches: list[pa.RecordBatch] = []
    with ExitStack() as unpublished, ThreadPoolExecutor(max_workers=3, thread_name_prefix="sync") as background:
        warehouse = unpublished.enter_context(ExitStack())  # closed as soon as the known transactions are read

        def read_previous() -> tuple[PublishedSyncs, PreviousSync | None]:
            syncs = warehouse.enter_context(published_syncs(data_dir))
            return syncs, previous_transaction_sync(syncs, day)

        previous_read = background.submit(read_previous)  # while the first pages are fetched
        landing = (
            # a daily sync's few dozen pages made durable as they land; a first sync's thousands
            # mostly written back and fsynced at the end, as balances do
            unpublished.enter_context(RawLanding(data_dir, day, observed_at, run_id, ENDPOINT, durable_pages=_DAILY_SYNC_PAGES))
            if source.lands else None
        )

        background.submit(_set_up_arrow)  # a daily run's process is fresh: while NOAH answers

        def take_page(page: RawPage, items: pa.RecordBatch) -> None:
            if landing is not None:
                landing.add_page(page)
            batches.append(items)

        stats = source.pages(take_page, lambda: source.horizon(previous_read.result()[1]))
        syncs, previous = previous_read.result()
        horizon = source.horizon(previous)

        def publish_landing() -> Path | None:
            return None if landing is None else landing.publish({**stats.as_metadata(), _HORIZON: horizon})

        landing_published = background.submit(publish_landing)
        items = pa.Table.from_batches(batches, schema=TRANSACTIONS.items.arrow_schema)
        try:
            rows = normalize_transactions(items, snapshot_date=day, observed_at=observed_at)
        except AmountValidationError as error:
            raise TransactionSyncFailed(f"transactions sync for {day}: {error}", landing=landing_published.result()) from error
        # Every known transaction the sync saw or should have seen: the last page reaches past the horizon.
        oldest = pc.min(rows["created_at"]).as_py() or horizon
        since = None if horizon is None else min(horizon, oldest)

        def read_known() -> pa.Table:
            with warehouse:
                return known_transactions(syncs, day, since=since, horizon=horizon)

        known = background.submit(read_known)
        metadata = {SyncMetadata.OBSERVED_AT: observed_at.isoformat(),
                    SyncMetadata.HORIZON: "" if horizon is None else horizon.isoformat()}
        partition = unpublished.enter_context(PartitionWriter(data_dir, day, TRANSACTION_SYNCS, metadata))

        def write_partition() -> StagedPartition:
            """Written and verified under its private name (Parquet leaves the GIL); published only
            once the landing is durable."""
            partition.write(rows)
            return partition.finish()

        if rows.num_rows < _DAILY_SYNC_ROWS:
            # A daily sync's few thousand rows: written while judged inline (a pool costs more than it saves).
            staged = background.submit(write_partition)
            checks = PartitionChecks(TRANSACTION_CHECKS)
            checks.add_rows(rows)
            outcomes = checks.outcomes(rows, known.result())
        else:
            # A first sync's million rows: judged on a pool, then written (both at once would hold more copies).
            outcomes = evaluate_checks(TRANSACTION_CHECKS, rows, known.result())
            staged = background.submit(write_partition)
        sync = TransactionSync(day, observed_at, horizon, previous, stats, landing_published.result(), rows, outcomes, None)
        if sync.blocking_failures:
            raise TransactionSyncFailed(blocking_failure_message(day, sync.blocking_failures), landing=sync.landing, sync=sync)
        return replace(sync, published=staged.result().publish())
