"""Catch-up and day judgement on a simulated clock, and the sensor against a real (temporary) Dagster instance."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from pathlib import Path

import dagster as dg
import pytest

from balances_etl.operations.alerts import AlertKind, AlertLedger, AlertSender, AlertSettings
from balances_etl.operations.catchup import Backoff, Launch, catchup_decisions, next_attempt_at
from balances_etl.operations.days import Attempt, Capture, DayStatus, Policy, RunState, ended_days, judge_days
from balances_etl.operations.tick import tick

DAY = dt.date(2026, 11, 20)
POLICY = Policy(start_date=dt.date(2026, 1, 1), lateness=dt.timedelta(hours=36), schedule_time=dt.time(0, 10),
                freshness_deadline=dt.time(2, 0))
MIDNIGHT = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)  # DAY ends
WINDOW_CLOSES = MIDNIGHT + dt.timedelta(hours=36)
MINUTE = dt.timedelta(minutes=1)


def at(hours: float) -> dt.datetime:
    return MIDNIGHT + dt.timedelta(hours=hours)


def attempt(n: int, state: RunState, created: dt.datetime, ended: dt.datetime | None = None, day: dt.date = DAY,
            error: str | None = None) -> Attempt:
    return Attempt(f"run{n:04d}" + "0" * 28, day, state, created, ended, "schedule" if n == 1 else "catch-up", error)


def launches(now: dt.datetime, attempts: list[Attempt] = (), captures: dict | None = None,
             days: list[dt.date] = (DAY,)) -> list[Launch]:
    reports = judge_days(now, days, captures or {}, list(attempts), POLICY)
    return catchup_decisions(now, reports, POLICY)


def test_backoff_doubles_from_ten_minutes_to_at_most_two_hours():
    waits = [Backoff().wait(n) / MINUTE for n in range(1, 8)]
    assert waits == [10, 20, 40, 80, 120, 120, 120]


def test_the_schedule_gets_the_first_go_then_catch_up_launches_a_day_never_tried():
    assert launches(at(0.1)) == []  # 00:06: the 00:10 schedule has not fired yet
    assert launches(at(0.3)) == []  # 00:18: the schedule's run may still be on its way
    assert launches(at(20 / 60)) == [Launch(DAY, 1)]  # 00:20 and no run at all: the daemon missed it
    assert Launch(DAY, 1).run_key == "catchup-2026-11-20-attempt-1"


def test_a_failed_day_is_retried_with_doubling_backoff_and_never_after_its_window_closes():
    """Every launch fails a minute later; the gaps between the end of a failure and the next launch double to 2 h."""
    history: list[Attempt] = []
    now = at(10 / 60)
    history.append(attempt(1, RunState.FAILED, now, now + MINUTE))  # the schedule's run
    launched_at = []
    while now < WINDOW_CLOSES + dt.timedelta(hours=6):
        for launch in launches(now, history):
            assert launch.attempt == len(history) + 1
            launched_at.append(now)
            history.append(attempt(launch.attempt, RunState.FAILED, now, now + MINUTE))
        now += MINUTE
    ends = [a.ended_at for a in history]
    gaps = [(start - end) / MINUTE for start, end in zip(launched_at, ends, strict=False)]
    assert gaps[:6] == [10, 20, 40, 80, 120, 120]
    assert set(gaps[4:]) == {120}
    assert all(moment < WINDOW_CLOSES for moment in launched_at)
    assert judge_days(now, [DAY], {}, history, POLICY)[0].status is DayStatus.LOST
    assert launches(now, history) == []


@pytest.mark.parametrize("state", [RunState.QUEUED, RunState.RUNNING])
def test_a_day_with_a_queued_or_running_run_is_not_launched(state):
    history = [attempt(1, RunState.FAILED, at(0.2), at(0.3)), attempt(2, state, at(0.5))]
    assert launches(at(10), history) == []
    report = judge_days(at(10), [DAY], {}, history, POLICY)[0]
    assert report.in_flight and next_attempt_at(report, POLICY) is None


def test_a_captured_day_is_never_launched():
    capture = Capture(DAY, at(0.2), is_late=False)
    history = [attempt(1, RunState.SUCCEEDED, at(0.15), at(0.2))]
    report = judge_days(at(5), [DAY], {DAY: capture}, history, POLICY)[0]
    assert report.status is DayStatus.CAPTURED
    assert launches(at(5), history, {DAY: capture}) == []


def test_a_day_whose_window_closed_is_lost_and_never_launched_even_if_never_tried():
    assert launches(WINDOW_CLOSES - MINUTE) == [Launch(DAY, 1)]
    assert launches(WINDOW_CLOSES) == []
    assert judge_days(WINDOW_CLOSES, [DAY], {}, [], POLICY)[0].status is DayStatus.LOST


def test_backoff_that_would_end_after_the_window_means_no_more_attempts():
    history = [attempt(n, RunState.FAILED, at(h), at(h) + MINUTE) for n, h in enumerate((0.2, 20, 30, 35), start=1)]
    report = judge_days(at(35.5), [DAY], {}, history, POLICY)[0]
    assert report.status is DayStatus.AT_RISK
    assert next_attempt_at(report, POLICY) is None  # 35:01 + 80 min is after the window closes at 36:00


def test_several_missing_days_are_launched_oldest_first():
    days = [DAY + dt.timedelta(days=1), DAY]
    now = at(24 + 0.5)  # 00:30 on the 22nd: the 20th (window open until 12:00) and the 21st
    assert [launch.day for launch in launches(now, days=days)] == [DAY, DAY + dt.timedelta(days=1)]


def test_day_standing_due_at_risk_captured_lost():
    def status(now, history=(), captures=None):
        return judge_days(now, [DAY], captures or {}, list(history), POLICY)[0].status

    assert status(at(1)) is DayStatus.DUE  # before the 02:00 freshness deadline
    assert status(at(1), [attempt(1, RunState.FAILED, at(0.2), at(0.3))]) is DayStatus.AT_RISK
    assert status(at(2)) is DayStatus.AT_RISK
    assert status(at(2), captures={DAY: Capture(DAY, at(40), is_late=True)}) is DayStatus.CAPTURED
    assert status(at(36)) is DayStatus.LOST


def test_ended_days_stop_at_the_start_date():
    now = dt.datetime(2026, 1, 3, 5, tzinfo=dt.UTC)
    assert ended_days(now, 7, POLICY.start_date) == [dt.date(2026, 1, 2), dt.date(2026, 1, 1)]


def test_an_outage_gives_one_alert_per_event_on_a_sensor_ticking_every_ten_minutes(tmp_path: Path, caplog):
    """NOAH down from the 00:10 run until the window closes: one failure, one freshness and one lost alert."""
    ledger = AlertLedger(tmp_path / "alerts.json")
    sender = AlertSender(AlertSettings(), log=logging.getLogger("test.alerts"))
    history: list[Attempt] = [attempt(1, RunState.FAILED, at(10 / 60), at(12 / 60),
                                      error="NOAH returned HTTP 503 on page 1: Detail 'down' (Instance 'abc-1')")]
    delivered, now = [], at(0)
    with caplog.at_level(logging.WARNING, logger="test.alerts"):
        while now < WINDOW_CLOSES + dt.timedelta(days=2):
            result = tick(now, POLICY, {}, history, ledger, sender)
            delivered += [key for key, _ in result.delivered]
            for launch in result.launches:
                if launch.day == DAY:
                    history.append(attempt(launch.attempt, RunState.FAILED, now, now + MINUTE))
            now += dt.timedelta(minutes=10)
    mine = [key for key in delivered if key.endswith(DAY.isoformat())]
    assert mine == [f"{AlertKind.RUN_FAILED}/{DAY}", f"{AlertKind.FRESHNESS_MISSED}/{DAY}", f"{AlertKind.LOST}/{DAY}"]
    assert sum(f"alert {AlertKind.LOST}/{DAY}" in r.getMessage() for r in caplog.records) == 1


def test_a_day_alerted_about_then_captured_gets_one_recovered_message(tmp_path: Path):
    ledger = AlertLedger(tmp_path / "alerts.json")
    sender = AlertSender(AlertSettings(), log=logging.getLogger("test.alerts"))
    failed = [attempt(1, RunState.FAILED, at(0.2), at(0.3))]
    tick(at(0.5), POLICY, {}, failed, ledger, sender)
    capture = {DAY: Capture(DAY, at(3), is_late=False)}
    first = tick(at(3.1), POLICY, capture, failed, ledger, sender)
    second = tick(at(3.3), POLICY, capture, failed, ledger, sender)
    assert [key for key, _ in first.delivered] == [f"recovered/{DAY}"]
    assert second.delivered == []


# --- the Dagster sensor --------------------------------------------------------------------------------


def _run(instance: dg.DagsterInstance, day: dt.date, *, failed: bool) -> str:
    run = instance.add_run(dg.DagsterRun(job_name="daily_balances_job", run_id=str(uuid.uuid4()),
                                         status=dg.DagsterRunStatus.STARTED, tags={"dagster/partition": day.isoformat()}))
    if failed:
        instance.report_run_failed(run, "NOAH returned HTTP 503 on page 1: Detail 'down' (Instance 'ref-123')")
    return run.run_id


def test_the_sensor_requests_runs_for_missing_days_in_their_window_and_alerts_once(tmp_path: Path, monkeypatch):
    """Days relative to the real clock, with a 72 h window: today-2 and today-3 are always open and past their
    schedule; today-5 is always lost; today-3 has a run in flight, today-4 failed a moment ago."""
    from balances_etl.defs.catchup import catchup_sensor

    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("BALANCES_ETL_DATA_DIR", str(data))
    monkeypatch.setenv("BALANCES_ETL_LATENESS_HOURS", "96")
    monkeypatch.setenv("BALANCES_ETL_START_DATE", "2025-01-01")
    today = dt.datetime.now(dt.UTC).date()
    day = {n: today - dt.timedelta(days=n) for n in range(1, 8)}
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        _run(instance, day[3], failed=False)  # still running
        _run(instance, day[4], failed=True)  # failed just now: backoff
        result = catchup_sensor(dg.build_sensor_context(instance=instance))
        keys = {request.partition_key: request.run_key for request in result.run_requests}
        assert day[2].isoformat() in keys
        assert keys[day[2].isoformat()] == f"catchup-{day[2]}-attempt-1"
        assert not {day[3].isoformat(), day[4].isoformat(), day[6].isoformat(), day[7].isoformat()} & set(keys)
        ledger = AlertLedger.in_data_dir(data).read()
        assert f"run_failed/{day[4]}" in ledger and f"lost/{day[6]}" in ledger
        again = catchup_sensor(dg.build_sensor_context(instance=instance))
        assert {r.run_key for r in again.run_requests} == set(keys.values())  # Dagster dedupes these run keys
        assert AlertLedger.in_data_dir(data).read() == ledger


def test_the_freshness_check_is_on_the_partition_and_evaluated_by_its_sensor_never_in_a_days_run():
    from balances_etl.definitions import load_definitions
    from balances_etl.defs.catchup import freshness_checks
    from balances_etl.domain.names import BalancesAsset, Check, Orchestration

    defs = load_definitions()
    key = dg.AssetCheckKey(dg.AssetKey.from_user_string(BalancesAsset.PARTITION), Check.FRESHNESS.value)
    assert {k for checks in freshness_checks for k in checks.check_keys} == {key}
    daily = defs.resolve_job_def(Orchestration.DAILY_JOB)
    assert not any("freshness" in node for node in daily.graph.node_dict)
    sensors = {sensor.name: sensor for sensor in defs.sensors}
    assert sensors[Orchestration.CATCHUP_SENSOR].default_status is dg.DefaultSensorStatus.RUNNING
    assert sensors[Orchestration.CATCHUP_SENSOR].minimum_interval_seconds == 600
    assert sensors[Orchestration.FRESHNESS_SENSOR].default_status is dg.DefaultSensorStatus.RUNNING
