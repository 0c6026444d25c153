"""One catch-up tick as plain code: judge the watched days, pick the runs to launch, send new alerts.

The Dagster sensor gathers the captures and runs and turns the launches into run requests; a
simulation calls the same function with its own clock.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from balances_etl.operations.alerts import AlertLedger, AlertSender, Channel, alert_events, send_alerts
from balances_etl.operations.catchup import Backoff, Launch, catchup_decisions
from balances_etl.operations.days import Attempt, Capture, DayReport, Policy, ended_days, judge_days

# A lost day is still alerted about if the sensor first sees it up to this long after its window
# closed (a daemon down over a weekend); older days are history, shown by `status --days N`.
LOST_ALERT_HORIZON = dt.timedelta(days=7)


@dataclass(frozen=True)
class TickResult:
    reports: list[DayReport]
    launches: list[Launch]
    delivered: list[tuple[str, Channel]]


def watched_days(now: dt.datetime, policy: Policy) -> list[dt.date]:
    """Days still recoverable, and those lost recently enough to alert about (newest first)."""
    count = math.ceil((policy.lateness + LOST_ALERT_HORIZON) / dt.timedelta(days=1)) + 1
    return ended_days(now, count, policy.start_date)


def tick(
    now: dt.datetime,
    policy: Policy,
    captures: Mapping[dt.date, Capture],
    attempts: Sequence[Attempt],
    ledger: AlertLedger,
    sender: AlertSender,
    backoff: Backoff = Backoff(),
) -> TickResult:
    reports = judge_days(now, watched_days(now, policy), captures, attempts, policy)
    alerts = alert_events(now, reports, policy, ledger.alerted_days(), backoff)
    delivered = send_alerts(alerts, ledger, sender, now)
    return TickResult(reports, catchup_decisions(now, reports, policy, backoff), delivered)


def scheduled_days(after: dt.datetime, until: dt.datetime, policy: Policy) -> list[dt.date]:
    """The days ``daily_balances_schedule`` launches in ``(after, until]``, oldest first: at
    ``policy.schedule_time`` each day, the day that just ended (none before ``policy.start_date``).
    What the Dagster schedule does, for a simulation that drives ``tick`` on its own clock."""
    days = []
    day = after.date() - dt.timedelta(days=1)
    while policy.scheduled_at(day) <= until:
        if policy.scheduled_at(day) > after and day >= policy.start_date:
            days.append(day)
        day += dt.timedelta(days=1)
    return days
