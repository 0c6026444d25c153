"""Pipeline settings from environment variables (a `.env` file in the working directory is honoured).

NOAH connection settings live in ``balances_etl.noah.config``; these are the pipeline's own. Both are
tables of :class:`~balances_etl.config_table.Variable` rows: each default is written once, in its row,
and ``PipelineSettings.documented_variables()`` lists them for the README.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dotenv import load_dotenv

from balances_etl.config_table import ConfigVariable, InvalidValue, Number, Variable

PACKAGE_DIR = Path(__file__).resolve().parent
# The source checkout (README, tests, notebooks); once installed from a wheel, site-packages.
PROJECT_ROOT = PACKAGE_DIR.parent


def _shipped(in_package: str, in_checkout: str) -> Path:
    """A file read at run time: inside the installed package, else beside the package in a checkout.

    The wheel carries it inside the package (pyproject.toml's force-include); a source checkout and
    an editable install run the package from the tree, where it sits at the repository's top level.
    """
    packaged = PACKAGE_DIR / in_package
    return packaged if packaged.exists() else PROJECT_ROOT / in_checkout


# What the pipeline reads at run time besides its code.
PACKAGED_SQL_DIR = _shipped("sql", "sql")


@functools.cache
def packaged_sql(folder: str, name: str) -> str:
    """The text of ``sql/<folder>/<name>.sql`` as shipped with the package, read once per process."""
    return (PACKAGED_SQL_DIR / folder / f"{name}.sql").read_text(encoding="utf-8")


DAGSTER_YAML_TEMPLATE = _shipped("dagster.yaml", "dagster_home/dagster.yaml")


class SettingsError(ValueError):
    """A pipeline setting is malformed; the message names the variable, never a secret."""

    def __init__(self, message: str, *, variable: str = "") -> None:
        super().__init__(message)
        self.variable = variable


def load_env_file(path: Path | None = None) -> None:
    """Load `.env` from the working directory (as `dg dev` does); real env vars win."""
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


def _path(text: str) -> Path:
    return Path(text).resolve()  # relative to the working directory when read (Dagster wants absolute)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidValue("must be a date as YYYY-MM-DD") from None


def _time_of_day(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"([01][0-9]|2[0-3]):([0-5][0-9])", text)
    if match is None:
        raise InvalidValue("must be a UTC time as HH:MM")
    return int(match.group(1)), int(match.group(2))


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered not in ("true", "false"):
        raise InvalidValue("must be true or false")
    return lowered == "true"


def _http_url(text: str) -> str:
    """A webhook URL holds its token: the refusal never shows it."""
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
        raise InvalidValue("must be an http(s) URL (value not shown)")
    return text


def _text(text: str) -> str:
    return text


def _store_url(text: str) -> str:
    """s3://bucket[/prefix] or a local path; credentials belong in the AWS variables, never in the URL."""
    if "://" not in text:
        return text
    if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^@\s]*)?", text):
        raise InvalidValue("must be a local path or s3://bucket/prefix (value not shown)")
    return text


def _storage_version(text: str) -> str:
    if not re.fullmatch(r"v[0-9]+[.][0-9]+[.][0-9]+|latest", text):
        raise InvalidValue("must be a DuckDB version such as v1.5.0, or latest")
    return text


def _addresses(text: str) -> tuple[str, ...]:
    addresses = tuple(part.strip() for part in text.split(",") if part.strip())
    if not all(re.fullmatch(r"[^@\s,]+@[^@\s,]+", address) for address in addresses):
        raise InvalidValue("must be e-mail addresses separated by commas")
    return addresses


# The configuration table: each default and meaning is written here only.
DATA_DIR = Variable("BALANCES_ETL_DATA_DIR", "./data",
                    "Where raw pages, Parquet partitions, the ledger and the warehouse live.", _path)
STORE_URL = Variable("BALANCES_ETL_STORE_URL", None,
                     "Where raw landings and Parquet partitions are kept: unset, under BALANCES_ETL_DATA_DIR; a local "
                     "path; or s3://bucket/prefix on any S3-compatible service, with AWS_ACCESS_KEY_ID, "
                     "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION and AWS_ENDPOINT_URL (see Object storage).",
                     _store_url)
SQL_DIR = Variable("BALANCES_ETL_SQL_DIR", str(PACKAGED_SQL_DIR),
                   "Folder of view files applied after every load.", _path, shown_default="(the sql/ shipped with the package)")
START_DATE = Variable("BALANCES_ETL_START_DATE", "2025-01-01", "First daily partition (UTC).", _date)
LATENESS_HOURS = Variable("BALANCES_ETL_LATENESS_HOURS", "36",
                          "How long after a day ends its snapshot may still be taken without --allow-late.",
                          Number(float, unit="hours"))
SCHEDULE_TIME = Variable("BALANCES_ETL_SCHEDULE_TIME", "00:10",
                         "UTC time of day the daily schedule runs, for the day that just ended.", _time_of_day)
STALE_AFTER_DAYS = Variable("BALANCES_ETL_STALE_AFTER_DAYS", "7",
                            "A total unchanged for more days than this is reported as stale.", Number(int, minimum=1))
LOCK_TIMEOUT_SECONDS = Variable("BALANCES_ETL_LOCK_TIMEOUT_SECONDS", "600",
                                "How long a load waits for another load to release the warehouse.",
                                Number(float, unit="seconds"))
WAREHOUSE_STORAGE_VERSION = Variable("BALANCES_ETL_WAREHOUSE_STORAGE_VERSION", "v1.5.0",
                                     "DuckDB storage format a new warehouse file is created in (v1.5.0: DuckDB 1.5 and "
                                     "later open it; latest: this DuckDB's own, which DuckDB 1.x cannot read). An existing "
                                     "writer keeps its format until `balances-etl rebuild`.", _storage_version)
DAGSTER_HOME = Variable("DAGSTER_HOME", "./dagster_home",
                        "Dagster instance: run history, schedules, concurrency pools.", _path)
FRESHNESS_DEADLINE = Variable("BALANCES_ETL_FRESHNESS_DEADLINE", "02:00",
                              "UTC time of day by which the day that just ended must be captured "
                              "(freshness check, alert, `status`).", _time_of_day)
CATCHUP_EVERY_MINUTES = Variable("BALANCES_ETL_CATCHUP_EVERY_MINUTES", "10",
                                 "How often the catch-up sensor looks for missing days, launches runs and sends alerts.",
                                 Number(int, minimum=1))
TRANSACTIONS_OVERLAP_DAYS = Variable("BALANCES_ETL_TRANSACTIONS_OVERLAP_DAYS", "3",
                                     "Days before the newest transaction of the previous sync that the next sync reads again "
                                     "(it also reads back to the oldest one still Pending).", Number(int, minimum=0))
# Alerts (balances_etl.operations.alerts); no destination set: alerts only go to the sensor's log.
ALERT_WEBHOOK_URL = Variable("BALANCES_ETL_ALERT_WEBHOOK_URL", None,
                             'Incoming webhook (Slack, Microsoft Teams) alerts are POSTed to as JSON {"text": ...}. '
                             "It holds a token: never logged.", _http_url)
ALERT_SMTP_HOST = Variable("BALANCES_ETL_ALERT_SMTP_HOST", None,
                           "SMTP server alerts are e-mailed through; unset: no e-mail.", _text)
ALERT_SMTP_PORT = Variable("BALANCES_ETL_ALERT_SMTP_PORT", "587", "SMTP server port.", Number(int, minimum=1, maximum=65535))
ALERT_SMTP_STARTTLS = Variable("BALANCES_ETL_ALERT_SMTP_STARTTLS", "true",
                               "Upgrade the SMTP connection with STARTTLS, verifying the server's certificate (true/false).",
                               _boolean)
ALERT_SMTP_USER = Variable("BALANCES_ETL_ALERT_SMTP_USER", None, "SMTP login; unset: no login.", _text)
ALERT_SMTP_PASSWORD = Variable("BALANCES_ETL_ALERT_SMTP_PASSWORD", None, "SMTP password; never logged.", _text)
ALERT_SMTP_FROM = Variable("BALANCES_ETL_ALERT_SMTP_FROM", None,
                           "Sender address of alert e-mails (required with an SMTP host).", _text)
ALERT_SMTP_TO = Variable("BALANCES_ETL_ALERT_SMTP_TO", None,
                         "Recipients of alert e-mails, separated by commas (required with an SMTP host).", _addresses)
_VARIABLES = (DATA_DIR, STORE_URL, SQL_DIR, START_DATE, LATENESS_HOURS, SCHEDULE_TIME, STALE_AFTER_DAYS, LOCK_TIMEOUT_SECONDS,
              WAREHOUSE_STORAGE_VERSION, DAGSTER_HOME, FRESHNESS_DEADLINE, CATCHUP_EVERY_MINUTES, TRANSACTIONS_OVERLAP_DAYS, ALERT_WEBHOOK_URL, ALERT_SMTP_HOST,
              ALERT_SMTP_PORT, ALERT_SMTP_STARTTLS, ALERT_SMTP_USER, ALERT_SMTP_PASSWORD, ALERT_SMTP_FROM, ALERT_SMTP_TO)
# The storage layer's keyword default (balances_etl.storage.warehouse imports it).
DEFAULT_STALE_AFTER_DAYS: int = STALE_AFTER_DAYS.default_value()  # type: ignore[assignment]
DEFAULT_LOCK_TIMEOUT_SECONDS: float = LOCK_TIMEOUT_SECONDS.default_value()  # type: ignore[assignment]
DEFAULT_TRANSACTIONS_OVERLAP = dt.timedelta(days=TRANSACTIONS_OVERLAP_DAYS.default_value())  # type: ignore[arg-type]


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
    freshness_deadline: dt.time
    catchup_every_minutes: int
    transactions_overlap: dt.timedelta = DEFAULT_TRANSACTIONS_OVERLAP

    @staticmethod
    def documented_variables() -> tuple[ConfigVariable, ...]:
        """(variable, default, meaning) for every setting, for the README and `--help`."""
        return tuple(variable.row() for variable in _VARIABLES)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PipelineSettings:
        env = os.environ if environ is None else environ
        hour, minute = SCHEDULE_TIME.read(env, SettingsError)
        fresh_hour, fresh_minute = FRESHNESS_DEADLINE.read(env, SettingsError)
        return cls(
            data_dir=DATA_DIR.read(env, SettingsError),
            sql_dir=SQL_DIR.read(env, SettingsError),
            start_date=START_DATE.read(env, SettingsError),
            lateness=dt.timedelta(hours=LATENESS_HOURS.read(env, SettingsError)),
            schedule_hour=hour,
            schedule_minute=minute,
            stale_after_days=STALE_AFTER_DAYS.read(env, SettingsError),  # type: ignore[arg-type]
            lock_timeout_seconds=LOCK_TIMEOUT_SECONDS.read(env, SettingsError),
            freshness_deadline=dt.time(fresh_hour, fresh_minute),
            catchup_every_minutes=CATCHUP_EVERY_MINUTES.read(env, SettingsError),  # type: ignore[arg-type]
            transactions_overlap=dt.timedelta(days=TRANSACTIONS_OVERLAP_DAYS.read(env, SettingsError)),
        )


def dagster_home(environ: Mapping[str, str] | None = None) -> Path:
    """The Dagster instance folder: $DAGSTER_HOME, else ./dagster_home (Dagster wants it absolute)."""
    return DAGSTER_HOME.read(os.environ if environ is None else environ, SettingsError)
