"""Shared helpers: timing, child processes measured with ``wait4``, the emulator, the machine."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TELEMETRY_OFF = {
    "RUNTIME__DLTHUB_TELEMETRY": "false",  # dlt
    "DAGSTER_DISABLE_TELEMETRY": "1",  # dagster (dagster.yaml also disables it)
}


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


@dataclass(frozen=True)
class ChildRun:
    """One child process: wall seconds from spawn to reap, its peak RSS, CPU, exit code, output."""

    wall_seconds: float
    max_rss_bytes: int
    user_seconds: float
    system_seconds: float
    returncode: int
    stdout: str
    stderr: str


class Spawner:
    """Starts measured children from ``benchmarks/spawner.py`` (see there why) and reaps them with wait4."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [PYTHON, "-S", str(Path(__file__).with_name("spawner.py"))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )

    def run(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_dir: Path) -> ChildRun:
        log_dir.mkdir(parents=True, exist_ok=True)
        out_path, err_path = log_dir / "stdout.txt", log_dir / "stderr.txt"
        request = {"argv": list(argv), "env": dict(env), "cwd": str(cwd), "stdout": str(out_path), "stderr": str(err_path)}
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the spawner process died")
        answer = json.loads(line)
        return ChildRun(
            stdout=out_path.read_text(errors="replace"), stderr=err_path.read_text(errors="replace"), **answer
        )

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=30)


_spawner: Spawner | None = None


def start_spawner() -> None:
    """Start the spawner now, while this process is still small (call it first thing)."""
    global _spawner
    if _spawner is None:
        _spawner = Spawner()


def stop_spawner() -> None:
    global _spawner
    if _spawner is not None:
        _spawner.close()
        _spawner = None


def run_child(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_dir: Path) -> ChildRun:
    """Run ``argv`` to completion: wall time from spawn to reap, and that child's own peak RSS.

    Output goes to files (no pipe to drain while timing). Children come from the spawner process
    (started by ``start_spawner``), so ``ru_maxrss`` is not inflated by this process's memory.
    """
    start_spawner()
    assert _spawner is not None
    return _spawner.run(argv, env=env, cwd=cwd, log_dir=log_dir)


def child_json(run: ChildRun, what: str) -> dict:
    """The JSON object a worker printed as its last stdout line."""
    if run.returncode != 0:
        raise RuntimeError(f"{what} failed with exit code {run.returncode}:\n{run.stderr[-4000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def yesterday_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


def base_env() -> dict[str, str]:
    """The environment for children: ours, minus anything that could point them at a real NOAH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOAH_", "BALANCES_ETL_", "DAGSTER_"))}
    env.update(TELEMETRY_OFF)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def emulator(private_pem: bytes, public_pem: bytes, workdir: Path, **sandbox_kwargs) -> Iterator[tuple[object, dict[str, str]]]:
    """The embedded NOAH emulator in this process and the NOAH_* variables a child needs to reach it."""
    from balances_etl.emulator import NoahSandbox

    key_path = workdir / "noah-signing.pem"
    if not key_path.exists():
        key_path.write_bytes(private_pem)
        key_path.chmod(0o600)
    with NoahSandbox(public_key_pem=public_pem, **sandbox_kwargs) as sandbox:
        yield sandbox, {
            "NOAH_BASE_URL": sandbox.base_url,
            "NOAH_API_KEY": sandbox.api_key,
            "NOAH_SIGNING_KEY_PATH": str(key_path),
        }


def pipeline_home(root: Path) -> dict[str, str]:
    """A fresh data dir and Dagster home (with a copy of dagster_home/dagster.yaml) under ``root``."""
    data_dir, home = root / "data", root / "dagster_home"
    data_dir.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return {"BALANCES_ETL_DATA_DIR": str(data_dir), "DAGSTER_HOME": str(home)}


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    versions = {}
    for package in ("dagster", "duckdb", "pyarrow", "pandas", "requests", "PyJWT", "cryptography", "dlt"):
        try:
            from importlib.metadata import version

            versions[package] = version(package)
        except Exception:  # noqa: BLE001 - a missing optional package is just not listed
            versions[package] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "filesystem_tmp": _filesystem_of(Path(os.environ.get("TMPDIR", "/tmp"))),
        "versions": versions,
    }


def _filesystem_of(path: Path) -> str | None:
    try:
        best, kind = "", None
        for line in Path("/proc/mounts").read_text().splitlines():
            _device, mount, fstype, *_ = line.split()
            if str(path.resolve()).startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
        return kind
    except OSError:
        return None
