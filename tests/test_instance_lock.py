"""Runs that start together on a new, empty DAGSTER_HOME all succeed: the instance's storage is
created once, under an exclusive lock on $DAGSTER_HOME/.instance.lock, whoever opens it first.

Without the lock, Dagster's SQLite storages raced to create their tables and stamp their alembic
revision ("Version table 'alembic_version' has more than one head present", "table ... already exists").
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from balances_etl.orchestration.instance_storage import LOCK_FILE_NAME, instance_lock
from balances_etl.settings import DAGSTER_YAML_TEMPLATE, temporary_environment
from pipeline_support import Pipeline, spawn, wired_pipeline, yesterday

CLI = ["-m", "balances_etl.cli"]


@pytest.fixture
def pipeline(tmp_path: Path, p384_keypair: tuple[bytes, bytes]) -> Iterator[Pipeline]:
    with wired_pipeline(tmp_path, p384_keypair) as installation:
        yield installation


def test_four_materialize_processes_started_together_on_a_new_home_all_succeed(pipeline: Pipeline) -> None:
    new_home = pipeline.root / "new_dagster_home"  # does not exist: the first process makes it
    a = yesterday()
    days = [a, a, a - dt.timedelta(days=1), a - dt.timedelta(days=2)]  # three days, one of them twice
    children = [
        spawn(pipeline, [*CLI, "materialize", "--date", day.isoformat(), "--allow-late"],
              extra_env={"DAGSTER_HOME": str(new_home)}, name=f"materialize-{n}")
        for n, day in enumerate(days)
    ]
    for child in children:
        child.process.wait(timeout=600)
    for child in children:
        assert child.process.returncode == 0, child.stderr.read_text(errors="replace")[-3000:]
    assert (new_home / "dagster.yaml").read_bytes() == DAGSTER_YAML_TEMPLATE.read_bytes()
    assert (new_home / LOCK_FILE_NAME).exists()
    # (The storage classes locate their files under $DAGSTER_HOME, so point it at the new home to read it.)
    with temporary_environment({"DAGSTER_HOME": str(new_home)}):
        instance = dg.DagsterInstance.get()
        try:
            runs = instance.get_runs()
            assert sorted(run.tags["dagster/partition"] for run in runs) == sorted(day.isoformat() for day in days)
            assert {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}
        finally:
            instance.dispose()


OPEN_WITH_DAGSTER = "import dagster as dg; instance = dg.DagsterInstance.get(); print(len(instance.get_runs()))"


def test_processes_opening_a_new_home_through_dagster_itself_do_not_race(tmp_path: Path) -> None:
    """`dagster job execute`, the daemon, the webserver open the instance without balances-etl's runner:
    the storage classes named in the shipped dagster.yaml take the lock themselves."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DAGSTER_YAML_TEMPLATE, home / "dagster.yaml")
    env = {"PATH": "/usr/bin:/bin", "DAGSTER_HOME": str(home)}
    children = [subprocess.Popen([sys.executable, "-c", OPEN_WITH_DAGSTER], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [child.communicate(timeout=300) for child in children]
    assert [(child.returncode, out.strip()) for child, (out, _) in zip(children, results)] == [(0, "0")] * 4, results
    assert {p.name for p in (home / "history").iterdir()} >= {"runs.db", "runs"}
    assert (home / "schedules" / "schedules.db").exists()


HOLD = textwrap.dedent(
    """
    import sys, time
    from balances_etl.orchestration.instance_storage import instance_lock
    with instance_lock(sys.argv[1]):
        print("locked", flush=True)
    """
)


def test_the_lock_is_exclusive_across_processes_and_reentrant_within_one(tmp_path: Path) -> None:
    with instance_lock(tmp_path), instance_lock(tmp_path):  # re-entrant: the runner, then a storage class
        child = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert child.poll() is None, "the other process got the lock while this one held it"
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0 and out.strip() == "locked"
