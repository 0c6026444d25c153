"""`balances-etl status` on real stores: days published by the real daily job (against the emulator) and
its runs in a real Dagster instance; exit 0 all well, 1 a day at risk, 2 a day lost; the JSON shape."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from balances_etl.cli import main
from balances_etl.emulator.faults import Fault, FaultKind
from tests.pipeline_support import Pipeline, wired_pipeline

TODAY = dt.datetime.now(dt.UTC).date()
Y1, Y2, Y3, Y4, Y5 = (TODAY - dt.timedelta(days=n) for n in range(1, 6))
INSTANCE = re.compile(r"NOAH Instance '[0-9a-f-]{36}'")


@pytest.fixture
def pipeline(tmp_path: Path, p384_keypair: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    """With a 72 h window, the last three days are recoverable whatever the hour; four days ago and older are lost."""
    with wired_pipeline(tmp_path, p384_keypair) as installed:
        monkeypatch.setenv("BALANCES_ETL_LATENESS_HOURS", "72")
        monkeypatch.setenv("NOAH_MAX_ATTEMPTS", "2")
        yield installed


def status(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["status", *args])
    return code, capsys.readouterr().out


def test_all_captured_is_exit_0_with_on_time_and_late_days_and_the_json_shape(pipeline: Pipeline, capsys):
    assert pipeline.run(Y1).success and pipeline.run(Y2).success
    assert pipeline.run(Y4, taken_at=dt.datetime.now(dt.UTC), allow_late=True).success  # recorded late, flagged

    code, text = status(capsys, "--days", "2")
    assert code == 0, text
    assert text.count("captured on time: taken") == 2 and "10 min after the day ended" in text
    assert "succeeded" in text and text.rstrip().endswith("exit 0: all well")

    code, out = status(capsys, "--days", "5", "--json")
    report = json.loads(out)
    assert code == 2 and report["exit_code"] == 2 and report["health"] == "lost"  # five days ago was never taken
    assert set(report) == {"now", "exit_code", "health", "next_scheduled_run", "instance_note", "days"}
    assert [d["day"] for d in report["days"]] == [d.isoformat() for d in (Y1, Y2, Y3, Y4, Y5)]
    assert [d["status"] for d in report["days"]] == ["captured", "captured", "at_risk", "captured", "lost"]
    first = report["days"][0]
    assert set(first) == {"day", "status", "captured_at", "delay_seconds", "is_late", "recoverable_until", "fresh_by",
                          "runs", "last_run", "next_catchup_at", "command"}
    assert first["delay_seconds"] == 600 and first["is_late"] is False and first["command"] is None
    assert first["last_run"]["state"] == "succeeded" and first["last_run"]["launched_by"] == "manual"
    assert set(first["last_run"]) == {"run_id", "state", "launched_by", "created_at", "ended_at", "error", "noah_instance"}
    assert report["days"][3]["is_late"] is True and report["days"][3]["delay_seconds"] > 72 * 3600
    assert report["days"][2]["command"] == f"balances-etl materialize --date {Y3}"
    assert report["days"][4]["command"] == f"balances-etl materialize --date {Y5} --allow-late"
    assert report["days"][4]["last_run"] is None and report["days"][4]["next_catchup_at"] is None
    at = dt.datetime.fromisoformat(report["next_scheduled_run"]["at"])
    assert (at.hour, at.minute) == (0, 10) and report["next_scheduled_run"]["day"] == (at.date() - dt.timedelta(days=1)).isoformat()


def test_a_failed_day_is_at_risk_exit_1_with_noah_instance_then_a_lost_day_is_exit_2(pipeline: Pipeline, capsys):
    assert pipeline.run(Y1).success
    pipeline.sandbox.add_fault(Fault(FaultKind.STATUS, page=1, status=503, times=None))
    failed = pipeline.run(Y2)
    pipeline.sandbox.clear_faults()
    assert not failed.success

    code, text = status(capsys, "--days", "2")
    assert code == 1, text
    line = next(chunk for chunk in text.split(f"\n{Y2}  ")[1:])
    assert line.startswith("AT RISK: missing, recoverable until ") and f"balances-etl materialize --date {Y2}" in line
    assert f"run {failed.run_id[:8]} (manual) failed" in line and "HTTP 503" in line and INSTANCE.search(line)
    assert text.rstrip().endswith("exit 1: a day is at risk")

    code, out = status(capsys, "--days", "2", "--json")
    day = json.loads(out)["days"][1]
    assert code == 1 and day["status"] == "at_risk" and day["last_run"]["state"] == "failed"
    assert re.fullmatch(r"[0-9a-f-]{36}", day["last_run"]["noah_instance"])
    assert day["last_run"]["noah_instance"] in day["last_run"]["error"]

    child = pipeline.cli("status", "--days", "4", extra_env={"BALANCES_ETL_LATENESS_HOURS": "72"})
    assert child.returncode == 2, child.stderr
    assert f"{Y3}  AT RISK: missing" in child.stdout and f"{Y4}  LOST: its lateness window closed at" in child.stdout


def test_no_dagster_instance_is_said_not_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "nowhere"))
    monkeypatch.setenv("BALANCES_ETL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BALANCES_ETL_START_DATE", Y1.isoformat())
    code, text = status(capsys)
    assert "no Dagster instance at" in text and not (tmp_path / "nowhere").exists()
    assert code in (0, 1)  # only yesterday exists: due before 02:00 UTC, at risk after
