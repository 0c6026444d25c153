"""A season of NOAH outages on a simulated clock (balances_etl/operations/season.py).

Real: the NOAH emulator over HTTP on 127.0.0.1 (signed requests), the NOAH client, the daily job's
snapshot code (raw landing, normalize, checks, atomic Parquet publish into a real data dir), the
catch-up/alert decisions (operations.tick.tick with its alert ledger file), alerts POSTed to a local
webhook receiver, the captures read back from Parquet, and the status computation.
Simulated: the clock (10-minute sensor ticks), the outages (emulator faults, or the emulator
stopped), the schedule and the run launcher (each launch calls the snapshot code in-process and is
recorded as a run lasting two simulated minutes instead of being a Dagster run).

Every day must be captured exactly once or reported lost exactly once (one webhook alert, status
"lost"), nothing half-done may be left in the data dir, and each outcome must agree with what the
outages alone imply (season.expected_outcome). Run with -s to see the tables.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pytest

from balances_etl.markdown import SEASON_MARKER, write_section
from balances_etl.operations import alerts as alerts_module
from balances_etl.operations import tick as tick_module
from balances_etl.operations.alerts import AlertKind
from balances_etl.operations.catchup import Backoff
from balances_etl.operations.days import Policy
from balances_etl.operations.outages import Expectation, Outage, OutageKind, expected_outcome
from balances_etl.operations.season import SeasonReport, render_document, run_season
from balances_etl.operations.tick import scheduled_days

SHORT_SEED = 10  # 14 days with every kind of outage, a lost day, caught-up days and a day in the margin
LONG_SEED = 2026  # the season in docs/reliability.md
DAY = dt.date(2026, 1, 10)
POLICY = Policy(start_date=dt.date(2026, 1, 1), lateness=dt.timedelta(hours=36), schedule_time=dt.time(0, 10),
                freshness_deadline=dt.time(2, 0))
TICK = dt.timedelta(minutes=10)
SCHEDULED = dt.datetime(2026, 1, 11, 0, 10, tzinfo=dt.UTC)
CLOSES = dt.datetime(2026, 1, 12, 12, 0, tzinfo=dt.UTC)


def assert_sound(report: SeasonReport) -> None:
    print()
    print(report.render_markdown())
    print(report.status_text)
    print(f"{len(report.days)} days, {report.ticks} ticks, {report.seconds:.1f} s")
    assert report.problems == []
    outcomes = Counter(day.outcome for day in report.days)
    assert outcomes["on time"] + outcomes["caught up"] + outcomes["lost"] == len(report.days)
    lost_alerts = [t for t in report.webhook_texts if " is lost: " in t]
    assert len(lost_alerts) == outcomes["lost"]  # the days after the season are never lost by the end
    assert sum(day.alerts.count(AlertKind.LOST) for day in report.days) == outcomes["lost"]
    if outcomes["lost"]:
        assert "LOST" in report.status_text and "exit 2: a day is lost" in report.status_text


def test_a_two_week_season_of_outages_loses_only_what_it_must_and_says_so(tmp_path: Path):
    report = run_season(tmp_path, days=14, seed=SHORT_SEED)
    assert_sound(report)
    outcomes = Counter(day.outcome for day in report.days)
    assert outcomes["on time"] and outcomes["caught up"] and outcomes["lost"]  # the season tests all three
    assert {o.kind for o in report.outages} == set(OutageKind)
    assert any(day.expected is Expectation.EITHER for day in report.days)
    document = render_document(report, "python -m balances_etl.operations.season --days 14")
    assert "| days lost (reported lost, one alert each) |" in document and "Problems: none." in document
    reliability = tmp_path / "reliability.md"
    reliability.write_text("# Reliability\n\n| the selftest's table |\n")
    write_section(reliability, SEASON_MARKER, "## an older season\n")
    write_section(reliability, SEASON_MARKER, document)
    written = reliability.read_text()
    assert written.startswith("# Reliability\n\n| the selftest's table |\n")  # the selftest's part is kept
    assert "an older season" not in written and written.count(SEASON_MARKER) == 1  # the season's is replaced
    assert written.endswith(document.strip() + "\n")


@pytest.mark.slow
def test_ninety_days_of_outages(tmp_path: Path):
    """The season of docs/reliability.md (about 15 s of real time)."""
    report = run_season(tmp_path, days=90, seed=LONG_SEED)
    assert_sound(report)
    assert len(report.outages) >= 20


def test_the_checks_catch_a_catch_up_that_never_launches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Without catch-up, the days NOAH came back for are lost: the simulation must say so."""
    monkeypatch.setattr(tick_module, "catchup_decisions", lambda *args, **kwargs: [])
    report = run_season(tmp_path, days=14, seed=SHORT_SEED)
    assert any("NOAH was back long enough inside its window, yet it was lost" in p for p in report.problems)


def test_the_checks_catch_repeated_alerts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An alert ledger that forgets: every tick repeats every alert, and the simulation must say so."""
    monkeypatch.setattr(alerts_module.AlertLedger, "read", lambda self: {})
    report = run_season(tmp_path, days=8, seed=SHORT_SEED)  # the short season's first 8 days: 01-07 is lost
    assert any("lost alerts, not exactly one" in p for p in report.problems)
    assert any("repeated" in p for p in report.problems)


# --- what must happen, from the outages alone ------------------------------------------------------


def expect(*outages: tuple[dt.datetime, dt.datetime]) -> Expectation:
    spans = [Outage(start, end, OutageKind.HTTP_503) for start, end in outages]
    return expected_outcome(DAY, spans, POLICY, Backoff(), TICK)


def test_noah_answering_at_the_scheduled_run_means_on_time():
    assert expect() is Expectation.ON_TIME
    assert expect((SCHEDULED - dt.timedelta(hours=5), SCHEDULED)) is Expectation.ON_TIME  # back at 00:10
    assert expect((SCHEDULED + dt.timedelta(minutes=1), CLOSES)) is Expectation.ON_TIME


def test_noah_down_at_every_tick_of_the_window_means_lost():
    assert expect((SCHEDULED, CLOSES)) is Expectation.LOST
    # back between two ticks only: no run can start
    assert expect((SCHEDULED, SCHEDULED + dt.timedelta(hours=3, minutes=1)),
                  (SCHEDULED + dt.timedelta(hours=3, minutes=9), CLOSES)) is Expectation.LOST


def test_noah_back_long_enough_inside_the_window_means_captured_and_too_close_to_the_end_either():
    margin = dt.timedelta(minutes=2) + Backoff().cap + TICK  # run + backoff cap + one tick: 2 h 12 min
    assert expect((SCHEDULED, CLOSES - margin - dt.timedelta(minutes=1))) is Expectation.CAPTURED
    assert expect((SCHEDULED, CLOSES - margin)) is Expectation.EITHER
    assert expect((SCHEDULED, CLOSES - dt.timedelta(minutes=20))) is Expectation.EITHER
    # back for an hour only, then down again until the window closes
    assert expect((SCHEDULED, SCHEDULED + dt.timedelta(hours=5)),
                  (SCHEDULED + dt.timedelta(hours=6), CLOSES)) is Expectation.EITHER


def test_the_schedule_launches_each_day_that_just_ended_at_its_time():
    midnight = dt.datetime(2026, 1, 11, tzinfo=dt.UTC)
    assert scheduled_days(midnight, midnight + dt.timedelta(minutes=9), POLICY) == []
    assert scheduled_days(midnight, midnight + dt.timedelta(minutes=10), POLICY) == [DAY]
    assert scheduled_days(midnight + dt.timedelta(minutes=10), midnight + dt.timedelta(hours=23), POLICY) == []
    assert scheduled_days(midnight, midnight + dt.timedelta(days=2, minutes=10), POLICY) == [DAY, DAY + dt.timedelta(days=1),
                                                                                          DAY + dt.timedelta(days=2)]
    first = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # 2025-12-31 ends before the start date: never launched
    assert scheduled_days(first - dt.timedelta(hours=1), first + dt.timedelta(hours=1), POLICY) == []
