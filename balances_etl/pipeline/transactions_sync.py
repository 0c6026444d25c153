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
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from balances_etl.domain.transactions import SyncMetadata
from balances_etl.noah import TRANSACTIONS, FetchStats, NoahClient, NoahError, RawPage, replay
from balances_etl.noah.client import PageConsumer, StopCondition
from balances_etl.pipeline.snapshot import blocking_failure_message
from balances_etl.settings import DEFAULT_TRANSACTIONS_OVERLAP
from balances_etl.storage.parquet import TRANSACTION_SYNCS, PartitionFile, PartitionWriter
from balances_etl.storage.raw import RawLanding, latest_raw_landing, read_raw_bodies, read_raw_manifest
from balances_etl.storage.warehouse import PreviousSync, known_transactions, previous_transaction_sync
from balances_etl.transforms.checks import CheckOutcome, evaluate_checks
from balances_etl.transforms.normalize import AmountValidationError
from balances_etl.transforms.transactions import TRANSACTION_CHECKS, created_before, normalize_transactions

ENDPOINT = TRANSACTIONS.name  # the raw landing's folder
_HORIZON = "horizon"  # the landing manifest's stats key: a replay uses the horizon the fetch used


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
    frame: pd.DataFrame  # the sync's rows (``domain.transactions.COLUMNS``)
    outcomes: list[CheckOutcome]
    published: PartitionFile | None  # None when a blocking check failed

    @property
    def rows(self) -> int:
        return len(self.frame)

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


def stop_before(horizon: dt.datetime | None) -> StopCondition | None:
    """Stop after the first page lying entirely before ``horizon`` (None: read every page)."""
    return None if horizon is None else partial(created_before, horizon=horizon)


class TransactionsSource(Protocol):
    """Where a sync's pages come from: NOAH now, or an earlier raw landing."""

    observed_at: dt.datetime
    lands: bool  # whether the pages are new, so must be landed

    def horizon(self, previous: PreviousSync | None) -> dt.datetime | None:
        """The horizon the pages are read down to."""

    def pages(self, on_page: PageConsumer, stop_after: StopCondition | None) -> FetchStats:
        """Hand every valid page and its items to ``on_page``, in order; raise TransactionSyncFailed."""


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

    def pages(self, on_page: PageConsumer, stop_after: StopCondition | None) -> FetchStats:
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

    def pages(self, on_page: PageConsumer, stop_after: StopCondition | None) -> FetchStats:
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
    previous one). Raises :class:`TransactionSyncFailed` and publishes no partition on any failure."""
    previous = previous_transaction_sync(data_dir, day)
    horizon = source.horizon(previous)
    observed_at = source.observed_at.astimezone(dt.UTC)
    batches: list[pa.RecordBatch] = []
    with ExitStack() as unpublished:
        landing = (
            unpublished.enter_context(RawLanding(data_dir, day, observed_at, run_id, ENDPOINT)) if source.lands else None
        )

        def take_page(page: RawPage, items: pa.RecordBatch) -> None:
            if landing is not None:
                landing.add_page(page)
            batches.append(items)

        stats = source.pages(take_page, stop_before(horizon))
        landed = None
        if landing is not None:
            landed = landing.publish({**stats.as_metadata(), _HORIZON: horizon})
    items = pa.Table.from_batches(batches, schema=TRANSACTIONS.items.arrow_schema)
    try:
        rows = normalize_transactions(items, snapshot_date=day, observed_at=observed_at)
    except AmountValidationError as error:
        raise TransactionSyncFailed(f"transactions sync for {day}: {error}", landing=landed) from error
    frame = rows.to_pandas(types_mapper=pd.ArrowDtype)
    # Every known transaction the sync saw or should have seen: the last page reaches past the horizon.
    oldest = pc.min(rows["created_at"]).as_py() or horizon
    since = None if horizon is None else min(horizon, oldest)
    known = known_transactions(data_dir, day, since=since, horizon=horizon)
    sync = TransactionSync(day, observed_at, horizon, previous, stats, landed, frame,
                           evaluate_checks(TRANSACTION_CHECKS, frame, known), None)
    if sync.blocking_failures:
        raise TransactionSyncFailed(blocking_failure_message(day, sync.blocking_failures), landing=landed, sync=sync)
    metadata = {SyncMetadata.OBSERVED_AT: observed_at.isoformat(),
                SyncMetadata.HORIZON: "" if horizon is None else horizon.isoformat()}
    with PartitionWriter(data_dir, day, TRANSACTION_SYNCS, metadata) as writer:
        writer.write(rows)
        published = writer.finish().publish()
    return replace(sync, published=published)
