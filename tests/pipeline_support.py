"""Helpers for end-to-end tests: point the pipeline at a temp data dir, a temp Dagster home and an emulator."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb

from balances_etl.emulator import NoahSandbox
from balances_etl.runner import RunOutcome, run_daily_job
from balances_etl.settings import PROJECT_ROOT

DAY = dt.date(2026, 11, 20)


def taken_after(day: dt.date, minutes: int = 10) -> dt.datetime:
    """A snapshot time shortly after ``day`` ended."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC) + dt.timedelta(minutes=minutes)


@dataclass
class Pipeline:
    """One isolated pipeline installation wired to one emulator."""

    root: Path
    sandbox: NoahSandbox
    private_pem: bytes
    instance: dg.DagsterInstance

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def warehouse(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    def env(self) -> dict[str, str]:
        return {
            "BALANCES_ETL_DATA_DIR": str(self.data_dir),
            "DAGSTER_HOME": str(self.root / "dagster_home"),
            "NOAH_BASE_URL": self.sandbox.base_url,
            "NOAH_API_KEY": self.sandbox.api_key,
            "NOAH_SIGNING_KEY": self.private_pem.decode(),
            "NOAH_BACKOFF_BASE_SECONDS": "0.01",
            "NOAH_BACKOFF_MAX_SECONDS": "0.05",
        }

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
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")


def item(code: str, available: str, total: str | None = None, account_type: str = "Current") -> dict[str, str]:
    return {"AccountType": account_type, "CryptoCurrency": code, "Available": available, "Total": total or available}


def exact(value: object) -> Decimal | None:
    """DuckDB DECIMAL values come back as Decimal through fetchall; keep them exact."""
    return value if value is None else Decimal(value)
