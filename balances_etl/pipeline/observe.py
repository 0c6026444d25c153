"""A day's observation of NOAH as plain code: the balance snapshot, then the transactions sync, one
right after the other.

Balances are point-in-time (a day not taken before its lateness window closes is lost), while
transactions are history NOAH keeps (a missed sync is caught up by the next one's horizon). So a
sync that fails never costs the day's snapshot: the balances publish on their own, the failure is
recorded under ``state/`` for the day's last step to report (the run fails with its cause), and a
later successful sync of the day clears it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from balances_etl.pipeline.snapshot import DaySnapshot, DaySource, take_day_snapshot
from balances_etl.noah import NoahClient
from balances_etl.pipeline.transactions_sync import (
    LandedTransactionsSource,
    NoahTransactionsSource,
    TransactionsSource,
    TransactionSync,
    TransactionSyncFailed,
    sync_transactions,
)
from balances_etl.storage.files import atomic_replace

SYNC_FAILURES_DIR = Path("state") / "transactions_sync_failed"
# The day's transactions source, given how long after the snapshot started the sync starts.
TransactionsAfter = Callable[[dt.timedelta], TransactionsSource]


@dataclass(frozen=True)
class DayObservation:
    snapshot: DaySnapshot | None  # None when no snapshot was asked for
    sync: TransactionSync | None  # None when no sync was asked for, or it failed
    sync_failure: TransactionSyncFailed | None


def observe_day(
    balances: DaySource | None,
    transactions: TransactionsAfter | None,
    data_dir: Path,
    day: dt.date,
    *,
    run_id: str,
    build_partition: bool = True,
) -> DayObservation:
    """Take ``day``'s balance snapshot from ``balances`` (raising ``SnapshotFailed`` as
    ``take_day_snapshot`` does), then its transactions sync; either may be None (not asked for).
    A failed sync is recorded and returned, never raised."""
    started = time.monotonic()
    snapshot = None
    if balances is not None:
        snapshot = take_day_snapshot(balances, data_dir, day, run_id=run_id, build_partition=build_partition)
    if transactions is None:
        return DayObservation(snapshot, None, None)
    try:
        source = transactions(dt.timedelta(seconds=time.monotonic() - started))
        sync = sync_transactions(source, data_dir, day, run_id=run_id)
    except TransactionSyncFailed as failure:
        record_sync_failure(data_dir, day, str(failure))
        return DayObservation(snapshot, None, failure)
    clear_sync_failure(data_dir, day)
    return DayObservation(snapshot, sync, None)


def noah_transactions(client: NoahClient, snapshot_now: dt.datetime, overlap: dt.timedelta) -> TransactionsAfter:
    """NOAH's transactions now: observed as long after ``snapshot_now`` as the snapshot took."""
    return lambda elapsed: NoahTransactionsSource(client, snapshot_now + elapsed, overlap=overlap)


def landed_transactions(data_dir: Path, day: dt.date) -> TransactionsAfter:
    """The day's transactions raw landing replayed, with the instant its fetch recorded."""
    return lambda _elapsed: LandedTransactionsSource(data_dir, day)


def _failure_path(data_dir: Path, day: dt.date) -> Path:
    return data_dir / SYNC_FAILURES_DIR / f"{day.isoformat()}.txt"


def record_sync_failure(data_dir: Path, day: dt.date, message: str) -> None:
    path = _failure_path(data_dir, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_replace(path) as tmp:
        tmp.write_text(message, encoding="utf-8")


def clear_sync_failure(data_dir: Path, day: dt.date) -> None:
    _failure_path(data_dir, day).unlink(missing_ok=True)


def sync_failure(data_dir: Path, day: dt.date) -> str | None:
    """The cause of ``day``'s last failed transactions sync, None when it has none outstanding."""
    path = _failure_path(data_dir, day)
    return path.read_text(encoding="utf-8") if path.exists() else None
