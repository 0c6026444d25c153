"""The balances domain's normalized snapshot: columns, types and meaning, shared by pandas, Parquet
and DuckDB (NOAH's items as received are ``noah.endpoints.BALANCES.items``)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from balances_etl.domain.amounts import AMOUNT_PATTERN, DECIMAL_PRECISION, DECIMAL_SCALE

AMOUNT_DECIMAL = pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)

@dataclass(frozen=True)
class Column:
    name: str
    arrow_type: pa.DataType
    duckdb_type: str
    description: str
    nullable: bool = False


COLUMNS: tuple[Column, ...] = (
    Column("snapshot_date", pa.date32(), "DATE", "UTC day whose end-of-day balances this row holds (partition key)."),
    Column("snapshot_at", pa.timestamp("us", tz="UTC"), "TIMESTAMPTZ", "UTC time the snapshot was taken from NOAH."),
    Column("is_late", pa.bool_(), "BOOLEAN", "Snapshot taken later than the allowed lateness after the day ended."),
    Column("account_type", pa.string(), "VARCHAR", "NOAH AccountType, e.g. Current."),
    Column("crypto_currency", pa.string(), "VARCHAR", "NOAH CryptoCurrency code, e.g. BTC or BTC_TEST."),
    Column("asset", pa.string(), "VARCHAR", "Underlying asset of the code: BTC, ETH, USDC, ..."),
    Column("environment", pa.string(), "VARCHAR", "NOAH environment the snapshot came from: sandbox or production."),
    Column("available", pa.string(), "VARCHAR", f"Available amount, canonical exact decimal string (validated against {AMOUNT_PATTERN})."),
    Column("total", pa.string(), "VARCHAR", f"Total amount, canonical exact decimal string (validated against {AMOUNT_PATTERN})."),
    Column("available_raw", pa.string(), "VARCHAR", "Available exactly as NOAH sent it."),
    Column("total_raw", pa.string(), "VARCHAR", "Total exactly as NOAH sent it."),
    Column("available_amount", AMOUNT_DECIMAL, "DECIMAL(38,18)", "Available as an exact DECIMAL(38,18); NULL when it does not fit, never rounded.", True),
    Column("total_amount", AMOUNT_DECIMAL, "DECIMAL(38,18)", "Total as an exact DECIMAL(38,18); NULL when it does not fit, never rounded.", True),
    Column("pending_outflow", AMOUNT_DECIMAL, "DECIMAL(38,18)", "Total minus available, exact; NULL when either amount does not fit DECIMAL(38,18).", True),
    Column("page_number", pa.int32(), "INTEGER", "1-based NOAH page the row came from (see the raw landing)."),
    Column("item_index", pa.int32(), "INTEGER", "0-based index of the row within its page."),
)

COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
ARROW_SCHEMA = pa.schema([pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in COLUMNS])
KEY_COLUMNS = ("snapshot_date", "account_type", "crypto_currency")
