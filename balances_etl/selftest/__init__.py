"""`balances-etl selftest`: the fault matrix, run end to end, printed as a table a user can read.

Every scenario runs the real daily job (Dagster run, the embedded NOAH emulator over HTTP with
ES384-signed requests, Parquet, DuckDB, views) for its own day with one fault injected on
``/v1/balances`` or ``/v1/transactions``, and is judged by what a user would see afterwards (a
faulted transactions sync must also leave the day's balances published):

* **recovered**: the run succeeded and the day holds exactly the rows NOAH served, every raw and
  canonical string and every DECIMAL(38,18) compared one by one (warnings only where expected);
* **failed cleanly**: the run failed with an error naming the cause, nothing was published for the
  day (no Parquet partition, no warehouse rows), and a re-run after the fault cleared recovered
  the day exactly.

For both, every other day already loaded must be untouched (Parquet bytes and warehouse rows), and
nothing the pipeline wrote (data directory, Dagster home with its sqlite run and event storage and
compute logs, Dagster events and metadata, captured output and logs, error messages) may contain
the API key, the private signing key or any JWT.

``SCENARIOS`` is the one definition of the matrix: ``tests/test_fault_matrix.py`` runs it with
pytest, ``balances-etl selftest`` runs it for people and writes ``docs/reliability.md``.

Modules: ``endpoints`` (the list endpoints struck, each described once), ``matrix`` (the scenarios
and their days), ``recording`` (the emulator's wire log), ``secrets`` (the secret scans),
``installation`` (a throwaway pipeline installation), ``run`` (running and judging a scenario, the
whole matrix), ``render`` (the table and the document).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from balances_etl.selftest.installation import (
    Installation, SelftestInstallation, installation_env, selftest_installation
)
from balances_etl.selftest.matrix import (
    CORE_SCENARIOS, FIRST, ITEM_COUNT, LAST, MATRIX_ENV, MAX_ATTEMPTS, MIDDLE, PAGE_SIZE, READ_TIMEOUT_SECONDS,
    RETRY_AFTER_MINIMUM_SECONDS, SCENARIOS, SLOW_SECONDS, WHERE, Expect, Items, Scenario, anchor_day,
    day_transactions, prepare_account, scenario_day, select, taken_after,
)
from balances_etl.selftest.recording import RecordingSandbox, WireRecord, WireRecorder
from balances_etl.selftest.render import machine_description, render_document, render_table, summary, write_report
from balances_etl.selftest.run import (
    MatrixReport, ScenarioResult, captured_output, parquet_digests, parquet_rows, run_matrix, run_scenario, short_cause,
    warehouse_rows,
)
from balances_etl.selftest.endpoints import BALANCES, ENDPOINTS, TRANSACTIONS, MatrixEndpoint, Row
from balances_etl.selftest.secrets import JWT_PATTERN, SecretHit, SecretScanner, private_key_needles, token_needles

__all__ = [
    "BALANCES", "CORE_SCENARIOS", "ENDPOINTS", "FIRST", "ITEM_COUNT", "JWT_PATTERN", "LAST", "MATRIX_ENV",
    "MAX_ATTEMPTS", "MIDDLE", "MatrixEndpoint", "TRANSACTIONS",
    "PAGE_SIZE", "READ_TIMEOUT_SECONDS", "RETRY_AFTER_MINIMUM_SECONDS", "SCENARIOS", "SLOW_SECONDS", "WHERE",
    "Expect", "Installation", "Items", "MatrixReport", "RecordingSandbox", "Row", "Scenario", "ScenarioResult",
    "SecretHit", "SecretScanner", "SelftestInstallation", "WireRecord", "WireRecorder", "anchor_day",
    "captured_output", "day_transactions", "installation_env", "machine_description", "main", "parquet_digests",
    "parquet_rows", "prepare_account", "private_key_needles", "render_document", "render_table", "run_matrix",
    "run_scenario", "scenario_day", "select", "selftest_installation", "short_cause", "summary", "taken_after",
    "token_needles", "warehouse_rows", "write_report",
]


def main(*, core_only: bool = False, only: Sequence[str] = (), report: Path | None = None, keep: bool = False) -> int:
    """Run the matrix, print the table; 0 only when every row is as expected."""
    from balances_etl.defs.partitions import daily_partitions

    try:
        scenarios = select(SCENARIOS, core_only, only)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    first_day = min((scenario_day(s) for s in scenarios), default=anchor_day())
    start = daily_partitions.start.date()
    if first_day < start:
        print(f"the selftest needs daily partitions from {first_day}; BALANCES_ETL_START_DATE is {start}", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="balances-etl-selftest-"))
    print(f"Running {len(scenarios)} fault scenarios end to end against the embedded NOAH emulator (work dir {root}).",
          file=sys.stderr)

    def progress(number: int, total: int, result: ScenarioResult) -> None:
        mark = "ok" if result.as_expected else "NOT AS EXPECTED"
        print(f"[{number:3d}/{total}] {result.scenario.key:45s} {mark} ({result.seconds:.1f} s)", file=sys.stderr, flush=True)

    try:
        with selftest_installation(root) as installation:
            matrix = run_matrix(installation, installation.scanner(), scenarios, progress=progress)
    finally:
        if keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(render_table(matrix.results))
    print()
    print(summary(matrix))
    if report is not None:
        command = "balances-etl selftest" + (" --core" if core_only else "") + "".join(f" --only {k}" for k in only)
        command += f" --report {report}"
        write_report(report, render_document(matrix, command))
        print(f"wrote {report}", file=sys.stderr)
    return 0 if matrix.passed else 1
