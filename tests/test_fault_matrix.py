"""The fault matrix, end to end: one real pipeline run per fault, judged by what a user would see.

The matrix itself (faults, where they strike, expected outcome, what the error must name) is
defined once, in ``balances_etl.selftest.SCENARIOS``; ``balances-etl selftest`` prints the same
table for people. Each scenario runs the daily job (Dagster, the emulator over HTTP with signed
requests, Parquet, DuckDB) for its own day on one installation per xdist worker, after an earlier
day was loaded, and ``run_scenario`` judges it: recovered with exactly the rows NOAH served, or
failed cleanly (error naming the cause, nothing published for the day, a re-run after the fault
clears recovers it); every other day untouched; no secret anywhere the pipeline wrote.

Every fault that can strike a list endpoint strikes ``/v1/balances`` and ``/v1/transactions``; a
faulted transactions sync must leave the day's balances published exactly. The ``core`` scenarios
(one per fault family of the balances, first/middle/last page rotating, and one per family of the
transactions) run in the default suite; the rest are marked slow.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pipeline_support import Pipeline, day_rows, served_rows, wired_pipeline

from balances_etl import selftest
from balances_etl.domain.names import Check
from balances_etl.selftest import (
    MATRIX_ENV,
    SCENARIOS,
    Expect,
    MatrixReport,
    RecordingSandbox,
    ScenarioResult,
    anchor_day,
    prepare_account,
    render_table,
    run_scenario,
    scenario_day,
)
from balances_etl.settings import temporary_environment


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory, p384_keypair: tuple[bytes, bytes]):
    with wired_pipeline(tmp_path_factory.mktemp("matrix"), p384_keypair) as pipeline:
        prepare_account(pipeline.sandbox, anchor_day())
        with temporary_environment(MATRIX_ENV):
            baseline = pipeline.run(anchor_day())
        assert baseline.success, baseline.error
        yield pipeline, pipeline.scanner()


@pytest.mark.parametrize(
    "scenario", [pytest.param(s, id=s.key, marks=() if s.core else pytest.mark.slow) for s in SCENARIOS]
)
def test_fault_end_to_end(matrix: tuple[Pipeline, selftest.SecretScanner], scenario: selftest.Scenario) -> None:
    pipeline, scanner = matrix
    day = scenario_day(scenario)
    result = run_scenario(pipeline, scenario, day, scanner)

    assert result.problems == [], "\n".join(result.problems)
    assert result.fault_fired
    assert result.rows_lost == 0 and result.rows_unexpected == 0
    assert result.secrets == []
    assert result.other_days_changed == []
    if scenario.expect is Expect.FAILED_CLEANLY:
        assert not result.success
        for mention in scenario.mentions:
            assert mention in result.error
        assert result.published_after_fault is None  # no Parquet partition for the failed day
        assert result.warehouse_after_fault == 0  # and no warehouse rows
        assert result.rerun_success, result.rerun_error
        served = list(pipeline.sandbox.config.items)
    else:
        assert result.success, result.error
        assert result.warnings == scenario.warnings
        held = list(pipeline.sandbox.config.items)
        served = scenario.serves(held) if scenario.serves else held
    if scenario.attempts is not None:
        assert result.attempts == scenario.attempts
    # What an analyst sees, queried independently of the judge: exactly what NOAH served, of both
    # endpoints (a faulted transactions sync never costs the balances).
    rows = day_rows(pipeline, day)
    assert len(rows) == len(served) and set(rows) == served_rows(served)
    assert transaction_rows(pipeline, day) == sorted(
        (t["ID"], t["Status"], t.get("Amount")) for t in pipeline.sandbox.config.transaction_items
    )
    # An earlier day is still there, unchanged in count.
    assert len(day_rows(pipeline, anchor_day())) == selftest.ITEM_COUNT


def transaction_rows(pipeline: Pipeline, day: dt.date) -> list[tuple[object, ...]]:
    from balances_etl.storage.warehouse import connect_read_only

    con = connect_read_only(pipeline.data_dir)
    try:
        return [tuple(r) for r in con.execute(
            "SELECT transaction_id, status, amount_raw FROM transaction_observations WHERE snapshot_date = ? ORDER BY ALL",
            [day]).fetchall()]
    finally:
        con.close()


def test_the_matrix_covers_every_fault_of_the_issue_at_every_page_it_can_strike() -> None:
    by_family: dict[str, set[str]] = {}
    for scenario in SCENARIOS:
        by_family.setdefault(scenario.key.split("@")[0], set()).add(scenario.where)
    # Every fault that can strike a list endpoint strikes /v1/transactions too, at the same pages;
    # only the rows about a balances check's warning are the balances' own.
    warnings_only = {"unknown-currency", "zero-items", "amount-38-characters"}
    balances = {f: pages for f, pages in by_family.items() if "/" not in f}
    assert {f"transactions/{f}": pages for f, pages in balances.items() if f not in warnings_only} == {
        f: pages for f, pages in by_family.items() if f.startswith("transactions/")
    }
    assert {s.endpoint for s in SCENARIOS if s.core} == {"balances", "transactions"}
    assert all(f.endpoint == s.endpoint for s in SCENARIOS for f in s.faults)
    every_page = {"first page", "middle page", "last page"}
    after_the_first = {"middle page", "last page"}
    required = {
        "429-retry-after-seconds": every_page, "429-retry-after-http-date": every_page,
        "429-retry-after-zero": every_page, "429-retry-after-above-cap": every_page,
        **{f"http-{s}-{n}": every_page for s in (500, 502, 503, 504) for n in ("once", "persistent")},
        "connection-dropped-once": every_page, "read-timeout-once": every_page, "truncated-json-once": every_page,
        "non-json-200-once": every_page, "items-missing": every_page, "item-missing-field": every_page,
        "wrong-type": every_page, "amount-off-pattern": every_page, "amount-39-characters": every_page,
        "duplicate-key-across-pages": after_the_first, "token-cycle": every_page, "unknown-page-token": after_the_first,
        "http-401": every_page, "http-403": every_page, "unknown-currency": every_page, "zero-items": {"first page"},
        "non-json-error-once": every_page, "non-json-error-persistent": every_page,
    }
    for family, pages in required.items():
        assert by_family.get(family, set()) >= pages, family
    # The default suite runs a representative of every kind of fault, on all three pages.
    core = {s.key.split("@")[0] for s in SCENARIOS if s.core and s.endpoint == "balances"}
    kinds = {
        "429": {"429-retry-after-seconds", "429-retry-after-http-date", "429-retry-after-above-cap"},
        "5xx once": {"http-500-once", "http-503-once"}, "5xx persistent": {"http-502-persistent", "http-504-persistent"},
        "transport": {"connection-dropped-once", "read-timeout-once"},
        "broken 200 body": {"truncated-json-persistent", "non-json-200-once"},
        "bad page": {"items-missing", "item-missing-field", "wrong-type", "amount-off-pattern", "amount-39-characters"},
        "pagination": {"token-cycle", "unknown-page-token", "duplicate-key-across-pages", "token-end-empty"},
        "auth": {"http-401", "http-403", "non-json-403"}, "proxy": {"non-json-error-persistent"},
        "warnings": {"unknown-currency", "zero-items", "amount-38-characters"},
    }
    for kind, families in kinds.items():
        assert families <= core, kind
    assert {s.where for s in SCENARIOS if s.core} == every_page
    # Every scenario has its own day, two days apart, all before the anchor day.
    days = [scenario_day(s) for s in SCENARIOS]
    assert len(set(days)) == len(days) and max(days) < anchor_day()
    # A clean failure always says what it was.
    assert all(s.mentions for s in SCENARIOS if s.expect is Expect.FAILED_CLEANLY)


def test_selftest_command_prints_the_table_and_writes_the_report(tmp_path: Path) -> None:
    import subprocess
    import sys

    report = tmp_path / "reliability.md"
    result = subprocess.run(
        [sys.executable, "-m", "balances_etl.cli", "selftest", "--only", "http-503-once@middle",
         "--only", "http-401@first", "--report", str(report)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| # | endpoint | fault | where | expected | observed | rows lost | secrets found | as expected |" in result.stdout
    assert "| /v1/balances | HTTP 503 once | middle page | recovered | recovered: 3/3 rows exact" in result.stdout
    assert "| /v1/balances | 401 with a NOAH error body | first page | failed cleanly | failed: NOAH returned HTTP 401" in result.stdout
    assert "2 scenarios" in result.stdout and "2 as expected, 0 not; rows lost 0, secrets found 0" in result.stdout
    document = report.read_text()
    assert "balances-etl selftest --only http-503-once@middle --only http-401@first --report" in document
    assert "| HTTP 503 once |" in document
    assert not list(tmp_path.glob("data")) and not list(tmp_path.glob("dagster_home"))  # nothing left in the cwd


def test_selftest_reports_a_regression_and_exits_non_zero(monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
    # A client that no longer retries: "503 once" must then show up as not as expected.
    monkeypatch.setitem(selftest.MATRIX_ENV, "NOAH_MAX_ATTEMPTS", "1")
    assert selftest.main(only=["http-503-once@middle"]) == 1
    out = capsys.readouterr().out
    assert "**NO**" in out and "expected recovery, the run failed" in out
    assert "1 scenarios" in out and "0 as expected, 1 not" in out


def test_unknown_scenario_key_is_refused(capsys) -> None:  # noqa: ANN001
    assert selftest.main(only=["no-such-fault@middle"]) == 2
    assert "unknown scenario keys: no-such-fault@middle" in capsys.readouterr().err


def test_the_table_marks_rows_that_are_not_as_expected() -> None:
    scenario = SCENARIOS[0]
    good = ScenarioResult(scenario, dt.date(2026, 1, 1), success=True, rows_expected=3)
    bad = ScenarioResult(
        scenario, dt.date(2026, 1, 3), success=True, rows_expected=3, rows_lost=1, problems=["1 rows lost or changed"]
    )
    report = MatrixReport([good, bad], dt.datetime(2026, 1, 5, tzinfo=dt.UTC), 1.0)
    table = render_table(report.results)
    assert table.splitlines()[2].endswith("| 0 | 0 | yes |")
    assert table.splitlines()[3].endswith("| 1 | 0 | **NO**: 1 rows lost or changed |")
    assert not report.passed and MatrixReport([good], report.started_at, 1.0).passed
    assert Check.KEYS_UNIQUE in {m for s in SCENARIOS for m in s.mentions}


def test_the_report_keeps_the_season_section_from_its_marker_to_the_end(tmp_path: Path) -> None:
    from balances_etl.markdown import SEASON_MARKER

    report = tmp_path / "docs" / "reliability.md"
    selftest.write_report(report, "# Reliability\nold table\n")  # a new file: no season yet
    assert report.read_text() == "# Reliability\nold table\n"
    season = f"{SEASON_MARKER}\n## A season of NOAH outages\n\n| day | outcome |\n|---|---|\n| 1 | captured |\n"
    report.write_text(report.read_text() + "\n" + season)
    selftest.write_report(report, "# Reliability\nnew table\n")
    assert report.read_text() == f"# Reliability\nnew table\n\n{season}"
    selftest.write_report(report, "# Reliability\nnewer table\n")  # rewriting twice keeps it once
    assert report.read_text() == f"# Reliability\nnewer table\n\n{season}"


def test_the_recording_sandbox_keeps_the_wire_and_expires_tokens_after_a_page() -> None:
    import requests

    with RecordingSandbox(item_count=3) as sandbox:  # unsigned: any Api-Signature is taken as sent

        def get(signature: str, token: str | None = None) -> requests.Response:
            params = {"PageSize": "1", **({"PageToken": token} if token else {})}
            headers = {"X-Api-Key": sandbox.api_key, "Api-Signature": signature}
            return requests.get(f"{sandbox.base_url}/balances", params=params, headers=headers, timeout=5)

        sandbox.expire_tokens_after_page(1)
        expired = get("sig-2", get("sig-1").json()["PageToken"])
        assert expired.status_code == 400 and "PageToken is not a token this API issued" in expired.text
        assert get("sig-4", get("sig-3").json()["PageToken"]).status_code == 200  # the expiry fired once
        assert [(r.page, r.signature, r.request.status) for r in sandbox.wire] == [
            (1, "sig-1", 200), (None, "sig-2", 400), (1, "sig-3", 200), (2, "sig-4", 200)
        ]
        assert all(earlier.at <= later.at for earlier, later in zip(sandbox.wire, sandbox.wire[1:]))
        sandbox.reset_wire()
        assert sandbox.wire == [] and sandbox.signatures == ["sig-1", "sig-2", "sig-3", "sig-4"]
