"""The selftest's report: the matrix as a markdown table, a one-line summary, docs/reliability.md."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from balances_etl.markdown import SEASON_MARKER, markdown_table, section_after
from balances_etl.selftest.matrix import ITEM_COUNT, MAX_ATTEMPTS, PAGE_SIZE, READ_TIMEOUT_SECONDS, Expect
from balances_etl.selftest.run import MatrixReport, ScenarioResult


_RIGHT_ALIGNED = ("#", "rows lost", "secrets found")


def render_table(results: Sequence[ScenarioResult]) -> str:
    """The matrix as a markdown table: endpoint, fault, where, expected, observed, rows lost, secrets found."""
    rows = []
    for number, result in enumerate(results, start=1):
        s = result.scenario
        verdict = "yes" if result.as_expected else "**NO**: " + "; ".join(p.replace("\n", " ") for p in result.problems)
        rows.append({
            "#": number, "endpoint": s.target.path, "fault": s.fault, "where": s.where, "expected": s.expected, "observed": result.observed,
            "rows lost": result.rows_lost, "secrets found": len(result.secrets), "as expected": verdict,
        })
    return markdown_table(rows, limit=len(rows), right_aligned=_RIGHT_ALIGNED)


def summary(report: MatrixReport) -> str:
    results = report.results
    if report.baseline_error is not None:
        return f"The baseline day could not be loaded, so no scenario ran:\n{report.baseline_error}"
    recovered = sum(1 for r in results if r.scenario.expect is Expect.RECOVERED)
    unexpected = [r for r in results if not r.as_expected]
    return (
        f"{len(results)} scenarios in {report.seconds:.0f} s: {recovered} expected to recover, "
        f"{len(results) - recovered} expected to fail cleanly; "
        f"{len(results) - len(unexpected)} as expected, {len(unexpected)} not; "
        f"rows lost {sum(r.rows_lost for r in results)}, secrets found {sum(len(r.secrets) for r in results)}."
    )


def machine_description() -> str:
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"dagster {dg.__version__}"
    )


def render_document(report: MatrixReport, command: str) -> str:
    """docs/reliability.md: how to read the table, how to reproduce it, and the table itself."""
    when = report.started_at.strftime("%Y-%m-%d %H:%M UTC")
    return f"""# Reliability: what happens when things go wrong

Every row below is one run of the real daily job (a Dagster run; the embedded NOAH emulator over
HTTP on loopback with ES384-signed requests; the raw landings; the Parquet partitions; the DuckDB
warehouse and its views) for its own day, with one fault injected where the row says: on
`GET /v1/balances` or on `GET /v1/transactions`, which the same run syncs after the balances. The
account holds {ITEM_COUNT} balances (the documented sandbox currencies with that day's amounts) and
{ITEM_COUNT} transactions created that day, {PAGE_SIZE} per page, so each endpoint has a first, a
middle and a last page. Every fault that can strike a list endpoint strikes both; the rows about a
warning of the balances' checks are the balances' own. The client ran with
`NOAH_MAX_ATTEMPTS={MAX_ATTEMPTS}`, a backoff of 0.01-0.05 s and, for the timeout rows, a
{READ_TIMEOUT_SECONDS:g} s read timeout; the Retry-After rows wait for real.

- **recovered**: the run succeeded and the day holds exactly the rows the faulted endpoint served:
  every raw and canonical amount string and every `DECIMAL(38,18)` compared one by one, with a
  warning only where the row expects one. "retried after" is measured at the emulator, from the faulted
  answer to the retry.
- **failed cleanly**: the run failed with an error naming the cause (shortened here: request ids
  and retry budgets removed), nothing of the faulted endpoint was published for that day (no
  Parquet partition, no warehouse rows, no incomplete raw landing of either endpoint), and a re-run
  after the fault cleared recovered the day exactly. When the transactions sync failed, the day's
  balances were published all the same, exactly as served.
- In every row, every other day already loaded stayed untouched (its Parquet bytes and its
  warehouse rows). **rows lost** counts rows NOAH served that were not in the warehouse, exactly,
  at the end of the row (after the re-run, for failures). **secrets found** counts occurrences
  of the API key, the private signing key (the PEM, each base64 line, the scalar) or any JWT
  (every `Api-Signature` actually sent, and anything shaped `eyJ...eyJ...`) in everything the
  run wrote: the data directory (raw landings, Parquet and warehouse of both endpoints; the scan
  must have read the faulted endpoint's raw landing of the day), the Dagster home (sqlite run and
  event storage, compute logs), every Dagster event with its metadata, the captured output and
  logs, and the error messages.

Reproduce: `{command}` (exit status 0 only when every row is as expected).
The same table runs as `tests/test_fault_matrix.py`: a representative core in `make test`, the
other rows in `make test-slow`. Crashes (SIGKILL at each stage and at random instants), concurrent runs, an
analyst holding the warehouse, a full disk and a read-only data directory are exercised by
`tests/test_crash_and_concurrency.py`, not by this command.

Run on {when}, {machine_description()}.

{summary(report)}

{render_table(report.results)}
"""


def write_report(path: Path, document: str) -> None:
    """Write ``document`` to ``path``, keeping the season simulation's section (its marker line to the
    end of the existing file): the two generators share docs/reliability.md."""
    season = section_after(path.read_text(), SEASON_MARKER) if path.exists() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{document.rstrip()}\n\n{season}" if season else document)
