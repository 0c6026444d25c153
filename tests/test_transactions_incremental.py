"""The daily transactions sync is incremental against the real emulator over loopback HTTP with the
real client: with about 10,000 known transactions and about 50 new a day, it requests only the pages
that hold new or still-Pending transactions, plus the one that proves the horizon was passed (counted
on the emulator's request log), and still records an old Pending transaction that settled."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from transactions_support import balances_frame, sync_instant

from balances_etl.emulator import NoahSandbox
from balances_etl.emulator.dataset import Dormancy
from balances_etl.emulator.server import TRANSACTIONS_PATH
from balances_etl.noah import NoahClient, NoahConfig
from balances_etl.pipeline.transactions_sync import (
    NoahTransactionsSource,
    TransactionSync,
    stop_at_horizon,
    sync_transactions,
)
from balances_etl.settings import DEFAULT_TRANSACTIONS_OVERLAP, PROJECT_ROOT
from balances_etl.storage.parquet import publish_partition
from balances_etl.storage.warehouse import connect_read_only, load_partition

FIRST = dt.date(2026, 11, 1)
PAGE_SIZE = 100
SEED = 4  # a seed whose dormant reserve has a pending outflow
# 37 transacting items over 210 days: 10,061 transactions listed on FIRST, about 50 created a day.
ITEMS, LEDGER_DAYS = 37, 210
# The dormant reserve's outflow: created ten days before the first sync, Pending until FIRST + 2.
DORMANCY = Dormancy(since=FIRST - dt.timedelta(days=10), settles=FIRST + dt.timedelta(days=2))


@pytest.fixture
def sandbox(p384_keypair: tuple[bytes, bytes]) -> Iterator[NoahSandbox]:
    with NoahSandbox(public_key_pem=p384_keypair[1], seed=SEED, simulated_date=FIRST, item_count=ITEMS) as sb:
        sb.configure(ledger_days=LEDGER_DAYS, dormancy=DORMANCY)
        yield sb


def _query(data_dir: Path, sql: str) -> list[tuple]:
    con = connect_read_only(data_dir)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _daily_sync(sandbox: NoahSandbox, private_pem: bytes, data_dir: Path, day: dt.date,
                overlap: dt.timedelta) -> tuple[TransactionSync, int]:
    """The day's sync and warehouse load; returns it and the transactions pages the emulator answered."""
    sandbox.configure(simulated_date=day)
    sandbox.reset_requests()
    config = NoahConfig.from_env({"NOAH_API_KEY": sandbox.api_key, "NOAH_BASE_URL": sandbox.base_url,
                                  "NOAH_SIGNING_KEY": private_pem.decode(), "NOAH_PAGE_SIZE": str(PAGE_SIZE)})
    with NoahClient(config) as client:
        sync = sync_transactions(NoahTransactionsSource(client, sync_instant(day), overlap=overlap), data_dir, day, run_id=f"run-{day}")
    publish_partition(data_dir, day, balances_frame(day))
    load_partition(data_dir, day, PROJECT_ROOT / "sql")
    pages = sum(1 for r in sandbox.requests if r.path == TRANSACTIONS_PATH and r.status == 200)
    return sync, pages


def _pages_needed(sandbox: NoahSandbox, known: set[str], pending: set[str], reread_from: dt.datetime) -> int:
    """The deepest page (newest first) holding a transaction not yet known, known as Pending or inside
    the overlap the sync reads again (from ``reread_from``), plus one."""
    listing = sandbox.config.transactions(sandbox.environment)[::-1]
    deepest = max(position for position, item in enumerate(listing)
                  if item["ID"] not in known or item["ID"] in pending
                  or dt.datetime.fromisoformat(item["Created"]) >= reread_from)
    return deepest // PAGE_SIZE + 1 + 1


# No overlap: exactly the pages holding new or still-Pending transactions, plus one; the default
# overlap (3 days) adds the pages it reads again on purpose.
@pytest.mark.parametrize("overlap", [dt.timedelta(0), DEFAULT_TRANSACTIONS_OVERLAP], ids=["no-overlap", "default-overlap"])
def test_daily_sync_reads_only_new_and_pending_pages_and_records_an_old_pending_that_settled(
    sandbox: NoahSandbox, p384_keypair: tuple[bytes, bytes], tmp_path: Path, overlap: dt.timedelta
) -> None:
    data_dir = tmp_path / "data"
    listing = sandbox.config.transactions(sandbox.environment)
    dormant = [t for t in listing if t["Created"].startswith(str(DORMANCY.since)) and t["Status"] == "Pending"]
    assert len(dormant) == 1, "the dormant reserve's outflow is Pending on the first day"
    dormant_id = dormant[0]["ID"]

    first, pages = _daily_sync(sandbox, p384_keypair[0], data_dir, FIRST, overlap)
    assert first.horizon is None and first.rows == len(listing) >= 10_000
    assert pages == -(-len(listing) // PAGE_SIZE)  # the first sync reads everything

    for offset in (1, 2, 3):
        day = FIRST + dt.timedelta(days=offset)
        known = {row[0] for row in _query(data_dir, "SELECT transaction_id FROM transactions")}
        pending = {row[0] for row in _query(data_dir, "SELECT transaction_id FROM transactions WHERE status = 'Pending'")}
        sandbox.configure(simulated_date=day)
        new = sum(1 for t in sandbox.config.transactions(sandbox.environment) if t["ID"] not in known)
        assert 40 <= new <= 60, f"about 50 new transactions a day, {new} on {day}"
        sync, pages = _daily_sync(sandbox, p384_keypair[0], data_dir, day, overlap)
        assert sync.stats.stopped_early and sync.previous is not None and sync.previous.newest_created is not None
        needed = _pages_needed(sandbox, known, pending, sync.previous.newest_created - overlap)
        assert pages <= needed, f"{day}: {pages} pages requested, at most {needed} hold new or Pending transactions (+1)"
        assert pages <= 10, f"{day}: {pages} pages of {-(-len(listing) // PAGE_SIZE)}: the sync is not incremental"

    history = _query(data_dir, "SELECT status, snapshot_date FROM transaction_status_history "
                               f"WHERE transaction_id = '{dormant_id}' ORDER BY observed_at")
    assert history == [("Pending", FIRST), ("Settled", DORMANCY.settles)]


def test_the_stop_rule_waits_for_the_horizon_only_on_pages_older_than_any_horizon() -> None:
    """The warehouse is read while the newer pages are fetched: the stop rule asks for the horizon
    (and may wait for it) only about a page lying entirely before now minus the overlap."""
    asked: list[str] = []

    def horizon() -> dt.datetime:
        asked.append("asked")
        return dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)

    def page(*created: str) -> dict:
        return {"Items": [{"Created": value} for value in created]}

    stop = stop_at_horizon(horizon, not_after=dt.datetime(2026, 3, 2, tzinfo=dt.UTC))
    assert not stop(page("2026-03-02T00:00:00Z", "2026-03-01T00:00:00Z"))  # holds a Created after any horizon
    assert asked == []
    assert not stop(page("2026-03-01T13:00:00+01:00", "2026-03-01T11:00:00Z"))  # 12:00 UTC: not before it
    assert stop(page("2026-03-01T11:59:59.9999999Z", "2026-03-01T10:00:00Z"))  # entirely before it
    assert not stop(page("2026-03-01T10:00:00Z", "2026-03-01T12:00:00Z"))  # out of order: read whole
    assert len(asked) == 3
    assert not stop(page("not an instant", "2026-03-01T10:00:00Z"))  # validation fails it, not the rule
    assert len(asked) == 3
    assert not stop_at_horizon(lambda: None, not_after=dt.datetime(2026, 3, 2, tzinfo=dt.UTC))(
        page("2020-01-01T00:00:00Z")
    )  # no horizon: every page is read
