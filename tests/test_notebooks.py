"""The analysts' notebooks run top to bottom against a warehouse built by `balances-etl demo`.

Each notebook is executed in a fresh Jupyter kernel (nbclient); any cell error fails the test.
The notebooks are committed clean (no outputs, no execution counts), so what runs here is exactly
what an analyst opens.
"""

from __future__ import annotations

import os
import shutil
from decimal import Decimal
import subprocess
import sys
from pathlib import Path

import duckdb
import nbformat
import pytest
from nbclient import NotebookClient

from balances_etl.demo import DEMO_MOVEMENT
from balances_etl.domain.names import View
from support_history import build_history, day

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
NOTEBOOKS = ("balances_explorer.ipynb", "reconciliation.ipynb", "rollforward.ipynb")
CELL_TIMEOUT_SECONDS = 120
DEMO_DAYS = 10
LEDGER_STATUSES = ("MATCH", "BREAK", "MISSING_AT_NOAH", "MISSING_IN_LEDGER")


@pytest.fixture(scope="module")
def demo_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data directory of `balances-etl demo --days 10`, run in a scratch directory."""
    root = tmp_path_factory.mktemp("demo")
    data_dir = root / "data"
    dagster_home = root / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {name: value for name, value in os.environ.items() if not name.startswith("NOAH_")}
    env.update(BALANCES_ETL_DATA_DIR=str(data_dir), DAGSTER_HOME=str(dagster_home))
    result = subprocess.run(
        [sys.executable, "-m", "balances_etl.cli", "demo", "--days", str(DEMO_DAYS)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"demo exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert (data_dir / "warehouse.duckdb").exists()
    return data_dir


def test_demo_builds_a_warehouse_where_every_view_has_rows(demo_data_dir: Path) -> None:
    con = duckdb.connect(str(demo_data_dir / "warehouse.duckdb"), read_only=True)
    try:
        days = con.execute("SELECT count(DISTINCT snapshot_date) FROM balance_snapshots").fetchone()[0]
        assert days == DEMO_DAYS - 1  # the simulated outage day failed cleanly and is missing
        whole_days_missing = con.execute(f"SELECT count(DISTINCT missing_date) FROM {View.SNAPSHOT_GAPS} WHERE whole_day_missing").fetchone()[0]
        assert whole_days_missing == 1
        empty = [view for view in View if con.execute(f"SELECT count(*) FROM {view}").fetchone()[0] == 0]
        assert empty == []
    finally:
        con.close()


def execute(name: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    """Run a notebook from notebooks/ as an analyst would; the kernel inherits this environment."""
    notebook = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    monkeypatch.setenv("BALANCES_ETL_DATA_DIR", str(data_dir))
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_SECONDS,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    return notebook


def tagged_output(notebook: nbformat.NotebookNode, tag: str) -> str:
    """All text a user sees under the cell tagged ``tag`` (streams, text and HTML reprs)."""
    cells = [cell for cell in notebook.cells if tag in cell.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}"
    parts = []
    for output in cells[0].outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("display_data", "execute_result"):
            parts.extend(output.data.get(kind, "") for kind in ("text/plain", "text/html"))
    return "\n".join(parts)


def images(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


def fetch_column(data_dir: Path, sql: str) -> list:
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        return [row[0] for row in con.execute(sql).fetchall()]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_clean(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), "strip outputs before committing"
    assert "con.close()" in code[-1].source, "the last cell closes the read-only connection"
    assert ".df()" not in "".join(cell.source for cell in code), ".df() turns DECIMAL into float"


def test_balances_explorer(demo_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = execute("balances_explorer.ipynb", demo_data_dir, monkeypatch)

    latest = tagged_output(notebook, "latest-balances")
    currencies = fetch_column(demo_data_dir, f"SELECT DISTINCT crypto_currency FROM {View.LATEST_BALANCES}")
    assert currencies
    missing = [currency for currency in currencies if currency not in latest]
    assert not missing, f"latest balances do not show {missing}"
    # exact strings, not floats: every latest total appears as NOAH's canonical text
    totals = fetch_column(demo_data_dir, f"SELECT total FROM {View.LATEST_BALANCES}")
    assert all(total in latest for total in totals)

    changes = tagged_output(notebook, "recent-changes")
    assert "delta_total" in changes
    assert images(notebook) >= 2  # total/available and pending outflows


def test_reconciliation(demo_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = execute("reconciliation.ipynb", demo_data_dir, monkeypatch)

    statuses = fetch_column(demo_data_dir, f"SELECT DISTINCT status FROM {View.LEDGER_RECONCILIATION}")
    # the demo's sample ledger agrees, disagrees and misses rows on both sides
    assert sorted(statuses) == sorted(LEDGER_STATUSES)
    counts = tagged_output(notebook, "ledger-statuses")
    comparison = tagged_output(notebook, "ledger-comparison")
    for status in LEDGER_STATUSES:
        assert status in counts and status in comparison, f"{status} not shown"

    checks = fetch_column(demo_data_dir, f"SELECT DISTINCT check_name FROM {View.RECONCILIATION_SUMMARY}")
    summary = tagged_output(notebook, "break-summary")
    assert checks and all(check in summary for check in checks)
    assert "latest snapshot date:" in tagged_output(notebook, "open-breaks")
    assert images(notebook) == 1  # breaks per day and check


def test_rollforward(demo_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's history rolls forward except for the one injected movement, found to the last digit;
    its pending outflows are explained and its outage day is estimated."""
    notebook = execute("rollforward.ipynb", demo_data_dir, monkeypatch)

    currency, amount = DEMO_MOVEMENT
    unexplained = fetch_column(
        demo_data_dir,
        f"SELECT crypto_currency || ' ' || CAST(unexplained_total AS VARCHAR) FROM {View.BALANCE_ROLLFORWARD} "
        "WHERE status = 'unexplained'",
    )
    assert [row.split(" ")[0] for row in unexplained] == [currency]
    assert Decimal(unexplained[0].split(" ")[1]) == Decimal(amount)
    assert amount in tagged_output(notebook, "not-balanced")
    assert fetch_column(demo_data_dir, f"SELECT count(*) FROM {View.PENDING_EXPLAINED} WHERE status = 'unexplained'") == [0]
    explained = fetch_column(
        demo_data_dir, f"SELECT count(*) FROM {View.PENDING_EXPLAINED} WHERE status = 'balanced' AND pending_outflow <> 0"
    )
    assert explained[0] > 0
    estimated = fetch_column(demo_data_dir, f"SELECT DISTINCT balance_date FROM {View.DAILY_BALANCES} WHERE source = 'estimated'")
    assert len(estimated) == 1 and str(estimated[0]) in tagged_output(notebook, "estimated")
    assert images(notebook) == 1  # the waterfall


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_without_ledger_rows(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ledger files: the ledger cells say "(none)" instead of failing; everything else still runs."""
    a = "Current"
    data_dir = build_history(
        tmp_path,
        {
            day(0): [(a, "BTC_TEST", "1.5", "2"), (a, "USDC_TEST", "10", "10")],
            day(1): [(a, "BTC_TEST", "1.5", "1.5")],
        },
    )
    notebook = execute(name, data_dir, monkeypatch)
    if name == "reconciliation.ipynb":
        assert "(none)" in tagged_output(notebook, "ledger-statuses")
        assert "(none)" in tagged_output(notebook, "ledger-comparison")
        assert "currency_disappeared" in tagged_output(notebook, "break-summary")
    elif name == "rollforward.ipynb":  # no transactions sync in this history: nothing rolls forward
        assert "no_sync_at_opening" in tagged_output(notebook, "not-balanced")
    else:
        assert "USDC_TEST" in tagged_output(notebook, "latest-balances")
