"""Run the daily job for one partition in this process, recorded in the Dagster instance.

The CLI's `materialize`, the demo and the end-to-end tests all go through here, so they run
exactly the job the schedule runs.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass, field

import dagster as dg

from balances_etl.domain.names import Op, Orchestration
from balances_etl.orchestration.processes import process_alive, this_host
from balances_etl.settings import DAGSTER_YAML_TEMPLATE, dagster_home


HOST_TAG = "balances_etl/host"
PID_TAG = "balances_etl/pid"


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


def open_instance() -> dg.DagsterInstance:
    """The persistent instance at $DAGSTER_HOME (default ./dagster_home), so runs show in the UI.

    A new home gets the project's dagster.yaml (DuckDB pool, telemetry off).
    """
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(DAGSTER_YAML_TEMPLATE, config)
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


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
    return "\n".join(messages) or "the run failed before any step ran (see the Dagster UI for the run log)"


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
