"""The Dagster instance on a real PostgreSQL server (tests/postgres.py): chosen by
BALANCES_ETL_DAGSTER_POSTGRES_URL, it records real daily runs (``balances-etl materialize``), keeps the
DuckDB pool to one step at a time across processes, feeds the catch-up sensor and ``balances-etl
status``, and never writes the database password anywhere.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from balances_etl.domain.names import Orchestration
from balances_etl.orchestration.instance_storage import SqliteRunStorageReusingEngines
from balances_etl.orchestration.runner import (
    POSTGRES_URL_VARIABLE,
    open_instance,
    postgres_instance_config,
    prepare_home,
)
from balances_etl.selftest import RecordingSandbox
from balances_etl.settings import PROJECT_ROOT, SettingsError, temporary_environment
from pipeline_support import DAY, Child, Pipeline, day_rows, spawn, wired_pipeline, yesterday
from postgres import PostgresServer, postgres_server, postgres_url  # noqa: F401 - fixtures

CLI = ["-m", "balances_etl.cli"]


class PostgresPipeline(Pipeline):
    """A pipeline installation whose new DAGSTER_HOME is chosen PostgreSQL by the environment variable."""

    postgres_url = ""

    def env(self) -> dict[str, str]:
        return {**super().env(), POSTGRES_URL_VARIABLE: self.postgres_url}


@contextlib.contextmanager
def postgres_pipeline(root: Path, keypair: tuple[bytes, bytes], url: str) -> Iterator[PostgresPipeline]:
    """Like ``wired_pipeline``, but the Dagster home is new and its instance on PostgreSQL at ``url``."""
    private_pem, public_pem = keypair
    api_key = f"apikey_sandbox_test{secrets.token_hex(16)}"
    with (
        RecordingSandbox(api_key=api_key, public_key_pem=public_pem, item_count=3, simulated_date=DAY) as sandbox,
        pytest.MonkeyPatch.context() as patch,
    ):
        pipeline = PostgresPipeline(root, sandbox, private_pem, instance=None)  # type: ignore[arg-type]
        pipeline.postgres_url = url
        for name, value in pipeline.env().items():
            patch.setenv(name, value)
        patch.delenv("NOAH_SIGNING_KEY_PATH", raising=False)
        pipeline.instance = open_instance()  # what `balances-etl materialize` opens: writes the PostgreSQL dagster.yaml
        try:
            yield pipeline
        finally:
            if pipeline.instance is not None:  # a test may have closed it to start over on a new home
                pipeline.instance.dispose()


@pytest.fixture
def pipeline(tmp_path: Path, p384_keypair: tuple[bytes, bytes], postgres_url: str) -> Iterator[PostgresPipeline]:  # noqa: F811
    with postgres_pipeline(tmp_path, p384_keypair, postgres_url) as installed:
        yield installed


def assert_ok(child: Child) -> None:
    assert child.process.returncode == 0, child.stderr.read_text(errors="replace")[-3000:]


def password_of(url: str) -> str:
    return url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]


def files_holding(root: Path, needle: str) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and needle.encode() in path.read_bytes()]


# --- a real daily run, recorded in PostgreSQL ------------------------------------------------------


def test_a_daily_run_and_status_on_postgresql_and_the_password_is_written_nowhere(
    pipeline: PostgresPipeline, postgres_server: PostgresServer  # noqa: F811
) -> None:
    home = pipeline.root / "dagster_home"
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    assert config == postgres_instance_config()
    assert config["storage"] == {"postgres": {"postgres_url": {"env": POSTGRES_URL_VARIABLE}}}
    assert isinstance(pipeline.instance.run_storage, PostgresRunStorage)
    assert isinstance(pipeline.instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(pipeline.instance.schedule_storage, PostgresScheduleStorage)
    queue = pipeline.instance.get_concurrency_config().run_queue_config  # one run per day, as on SQLite
    assert queue is not None and [dict(limit) for limit in queue.tag_concurrency_limits] == [
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]

    day = yesterday()
    child = spawn(pipeline, [*CLI, "materialize", "--date", day.isoformat()], name="materialize")
    child.process.wait(timeout=300)
    assert_ok(child)
    assert sorted(day_rows(pipeline, day)) == sorted(
        (i["AccountType"], i["CryptoCurrency"], i["Available"], i["Total"]) for i in pipeline.sandbox.expected_items())
    assert not (home / "history").exists() and not (home / "schedules").exists(), "nothing went to SQLite"

    runs = pipeline.instance.get_runs()
    assert [(run.job_name, run.status, run.tags["dagster/partition"]) for run in runs] == [
        (Orchestration.DAILY_JOB.value, dg.DagsterRunStatus.SUCCESS, day.isoformat())]
    kinds = [entry.dagster_event.event_type_value for entry in pipeline.instance.all_logs(runs[0].run_id) if entry.dagster_event]
    assert "ASSET_MATERIALIZATION" in kinds and kinds[-1] == "PIPELINE_SUCCESS"

    status = pipeline.cli("status", "--days", "1", "--json")  # reads the runs from PostgreSQL
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["instance_note"] is None
    assert report["days"][0]["status"] == "captured"
    assert report["days"][0]["last_run"]["run_id"] == runs[0].run_id
    assert report["days"][0]["last_run"]["state"] == "succeeded"

    password = password_of(pipeline.postgres_url)
    assert files_holding(pipeline.root, password) == []  # dagster.yaml, data dir, outputs of the children
    dump = postgres_server.dump(pipeline.postgres_url.rsplit("/", 1)[1])
    assert "CREATE TABLE public.runs" in dump and runs[0].run_id in dump
    assert password not in dump  # the serialized instance ref keeps {env: ...}, not the URL


def test_a_wrong_password_fails_clearly_without_showing_it(pipeline: PostgresPipeline, tmp_path: Path) -> None:
    wrong = pipeline.postgres_url.replace(password_of(pipeline.postgres_url), "not-" + secrets.token_hex(8))
    result = pipeline.cli("materialize", "--date", yesterday().isoformat(), extra_env={POSTGRES_URL_VARIABLE: wrong})
    assert result.returncode != 0
    assert "password authentication failed" in result.stderr
    assert password_of(wrong) not in result.stderr + result.stdout


# --- runs at once on a new PostgreSQL instance: the DuckDB pool holds, the sensor reads them ---------


def pool_step_intervals(instance: dg.DagsterInstance, run_id: str, step_keys: set[str]) -> list[tuple[float, float]]:
    """(start, end) of the run's steps in the DuckDB pool, from its event log."""
    starts, ends = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key not in step_keys:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            ends[event.step_key] = entry.timestamp
    return [(starts[key], ends[key]) for key in starts]


def duckdb_pool_steps() -> set[str]:
    from balances_etl.definitions import load_definitions

    job = load_definitions().resolve_job_def(Orchestration.DAILY_JOB.value)
    return {node.name for node in job.graph.nodes if node.definition.pool == Orchestration.DUCKDB_POOL.value}


def test_runs_started_together_on_a_new_postgresql_instance_share_the_duckdb_pool(pipeline: PostgresPipeline) -> None:
    pipeline.instance.dispose()
    pipeline.instance = None  # type: ignore[assignment]
    home = pipeline.root / "dagster_home"
    for path in sorted(home.iterdir()):
        path.unlink()  # a new home (and the database is new): the four processes create it together
    a = yesterday()
    # Four days at once on a new database: each process used to allocate the pool's slots on first use
    # (two writers at once, or a run failing on the other's row); open_instance allocates them under
    # its locks. The same-day case on a new home is test_instance_lock's.
    days = [a - dt.timedelta(days=n) for n in range(4)]
    children = [spawn(pipeline, [*CLI, "materialize", "--date", day.isoformat(), "--allow-late"], name=f"m{n}")
                for n, day in enumerate(days)]
    for child in children:
        child.process.wait(timeout=600)
    for child in children:
        assert_ok(child)

    instance = pipeline.instance = open_instance()
    assert isinstance(instance.run_storage, PostgresRunStorage)
    runs = instance.get_runs()
    assert sorted(run.tags["dagster/partition"] for run in runs) == sorted(day.isoformat() for day in days)
    assert {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}

    steps = duckdb_pool_steps()
    assert steps, "the job has a step in the duckdb pool"
    intervals = sorted(interval for run in runs for interval in pool_step_intervals(instance, run.run_id, steps))
    assert len(intervals) == len(runs) * len(steps)
    overlaps = [(x, y) for x, y in zip(intervals, intervals[1:]) if y[0] < x[1]]
    assert overlaps == [], "two DuckDB writer steps held the pool at once"
    info = instance.event_log_storage.get_concurrency_info(Orchestration.DUCKDB_POOL.value)
    assert info.slot_count == 1 and info.claimed_slots == [] and info.pending_steps == []


def test_the_catchup_sensor_reads_runs_from_postgresql(pipeline: PostgresPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a 96 h window: today-2 is missing and due, today-3 has a run in flight, today-1 was captured."""
    from balances_etl.defs.catchup import catchup_sensor

    monkeypatch.setenv("BALANCES_ETL_LATENESS_HOURS", "96")
    today = dt.datetime.now(dt.UTC).date()
    day = {n: today - dt.timedelta(days=n) for n in range(1, 5)}
    pipeline.sandbox.configure(simulated_date=day[1])
    assert pipeline.run(day[1]).success  # through the runner, recorded in PostgreSQL
    in_flight = pipeline.instance.add_run(dg.DagsterRun(
        job_name=Orchestration.DAILY_JOB.value, run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED,
        tags={"dagster/partition": day[3].isoformat()}))

    result = catchup_sensor(dg.build_sensor_context(instance=pipeline.instance))
    requested = {request.partition_key for request in result.run_requests}
    assert day[2].isoformat() in requested
    assert not {day[1].isoformat(), day[3].isoformat()} & requested
    assert pipeline.instance.get_run_by_id(in_flight.run_id).tags["dagster/partition"] == day[3].isoformat()


# --- choosing PostgreSQL: the variable and the home's dagster.yaml must agree ----------------------


def test_the_shipped_postgres_yaml_is_what_a_new_home_gets_and_keeps_the_instance_settings() -> None:
    shipped = yaml.safe_load((PROJECT_ROOT / "deploy" / "dagster-postgres.yaml").read_text())
    assert shipped == postgres_instance_config()
    sqlite = yaml.safe_load((PROJECT_ROOT / "dagster_home" / "dagster.yaml").read_text())
    assert {k: v for k, v in shipped.items() if k != "storage"} == {
        k: v for k, v in sqlite.items() if k not in ("run_storage", "event_log_storage", "schedule_storage")}


def test_the_variable_against_an_sqlite_home_is_refused_with_what_to_do(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    url = f"postgresql+psycopg2://u:{secrets.token_hex(8)}@127.0.0.1:1/db"
    prepare_home(home, {})  # the SQLite one
    with pytest.raises(SettingsError) as raised:
        prepare_home(home, {POSTGRES_URL_VARIABLE: url})
    assert "keeps the Dagster instance in SQLite" in str(raised.value) and "deploy/dagster-postgres.yaml" in str(raised.value)
    assert password_of(url) not in str(raised.value)


def test_a_postgres_home_without_the_variable_and_a_malformed_url_are_refused_without_the_value(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    secret = secrets.token_hex(8)
    with pytest.raises(SettingsError) as raised:
        prepare_home(home, {POSTGRES_URL_VARIABLE: f"mysql://u:{secret}@h/db"})
    assert "must be a URL as postgresql+psycopg2://" in str(raised.value) and secret not in str(raised.value)
    with pytest.raises(SettingsError, match="the driver must be named") as raised:
        prepare_home(home, {POSTGRES_URL_VARIABLE: f"postgresql://u:{secret}@h/db"})  # SQLAlchemy 2.1: psycopg 3
    assert secret not in str(raised.value)
    assert not (home / "dagster.yaml").exists()
    prepare_home(home, {POSTGRES_URL_VARIABLE: f"postgresql+psycopg2://u:{secret}@127.0.0.1:1/db"})
    assert secret not in (home / "dagster.yaml").read_text()
    with pytest.raises(SettingsError, match=f"{POSTGRES_URL_VARIABLE}, which is not set"):
        prepare_home(home, {})
    with temporary_environment({"DAGSTER_HOME": str(home)}, unset=[POSTGRES_URL_VARIABLE]), pytest.raises(SettingsError):
        open_instance()  # what `balances-etl materialize` reports as a configuration error (exit 2)


# --- measured, not asserted: a daily run on SQLite vs on PostgreSQL --------------------------------


@pytest.mark.slow
def test_measure_a_daily_run_on_sqlite_and_on_postgresql(
    tmp_path: Path, p384_keypair: tuple[bytes, bytes], postgres_url: str  # noqa: F811
) -> None:
    """Prints wall times of `balances-etl materialize` (whole process) on each; run with -s."""
    rounds = 5
    times: dict[str, list[float]] = {}
    installations = {
        "sqlite": lambda: wired_pipeline(tmp_path / "sqlite", p384_keypair),
        "postgres": lambda: postgres_pipeline(tmp_path / "postgres", p384_keypair, postgres_url),
    }
    for name, installation in installations.items():
        with installation() as installed:
            storage = type(installed.instance.run_storage).__name__
            custom = isinstance(installed.instance.run_storage, SqliteRunStorageReusingEngines)
            times[name] = []
            first = yesterday()
            for n in range(rounds + 1):  # the first run pays the home's creation: not counted
                day = first - dt.timedelta(days=n)
                start = time.perf_counter()
                result = installed.cli("materialize", "--date", day.isoformat(), "--allow-late")
                elapsed = time.perf_counter() - start
                assert result.returncode == 0, result.stderr
                if n:
                    times[name].append(elapsed)
                else:
                    print(f"\n{name}: first run on a new home {elapsed:.2f} s")
            print(f"{name}: run storage {storage} (balances-etl's engine-reusing SQLite storage: {custom}); "
                  f"median {statistics.median(times[name]):.2f} s over {rounds} runs: "
                  f"{', '.join(f'{v:.2f}' for v in times[name])}")
