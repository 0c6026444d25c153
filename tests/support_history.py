"""Build small balance histories through the real path: normalize -> Parquet partition -> warehouse load."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
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


# --- transactions: an in-memory warehouse with balances, syncs and their derived tables ----------

DERIVED_TABLES_DIR = PROJECT_ROOT / "sql" / "tables"


@dataclass(frozen=True)
class Observation:
    """One transaction as one sync saw it (a row of transaction_observations), amounts as NOAH sends them."""

    snapshot_date: dt.date  # the day of the run whose sync saw it
    observed_at: dt.datetime
    transaction_id: str
    created_at: dt.datetime
    status: str  # Pending | Failed | Settled
    direction: str  # In | Out
    crypto_currency: str
    amount: str | None
    network_fee: str | None = None


def snapshot_instant(snapshot_date: dt.date) -> dt.datetime:
    """When the daily run takes the snapshot of ``snapshot_date`` (what ``_normalized`` records)."""
    return dt.datetime.combine(snapshot_date + dt.timedelta(days=1), dt.time(0, 10), tzinfo=dt.UTC)


def transaction_warehouse(
    balances: Mapping[dt.date, Sequence[Balance]],
    observations: Sequence[Observation] = (),
    syncs: Mapping[dt.date, dt.datetime] | None = None,
    *,
    ledger_dir: Path | None = None,
    stale_after_days: int = 7,
) -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse as the loader leaves it: balance_snapshots (one normalized snapshot per
    date, taken at D+1 00:10 UTC), the ledger and settings, the transactions tables (the loader's own
    DDL) filled from ``observations`` the way the pipeline derives them, and every view applied.

    ``syncs`` maps each synced snapshot date to the instant its sync read NOAH; by default every date
    some observation names. A sync that saw nothing still has its ``transaction_syncs`` row.
    """
    from balances_etl.domain import transactions
    from balances_etl.domain.balances import ARROW_SCHEMA
    from balances_etl.domain.names import Table
    from balances_etl.storage import reconciliation_rows
    from balances_etl.storage.ledger import replace_ledger_table, write_reconciliation_settings
    from balances_etl.storage.warehouse import _create_table

    frames = [_normalized(d, rows) for d, rows in sorted(balances.items())]
    snapshots = pa.concat_tables(
        [pa.Table.from_pandas(f, schema=ARROW_SCHEMA, preserve_index=False) for f in frames] or [ARROW_SCHEMA.empty_table()]
    )
    con = duckdb.connect()
    con.execute("CREATE TABLE balance_snapshots AS SELECT * FROM snapshots")
    replace_ledger_table(con, ledger_dir if ledger_dir is not None else Path("/nonexistent-ledger"))
    write_reconciliation_settings(con, stale_after_days)
    con.execute(_create_table(Table.TRANSACTION_OBSERVATIONS, transactions.COLUMNS))
    for ddl in sorted(DERIVED_TABLES_DIR.glob("*.sql")):
        con.execute(ddl.read_text(encoding="utf-8"))
    if syncs is None:
        syncs = {}
        for o in observations:
            syncs[o.snapshot_date] = max(syncs.get(o.snapshot_date, o.observed_at), o.observed_at)
    for d, observed_at in sorted(syncs.items()):
        seen = sum(o.snapshot_date == d for o in observations)
        con.execute("INSERT INTO transaction_syncs VALUES (?, ?, NULL, ?)", [d, observed_at, seen])
    rows = [
        [
            o.snapshot_date, o.observed_at, o.transaction_id, o.created_at, o.created_at.isoformat(), o.status, o.direction,
            o.crypto_currency, *_amount_columns(o.amount), *_amount_columns(o.network_fee), index,
        ]
        for index, o in enumerate(observations)
    ]
    if rows:
        con.executemany(
            "INSERT INTO transaction_observations "
            "(snapshot_date, observed_at, transaction_id, created_at, created_raw, status, direction, crypto_currency, "
            "amount, amount_raw, amount_value, network_fee, network_fee_raw, network_fee_value, network, page_number, item_index) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, CAST(? AS DECIMAL(38,18)), ?, ?, CAST(? AS DECIMAL(38,18)), 'Test', 1, ?)",
            rows,
        )
    con.execute(_DERIVE_TRANSACTION_TABLES)
    views = sorted(SQL_DIR.glob("*.sql"))
    for view in views:
        con.execute(view.read_text(encoding="utf-8"))
    reconciliation_rows.recompute_all(con, views)
    return con


def _amount_columns(raw: str | None) -> tuple[str | None, str | None, str | None]:
    """(canonical, raw, text for the DECIMAL(38,18) cast or None when too wide), as the pipeline stores them."""
    from balances_etl.domain.amounts import canonical_amount, fits_decimal_38_18

    if raw is None:
        return None, None, None
    canonical = canonical_amount(raw)
    return canonical, raw, canonical if fits_decimal_38_18(canonical) else None


# What the pipeline keeps from the syncs' rows: every transaction's latest state, and one history row
# for its first observation and each later change of status.
_DERIVE_TRANSACTION_TABLES = """
INSERT INTO transaction_status_history
SELECT transaction_id, status, observed_at, snapshot_date
FROM (
    SELECT *, lag(status) OVER (PARTITION BY transaction_id ORDER BY observed_at) AS previous_status
    FROM transaction_observations
)
WHERE previous_status IS NULL OR previous_status <> status;

INSERT INTO transactions
SELECT
    o.transaction_id, o.created_at, o.status, o.direction, o.crypto_currency, o.amount, o.amount_raw, o.amount_value,
    o.network_fee, o.network_fee_raw, o.network_fee_value, o.network, o.public_id, o.external_id, o.customer_id,
    min(o.observed_at) OVER (PARTITION BY o.transaction_id),
    (SELECT max(h.observed_at) FROM transaction_status_history AS h WHERE h.transaction_id = o.transaction_id)
FROM transaction_observations AS o
QUALIFY row_number() OVER (PARTITION BY o.transaction_id ORDER BY o.observed_at DESC) = 1;
"""
