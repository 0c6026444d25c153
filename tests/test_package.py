"""What a user gets from `pip install .`: a wheel that runs on its own, outside the source checkout.

The package is installed non-editable into a fresh virtual environment (no system site-packages),
then used from directories that hold nothing of the checkout: the demo must build a warehouse with
every view, `dg check defs` must load the installed code location, and the image's command
(deploy/Dockerfile: `dagster api grpc` on the module) must serve it and pass the health check. Both only work if the wheel
carries what the package reads at run time (sql/, dagster.yaml, and the pyproject.toml whose
[tool.dg] table `dg.load_from_defs_folder` looks for above balances_etl/).

One test, so that `pytest -n 2` builds the environment once. About a minute with a warm pip cache
(pip install ~55 s, demo ~5 s, dg check defs ~6 s).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from balances_etl.domain.names import View
from tests.test_deploy import image_command

ROOT = Path(__file__).resolve().parent.parent
# Variables of this test process that would point the installed package back at the checkout.
_LEAKY_PREFIXES = ("BALANCES_ETL_", "NOAH_", "DAGSTER_", "PYTHON", "VIRTUAL_ENV")
# `dg` wants a project directory holding its root module; an installed package is one by a link.
_INSTALLED_PROJECT_DG_TOML = """\
directory_type = "project"

[project]
root_module = "balances_etl"
code_location_name = "balances_etl"
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(command: list[str | Path], *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    shown = " ".join(map(str, command))
    assert result.returncode == 0, f"{shown} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_pip_install_gives_a_package_that_runs_outside_the_checkout(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    env = {name: value for name, value in os.environ.items() if not name.startswith(_LEAKY_PREFIXES)}
    env |= {"VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    _run([python, "-m", "pip", "install", "--quiet", ROOT], cwd=tmp_path, env=env, timeout=900)

    # The installed package, not the checkout, with what it reads at run time inside it.
    empty = tmp_path / "empty"
    empty.mkdir()
    probe = "import balances_etl.settings as s; print(s.PACKAGE_DIR, s.PACKAGED_SQL_DIR, s.DAGSTER_YAML_TEMPLATE)"
    package, sql_dir, dagster_yaml = map(Path, _run([python, "-c", probe], cwd=empty, env=env, timeout=120).split())
    assert package.is_relative_to(venv) and not package.is_relative_to(ROOT)
    assert (sql_dir, dagster_yaml) == (package / "sql", package / "dagster.yaml")
    shipped = sorted(p.relative_to(sql_dir).as_posix() for p in sql_dir.rglob("*.sql"))
    assert shipped == sorted(p.relative_to(ROOT / "sql").as_posix() for p in (ROOT / "sql").rglob("*.sql"))
    assert any(name.startswith("queries/") for name in shipped)
    assert dagster_yaml.read_text() == (ROOT / "dagster_home" / "dagster.yaml").read_text()
    assert "[tool.dg]" in (package / "pyproject.toml").read_text()

    # The demo, from an empty working directory: data/ and dagster_home/ appear there.
    report = _run([bin_dir / "balances-etl", "demo", "--days", "2"], cwd=empty, env=env, timeout=600)
    assert "Daily runs" in report and "Latest balances (v_latest_balances)" in report
    assert (empty / "dagster_home" / "dagster.yaml").read_text() == dagster_yaml.read_text()
    with duckdb.connect(str(empty / "data" / "warehouse.duckdb"), read_only=True) as con:
        views = {name for (name,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert sorted(set(View) - views) == []

    # dg check defs on the installed code location: a project directory whose root module is it.
    project = tmp_path / "installed_project"
    project.mkdir()
    (project / "dg.toml").write_text(_INSTALLED_PROJECT_DG_TOML)
    (project / "balances_etl").symlink_to(package, target_is_directory=True)
    checked = _run([bin_dir / "dg", "check", "defs"], cwd=project, env=env, timeout=300)
    assert "All definitions loaded successfully" in checked

    # The image's command (deploy/Dockerfile) serves the code location from the installed package, on
    # loopback here, as the Helm chart's user deployment runs it; its health check is the chart's probe.
    port = _free_port()
    command = [bin_dir / image_command()[0], *image_command()[1:]]
    command[command.index("--host") + 1], command[command.index("--port") + 1] = "127.0.0.1", str(port)
    server = subprocess.Popen(command, cwd=empty, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            probe = subprocess.run([bin_dir / "dagster", "api", "grpc-health-check", "-p", str(port)],
                                   cwd=empty, env=env, capture_output=True, text=True, timeout=60)
            if probe.returncode == 0 or time.monotonic() > deadline or server.poll() is not None:
                break
            time.sleep(1)
        assert probe.returncode == 0, f"{probe.stdout}{probe.stderr}"
    finally:
        server.terminate()
        server.communicate(timeout=30)
