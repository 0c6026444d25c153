"""Helpers for end-to-end tests: point the pipeline at a temp data dir, a temp Dagster home and an emulator."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from balances_etl.orchestration.runner import RunOutcome, run_daily_job
from balances_etl.domain.balances import ARROW_SCHEMA
from balances_etl.selftest import RecordingSandbox, SecretHit, SelftestInstallation, taken_after
from balances_etl.settings import DAGSTER_YAML_TEMPLATE
from balances_etl.storage.parquet import parquet_root, partition_path
from balances_etl.storage.raw import raw_root, read_raw_bodies
from balances_etl.storage.warehouse import connect_read_only

DAY = dt.date(2026, 11, 20)


class Pipeline(SelftestInstallation):
    """One isolated pipeline installation wired to one emulator (the selftest's, plus test helpers)."""

    @property
    def warehouse(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    def env(self) -> dict[str, str]:
        return {**super().env(), "NOAH_BACKOFF_BASE_SECONDS": "0.01", "NOAH_BACKOFF_MAX_SECONDS": "0.05"}

    def run(self, day: dt.date = DAY, *, taken_at: dt.datetime | None = None, allow_late: bool = False) -> RunOutcome:
        self.sandbox.configure(simulated_date=day)
        return run_daily_job(day, instance=self.instance, simulated_now=taken_at or taken_after(day), allow_late=allow_late)

    def query(self, sql: str, params: list[object] | None = None) -> list[tuple]:
        con = duckdb.connect(str(self.warehouse), read_only=True)
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()

    def cli(self, *args: str, timeout: float = 120, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run the real `balances-etl` console entry point in a child process."""
        return subprocess.run(
            [sys.executable, "-m", "balances_etl.cli", *args],
            cwd=self.root,
            env={**os.environ, **self.env(), **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "balances_etl.cli", *args],
            cwd=self.root,
            env={**os.environ, **self.env()},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def prepare_root(root: Path) -> None:
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(DAGSTER_YAML_TEMPLATE, home / "dagster.yaml")


def item(code: str, available: str, total: str | None = None, account_type: str = "Current") -> dict[str, str]:
    return {"AccountType": account_type, "CryptoCurrency": code, "Available": available, "Total": total or available}


def exact(value: object) -> Decimal | None:
    """DuckDB DECIMAL values come back as Decimal through fetchall; keep them exact."""
    return value if value is None else Decimal(value)


# --- additions for the reliability tests (fault matrix, crashes, concurrency, secrets) -------------

def yesterday() -> dt.date:
    """The last UTC day that has ended: what `balances-etl materialize` can snapshot without --allow-late."""
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


@contextlib.contextmanager
def wired_pipeline(root: Path, keypair: tuple[bytes, bytes], *, item_count: int = 3) -> Iterator[Pipeline]:
    """A Pipeline on a RecordingSandbox (its own random API key), this process's env pointing at it.

    Usable from fixtures of any scope; the environment is restored and the instance disposed on exit.
    """
    prepare_root(root)
    private_pem, public_pem = keypair
    api_key = f"apikey_sandbox_test{secrets.token_hex(16)}"
    with (
        RecordingSandbox(api_key=api_key, public_key_pem=public_pem, item_count=item_count, simulated_date=DAY) as sandbox,
        pytest.MonkeyPatch.context() as patch,
    ):
        pipeline = Pipeline(root, sandbox, private_pem, instance=None)  # type: ignore[arg-type]
        for name, value in pipeline.env().items():
            patch.setenv(name, value)
        patch.delenv("NOAH_SIGNING_KEY_PATH", raising=False)
        pipeline.instance = dg.DagsterInstance.from_config(str(root / "dagster_home"))
        try:
            yield pipeline
        finally:
            pipeline.instance.dispose()


def served_rows(items: list[dict[str, object]]) -> set[tuple[object, ...]]:
    """(account_type, crypto_currency, available_raw, total_raw) of items as NOAH serves them."""
    return {(i["AccountType"], i["CryptoCurrency"], i["Available"], i["Total"]) for i in items}


def day_rows(pipeline: Pipeline, day: dt.date) -> list[tuple[object, ...]]:
    """The day's rows in the published warehouse, as served_rows tuples (a list: duplicates would show)."""
    if not pipeline.warehouse.exists():
        return []
    con = connect_read_only(pipeline.data_dir)
    try:
        return [tuple(r) for r in con.execute(
            "SELECT account_type, crypto_currency, available_raw, total_raw FROM balance_snapshots "
            "WHERE snapshot_date = ? ORDER BY ALL", [day]).fetchall()]
    finally:
        con.close()


def parquet_day_rows(pipeline: Pipeline, day: dt.date) -> list[tuple[object, ...]] | None:
    path = partition_path(pipeline.data_dir, day)
    if not path.exists():
        return None
    table = pq.read_table(path, columns=["account_type", "crypto_currency", "available_raw", "total_raw"]).to_pydict()
    return sorted(zip(*table.values(), strict=True))


def assert_nothing_half_written(pipeline: Pipeline, versions: dict[dt.date, list[set[tuple[object, ...]]]]) -> None:
    """After a crash or a failed write: every file whole, every day exactly one complete version.

    ``versions`` maps each day to the row sets it may hold (an empty set: not loaded yet).
    """
    for path in parquet_root(pipeline.data_dir).rglob("*.parquet"):
        assert path.name == "data.parquet", f"a stray file matches *.parquet: {path}"
        assert pq.read_table(path).schema.equals(ARROW_SCHEMA, check_metadata=False), path
    for landing in raw_root(pipeline.data_dir).glob("snapshot_date=*/taken_at=*"):
        read_raw_bodies(landing)  # whole: manifest present, every page matches its sha256
    for day, allowed in versions.items():
        rows = day_rows(pipeline, day)
        assert len(rows) == len(set(rows)), f"{day}: duplicate rows in the warehouse"
        assert set(rows) in allowed, f"{day}: the warehouse holds {len(rows)} rows, no complete version"
        in_parquet = parquet_day_rows(pipeline, day)
        assert set(in_parquet or []) in allowed, f"{day}: the Parquet partition is no complete version"


# A `balances-etl` process that pauses (and signals it) at a chosen point, so a test can SIGKILL it there.
PAUSE_SCRIPT = r"""
import functools, os, sys, time
stage, mark = os.environ["BALANCES_ETL_TEST_PAUSE_AT"], os.environ["BALANCES_ETL_TEST_PAUSE_MARK"]

def pause():
    with open(mark, "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(3600)

def after(module, name, call=1):
    original, calls = getattr(module, name), [0]
    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        calls[0] += 1
        if calls[0] == call:
            pause()
        return result
    setattr(module, name, wrapper)

def before(module, name, call=1):
    original, calls = getattr(module, name), [0]
    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            pause()
        return original(*args, **kwargs)
    setattr(module, name, wrapper)

import balances_etl.storage.parquet as parquet
import balances_etl.storage.raw as raw
import balances_etl.storage.reconciliation_rows as reconciliation_rows
import balances_etl.storage.warehouse as warehouse
{
    "after-landing": lambda: after(raw.RawLanding, "publish"),
    "parquet-temp-written": lambda: after(parquet.PartitionWriter, "finish"),
    "parquet-published": lambda: after(parquet.StagedPartition, "publish"),
    "duckdb-rows-inserted": lambda: before(warehouse, "replace_ledger_table"),
    "reconciliation-rows-stored": lambda: after(reconciliation_rows, "refresh"),
    "duckdb-committed": lambda: before(warehouse, "_verify", call=2),
    "warehouse-copy-written": lambda: after(warehouse, "clone_file"),
    "warehouse-published": lambda: after(warehouse, "_publish"),
}[stage]()
from balances_etl.cli import main
sys.exit(main(sys.argv[1:]))
"""
PAUSE_STAGES = (
    "after-landing",  # raw pages landed, nothing normalized
    "parquet-temp-written",  # the new partition written and verified under its private name, not yet renamed
    "parquet-published",  # the partition renamed into place, the warehouse not loaded
    "duckdb-rows-inserted",  # inside the load transaction: the day deleted and re-inserted, uncommitted
    "reconciliation-rows-stored",  # inside the load transaction: the rows the load changes stored, uncommitted
    "duckdb-committed",  # committed, not yet checkpointed (the WAL holds the day)
    "warehouse-copy-written",  # the analysts' copy written to its temporary name, not yet renamed
    "warehouse-published",  # published; Dagster has not recorded the materialization, reconciliation not run
)


@dataclass
class Child:
    """A `balances-etl` child process whose output goes to files (never a full pipe)."""

    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def output(self) -> dict[str, str]:
        return {
            f"stdout of pid {self.process.pid}": self.stdout.read_text(errors="replace"),
            f"stderr of pid {self.process.pid}": self.stderr.read_text(errors="replace"),
        }

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def spawn(pipeline: Pipeline, argv: list[str], *, extra_env: dict[str, str] | None = None, name: str = "child") -> Child:
    """Start ``argv`` (after the Python executable) in the installation's root with its environment."""
    stamp = f"{name}-{time.monotonic_ns()}"
    stdout, stderr = pipeline.root / f"{stamp}.out", pipeline.root / f"{stamp}.err"
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, *argv],
            cwd=pipeline.root,
            env={**os.environ, **pipeline.env(), **(extra_env or {})},
            stdout=out,
            stderr=err,
        )
    return Child(process, stdout, stderr)


def spawn_paused(pipeline: Pipeline, stage: str, *cli_args: str) -> tuple[Child, Path]:
    """`balances-etl <cli_args>` that pauses at ``stage``; returns the child and the mark file it creates there."""
    mark = pipeline.root / f"paused-{stage}-{time.monotonic_ns()}"
    child = spawn(
        pipeline,
        ["-c", PAUSE_SCRIPT, *cli_args],
        extra_env={"BALANCES_ETL_TEST_PAUSE_AT": stage, "BALANCES_ETL_TEST_PAUSE_MARK": str(mark)},
        name=f"paused-{stage}",
    )
    return child, mark


def wait_for(condition, child: Child, what: str, timeout: float = 180) -> None:  # noqa: ANN001
    """Poll ``condition`` until it holds; fail with the child's stderr if the child ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if child.process.poll() is not None:
            raise AssertionError(f"the child ended (exit {child.process.returncode}) before {what}:\n"
                                 + child.stderr.read_text(errors="replace")[-3000:])
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def no_secrets(pipeline: Pipeline, texts: dict[str, str | None] | None = None) -> list[SecretHit]:
    """Everything the installation wrote, every Dagster run it recorded, and ``texts``: secrets found."""
    runs = [run.run_id for run in pipeline.instance.get_runs()]
    return pipeline.scanner().scan(  # type: ignore[attr-defined]
        tokens=pipeline.sandbox.signatures, texts=texts, instance=pipeline.instance, run_ids=runs, changed_only=False
    )
