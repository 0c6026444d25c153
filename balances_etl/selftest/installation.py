"""A throwaway pipeline installation for the selftest: temp data dir, Dagster home, its own emulator and key."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets as secrets_module
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import dagster as dg

from balances_etl.emulator import NoahSandbox, generate_signing_keypair
from balances_etl.orchestration.runner import RunOutcome, run_daily_job
from balances_etl.selftest.matrix import ITEM_COUNT, MATRIX_ENV, taken_after
from balances_etl.selftest.recording import RecordingSandbox
from balances_etl.selftest.secrets import SecretScanner
from balances_etl.settings import DAGSTER_YAML_TEMPLATE, temporary_environment


class Installation(Protocol):
    """A pipeline wired to a temp data dir, a Dagster home and a RecordingSandbox.

    ``tests.pipeline_support.Pipeline`` and ``SelftestInstallation`` both fit.
    """

    sandbox: RecordingSandbox
    instance: dg.DagsterInstance

    @property
    def data_dir(self) -> Path: ...

    def run(self, day: dt.date) -> RunOutcome: ...


_DAGSTER_YAML = """telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1
"""


@dataclass
class SelftestInstallation:
    """A throwaway pipeline installation for the selftest: temp dirs, its own emulator and key."""

    root: Path
    sandbox: RecordingSandbox
    private_pem: bytes
    instance: dg.DagsterInstance

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    def run(self, day: dt.date) -> RunOutcome:
        self.sandbox.configure(simulated_date=day)
        return run_daily_job(day, instance=self.instance, simulated_now=taken_after(day))

    def scanner(self) -> SecretScanner:
        """Scans the data dir and the Dagster home for the API key, the private key and JWTs."""
        return SecretScanner([self.data_dir, self.dagster_home], self.sandbox.api_key, self.private_pem)

    def env(self) -> dict[str, str]:
        """The variables that point a pipeline process at this installation and its emulator."""
        return installation_env(self.root, self.sandbox, self.private_pem)


def installation_env(root: Path, sandbox: NoahSandbox, private_pem: bytes) -> dict[str, str]:
    """Data dir and Dagster home under ``root``, NOAH at ``sandbox``, requests signed with ``private_pem``."""
    return {
        "BALANCES_ETL_DATA_DIR": str(root / "data"),
        "DAGSTER_HOME": str(root / "dagster_home"),
        "NOAH_BASE_URL": sandbox.base_url,
        "NOAH_API_KEY": sandbox.api_key,
        "NOAH_SIGNING_KEY": private_pem.decode(),
    }


@contextlib.contextmanager
def selftest_installation(root: Path) -> Iterator[SelftestInstallation]:
    """Wire a fresh installation under ``root``; the process environment is restored afterwards."""
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    template = DAGSTER_YAML_TEMPLATE
    if template.is_file():
        shutil.copy(template, home / "dagster.yaml")
    else:
        (home / "dagster.yaml").write_text(_DAGSTER_YAML)
    private_pem, public_pem = generate_signing_keypair("P-384")
    api_key = f"apikey_sandbox_selftest{secrets_module.token_hex(12)}"
    # Only the selftest's own settings: a user's NOAH_* or data dir must neither leak in nor be touched.
    removed = {
        name: os.environ.pop(name)
        for name in list(os.environ)
        if name.startswith(("NOAH_", "BALANCES_ETL_")) and name != "BALANCES_ETL_START_DATE"
    }
    try:
        with RecordingSandbox(api_key=api_key, public_key_pem=public_pem, item_count=ITEM_COUNT) as sandbox:
            with temporary_environment({**installation_env(root, sandbox, private_pem), **MATRIX_ENV}):
                instance = dg.DagsterInstance.from_config(str(home))
                try:
                    yield SelftestInstallation(root, sandbox, private_pem, instance)
                finally:
                    instance.dispose()
    finally:
        os.environ.update(removed)
