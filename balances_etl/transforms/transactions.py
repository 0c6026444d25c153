"""Raw NOAH transaction items -> the sync's rows (``domain.transactions.COLUMNS``), in one vectorised pass.

Amounts follow the balances' rules exactly (``normalize.canonicalize_amounts``); an absent Amount
or NetworkFee stays NULL, never zero. ``Created`` is kept as sent (``created_raw``) and as a UTC
instant to the microsecond (digits past the sixth are dropped: NOAH's clock gives no more).
"""

from __future__ import annotations

import datetime

import pyarrow as pa
import pyarrow.compute as pc

from balances_etl.domain.transactions import ARROW_SCHEMA, COLUMN_NAMES
from balances_etl.noah.endpoints import TRANSACTIONS
from balances_etl.transforms.normalize import broadcast, canonicalize_amounts

# What the transactions endpoint's items are, nulls allowed where NOAH may omit a field.
ITEMS_SCHEMA = TRANSACTIONS.items.arrow_schema
_INSTANT = pa.timestamp("us", tz="UTC")


def created_instants(created_raw: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """RFC 3339 strings (already validated) as UTC instants, to the microsecond."""
    micro = pc.replace_substring_regex(created_raw, r"([.][0-9]{6})[0-9]+", r"\1")
    return pc.cast(micro, _INSTANT)


def normalize_transactions(items: pa.Table, *, snapshot_date: datetime.date, observed_at: datetime.datetime) -> pa.Table:
    """A sync's items (``TRANSACTIONS.items.arrow_schema``) -> its rows; AmountValidationError names
    the first invalid amount (page, item)."""
    if observed_at.utcoffset() is None:
        raise ValueError(f"observed_at must be timezone-aware, got {observed_at!r}")
    items = items.select(ITEMS_SCHEMA.names).cast(pa.schema([f.with_nullable(True) for f in ITEMS_SCHEMA]))
    positions = {"page_numbers": items["page_number"], "item_indexes": items["item_index"], "optional": True}
    amount, amount_value = canonicalize_amounts(items["amount_raw"], "Amount", **positions)
    fee, fee_value = canonicalize_amounts(items["network_fee_raw"], "NetworkFee", **positions)
    rows = items.num_rows

    columns = {
        "snapshot_date": broadcast(snapshot_date, ARROW_SCHEMA.field("snapshot_date"), rows),
        "observed_at": broadcast(observed_at.astimezone(datetime.UTC), ARROW_SCHEMA.field("observed_at"), rows),
        "transaction_id": items["transaction_id"],
        "created_at": created_instants(items["created_raw"]),
        "created_raw": items["created_raw"],
        "status": items["status"],
        "direction": items["direction"],
        "crypto_currency": items["crypto_currency"],
        "amount": amount,
        "amount_raw": items["amount_raw"],
        "amount_value": amount_value,
        "network_fee": fee,
        "network_fee_raw": items["network_fee_raw"],
        "network_fee_value": fee_value,
        "network": items["network"],
        "public_id": items["public_id"],
        "external_id": items["external_id"],
        "customer_id": items["customer_id"],
        "page_number": items["page_number"],
        "item_index": items["item_index"],
    }
    return pa.Table.from_arrays([columns[name] for name in COLUMN_NAMES], schema=ARROW_SCHEMA)
