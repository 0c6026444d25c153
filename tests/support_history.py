"""Build small balance histories through the real path: normalize -> Parquet partition -> warehouse load."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa

from balances_etl.settings import PROJECT_ROOT
from balances_etl.storage.parquet import publish_partition
from balances_etl.storage.warehouse import load_partition
from balances_etl.transforms.normalize import ITEMS_SCHEMA, normalize_snapshot

SQL_DIR = PROJECT_ROOT / "sql"
START = dt.date(2026, 3, 1)

# (account_type, crypto_currency, available_raw, total_raw), as NOAH sends them
Balance = tuple[str, str, str, str]


def day(n: int) -> dt.date:
    """The n-th day of the test calendar (day(0) is 2026-03-01)."""
    return START + dt.timedelta(days=n)


def build_history(
    tmp_path: Path,
    history: Mapping[dt.date, Sequence[Balance]],
    ledger_csvs: Mapping[str, str] | None = None,
    *,
    stale_after_days: int = 7,
) -> Path:
    """Publish one partition per date, write the ledger files, load the warehouse; returns data_dir."""
    data_dir = tmp_path / "data"
    ledger_dir = data_dir / "ledger"
    ledger_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (ledger_csvs or {}).items():
        (ledger_dir / name).write_text(text, encoding="utf-8")
    # one daily load per date, in order, as the schedule would run them
    for snapshot_date in sorted(history):
        publish_partition(data_dir, snapshot_date, _normalized(snapshot_date, history[snapshot_date]))
        load_partition(data_dir, snapshot_date, SQL_DIR, stale_after_days=stale_after_days)
    return data_dir


def _normalized(snapshot_date: dt.date, balances: Sequence[Balance]) -> pd.DataFrame:
    items = pa.table(
        {
            "account_type": [b[0] for b in balances],
            "crypto_currency": [b[1] for b in balances],
            "available_raw": [b[2] for b in balances],
            "total_raw": [b[3] for b in balances],
            "page_number": pa.array([1] * len(balances), pa.int32()),
            "item_index": pa.array(range(len(balances)), pa.int32()),
        },
        schema=ITEMS_SCHEMA,
    )
    taken_at = dt.datetime.combine(snapshot_date + dt.timedelta(days=1), dt.time(0, 10), tzinfo=dt.UTC)
    return normalize_snapshot(items, snapshot_date=snapshot_date, snapshot_at=taken_at, is_late=False, environment="sandbox")
