"""Running one scenario and judging it by what a user would see afterwards; running the whole matrix.

* **recovered**: the run succeeded and the day holds exactly the rows NOAH served, every raw and
  canonical string and every DECIMAL(38,18) compared one by one (warnings only where expected);
* **failed cleanly**: the run failed with an error naming the cause, nothing was published for the
  day (no Parquet partition, no warehouse rows), and a re-run after the fault cleared recovered
  the day exactly.

For both, every other day already loaded must be untouched (Parquet bytes and warehouse rows, of
every endpoint), and no secret may be found in anything the pipeline wrote (see ``selftest.secrets``).
The rows judged are the faulted endpoint's (``selftest.endpoints``); a faulted transactions sync
must also leave the day's balances published exactly as served.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import email.utils
import io
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from balances_etl.selftest.endpoints import BALANCES, ENDPOINTS, MatrixEndpoint, Row
from balances_etl.selftest.installation import Installation
from balances_etl.selftest.matrix import (
    MATRIX_ENV,
    SCENARIOS,
    Expect,
    Items,
    Scenario,
    anchor_day,
    prepare_account,
    scenario_day,
)
from balances_etl.selftest.recording import WireRecord
from balances_etl.selftest.secrets import SecretHit, SecretScanner
from balances_etl.settings import temporary_environment


def warehouse_rows(data_dir: Path, endpoint: MatrixEndpoint = BALANCES) -> dict[dt.date, list[Row]]:
    """Every row of ``endpoint``'s table in the published warehouse by day (empty before the first load)."""
    from balances_etl.storage.warehouse import connect_read_only, warehouse_path

    if not warehouse_path(data_dir).exists():
        return {}
    con = connect_read_only(data_dir)
    try:
        rows = con.execute(f"SELECT {', '.join(endpoint.columns)} FROM {endpoint.table} ORDER BY ALL").fetchall()
    finally:
        con.close()
    by_day: dict[dt.date, list[Row]] = {}
    for row in rows:
        by_day.setdefault(row[0], []).append(tuple(row))
    return by_day


def parquet_rows(data_dir: Path, day: dt.date, endpoint: MatrixEndpoint = BALANCES) -> list[Row] | None:
    """The day's Parquet partition of ``endpoint`` in the same shape, or None when there is none."""
    import pyarrow.parquet as pq

    from balances_etl.storage.parquet import partition_path

    path = partition_path(data_dir, day, endpoint.dataset)
    if not path.exists():
        return None
    columns = list(endpoint.columns)
    table = pq.read_table(path, columns=columns).to_pydict()
    return _sorted((tuple(values) for values in zip(*(table[c] for c in columns), strict=True)), endpoint)


def parquet_digests(data_dir: Path) -> dict[str, str]:
    """sha256 of every published Parquet file of every endpoint, by path relative to the data dir."""
    import hashlib

    root = data_dir / "parquet"
    return {
        str(path.relative_to(data_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*.parquet"))
    } if root.exists() else {}


def _sorted(rows: Iterable[Row], endpoint: MatrixEndpoint) -> list[Row]:
    # The strings identify a row; DECIMALs compare by value (1.5 == 1.500000000000000000), not by text.
    return sorted(rows, key=lambda row: tuple("" if value is None else str(value) for value in row[: endpoint.identifying]))


def _multiset_missing(expected: Sequence[Row], actual: Sequence[Row]) -> int:
    return sum((Counter(expected) - Counter(actual)).values())


@contextlib.contextmanager
def captured_output() -> Iterator[io.StringIO]:
    """stdout, stderr and every log record (balances_etl at DEBUG) of what runs inside, as text."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root, package = logging.getLogger(), logging.getLogger("balances_etl")
    old_level = package.level
    root.addHandler(handler)
    package.setLevel(logging.DEBUG)
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield buffer
    finally:
        root.removeHandler(handler)
        package.setLevel(old_level)


@dataclass
class ScenarioResult:
    """What was observed; ``problems`` lists every way it differs from the scenario's expectation."""

    scenario: Scenario
    day: dt.date
    success: bool = False
    error: str | None = None
    warnings: frozenset[str] = frozenset()
    attempts: int = 0
    retry_gap_seconds: float | None = None
    retry_after_date: float | None = None  # the Retry-After HTTP date sent (epoch seconds), if any
    fault_fired: bool = False
    published_after_fault: int | None = None  # Parquet rows for the day right after the faulted run
    warehouse_after_fault: int = 0
    rerun_success: bool | None = None
    rerun_error: str | None = None
    rows_expected: int = 0
    rows_lost: int = 0
    rows_unexpected: int = 0
    other_days_changed: list[str] = field(default_factory=list)
    secrets: list[SecretHit] = field(default_factory=list)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def as_expected(self) -> bool:
        return not self.problems

    @property
    def cause(self) -> str:
        """The error, shortened for a table cell (the full text is in ``error``)."""
        return short_cause(self.error)

    @property
    def observed(self) -> str:
        if self.success:
            text = f"recovered: {self.rows_expected - self.rows_lost}/{self.rows_expected} rows exact"
            if self.attempts:
                text += f", {self.attempts} request{'s' if self.attempts != 1 else ''} for the page"
            if self.retry_gap_seconds is not None:
                text += f", retried after {self.retry_gap_seconds:.2f} s"
                if self.retry_after_date is not None:
                    text += " (not before the Retry-After date)"
            if self.warnings:
                text += f", warned {', '.join(sorted(self.warnings))}"
            return text
        text = f"failed: {self.cause}"
        if self.rerun_success is not None:
            text += f"; re-run {'recovered' if self.rerun_success else 'FAILED'} "
            text += f"{self.rows_expected - self.rows_lost}/{self.rows_expected} rows exact"
        return text


def short_cause(error: str | None, limit: int = 150) -> str:
    """An error message cut to what a table cell needs: the step name, request ids and budgets go."""
    lines = (error or "").strip().splitlines()
    if not lines:
        return ""
    text = re.sub(r"^[a-z_]+: ", "", lines[0])
    # A failed transactions sync says so first; the table keeps that in a few words.
    prefix = ""
    sync_failed = _SYNC_FAILED.match(text)
    if sync_failed:
        prefix, text = "balances published; transactions: ", text[sync_failed.end():]
    if text.startswith("Blocking checks failed") and len(lines) > 1:
        text = text.split(";")[0] + ": " + re.sub(r"^[a-z_]+: ", "", lines[1]).split(":")[0]
    text = re.sub(r" \(Type '[^']*'(, Action '[^']*')?(, Instance '[0-9a-f-]{36}')?\)", "", text)
    text = prefix + re.sub(r"(gave up after \d+ attempts) \(.*?\); last error: ", r"\1; last error: ", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_SYNC_FAILED = re.compile(r"The transactions sync failed \(the balances were published\): (NOAH transactions: )?")


def run_scenario(installation: Installation, scenario: Scenario, day: dt.date, scanner: SecretScanner) -> ScenarioResult:
    """Run ``scenario`` for ``day`` on ``installation`` and judge it; see the module docstring."""
    started = time.perf_counter()
    sandbox = installation.sandbox
    data_dir = installation.data_dir
    result = ScenarioResult(scenario, day)
    problems = result.problems

    sandbox.clear_faults()
    sandbox.expire_tokens_after_page(None)
    target = scenario.target
    held = prepare_account(sandbox, day)
    served = scenario.serves(held[target.name]) if scenario.serves else held[target.name]
    before_rows = {name: warehouse_rows(data_dir, endpoint) for name, endpoint in ENDPOINTS.items()}
    before_parquet = parquet_digests(data_dir)
    if any(day in rows for rows in before_rows.values()):
        problems.append(f"{day} was already loaded before the scenario ran")

    faults = list(scenario.faults)
    not_before = None
    if scenario.retry_after_date_in is not None:
        not_before = math.ceil(time.time()) + scenario.retry_after_date_in
        header = email.utils.formatdate(not_before, usegmt=True)
        faults = [dataclasses.replace(fault, retry_after=header) for fault in faults]
        result.retry_after_date = not_before
    sandbox.reset_wire()
    for fault in faults:
        sandbox.add_fault(fault)
    sandbox.expire_tokens_after_page(scenario.expire_tokens_after_page, target.path)

    texts: dict[str, str | None] = {}
    with temporary_environment({**MATRIX_ENV, **dict(scenario.env)}), captured_output() as output:
        outcome = installation.run(day)
    texts["output of the run"], texts["error of the run"] = output.getvalue(), outcome.error
    run_ids = [outcome.run_id]
    wire = [record for record in sandbox.wire if record.request.path == target.path]
    sandbox.clear_faults()
    sandbox.expire_tokens_after_page(None)

    result.success, result.error = outcome.success, outcome.error
    result.warnings = frozenset(c.name for c in outcome.checks if c.asset == target.partition_asset and not c.blocking and not c.passed)
    result.fault_fired = any(r.request.fault is not None or r.request.status != 200 for r in wire)
    result.attempts = sum(1 for r in wire if r.page == scenario.page or r.page is None)
    _judge_retry(result, scenario, wire, not_before)
    after_fault = parquet_rows(data_dir, day, target)
    result.published_after_fault = None if after_fault is None else len(after_fault)
    result.warehouse_after_fault = len(warehouse_rows(data_dir, target).get(day, []))
    if target is not BALANCES and _day_rows_differ(data_dir, day, BALANCES, held[BALANCES.name]):
        problems.append("the day's balances were not published exactly while the transactions sync was faulted")
    if not result.fault_fired:
        problems.append("the fault never fired: the scenario tested nothing")
    if scenario.attempts is not None and result.attempts != scenario.attempts:
        problems.append(f"{result.attempts} requests for page {scenario.page}, expected {scenario.attempts}")

    if scenario.expect is Expect.RECOVERED:
        if not outcome.success:
            problems.append(f"expected recovery, the run failed: {result.cause}")
        if result.warnings != scenario.warnings:
            problems.append(f"warnings {sorted(result.warnings)}, expected {sorted(scenario.warnings)}")
    else:
        if outcome.success:
            problems.append("expected a clean failure, the run succeeded")
        missing = [m for m in scenario.mentions if m not in (outcome.error or "")]
        if missing:
            problems.append(f"the error does not mention {missing}: {outcome.error!r}")
        if "Traceback" in (outcome.error or ""):
            problems.append("the error carries a traceback")
        if after_fault is not None:
            problems.append(f"{len(after_fault)} rows were published to Parquet for the failed day")
        if result.warehouse_after_fault:
            problems.append(f"{result.warehouse_after_fault} rows reached the warehouse for the failed day")
        problems += _landings_incomplete(data_dir, day)
        with temporary_environment(MATRIX_ENV), captured_output() as output:
            rerun = installation.run(day)
        texts["output of the re-run"], texts["error of the re-run"] = output.getvalue(), rerun.error
        run_ids.append(rerun.run_id)
        result.rerun_success, result.rerun_error = rerun.success, rerun.error
        served = held[target.name]  # the fault cleared: NOAH serves what the account holds
        if not rerun.success:
            problems.append(f"the re-run after the fault cleared failed: {rerun.error}")

    _judge_data(result, data_dir, day, target, served, before_rows, before_parquet)
    tokens = [r.signature for r in sandbox.wire if r.signature]
    result.secrets = scanner.scan(tokens=tokens, texts=texts, instance=installation.instance, run_ids=run_ids)
    landing = (Path("raw") / target.name / f"snapshot_date={day}").as_posix()
    if not any(landing in path.as_posix() for path in scanner.scanned):
        problems.append(f"the secret scan read nothing of the day's {target.name} raw landing")
    if result.secrets:
        problems.append("secrets found: " + "; ".join(str(hit) for hit in result.secrets))
    result.seconds = time.perf_counter() - started
    return result


def _judge_retry(result: ScenarioResult, scenario: Scenario, wire: list[WireRecord], not_before: float | None) -> None:
    faulted = [i for i, r in enumerate(wire) if r.request.fault is not None]
    if not faulted:
        return
    first = faulted[0]
    retry = next((r for r in wire[first + 1 :] if r.page == wire[first].page), None)
    if retry is None:
        if scenario.retry_gap_seconds is not None or not_before is not None:
            result.problems.append("the client never retried")
        return
    result.retry_gap_seconds = retry.at - wire[first].at
    if scenario.retry_gap_seconds is not None and result.retry_gap_seconds < scenario.retry_gap_seconds:
        result.problems.append(
            f"retried {result.retry_gap_seconds:.3f} s after the fault, before the {scenario.retry_gap_seconds:g} s asked for"
        )
    if not_before is not None and retry.at < not_before:
        result.problems.append(f"retried {not_before - retry.at:.3f} s before the Retry-After date")


def _landings_incomplete(data_dir: Path, day: dt.date) -> list[str]:
    """Every raw landing of the day that exists, of every endpoint, must be whole (manifest and page hashes agree)."""
    from balances_etl.storage.raw import raw_root, read_raw_bodies

    problems = []
    landings = [path for name in ENDPOINTS for path in (raw_root(data_dir, name) / f"snapshot_date={day}").glob("taken_at=*")]
    for landing in sorted(landings):
        try:
            read_raw_bodies(landing)
        except (OSError, ValueError, KeyError) as error:
            problems.append(f"incomplete raw landing {landing.name}: {error}")
    return problems


def _expected_rows(day: dt.date, endpoint: MatrixEndpoint, served: Items) -> list[Row]:
    return _sorted((endpoint.expected_row(day, item) for item in served), endpoint)


def _day_rows_differ(data_dir: Path, day: dt.date, endpoint: MatrixEndpoint, served: Items) -> bool:
    """Whether the warehouse's rows of ``endpoint`` for ``day`` differ from exactly what NOAH served."""
    return _sorted(warehouse_rows(data_dir, endpoint).get(day, []), endpoint) != _expected_rows(day, endpoint, served)


def _judge_data(
    result: ScenarioResult,
    data_dir: Path,
    day: dt.date,
    target: MatrixEndpoint,
    served: Items,
    before_rows: dict[str, dict[dt.date, list[Row]]],
    before_parquet: dict[str, str],
) -> None:
    problems = result.problems
    expected = _expected_rows(day, target, served)
    result.rows_expected = len(expected)
    actual = _sorted(warehouse_rows(data_dir, target).get(day, []), target)
    day_published = result.success or bool(result.rerun_success)
    if day_published:
        result.rows_lost = _multiset_missing(expected, actual)
        result.rows_unexpected = _multiset_missing(actual, expected)
        if result.rows_lost or result.rows_unexpected:
            problems.append(f"{result.rows_lost} rows lost or changed, {result.rows_unexpected} unexpected rows in the warehouse")
        published = parquet_rows(data_dir, day, target)
        if published != expected:
            problems.append("the Parquet partition differs from what NOAH served")
    else:
        result.rows_lost = len(expected)
    # Earlier days, of every endpoint: the same rows, the same Parquet bytes.
    for name, by_day in before_rows.items():
        endpoint = ENDPOINTS[name]
        after = warehouse_rows(data_dir, endpoint)
        for other, rows in by_day.items():
            if other != day and _sorted(after.get(other, []), endpoint) != _sorted(rows, endpoint):
                result.other_days_changed.append(f"{other} ({name})")
                result.rows_lost += _multiset_missing(rows, after.get(other, []))
    after_parquet = parquet_digests(data_dir)
    for path, digest in before_parquet.items():
        if f"snapshot_date={day}" not in path and after_parquet.get(path) != digest:
            result.other_days_changed.append(path)
    if result.other_days_changed:
        problems.append(f"other days changed: {', '.join(result.other_days_changed)}")


@dataclass
class MatrixReport:
    results: list[ScenarioResult]
    started_at: dt.datetime
    seconds: float
    baseline_error: str | None = None

    @property
    def passed(self) -> bool:
        return self.baseline_error is None and all(r.as_expected for r in self.results)


def run_matrix(
    installation: Installation,
    scanner: SecretScanner,
    scenarios: Sequence[Scenario] = SCENARIOS,
    *,
    progress: Callable[[int, int, ScenarioResult], None] | None = None,
) -> MatrixReport:
    """Load the anchor day, then run every scenario on its own day; never raises for a failed scenario."""
    started_at = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    prepare_account(installation.sandbox, anchor_day())
    with temporary_environment(MATRIX_ENV), captured_output():
        baseline = installation.run(anchor_day())
    if not baseline.success:
        return MatrixReport([], started_at, time.perf_counter() - clock, baseline_error=baseline.error)
    results = []
    for number, scenario in enumerate(scenarios, start=1):
        result = run_scenario(installation, scenario, scenario_day(scenario), scanner)
        results.append(result)
        if progress is not None:
            progress(number, len(scenarios), result)
    return MatrixReport(results, started_at, time.perf_counter() - clock)
