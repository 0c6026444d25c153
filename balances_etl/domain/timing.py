"""When a daily snapshot may be taken: NOAH has no balance history, so a past day can't be re-fetched.

Partition D holds the balances at the end of day D (UTC), taken by a run shortly after D ends.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


class SnapshotTimingError(RuntimeError):
    """The snapshot for this day can't be taken now; the message says why and what to do."""


@dataclass(frozen=True)
class SnapshotTiming:
    snapshot_date: dt.date
    taken_at: dt.datetime
    day_ended_at: dt.datetime
    is_late: bool

    @property
    def delay(self) -> dt.timedelta:
        return self.taken_at - self.day_ended_at


def end_of_day(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC)


def snapshot_timing(
    snapshot_date: dt.date, taken_at: dt.datetime, *, lateness: dt.timedelta, allow_late: bool
) -> SnapshotTiming:
    """Judge a snapshot of ``snapshot_date`` taken at ``taken_at`` (UTC); raise when it must not be taken."""
    ended = end_of_day(snapshot_date)
    if taken_at < ended:
        raise SnapshotTimingError(
            f"{snapshot_date} has not ended yet (it ends at {ended:%Y-%m-%d %H:%M} UTC): "
            "a partition holds end-of-day balances, so its snapshot is taken after the day ends"
        )
    is_late = taken_at - ended > lateness
    if is_late and not allow_late:
        hours = (taken_at - ended).total_seconds() / 3600
        raise SnapshotTimingError(
            f"{snapshot_date} ended {hours:.1f} h ago, more than the allowed lateness of "
            f"{lateness.total_seconds() / 3600:g} h (BALANCES_ETL_LATENESS_HOURS). NOAH has no balance "
            "history: a snapshot taken now shows today's balances, not that day's. To record it anyway, "
            "flagged is_late=true, pass --allow-late (CLI) or allow_late: true (Dagster run config)."
        )
    return SnapshotTiming(snapshot_date, taken_at, ended, is_late)
