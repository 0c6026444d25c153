"""The README tells a newcomer the truth: commands, configuration and views it lists exist, and vice versa."""

from __future__ import annotations

import re

from balances_etl.domain.names import View
from balances_etl.noah import NoahConfig
from balances_etl.settings import PROJECT_ROOT, PipelineSettings

README = (PROJECT_ROOT / "README.md").read_text()
MAKEFILE = (PROJECT_ROOT / "Makefile").read_text()


def quickstart_commands() -> list[str]:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]


def test_quickstart_is_two_make_targets_that_exist():
    commands = quickstart_commands()
    assert commands == ["make demo", "make test"]
    for command in commands:
        assert re.search(rf"^{command.split()[1]}:", MAKEFILE, re.MULTILINE)


def test_ci_runs_the_readme_test_command():
    assert "make test" in (PROJECT_ROOT / ".ci" / "run").read_text()


def test_every_configuration_variable_is_documented():
    variables = [v.variable for v in NoahConfig.documented_variables()]
    variables += [name for name, _, _ in PipelineSettings.documented_variables()]
    missing = [name for name in variables if f"`{name}`" not in README]
    assert not missing


def test_every_view_is_explained_for_analysts():
    analysts = README.split("## For analysts", 1)[1]
    assert [view for view in View if f"`{view}`" not in analysts] == []
    assert sorted(p.stem.split("_", 1)[1] for p in (PROJECT_ROOT / "sql").glob("*.sql")) == sorted(View)

