"""Which missing days to relaunch now: inside their lateness window, nothing in flight, backoff respected.

The schedule gets the first go at a day; catch-up starts one backoff step after the scheduled time,
so the two never launch the same day in the same minute.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from balances_etl.operations.days import DayReport, DayStatus, Policy


@dataclass(frozen=True)
class Backoff:
    """After the n-th unsuccessful attempt, wait ``first * 2**(n-1)``, at most ``cap``."""

    first: dt.timedelta = dt.timedelta(minutes=10)
    cap: dt.timedelta = dt.timedelta(hours=2)

    def wait(self, unsuccessful: int) -> dt.timedelta:
        if unsuccessful < 1:
            return self.first
        return min(self.first * 2 ** min(unsuccessful - 1, 32), self.cap)


@dataclass(frozen=True)
class Launch:
    day: dt.date
    attempt: int  # 1 for the day's first run, whoever launched the earlier ones

    @property
    def run_key(self) -> str:
        """Dagster launches a sensor's run key once: a tick repeated on stale state launches nothing new."""
        return f"catchup-{self.day.isoformat()}-attempt-{self.attempt}"


def next_attempt_at(report: DayReport, policy: Policy, backoff: Backoff = Backoff()) -> dt.datetime | None:
    """When catch-up may next launch ``report``'s day; None if it never will (captured, lost, in flight, window closes first)."""
    if report.status in (DayStatus.CAPTURED, DayStatus.LOST) or report.in_flight:
        return None
    finished = [a for a in report.attempts if a.ended_at is not None]
    if finished:
        last_end = max(a.ended_at for a in finished if a.ended_at is not None)
        at = last_end + backoff.wait(len(finished))
    else:
        at = policy.scheduled_at(report.day) + backoff.first
    return at if at < report.recoverable_until else None


def catchup_decisions(
    now: dt.datetime, reports: Sequence[DayReport], policy: Policy, backoff: Backoff = Backoff()
) -> list[Launch]:
    """The days to launch at ``now``, oldest first (the one whose window closes soonest)."""
    launches = []
    for report in sorted(reports, key=lambda r: r.day):
        at = next_attempt_at(report, policy, backoff)
        if at is not None and at <= now < report.recoverable_until:
            launches.append(Launch(report.day, len(report.attempts) + 1))
    return launches
