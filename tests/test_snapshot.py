"""A day's snapshot as plain code, without Dagster: fetch, land, build, check, publish (or not)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from balances_etl.domain.names import Check
from balances_etl.emulator import Fault, FaultKind, NoahSandbox
from balances_etl.noah import NoahClient, NoahConfig
from balances_etl.pipeline.snapshot import (
    LandedDaySource,
    NoahDaySource,
    SnapshotFailed,
    snapshot_now,
    take_day_snapshot,
)
from balances_etl.storage.parquet import parquet_root, partition_path
from balances_etl.storage.raw import latest_raw_landing, raw_root
from balances_etl.transforms.checks import CheckOutcome

DAY = dt.date(2026, 11, 20)
NOW = dt.datetime(2026, 11, 21, 0, 10, tzinfo=dt.UTC)
LATENESS = dt.timedelta(hours=36)
RUN_ID = "plainrun-0001"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def client_for(sandbox: NoahSandbox, private_pem: bytes) -> NoahClient:
    config = NoahConfig.from_env(
        {"NOAH_API_KEY": sandbox.api_key, "NOAH_BASE_URL": sandbox.base_url, "NOAH_SIGNING_KEY": private_pem.decode(),
         "NOAH_PAGE_SIZE": "2", "NOAH_BACKOFF_BASE_SECONDS": "0", "NOAH_BACKOFF_MAX_SECONDS": "0"}
    )
    return NoahClient(config)


def take(sandbox: NoahSandbox, private_pem: bytes, data_dir: Path, now: dt.datetime = NOW, **options: object):
    with client_for(sandbox, private_pem) as client:
        source = NoahDaySource(client, DAY, now, lateness=LATENESS, allow_late=False)
        return take_day_snapshot(source, data_dir, DAY, run_id=RUN_ID, **options)


def test_a_day_is_landed_checked_and_published_exactly(sandbox, p384_keypair, data_dir):
    snapshot = take(sandbox, p384_keypair[0], data_dir)
    assert snapshot.published is not None and snapshot.blocking_failures == []
    assert snapshot.observation.taken_at == NOW and not snapshot.observation.is_late
    assert snapshot.landing is not None and snapshot.landing.path == latest_raw_landing(data_dir, DAY)
    assert (snapshot.stats.pages, snapshot.stats.items) == (2, 3)
    published = pq.read_table(partition_path(data_dir, DAY)).to_pydict()
    served = sandbox.expected_items()
    assert sorted(published["total_raw"]) == sorted(item["Total"] for item in served)
    assert sorted(published["available_raw"]) == sorted(item["Available"] for item in served)


def test_a_failing_blocking_check_publishes_no_partition_but_keeps_the_raw_pages(sandbox, p384_keypair, data_dir):
    sandbox.add_fault(Fault(FaultKind.DUPLICATE_ITEM, page=2))
    snapshot = take(sandbox, p384_keypair[0], data_dir)
    assert snapshot.published is None
    assert [(o.name, o.failing_rows) for o in snapshot.blocking_failures] == [(Check.KEYS_UNIQUE, 2)]
    assert not list(parquet_root(data_dir).rglob("*.parquet"))
    assert snapshot.landing is not None and snapshot.landing.path.is_dir()


def test_noah_failure_names_the_cause_and_leaves_nothing(sandbox, p384_keypair, data_dir):
    sandbox.add_fault(Fault(FaultKind.STATUS, page=2, status=403, times=None, detail="Balances are disabled"))
    with pytest.raises(SnapshotFailed, match="403 Forbidden on page 2.*Balances are disabled") as failed:
        take(sandbox, p384_keypair[0], data_dir)
    assert failed.value.landing is None
    assert not any(raw_root(data_dir).rglob("*.json")) and not list(parquet_root(data_dir).rglob("*.parquet"))


def test_a_day_that_has_not_ended_is_refused_before_noah_is_called(sandbox, p384_keypair, data_dir):
    with pytest.raises(SnapshotFailed, match="has not ended yet"):
        take(sandbox, p384_keypair[0], data_dir, now=NOW - dt.timedelta(hours=1))
    assert sandbox.requests == []


def test_replaying_the_raw_landing_rebuilds_the_same_partition_without_noah(sandbox, p384_keypair, data_dir):
    take(sandbox, p384_keypair[0], data_dir)
    original = pq.read_table(partition_path(data_dir, DAY))
    partition_path(data_dir, DAY).unlink()
    requests = len(sandbox.requests)
    replayed = take_day_snapshot(LandedDaySource(data_dir, DAY), data_dir, DAY, run_id=RUN_ID)
    assert replayed.landing is None and replayed.observation.taken_at == NOW
    assert len(sandbox.requests) == requests
    assert pq.read_table(partition_path(data_dir, DAY)).equals(original)


def test_replay_without_a_landing_says_what_to_do(data_dir):
    with pytest.raises(SnapshotFailed, match=f"No raw landing for {DAY}"):
        LandedDaySource(data_dir, DAY)


def test_simulated_now_is_refused_against_a_real_noah():
    assert snapshot_now("2026-11-21T00:10:00", noah_is_loopback=True) == NOW
    with pytest.raises(SnapshotFailed, match="only accepted against the embedded emulator"):
        snapshot_now("2026-11-21T00:10:00", noah_is_loopback=False)


def test_check_outcomes_come_from_the_check_table(sandbox, p384_keypair, data_dir):
    from balances_etl.domain.checks import BALANCE_PARTITION_CHECKS

    snapshot = take(sandbox, p384_keypair[0], data_dir)
    outcomes: list[CheckOutcome] = snapshot.partition.outcomes
    assert [(o.name, o.blocking, o.description) for o in outcomes] == [
        (info.name, info.blocking, info.description) for info in BALANCE_PARTITION_CHECKS
    ]


def test_the_daily_job_runs_on_resources_given_in_code_without_any_environment(
    sandbox, p384_keypair, tmp_path, monkeypatch
):
    """Tests and deployments can configure the resources instead of the environment."""
    import dagster as dg

    from balances_etl.definitions import load_definitions
    from balances_etl.defs.resources import NoahApiResource, PipelineStorageResource
    from balances_etl.domain.names import Op, Orchestration
    from balances_etl.storage.warehouse import connect_read_only

    for name in [n for n in os.environ if n.startswith(("NOAH_", "BALANCES_ETL_"))]:
        monkeypatch.delenv(name)
    data_dir = tmp_path / "data"
    job = load_definitions().resolve_job_def(Orchestration.DAILY_JOB)
    result = job.execute_in_process(
        run_config={"ops": {Op.OBSERVE_NOAH_DAY.value: {"config": {"simulated_now": NOW.isoformat()}}}},
        instance=dg.DagsterInstance.ephemeral(),
        partition_key=DAY.isoformat(),
        resources={
            "noah": NoahApiResource(api_key=sandbox.api_key, base_url=sandbox.base_url,
                                    signing_key=p384_keypair[0].decode()),
            "storage": PipelineStorageResource(data_dir=str(data_dir)),
        },
    )
    assert result.success
    con = connect_read_only(data_dir)
    try:
        assert con.execute("SELECT count(*) FROM balance_snapshots").fetchall() == [(3,)]
    finally:
        con.close()
