"""Raw NOAH transaction items -> the sync's rows (``domain.transactions.COLUMNS``), in one vectorised
pass, and the checks judging them (``TRANSACTION_CHECKS``, run by the shared ``transforms.checks``).

Amounts follow the balances' rules exactly (``normalize.canonicalize_amounts``); an absent Amount
or NetworkFee stays NULL, never zero. ``Created`` is kept as sent (``created_raw``) and as a UTC
instant to the microsecond (digits past the sixth are dropped: NOAH's clock gives no more).
"""

from __future__ import annotations

import datetime
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc

from balances_etl.domain.amounts import amount_problem
from balances_etl.domain.checks import TRANSACTION_SYNC_CHECKS
from balances_etl.domain.names import Check
from balances_etl.domain.transactions import (
    ARROW_SCHEMA,
    COLUMN_NAMES,
    COLUMNS,
    KEY_COLUMNS,
    LEGAL_TRANSITIONS,
    STATUSES,
)
from balances_etl.noah.endpoints import TRANSACTIONS
from balances_etl.noah.pages import ITEMS
from balances_etl.transforms.checks import (
    SAMPLE_SIZE,
    CheckSuite,
    Spec,
    Verdict,
    as_text,
    canonical_mismatch,
    keys_unique,
    rows_verdict,
    unknown_currency,
)
from balances_etl.transforms.normalize import ArrayLike, broadcast, canonicalize_amounts, invalid_amounts

# What the transactions endpoint's items are, nulls allowed where NOAH may omit a field.
ITEMS_SCHEMA = TRANSACTIONS.items.arrow_schema
_INSTANT = pa.timestamp("us", tz="UTC")


def created_instants(created_raw: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """RFC 3339 strings (already validated) as UTC instants, to the microsecond. Arrow's cast refuses
    digits past the sixth, so only then are they cut off first (a regex pass, three times the cast)."""
    try:
        return pc.cast(created_raw, _INSTANT)
    except pa.ArrowInvalid:
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


def page_created_before(document: object, horizon: datetime.datetime) -> bool:
    """Whether a page (NOAH's decoded JSON, judged before it is validated so that the next page can
    be requested meanwhile) lies entirely before ``horizon``: it holds items, all created earlier.
    The same instants as the rows get; False when a Created is unreadable, as validation then fails.
    The newest item comes first (NOAH lists newest first), so a page the sync reads on is told by
    its first item alone, read by Python (~50 times cheaper than an Arrow cast, and the same
    instant for any RFC 3339 string); the whole page is read only when that one lies before."""
    items = document.get(ITEMS) if isinstance(document, dict) else None
    if not isinstance(items, list) or not items:
        return False
    try:
        if datetime.datetime.fromisoformat(items[0]["Created"]) >= horizon:
            return False
    except (KeyError, TypeError, ValueError):
        pass  # judged below, exactly as the rows' instants are
    created = [item.get("Created") if isinstance(item, dict) else None for item in items]
    if not all(isinstance(value, str) for value in created):
        return False
    try:
        newest = pc.max(created_instants(pa.array(created, pa.string()))).as_py()
    except pa.ArrowInvalid:
        return False
    return newest < horizon


# --- checks -------------------------------------------------------------------------------------

# Shown with every offending row so people can find it in the raw landing.
ROW_CONTEXT = ("page_number", "item_index", "transaction_id", "crypto_currency")
AMOUNT_FIELDS = ("amount", "network_fee")
AMOUNT_COLUMNS = tuple(f"{field}{suffix}" for field in AMOUNT_FIELDS for suffix in ("_raw", "", "_value"))
KNOWN_COLUMNS = ("transaction_id", "created_at", "status", "inside_horizon")


def _amount_wrong(table: pa.Table, field: str) -> ArrayLike:
    """Present: valid, and canonical and DECIMAL exactly its value; absent: canonical and DECIMAL NULL too."""
    raw = table[f"{field}_raw"]
    present_wrong = pc.or_kleene(invalid_amounts(raw), canonical_mismatch(table, field, "_value"))
    absent_wrong = pc.or_(pc.is_valid(table[field]), pc.is_valid(table[f"{field}_value"]))
    return pc.if_else(pc.is_valid(raw), present_wrong, absent_wrong)


def _amounts_valid(table: pa.Table, _known: pa.Table | None) -> Verdict:
    wrong = pc.or_kleene(_amount_wrong(table, "amount"), _amount_wrong(table, "network_fee"))
    passed, failing, sample = rows_verdict(table, wrong, AMOUNT_COLUMNS, ROW_CONTEXT)
    for row in sample:
        row["problem"] = "; ".join(
            f"{field}: {amount_problem(row[f'{field}_raw']) or 'canonical or DECIMAL differs from the raw value'}"
            for field in AMOUNT_FIELDS
            if row[f"{field}_raw"] != "null" or row[field] != "null" or row[f"{field}_value"] != "null"
        )
    return passed, failing, sample


def _status_transitions_legal(table: pa.Table, known: pa.Table | None) -> Verdict:
    """Each known transaction's status compared with its status before the sync, by transaction_id."""
    if known is None:
        return True, 0, []
    compared = _with_status_before(table.select([*ROW_CONTEXT, "status"]), known).sort_by(
        [("page_number", "ascending"), ("item_index", "ascending")]
    )
    legal = [f"{status}->{status}" for status in STATUSES]
    legal += [f"{before}->{after}" for before, afters in LEGAL_TRANSITIONS.items() for after in afters]
    moves = pc.binary_join_element_wise(compared["status_before"], compared["status"], "->")
    illegal = pc.invert(pc.is_in(moves, value_set=pa.array(legal, pa.string())))
    return rows_verdict(compared, illegal, ("status_before", "status"), ROW_CONTEXT)


def _with_status_before(rows: pa.Table, known: pa.Table) -> pa.Table:
    """``rows`` inner-joined with ``known``'s status by transaction_id (as ``status_before``). Known
    transactions are unique (one row each), so a lookup gives the join without Acero's fixed cost
    (a few ms a call, a sync's rows being few); should they not be, the join itself."""
    before = known.select(["transaction_id", "status"]).rename_columns(["transaction_id", "status_before"])
    known_ids = before["transaction_id"]
    if pc.count_distinct(known_ids, mode="all").as_py() != len(known_ids):
        return rows.join(before, "transaction_id", join_type="inner")
    position = pc.index_in(rows["transaction_id"], value_set=known_ids.combine_chunks(), skip_nulls=True)
    matched = pc.is_valid(position)
    return rows.filter(matched).append_column("status_before", before["status_before"].take(position.filter(matched)))


def _amount_missing(table: pa.Table, _known: pa.Table | None) -> Verdict:
    return rows_verdict(table, pc.is_null(table["amount_raw"]), ("direction", "status"), ROW_CONTEXT)


def _known_transaction_missing(table: pa.Table, known: pa.Table | None) -> Verdict:
    """Known transactions created inside the horizon that the sync did not list, newest first."""
    if known is None:
        return True, 0, []
    inside = known.filter(known["inside_horizon"]).select(["transaction_id", "created_at", "status"])
    # a left anti join by transaction_id (NULL matching nothing), as a lookup: see _with_status_before
    listed = pc.is_in(inside["transaction_id"], value_set=table["transaction_id"].combine_chunks(), skip_nulls=True)
    gone = (
        inside.filter(pc.invert(listed))
        .sort_by([("created_at", "descending"), ("transaction_id", "ascending")])
        .rename_columns(["transaction_id", "created_at", "last_known_status"])
    )
    return gone.num_rows == 0, gone.num_rows, as_text(gone.slice(0, SAMPLE_SIZE))


TRANSACTION_CHECKS = CheckSuite(
    TRANSACTION_SYNC_CHECKS,
    COLUMNS,
    (
        Spec(Check.AMOUNTS_VALID, ROW_CONTEXT + AMOUNT_COLUMNS, _amounts_valid, row_wise=True),
        Spec(Check.TRANSACTION_IDS_UNIQUE, KEY_COLUMNS + ("page_number", "item_index"),
             partial(keys_unique, KEY_COLUMNS)),
        Spec(Check.STATUS_TRANSITIONS_LEGAL, ROW_CONTEXT + ("status",), _status_transitions_legal,
             previous_columns=KNOWN_COLUMNS),
        Spec(Check.UNKNOWN_CURRENCY, ROW_CONTEXT, partial(unknown_currency, (), ROW_CONTEXT), row_wise=True),
        Spec(Check.AMOUNT_MISSING, ROW_CONTEXT + ("amount_raw", "direction", "status"), _amount_missing,
             row_wise=True),
        Spec(Check.KNOWN_TRANSACTION_MISSING, ("transaction_id",), _known_transaction_missing,
             previous_columns=KNOWN_COLUMNS),
    ),
)
