"""What happened, read without changing anything: published days from the Parquet store of record,
and the daily job's runs from the Dagster instance (runs of a day carry its ``dagster/partition`` tag).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from balances_etl.domain.names import Orchestration
from balances_etl.operations.days import Attempt, Capture, RunState
from balances_etl.storage.parquet import partition_path, published_partition
from balances_etl.storage.raw import latest_raw_landing, read_raw_manifest

PARTITION_TAG = "dagster/partition"
SCHEDULE_TAG = "dagster/schedule_name"
SENSOR_TAG = "dagster/sensor_name"
# How NOAH's error reference appears in a failure message (balances_etl.noah.errors).
_INSTANCE = re.compile(r"Instance '([^']+)'")
_STATES = {
    dg.DagsterRunStatus.QUEUED: RunState.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED: RunState.QUEUED,
    dg.DagsterRunStatus.STARTING: RunState.RUNNING,
    dg.DagsterRunStatus.STARTED: RunState.RUNNING,
    dg.DagsterRunStatus.MANAGED: RunState.RUNNING,
    dg.DagsterRunStatus.CANCELING: RunState.RUNNING,
    dg.DagsterRunStatus.SUCCESS: RunState.SUCCEEDED,
    dg.DagsterRunStatus.FAILURE: RunState.FAILED,
    dg.DagsterRunStatus.CANCELED: RunState.CANCELED,
}


def captures(data_dir: Path, days: Iterable[dt.date]) -> dict[dt.date, Capture]:
    """The published days among ``days``, with when their rows say the snapshot was taken."""
    return {day: _capture(data_dir, day) for day in sorted(set(days)) if published_partition(data_dir, day)}


def _capture(data_dir: Path, day: dt.date) -> Capture:
    table = pq.read_table(partition_path(data_dir, day), columns=["snapshot_at", "is_late"]).slice(0, 1).to_pylist()
    if table:
        taken_at, is_late = table[0]["snapshot_at"], table[0]["is_late"]
    else:  # a published day with zero balances: its landing records the same observation
        landing = latest_raw_landing(data_dir, day)
        manifest = read_raw_manifest(landing) if landing is not None else None
        taken_at = manifest.taken_at if manifest else dt.datetime.fromtimestamp(
            partition_path(data_dir, day).stat().st_mtime, dt.UTC)
        is_late = bool(manifest.stats.get("is_late")) if manifest else False
    if taken_at.tzinfo is None:
        taken_at = taken_at.replace(tzinfo=dt.UTC)
    return Capture(day, taken_at, bool(is_late))


def attempts(instance: dg.DagsterInstance, days: Iterable[dt.date]) -> list[Attempt]:
    """Every run of the daily job for ``days``, oldest first, with the failure of those that failed."""
    keys = sorted(day.isoformat() for day in days)
    if not keys:
        return []
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=Orchestration.DAILY_JOB.value, tags={PARTITION_TAG: keys})
    )
    found = []
    for record in records:
        run = record.dagster_run
        state = _STATES.get(run.status, RunState.RUNNING)
        error = _failure(instance, run.run_id) if state is RunState.FAILED else None
        instances = _INSTANCE.findall(error or "")
        found.append(
            Attempt(
                run_id=run.run_id,
                day=dt.date.fromisoformat(run.tags[PARTITION_TAG]),
                state=state,
                created_at=record.create_timestamp.astimezone(dt.UTC),
                ended_at=None if record.end_time is None or state.in_flight
                else dt.datetime.fromtimestamp(record.end_time, dt.UTC),
                launched_by=_launched_by(run.tags),
                error=error,
                noah_instance=instances[-1] if instances else None,
            )
        )
    return sorted(found, key=lambda a: a.created_at)


def _launched_by(tags: dict[str, str]) -> str:
    if SCHEDULE_TAG in tags:
        return "schedule"
    if tags.get(SENSOR_TAG) == Orchestration.CATCHUP_SENSOR.value:
        return "catch-up"
    return "manual"


def _failure(instance: dg.DagsterInstance, run_id: str) -> str:
    """The run's failure as its steps recorded it (the same text `materialize` prints), else the run's."""
    messages = []
    for entry in instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}):
        event = entry.dagster_event
        if event is None:
            continue
        if event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                messages.append(data.user_failure_data.description)
            elif data.error is not None:
                root = data.error
                while root.cause is not None:
                    root = root.cause
                messages.append(root.message.strip())
        elif not messages and event.message:
            messages.append(event.message)
    return "\n".join(messages) or "the run failed (see the Dagster UI for its log)"
