"""The code location: every definition under ``defs/``, for `dg dev`, `dg check defs` and the CLI."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from balances_etl.settings import load_env_file

load_env_file()

import dagster as dg  # noqa: E402  (the .env file must be read before the definitions are built)


@cache
def load_definitions() -> dg.Definitions:
    """The definitions, built once per process (the CLI, the demo and the tests run many days)."""
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)


@dg.definitions
def defs() -> dg.Definitions:
    return load_definitions()
