"""`balances-etl status`: each recent day captured, at risk or lost, as text or JSON, with an exit
status monitoring can use (0 all well, 1 a day at risk, 2 a day lost)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from balances_etl.operations.catchup import next_attempt_at
from balances_etl.operations.days import (
    Attempt,
    DayReport,
    DayStatus,
    Policy,
    describe_attempt,
    duration,
    ended_days,
    judge_days,
    utc,
)
from balances_etl.settings import PipelineSettings


class Health(IntEnum):
    """The exit status."""

    WELL = 0
    AT_RISK = 1
    LOST = 2


@dataclass(frozen=True)
class Status:
    now: dt.datetime
    reports: list[DayReport]
    next_run_at: dt.datetime
    next_run_day: dt.date
    policy: Policy
    instance_note: str | None = None  # why no run history could be read, if so

    @property
    def health(self) -> Health:
        states = {r.status for r in self.reports}
        if DayStatus.LOST in states:
            return Health.LOST
        return Health.AT_RISK if DayStatus.AT_RISK in states else Health.WELL


def collect_status(settings: PipelineSettings, home: Path, days: int, now: dt.datetime) -> Status:
    """Read the Parquet store and the Dagster instance at ``home`` (never creating a home) and judge the last ``days`` days."""
    from balances_etl.operations import history

    policy = Policy.from_settings(settings)
    wanted = ended_days(now, days, policy.start_date)
    note, runs = None, []
    if not home.is_dir():
        note = f"no Dagster instance at {home} (DAGSTER_HOME): run history unknown"
    else:
        os.environ["DAGSTER_HOME"] = str(home)
        from balances_etl.orchestration.runner import open_instance

        instance = open_instance()  # under the instance lock: a run may be creating the storage right now
        try:
            runs = history.attempts(instance, wanted)
        finally:
            instance.dispose()
    reports = judge_days(now, wanted, history.captures(settings.data_dir, wanted), runs, policy)
    return build_status(now, reports, policy, note)


def build_status(now: dt.datetime, reports: list[DayReport], policy: Policy, instance_note: str | None = None) -> Status:
    at, day = policy.next_scheduled_run(now)
    return Status(now, reports, at, day, policy, instance_note)


def day_line(report: DayReport, status: Status) -> str:
    now, day = status.now, report.day
    if report.capture is not None:
        capture = report.capture
        kind = "late (is_late)" if capture.is_late else "on time"
        line = f"captured {kind}: taken {utc(capture.taken_at)}, {duration(capture.delay)} after the day ended"
    elif report.status is DayStatus.LOST:
        line = f"LOST: its lateness window closed at {utc(report.recoverable_until)} without a snapshot"
    else:
        left = f"{duration(report.recoverable_until - now)} left"
        prefix = "AT RISK: missing" if report.status is DayStatus.AT_RISK else "due: not captured yet"
        line = f"{prefix}, recoverable until {utc(report.recoverable_until)} ({left})"
        retry = next_attempt_at(report, status.policy)
        if report.in_flight:
            line += "; a run is in progress"
        elif retry is not None:
            line += f"; catch-up from {utc(max(retry, now))}"
        line += f"; now: balances-etl materialize --date {day}"
    last = report.last_attempt
    line += f"\n            last run: {describe_attempt(last)}" if last else "\n            last run: none"
    return f"{day}  {line}"


def render_text(status: Status) -> str:
    lines = [f"balances-etl status at {utc(status.now)}"]
    if status.instance_note:
        lines.append(status.instance_note)
    lines += [day_line(report, status) for report in status.reports]
    lines.append(f"next scheduled run: {utc(status.next_run_at)} for {status.next_run_day}")
    verdict = {Health.WELL: "all well", Health.AT_RISK: "a day is at risk", Health.LOST: "a day is lost"}[status.health]
    lines.append(f"exit {int(status.health)}: {verdict}")
    return "\n".join(lines)


def as_json(status: Status) -> dict[str, Any]:
    return {
        "now": status.now.isoformat(),
        "exit_code": int(status.health),
        "health": status.health.name.lower(),
        "next_scheduled_run": {"at": status.next_run_at.isoformat(), "day": status.next_run_day.isoformat()},
        "instance_note": status.instance_note,
        "days": [_day_json(report, status) for report in status.reports],
    }


def _day_json(report: DayReport, status: Status) -> dict[str, Any]:
    capture, retry = report.capture, next_attempt_at(report, status.policy)
    return {
        "day": report.day.isoformat(),
        "status": report.status.value,
        "captured_at": capture.taken_at.isoformat() if capture else None,
        "delay_seconds": int(capture.delay.total_seconds()) if capture else None,
        "is_late": capture.is_late if capture else None,
        "recoverable_until": report.recoverable_until.isoformat(),
        "fresh_by": report.fresh_by.isoformat(),
        "runs": len(report.attempts),
        "last_run": _attempt_json(report.last_attempt) if report.last_attempt else None,
        "next_catchup_at": max(retry, status.now).isoformat() if retry else None,
        "command": None if report.status is DayStatus.CAPTURED else _command(report),
    }


def _command(report: DayReport) -> str:
    late = " --allow-late" if report.status is DayStatus.LOST else ""
    return f"balances-etl materialize --date {report.day.isoformat()}{late}"


def _attempt_json(attempt: Attempt) -> Mapping[str, Any]:
    return {
        "run_id": attempt.run_id,
        "state": attempt.state.value,
        "launched_by": attempt.launched_by,
        "created_at": attempt.created_at.isoformat(),
        "ended_at": attempt.ended_at.isoformat() if attempt.ended_at else None,
        "error": attempt.error,
        "noah_instance": attempt.noah_instance,
    }

