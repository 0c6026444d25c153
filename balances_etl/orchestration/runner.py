"""Run the daily job for one partition in this process, recorded in the Dagster instance.

The CLI's `materialize`, the demo and the end-to-end tests all go through here, so they run
exactly the job the schedule runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from balances_etl.domain.names import Op, Orchestration
from balances_etl.orchestration.instance_storage import instance_lock
from balances_etl.orchestration.processes import process_alive, this_host
from balances_etl.settings import DAGSTER_YAML_TEMPLATE, SettingsError, dagster_home


HOST_TAG = "balances_etl/host"
PID_TAG = "balances_etl/pid"

# Set: a new DAGSTER_HOME gets the PostgreSQL dagster.yaml (deploy/dagster-postgres.yaml), which reads
# the URL from this variable whenever the instance opens; unset: the SQLite one. Never logged.
POSTGRES_URL_VARIABLE = "BALANCES_ETL_DAGSTER_POSTGRES_URL"
# SQLAlchemy 2.1 reads a bare postgresql:// as the psycopg (3) driver, which is not installed:
# dagster-postgres brings psycopg2, so the URL names it.
_POSTGRES_URL = re.compile(r"postgresql\+psycopg2://\S+")
_SQLITE_STORAGE_SECTIONS = ("run_storage", "event_log_storage", "schedule_storage")
_POSTGRES_YAML_HEADER = f"""\
# Dagster instance for balances-etl on PostgreSQL, written by balances-etl because
# {POSTGRES_URL_VARIABLE} was set when this home was new (the same as deploy/dagster-postgres.yaml).
# The URL, password included, is read from that variable whenever the instance opens: never stored here.
"""


@dataclass(frozen=True)
class CheckEvaluation:
    asset: str
    name: str
    passed: bool
    blocking: bool
    failing_rows: int | None


@dataclass(frozen=True)
class RunOutcome:
    snapshot_date: dt.date
    run_id: str
    success: bool
    error: str | None
    checks: list[CheckEvaluation] = field(default_factory=list)
    materialized: list[str] = field(default_factory=list)


class NotAPartitionError(ValueError):
    """The requested day is not (yet) a daily partition."""


def postgres_instance_config() -> dict[str, Any]:
    """The shipped dagster.yaml with its SQLite storages replaced by ``storage: postgres:``, the URL from the environment."""
    config = yaml.safe_load(DAGSTER_YAML_TEMPLATE.read_text())
    rest = {key: value for key, value in config.items() if key not in _SQLITE_STORAGE_SECTIONS and key != "telemetry"}
    return {
        "telemetry": config.get("telemetry", {"enabled": False}),
        "storage": {"postgres": {"postgres_url": {"env": POSTGRES_URL_VARIABLE}}},
        **rest,
    }


def postgres_url(environ: Mapping[str, str] | None = None) -> str | None:
    """$BALANCES_ETL_DAGSTER_POSTGRES_URL, checked (an error never shows the value: it holds the password)."""
    text = (os.environ if environ is None else environ).get(POSTGRES_URL_VARIABLE, "").strip()
    if not text:
        return None
    if not _POSTGRES_URL.fullmatch(text):
        raise SettingsError(
            f"{POSTGRES_URL_VARIABLE} must be a URL as postgresql+psycopg2://user:password@host:port/database "
            "(value not shown; the driver must be named: psycopg2 is the one installed)",
            variable=POSTGRES_URL_VARIABLE,
        )
    return text


def uses_postgres(config: Mapping[str, Any]) -> bool:
    storage = config.get("storage")
    return isinstance(storage, Mapping) and "postgres" in storage


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers see no file or the whole file, never a part (another process may open the home meanwhile)."""
    handle, temporary = tempfile.mkstemp(prefix=".dagster.yaml.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temporary, 0o644)  # as a copied file would be: it holds no secret
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def prepare_home(home: Path, environ: Mapping[str, str] | None = None) -> Path:
    """Give a new home its dagster.yaml (SQLite, or PostgreSQL when the URL variable is set); check an old one.

    Call under ``instance_lock(home)``. An existing dagster.yaml is never rewritten (a deployment may
    have edited it); one that disagrees with the variable is refused with what to do.
    """
    url = postgres_url(environ)
    config_path = home / "dagster.yaml"
    if not config_path.exists():
        if url is None:
            _write_atomically(config_path, DAGSTER_YAML_TEMPLATE.read_bytes())
        else:
            text = _POSTGRES_YAML_HEADER + yaml.safe_dump(postgres_instance_config(), sort_keys=False)
            _write_atomically(config_path, text.encode())
        return config_path
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError:
        return config_path  # Dagster's own error names the file and the line
    if not isinstance(config, Mapping):
        return config_path
    if url is not None and not uses_postgres(config):
        raise SettingsError(
            f"{POSTGRES_URL_VARIABLE} is set, but {config_path} keeps the Dagster instance in SQLite: replace that file "
            f"with deploy/dagster-postgres.yaml (or remove it: the next run writes it), or unset {POSTGRES_URL_VARIABLE}",
            variable=POSTGRES_URL_VARIABLE,
        )
    if url is None and uses_postgres(config) and POSTGRES_URL_VARIABLE in yaml.safe_dump(config):
        raise SettingsError(
            f"{config_path} keeps the Dagster instance in PostgreSQL at {POSTGRES_URL_VARIABLE}, which is not set",
            variable=POSTGRES_URL_VARIABLE,
        )
    return config_path


@contextlib.contextmanager
def _postgres_schema_lock(url: str | None) -> Iterator[None]:
    """A PostgreSQL advisory lock while the instance creates or checks its tables (processes on other hosts)."""
    if url is None:
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(hashtext('balances_etl.dagster_instance'))"))
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(hashtext('balances_etl.dagster_instance'))"))
    finally:
        engine.dispose()


def open_instance() -> dg.DagsterInstance:
    """The persistent instance at $DAGSTER_HOME (default ./dagster_home), so runs show in the UI.

    A new home gets the project's dagster.yaml (DuckDB pool, one run per day, telemetry off): the
    SQLite one, or the PostgreSQL one when BALANCES_ETL_DAGSTER_POSTGRES_URL is set. The storage is
    created (and a new database's schema stamped) once, under an exclusive lock on
    $DAGSTER_HOME/.instance.lock (and, on PostgreSQL, an advisory lock in the database), so runs
    starting together on a new home do not race to create it.
    """
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    with instance_lock(home):
        prepare_home(home)
        config = yaml.safe_load((home / "dagster.yaml").read_text()) or {}
        url = postgres_url() if isinstance(config, Mapping) and uses_postgres(config) else None
        with _postgres_schema_lock(url):
            instance = dg.DagsterInstance.get()  # creates every storage that is new
            _allocate_duckdb_pool(instance)
            return instance


def _allocate_duckdb_pool(instance: dg.DagsterInstance) -> None:
    """Dagster allocates a pool's slots on first use, in every process that finds none: runs starting
    together on a new instance could each add one (two DuckDB writers at once) or fail on the other's
    row. Allocated here once, under the instance's locks."""
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits and Orchestration.DUCKDB_POOL.value not in storage.get_concurrency_keys():
        storage.initialize_concurrency_limit_to_default(Orchestration.DUCKDB_POOL.value)


def run_daily_job(
    snapshot_date: dt.date,
    *,
    instance: dg.DagsterInstance,
    allow_late: bool = False,
    simulated_now: dt.datetime | None = None,
    verbose: bool = False,
) -> RunOutcome:
    from balances_etl.definitions import load_definitions

    defs = load_definitions()

    job = defs.resolve_job_def(Orchestration.DAILY_JOB)
    if not job.partitions_def.has_partition_key(snapshot_date.isoformat()):
        raise NotAPartitionError(
            f"{snapshot_date} is not a daily partition: partitions run from BALANCES_ETL_START_DATE "
            "to the last UTC day that has ended (a day's snapshot is taken after it ends)"
        )
    release_slots_of_dead_runs(instance)
    op_config: dict[str, object] = {"allow_late": allow_late}
    if simulated_now is not None:
        op_config["simulated_now"] = simulated_now.isoformat()
    result = job.execute_in_process(
        run_config={
            "ops": {Op.OBSERVE_NOAH_DAY.value: {"config": op_config}},
            "loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "CRITICAL"}}},
        },
        instance=instance,
        partition_key=snapshot_date.isoformat(),
        raise_on_error=False,
        tags={HOST_TAG: this_host(), PID_TAG: str(os.getpid())},
    )
    return RunOutcome(
        snapshot_date=snapshot_date,
        run_id=result.run_id,
        success=result.success,
        error=None if result.success else _failure_summary(result.all_events, verbose),
        checks=_check_evaluations(result.all_events),
        materialized=[
            e.asset_key.to_user_string() for e in result.all_events if e.is_step_materialization and e.asset_key
        ],
    )


def release_slots_of_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fail runs of this host whose process died (SIGKILL, OOM) and free their DuckDB pool slot.

    An in-process run that is killed never releases its concurrency slot; without the daemon's
    run monitoring every later run would wait for it forever. A run killed before it reached the
    pool (while fetching, say) holds no slot but would still show as running forever: it is failed too.
    """
    info = instance.event_log_storage.get_concurrency_info(Orchestration.DUCKDB_POOL.value)
    run_ids = {slot.run_id for slot in info.claimed_slots} | {step.run_id for step in info.pending_steps}
    unfinished = instance.get_runs(
        filters=dg.RunsFilter(
            # NOT_STARTED too: a process killed between creating its run and starting it.
            statuses=[dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED],
            tags={HOST_TAG: this_host()},
        )
    )
    run_ids |= {run.run_id for run in unfinished}
    released = []
    for run_id in sorted(run_ids):
        run = instance.get_run_by_id(run_id)
        if run is None or run.tags.get(HOST_TAG) != this_host() or _process_alive(run.tags.get(PID_TAG)):
            continue
        if not run.is_finished:
            instance.report_run_failed(run, "the process running it died; its DuckDB pool slot (if any) was released")
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
        released.append(run_id)
    return released


def _process_alive(pid_text: str | None) -> bool:
    if not pid_text:
        return True  # not ours to judge
    return process_alive(int(pid_text))


def _failure_summary(events: list[dg.DagsterEvent], verbose: bool) -> str:
    messages = []
    for event in events:
        if not event.is_step_failure:
            continue
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            messages.append(f"{event.step_key}: {data.user_failure_data.description}")
            if verbose and data.error is not None:
                messages.append(data.error.to_string())
            continue
        error = data.error
        if error is None:
            messages.append(f"{event.step_key}: failed")
            continue
        root = error
        while root.cause is not None:
            root = root.cause
        message = root.message.strip()
        # Dagster's message already starts with the (possibly qualified) class name: "OSError: [Errno 28] ...".
        if message.split(" ", 1)[0].rstrip(":").rsplit(".", 1)[-1] != root.cls_name:
            message = f"{root.cls_name}: {message}"
        messages.append(f"{event.step_key}: {message}")
        if verbose:
            messages.append(error.to_string())
    return "\n".join(messages or _run_level_errors(events)) or "the run failed before any step ran (see the Dagster UI for the run log)"


def _run_level_errors(events: list[dg.DagsterEvent]) -> list[str]:
    """Why a run failed outside its steps (the run worker, the pool, the instance's storage)."""
    messages = []
    for event in events:
        if event.is_job_failure and event.job_failure_data is not None:
            error, reason = event.job_failure_data.error, event.job_failure_data.failure_reason
        elif event.is_engine_event and event.engine_event_data is not None and event.engine_event_data.error is not None:
            error, reason = event.engine_event_data.error, None
        else:
            continue
        root = error
        while root is not None and root.cause is not None:
            root = root.cause
        detail = f"{root.cls_name}: {root.message.strip()}" if root is not None else (event.message or "")
        messages.append(f"run: {reason.value + ': ' if reason is not None else ''}{detail}")
    return messages


def _check_evaluations(events: list[dg.DagsterEvent]) -> list[CheckEvaluation]:
    evaluations = []
    for event in events:
        if event.event_type != dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            continue
        data = event.asset_check_evaluation_data
        failing = data.metadata.get("failing_rows")
        evaluations.append(
            CheckEvaluation(
                asset=data.asset_key.to_user_string(),
                name=data.check_name,
                passed=data.passed,
                blocking=bool(data.blocking),
                failing_rows=None if failing is None else int(failing.value),
            )
        )
    return evaluations
