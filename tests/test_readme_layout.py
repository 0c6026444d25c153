"""The README's project layout and check table are the code's: every module listed, every check as the table says."""

from __future__ import annotations

from pathlib import Path

import balances_etl
from balances_etl.domain.checks import BALANCE_PARTITION_CHECKS, RECONCILIATION_CHECKS, TRANSACTION_SYNC_CHECKS

PACKAGE = Path(balances_etl.__file__).parent
README = (PACKAGE.parent / "README.md").read_text()


def _section(title: str) -> str:
    return README.split(f"\n{title}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]


def test_the_layout_names_every_package_and_top_level_module():
    layout = _section("## Project layout")
    packages = [p.name + "/" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()]
    modules = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert [name for name in packages + modules if f"  {name}" not in layout] == []


def test_the_layout_names_every_module_of_the_pipeline_and_defs():
    layout = _section("## Project layout")
    for folder in ("pipeline", "defs", "orchestration"):
        modules = [p.name for p in (PACKAGE / folder).glob("*.py") if p.name != "__init__.py"]
        assert [name for name in modules if name not in layout] == [], folder


def test_the_check_table_is_the_code_table():
    rows = [line for line in _section("### The checks").splitlines() if line.startswith("| `")]
    documented = [tuple(cell.strip().strip("`") for cell in row.strip("|").split("|")) for row in rows]
    expected = [
        (info.name.value, "blocking" if info.blocking else "warning", info.description)
        for info in BALANCE_PARTITION_CHECKS + RECONCILIATION_CHECKS + TRANSACTION_SYNC_CHECKS
    ]
    assert documented == expected
