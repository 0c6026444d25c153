"""The published warehouse opens in DuckDB 1.5 (analysts' notebooks, BI tools pinned to 1.x) with
every view readable and every amount exact: DuckDB 2.0's own format is unreadable there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from balances_etl.storage.files import exclusive_lock
from balances_etl.storage.warehouse import warehouse_path
from tests.support_history import build_history, day
from transactions_support import Pipeline, at

DUCKDB_V1 = "1.5.6"
_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "balances-etl" / f"duckdb-{DUCKDB_V1}"

# Every view of the file, every value as text, rows sorted: the same script runs under both DuckDBs.
_DUMP_VIEWS = """
import json, sys, duckdb
con = duckdb.connect()
con.execute("ATTACH ? AS w (READ_ONLY)".replace("?", "'" + sys.argv[1].replace("'", "''") + "'"))
con.execute("USE w")
views = [r[0] for r in con.execute(
    "SELECT view_name FROM duckdb_views() WHERE NOT internal AND database_name = 'w' ORDER BY 1").fetchall()]
dump = {v: con.execute(f'SELECT * FROM (SELECT COLUMNS(*)::VARCHAR FROM "{v}") ORDER BY ALL').fetchall() for v in views}
print(json.dumps({"version": duckdb.__version__, "views": dump}))
"""


@pytest.fixture(scope="session")
def duckdb_v1_python() -> Path:
    """A virtual environment with DuckDB 1.5 from PyPI, built once per machine (a few seconds)."""
    python = _VENV / "bin" / "python"
    with exclusive_lock(_VENV.parent / f"duckdb-{DUCKDB_V1}.lock", 600):
        if not python.exists() or _version(python) != DUCKDB_V1:
            venv.create(_VENV, with_pip=True, clear=True)
            subprocess.run([python, "-m", "pip", "install", "-q", f"duckdb=={DUCKDB_V1}"], check=True)
    return python


def _version(python: Path) -> str | None:
    done = subprocess.run([python, "-c", "import duckdb; print(duckdb.__version__)"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def _dump(python: Path | str, database: Path) -> dict:
    done = subprocess.run([python, "-c", _DUMP_VIEWS, str(database)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_duckdb_1_5_reads_every_view_of_the_published_warehouse_exactly(tmp_path: Path, duckdb_v1_python: Path) -> None:
    # NOAH's 38 characters at most: 18 fractional digits, or 20 integer digits
    fine, wide = "1234567890123456789.123456789012345678", "12345678901234567890.12345678901234567"
    data_dir = build_history(tmp_path, {
        day(0): [("Current", "BTC", "0.000000000000000001", fine), ("Current", "ETH", "1.5", "2.25")],
        day(1): [("Current", "BTC", fine, fine), ("Current", "USDC", wide, wide)],
        day(3): [("Current", "BTC", "0.1", "0.100000000000000001")],
    })
    published = warehouse_path(data_dir)

    new, old = _dump(sys.executable, published), _dump(duckdb_v1_python, published)

    assert old["version"] == DUCKDB_V1 and new["version"].startswith("2.")
    assert len(new["views"]) >= 12
    assert old["views"] == new["views"]
    history = [value for row in new["views"]["v_daily_balances"] for value in row]
    assert fine in history and wide + "0" in history  # as DECIMAL(38,18) text


def test_duckdb_1_5_runs_the_transaction_views_bignum_arithmetic_included(tmp_path: Path, duckdb_v1_python: Path) -> None:
    """The roll-forward views sum through BIGNUM: executed, not only bound, by 1.5 with transactions."""
    pipeline = Pipeline(tmp_path / "data")
    pipeline.noah.add("dep-1", at(-2), "Settled", amount="0.123456789012345678")
    pipeline.noah.add("pay-1", at(0, 9), "Pending", direction="Out", amount="0.25", fee="0.000000000000000001")
    pipeline.run(day(0))
    pipeline.noah.set("pay-1", Status="Settled")
    pipeline.noah.add("dep-2", at(1, 8), "Settled", amount="1234567890123456789.123456789012345678")
    pipeline.run(day(1))
    published = warehouse_path(pipeline.data_dir)

    new, old = _dump(sys.executable, published), _dump(duckdb_v1_python, published)

    assert new["views"]["v_balance_rollforward"] and new["views"]["v_pending_explained"]
    assert old["views"] == new["views"]
