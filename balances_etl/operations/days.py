"""Where each recent day stands: captured, due, at risk (still recoverable) or lost.

NOAH keeps no balance history, so a day is recoverable only until its lateness window closes
(``BALANCES_ETL_LATENESS_HOURS`` after it ends); after that its snapshot is lost for good.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from balances_etl.domain.timing import end_of_day
from balances_etl.settings import PipelineSettings


class DayStatus(StrEnum):
    CAPTURED = "captured"  # a published Parquet partition: the store of record
    DUE = "due"  # not captured yet, its freshness deadline not passed and no run has failed
    AT_RISK = "at_risk"  # missing past its freshness deadline or after a failed run, still recoverable
    LOST = "lost"  # its lateness window closed without a snapshot


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def in_flight(self) -> bool:
        return self in (RunState.QUEUED, RunState.RUNNING)


@dataclass(frozen=True)
class Capture:
    """A published day: when its rows say the snapshot was taken, and whether the lateness rule called it late."""

    day: dt.date
    taken_at: dt.datetime
    is_late: bool

    @property
    def delay(self) -> dt.timedelta:
        return self.taken_at - end_of_day(self.day)


@dataclass(frozen=True)
class Attempt:
    """One run of the daily job for a day, from whatever launched it."""

    run_id: str
    day: dt.date
    state: RunState
    created_at: dt.datetime
    ended_at: dt.datetime | None
    launched_by: str  # "schedule", "catch-up" or "manual"
    error: str | None = None  # the run's failure, as the run recorded it (never a secret)
    noah_instance: str | None = None  # NOAH's error Instance reference, what NOAH support asks for


@dataclass(frozen=True)
class Policy:
    """The timing rules every decision uses, from the pipeline settings."""

    start_date: dt.date
    lateness: dt.timedelta
    schedule_time: dt.time
    freshness_deadline: dt.time

    @classmethod
    def from_settings(cls, settings: PipelineSettings) -> Policy:
        return cls(settings.start_date, settings.lateness, dt.time(settings.schedule_hour, settings.schedule_minute),
                   settings.freshness_deadline)

    def window_closes(self, day: dt.date) -> dt.datetime:
        """The last instant a snapshot of ``day`` may be taken without being late."""
        return end_of_day(day) + self.lateness

    def scheduled_at(self, day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day + dt.timedelta(days=1), self.schedule_time, tzinfo=dt.UTC)

    def fresh_by(self, day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day + dt.timedelta(days=1), self.freshness_deadline, tzinfo=dt.UTC)

    def next_scheduled_run(self, now: dt.datetime) -> tuple[dt.datetime, dt.date]:
        """When the schedule next fires, and the day that run takes."""
        at = dt.datetime.combine(now.date(), self.schedule_time, tzinfo=dt.UTC)
        if at <= now:
            at += dt.timedelta(days=1)
        return at, at.date() - dt.timedelta(days=1)


@dataclass(frozen=True)
class DayReport:
    day: dt.date
    status: DayStatus
    capture: Capture | None
    recoverable_until: dt.datetime
    fresh_by: dt.datetime
    attempts: tuple[Attempt, ...]  # oldest first

    @property
    def last_attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def in_flight(self) -> bool:
        return any(a.state.in_flight for a in self.attempts)


def ended_days(now: dt.datetime, count: int, start_date: dt.date) -> list[dt.date]:
    """The last ``count`` days that have ended by ``now`` (newest first), none before ``start_date``."""
    newest = now.date() - dt.timedelta(days=1)
    days = [newest - dt.timedelta(days=n) for n in range(count)]
    return [day for day in days if day >= start_date]


def judge_days(
    now: dt.datetime,
    days: Iterable[dt.date],
    captures: Mapping[dt.date, Capture],
    attempts: Sequence[Attempt],
    policy: Policy,
) -> list[DayReport]:
    """Each day's standing at ``now``, in the order given."""
    by_day: dict[dt.date, list[Attempt]] = {}
    for attempt in sorted(attempts, key=lambda a: a.created_at):
        by_day.setdefault(attempt.day, []).append(attempt)
    reports = []
    for day in days:
        day_attempts = tuple(by_day.get(day, ()))
        capture = captures.get(day)
        closes, fresh_by = policy.window_closes(day), policy.fresh_by(day)
        finished = [a for a in day_attempts if not a.state.in_flight]
        if capture is not None:
            status = DayStatus.CAPTURED
        elif now >= closes:
            status = DayStatus.LOST
        elif now >= fresh_by or (finished and finished[-1].state is not RunState.SUCCEEDED):
            status = DayStatus.AT_RISK
        else:
            status = DayStatus.DUE
        reports.append(DayReport(day, status, capture, closes, fresh_by, day_attempts))
    return reports


def duration(delta: dt.timedelta) -> str:
    """``3 d 4 h``, ``35 h 20 min``, ``12 min``: how people read a delay or what is left (hours up to two days)."""
    minutes = max(0, int(delta.total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    if hours >= 48:
        return f"{hours // 24} d {hours % 24} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def utc(moment: dt.datetime) -> str:
    return f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"


def describe_attempt(attempt: Attempt) -> str:
    """``run 1a2b3c4d (schedule) failed at 00:26 UTC: <first line of the error> [NOAH Instance '...']``."""
    head = f"run {attempt.run_id[:8]} ({attempt.launched_by}) {attempt.state.value}"
    if attempt.ended_at is not None:
        head += f" at {utc(attempt.ended_at)}"
    elif attempt.state.in_flight:
        head += f" since {utc(attempt.created_at)}"
    if attempt.error:
        head += f": {first_line(attempt.error)}"
    if attempt.noah_instance and attempt.noah_instance not in head:
        head += f" (NOAH Instance '{attempt.noah_instance}')"
    return head


def first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
