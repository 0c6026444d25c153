"""A day's observation as plain code: the balance snapshot, then the transactions sync; a sync that
fails never costs the day's balances, and is recorded until a later sync of the day succeeds."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from test_snapshot import DAY, LATENESS, NOW, RUN_ID, client_for
from transactions_support import FakeNoah, Pipeline, at

from balances_etl.noah import NoahClient
from balances_etl.pipeline.observe import noah_transactions, observe_day, sync_failure
from balances_etl.pipeline.snapshot import NoahDaySource
from balances_etl.pipeline.transactions_sync import TransactionSyncFailed
from balances_etl.storage.parquet import TRANSACTION_SYNCS, partition_path


def failing_sync(_elapsed: dt.timedelta):  # noqa: ANN202 - a TransactionsSource factory
    raise TransactionSyncFailed("NOAH transactions: HTTP 503 on page 1 (Instance 'abc')")


def observe(sandbox, private_pem: bytes, data_dir: Path, transactions, run_id: str = RUN_ID):  # noqa: ANN001, ANN201
    with client_for(sandbox, private_pem) as client:
        source = NoahDaySource(client, DAY, NOW, lateness=LATENESS, allow_late=False)
        return observe_day(source, transactions, data_dir, DAY, run_id=run_id)


def test_a_failed_sync_keeps_the_days_balances_and_is_recorded_until_a_sync_succeeds(sandbox, p384_keypair, tmp_path):
    data_dir = tmp_path / "data"
    failed = observe(sandbox, p384_keypair[0], data_dir, failing_sync)
    assert failed.snapshot is not None and failed.snapshot.published is not None
    assert failed.sync is None and "HTTP 503" in str(failed.sync_failure)
    assert sync_failure(data_dir, DAY) == "NOAH transactions: HTTP 503 on page 1 (Instance 'abc')"
    assert not partition_path(data_dir, DAY, TRANSACTION_SYNCS).exists()

    noah = FakeNoah()
    noah.add("tx-1", at(0), "Settled")
    client: NoahClient = Pipeline(data_dir, noah).client()  # a scripted NOAH /v1/transactions
    retried = observe(sandbox, p384_keypair[0], data_dir, noah_transactions(client, NOW, dt.timedelta(days=3)),
                      run_id="retryrun-0001")
    assert retried.sync_failure is None and retried.sync is not None and retried.sync.rows == 1
    assert retried.sync.observed_at >= NOW  # observed after the snapshot started
    assert partition_path(data_dir, DAY, TRANSACTION_SYNCS).exists()
    assert sync_failure(data_dir, DAY) is None


def test_without_a_balance_source_only_the_sync_runs(tmp_path):
    data_dir = tmp_path / "data"
    observed = observe_day(None, failing_sync, data_dir, DAY, run_id=RUN_ID)
    assert observed.snapshot is None and observed.sync_failure is not None
