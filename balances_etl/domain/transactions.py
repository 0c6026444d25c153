"""The transactions domain's schema: one row per transaction observed in one sync (the store of record).

A sync reads ``GET /v1/transactions`` newest first down to its horizon; every item it sees becomes a
row of that day's partition, with when it was observed. The warehouse's ``transactions`` (latest
observed state) and ``transaction_status_history`` (one row per status change) are derived from them.
"""

from __future__ import annotations

from enum import StrEnum

import pyarrow as pa

from balances_etl.domain.amounts import AMOUNT_PATTERN
from balances_etl.domain.balances import AMOUNT_DECIMAL, Column

STATUSES = ("Pending", "Failed", "Settled")
FINAL_STATUSES = ("Failed", "Settled")
# Status before -> the statuses a later sync may see (staying the same is always legal).
LEGAL_TRANSITIONS: dict[str, tuple[str, ...]] = {"Pending": ("Settled", "Failed")}
DIRECTIONS = ("In", "Out")
# Transactions carry no account type; they move the only documented one.
ACCOUNT_TYPE = "Current"

COLUMNS: tuple[Column, ...] = (
    Column("snapshot_date", pa.date32(), "DATE", "UTC day of the run whose sync observed this row (partition key)."),
    Column("observed_at", pa.timestamp("us", tz="UTC"), "TIMESTAMPTZ", "UTC time the sync read this transaction from NOAH."),
    Column("transaction_id", pa.string(), "VARCHAR", "NOAH's ID of the transaction."),
    Column("created_at", pa.timestamp("us", tz="UTC"), "TIMESTAMPTZ", "When NOAH created the transaction (its Created)."),
    Column("created_raw", pa.string(), "VARCHAR", "Created exactly as NOAH sent it."),
    Column("status", pa.string(), "VARCHAR", "Pending, Failed or Settled, as observed."),
    Column("direction", pa.string(), "VARCHAR", "In (raises the balance when settled) or Out."),
    Column("crypto_currency", pa.string(), "VARCHAR", "NOAH CryptoCurrency code, e.g. BTC or BTC_TEST."),
    Column("amount", pa.string(), "VARCHAR", f"Amount (net of the network fee), canonical exact decimal string ({AMOUNT_PATTERN}); NULL when NOAH sent none.", True),
    Column("amount_raw", pa.string(), "VARCHAR", "Amount exactly as NOAH sent it.", True),
    Column("amount_value", AMOUNT_DECIMAL, "DECIMAL(38,18)", "Amount as an exact DECIMAL(38,18); NULL when absent or too wide, never rounded.", True),
    Column("network_fee", pa.string(), "VARCHAR", "NetworkFee, canonical exact decimal string; NULL when NOAH sent none.", True),
    Column("network_fee_raw", pa.string(), "VARCHAR", "NetworkFee exactly as NOAH sent it.", True),
    Column("network_fee_value", AMOUNT_DECIMAL, "DECIMAL(38,18)", "NetworkFee as an exact DECIMAL(38,18); NULL when absent or too wide.", True),
    Column("network", pa.string(), "VARCHAR", "The network the transaction moved on."),
    Column("public_id", pa.string(), "VARCHAR", "NOAH's PublicID, when given.", True),
    Column("external_id", pa.string(), "VARCHAR", "The business's ExternalID, when given.", True),
    Column("customer_id", pa.string(), "VARCHAR", "The CustomerID, when given.", True),
    Column("page_number", pa.int32(), "INTEGER", "1-based NOAH page the row came from (see the raw landing)."),
    Column("item_index", pa.int32(), "INTEGER", "0-based index of the row within its page."),
)

COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
ARROW_SCHEMA = pa.schema([pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in COLUMNS])
KEY_COLUMNS = ("snapshot_date", "transaction_id")


class SyncMetadata(StrEnum):
    """Keys of a sync partition's Parquet footer: what the sync was, even when it saw no transaction."""

    OBSERVED_AT = "balances_etl.transactions.observed_at"  # ISO 8601 UTC instant the sync read NOAH
    HORIZON = "balances_etl.transactions.horizon"  # ISO 8601 UTC instant, or "" when the sync read everything


# What the warehouse knew of a transaction before a sync: its status after the earlier syncs, and
# whether it was created inside the sync's horizon (so NOAH must still list it).
KNOWN_SCHEMA = pa.schema(
    [
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("inside_horizon", pa.bool_(), nullable=False),
    ]
)
