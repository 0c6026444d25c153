"""Pipeline settings from environment variables (a `.env` file in the working directory is honoured).

NOAH connection settings live in ``balances_etl.noah.config``; these are the pipeline's own.
Every variable has a documented default, listed by ``PipelineSettings.documented_variables()``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dotenv import load_dotenv

# The repository root: `sql/` and `dagster_home/` live beside the package.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# What the pipeline reads at run time besides its code.
PACKAGED_SQL_DIR = PROJECT_ROOT / "sql"
DAGSTER_YAML_TEMPLATE = PROJECT_ROOT / "dagster_home" / "dagster.yaml"


class SettingsError(ValueError):
    """A pipeline setting is malformed; the message names the variable, never a secret."""


def load_env_file(path: Path | None = None) -> None:
    """Load `.env` from the working directory (as `dagster dev` does); real env vars win."""
    load_dotenv(path or Path.cwd() / ".env", override=False)


@contextlib.contextmanager
def temporary_environment(values: Mapping[str, str], unset: Sequence[str] = ()) -> Iterator[None]:
    """Set (and unset) environment variables for the duration, then restore them exactly."""
    saved = {name: os.environ.get(name) for name in [*values, *unset]}
    for name in unset:
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("BALANCES_ETL_DATA_DIR", "./data", "Where raw pages, Parquet partitions, the ledger and the warehouse live."),
    ("BALANCES_ETL_SQL_DIR", "<repo>/sql", "Folder of view files applied after every load."),
    ("BALANCES_ETL_START_DATE", "2025-01-01", "First daily partition (UTC)."),
    ("BALANCES_ETL_LATENESS_HOURS", "36", "How long after a day ends its snapshot may still be taken without --allow-late."),
    ("BALANCES_ETL_SCHEDULE_TIME", "00:10", "UTC time of day the daily schedule runs, for the day that just ended."),
    ("BALANCES_ETL_STALE_AFTER_DAYS", "7", "A total unchanged for more days than this is reported as stale."),
    ("BALANCES_ETL_LOCK_TIMEOUT_SECONDS", "600", "How long a load waits for another load to release the warehouse."),
    ("DAGSTER_HOME", "./dagster_home", "Dagster instance: run history, schedules, concurrency pools."),
)


@dataclass(frozen=True)
class PipelineSettings:
    data_dir: Path
    sql_dir: Path
    start_date: dt.date
    lateness: dt.timedelta
    schedule_hour: int
    schedule_minute: int
    stale_after_days: int
    lock_timeout_seconds: float

    @staticmethod
    def documented_variables() -> tuple[tuple[str, str, str], ...]:
        """(variable, default, meaning) for every setting, for the README and `--help`."""
        return _VARIABLES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PipelineSettings:
        env = os.environ if environ is None else environ
        hour, minute = _time_of_day(env, "BALANCES_ETL_SCHEDULE_TIME", "00:10")
        return cls(
            data_dir=Path(env.get("BALANCES_ETL_DATA_DIR") or "data").resolve(),
            sql_dir=Path(env.get("BALANCES_ETL_SQL_DIR") or PACKAGED_SQL_DIR).resolve(),
            start_date=_date(env, "BALANCES_ETL_START_DATE", "2025-01-01"),
            lateness=dt.timedelta(hours=_number(env, "BALANCES_ETL_LATENESS_HOURS", "36", minimum=0)),
            schedule_hour=hour,
            schedule_minute=minute,
            stale_after_days=int(_number(env, "BALANCES_ETL_STALE_AFTER_DAYS", "7", minimum=1, integer=True)),
            lock_timeout_seconds=_number(env, "BALANCES_ETL_LOCK_TIMEOUT_SECONDS", "600", minimum=0),
        )


def dagster_home(environ: Mapping[str, str] | None = None) -> Path:
    """The Dagster instance folder: $DAGSTER_HOME, else ./dagster_home (Dagster wants it absolute)."""
    env = os.environ if environ is None else environ
    return Path(env.get("DAGSTER_HOME") or "dagster_home").resolve()


def _number(env: Mapping[str, str], name: str, default: str, *, minimum: float, integer: bool = False) -> float:
    raw = env.get(name) or default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a {'whole ' if integer else ''}number") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}")
    return value


def _date(env: Mapping[str, str], name: str, default: str) -> dt.date:
    try:
        return dt.date.fromisoformat(env.get(name) or default)
    except ValueError:
        raise SettingsError(f"{name} must be a date as YYYY-MM-DD") from None


def _time_of_day(env: Mapping[str, str], name: str, default: str) -> tuple[int, int]:
    match = re.fullmatch(r"([01][0-9]|2[0-3]):([0-5][0-9])", env.get(name) or default)
    if match is None:
        raise SettingsError(f"{name} must be a UTC time as HH:MM")
    return int(match.group(1)), int(match.group(2))
