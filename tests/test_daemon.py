"""The real Dagster daemon, started as the systemd unit starts it (`dagster-daemon run -w
deploy/workspace.yaml`), on a new instance: the catch-up sensor runs by default, launches a run for
the missing day still inside its window through the run queue, the runs capture those days from the
emulator, the lost day is reported once to a local webhook, and `balances-etl status` agrees."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from balances_etl.domain.names import Orchestration
from balances_etl.operations.outages import WebhookReceiver
from tests.pipeline_support import Pipeline, wired_pipeline

REPO = Path(__file__).resolve().parents[1]
TODAY = dt.datetime.now(dt.UTC).date()
YESTERDAY, LOST = (TODAY - dt.timedelta(days=n) for n in range(1, 3))
LATENESS_HOURS = "24"  # yesterday is recoverable until 24:00 UTC today; the day before closed at 00:00 UTC
DEADLINE_SECONDS = 300  # a run on a busy 2-core machine takes about a minute


@pytest.fixture
def pipeline(tmp_path: Path, p384_keypair: tuple[bytes, bytes]) -> Iterator[Pipeline]:
    with wired_pipeline(tmp_path, p384_keypair) as installed:
        yield installed


def finished_daily_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """The daily job's finished runs (the freshness sensor launches runs of its own checks)."""
    runs = instance.get_runs(dg.RunsFilter(job_name=Orchestration.DAILY_JOB.value))
    return [run for run in runs if run.is_finished]


def test_the_daemon_catches_up_the_recoverable_day_and_reports_the_lost_one(pipeline: Pipeline):
    receiver = WebhookReceiver()
    env = {
        **os.environ, **pipeline.env(),
        "BALANCES_ETL_START_DATE": LOST.isoformat(),
        "BALANCES_ETL_LATENESS_HOURS": LATENESS_HOURS,
        "BALANCES_ETL_ALERT_WEBHOOK_URL": receiver.url,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(REPO / "deploy" / "workspace.yaml")],
        cwd=pipeline.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not finished_daily_runs(pipeline.instance) and time.monotonic() < deadline:
            assert daemon.poll() is None, "the daemon exited"
            time.sleep(2)
        runs = finished_daily_runs(pipeline.instance)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        output = daemon.communicate(timeout=60)[0]
        receiver.close()
    assert [run.tags["dagster/partition"] for run in runs] == [YESTERDAY.isoformat()], output[-3000:]
    assert {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}, output[-3000:]
    assert {run.tags.get("dagster/sensor_name") for run in runs} == {Orchestration.CATCHUP_SENSOR.value}

    lost_alerts = [text for text in receiver.texts if " is lost: " in text]
    assert len(lost_alerts) == 1 and LOST.isoformat() in lost_alerts[0]
    assert not any(pipeline.sandbox.api_key in text for text in receiver.texts)

    status = pipeline.cli("status", "--days", "2", "--json",
                          extra_env={"BALANCES_ETL_START_DATE": LOST.isoformat(), "BALANCES_ETL_LATENESS_HOURS": LATENESS_HOURS})
    assert status.returncode == 2, status.stdout + status.stderr  # a day is lost
    by_day = {day["day"]: day["status"] for day in json.loads(status.stdout)["days"]}
    assert by_day == {YESTERDAY.isoformat(): "captured", LOST.isoformat(): "lost"}
