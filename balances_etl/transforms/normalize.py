"""Raw NOAH balance items -> the normalized snapshot frame, in one vectorised pyarrow pass.

Amounts stay strings until they are proven to fit DECIMAL(38,18); the string -> decimal cast in
pyarrow raises rather than rounds, so nothing here can lose a digit silently, and no value ever
passes through float.
"""

from __future__ import annotations

import datetime
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from balances_etl.domain.amounts import (
    AMOUNT_MAX_LENGTH,
    AMOUNT_PATTERN,
    DECIMAL_INTEGER_DIGITS,
    DECIMAL_SCALE,
    amount_problem,
)
from balances_etl.domain.balances import AMOUNT_DECIMAL, ARROW_SCHEMA, COLUMN_NAMES
from balances_etl.noah.endpoints import BALANCES

ArrayLike = pa.Array | pa.ChunkedArray

# What normalize accepts: NOAH's items, nulls allowed (a null is reported as an invalid amount).
ITEMS_SCHEMA = pa.schema([field.with_nullable(True) for field in BALANCES.items.arrow_schema])
# Wide enough for the difference of two DECIMAL(38,18) values (decimal128 stops at 38 digits).
_WIDE_DECIMAL = pa.decimal256(AMOUNT_DECIMAL.precision + 1, AMOUNT_DECIMAL.scale)
# One digit narrower: the difference of two such values is a DECIMAL(38,18) in decimal128.
_NARROW_DECIMAL = pa.decimal128(AMOUNT_DECIMAL.precision - 1, AMOUNT_DECIMAL.scale)


class AmountValidationError(ValueError):
    """An amount string breaks NOAH's PositiveDecimal rules; names the first offending row."""

    def __init__(
        self,
        field: str,
        row: int,
        page_number: int | None,
        item_index: int | None,
        value_excerpt: str | None,
        reason: str,
        offending_rows: int = 1,
    ) -> None:
        self.field = field
        self.row = row
        self.page_number = page_number
        self.item_index = item_index
        self.value_excerpt = value_excerpt
        self.reason = reason
        self.offending_rows = offending_rows
        where = f"row {row}" if page_number is None else f"page {page_number}, item {item_index} (row {row})"
        super().__init__(
            f"{field} amount invalid at {where}: {reason}; "
            f"{offending_rows} row(s) with an invalid {field} amount"
        )


def invalid_amounts(values: ArrayLike) -> ArrayLike:
    """Boolean mask of values that are not NOAH amounts (null, empty, > 38 chars, off-pattern).

    Arrow's regex engine is RE2: its ``$`` matches only at the very end, so ``'1.5\\n'`` fails.
    """
    # Bytes, not characters: the pattern is ASCII-only, so a non-ASCII value fails anyway, and for
    # ASCII the two lengths agree (binary_length reads the offsets; utf8_length scans every byte).
    # The pattern needs at least one digit, so it also rejects "": only the upper bound is checked.
    valid = pc.and_kleene(
        pc.less_equal(pc.binary_length(values), AMOUNT_MAX_LENGTH),
        pc.match_substring_regex(values, AMOUNT_PATTERN),
    )
    return pc.invert(pc.fill_null(valid, False))


def validate_amounts(
    values: ArrayLike,
    field: str,
    *,
    page_numbers: ArrayLike | None = None,
    item_indexes: ArrayLike | None = None,
    first_row: int = 0,
    optional: bool = False,
) -> None:
    """Raise AmountValidationError for the first invalid value of ``values``, if any.

    ``first_row`` is the day's row number of ``values[0]`` (a day is normalized chunk by chunk);
    an ``optional`` amount may be null (absent), which is then not invalid.
    """
    invalid = invalid_amounts(values)
    if optional:
        invalid = pc.and_(invalid, pc.is_valid(values))
    offending = pc.sum(invalid).as_py() or 0
    if not offending:
        return
    row = pc.index(invalid, True).as_py()
    value = values[row].as_py()
    raise AmountValidationError(
        field=field,
        row=first_row + row,
        page_number=None if page_numbers is None else page_numbers[row].as_py(),
        item_index=None if item_indexes is None else item_indexes[row].as_py(),
        value_excerpt=None if value is None else value[:40],
        reason=amount_problem(value),
        offending_rows=offending,
    )


def canonical_strings(valid_values: ArrayLike) -> ArrayLike:
    """Canonical spelling of already-validated amounts: ``+.50`` -> ``0.5``, ``0010.0100`` -> ``10.01``.

    Steps no value needs are skipped (a cheap test over the column first), and the integer part is
    rewritten only for the values that start with ``0`` or ``.``: the common feed has no ``+``, a
    point in every amount and few values below 1.
    """
    unsigned = pc.ascii_ltrim(valid_values, "+") if _any(pc.starts_with(valid_values, "+")) else valid_values
    # Trailing zeros (then a bare point) only mean nothing after a point: "100" keeps its zeros.
    has_point = pc.match_substring(unsigned, ".")
    fraction_trimmed = pc.ascii_rtrim(unsigned, "0")
    if _any(pc.ends_with(fraction_trimmed, ".")):  # a whole number written with a point: "2.00" -> "2"
        fraction_trimmed = pc.ascii_rtrim(fraction_trimmed, ".")
    trimmed = fraction_trimmed if _all(has_point) else pc.if_else(has_point, fraction_trimmed, unsigned)
    # Leading zeros go, but one stays before a point or alone: "007" -> "7", "00.5" -> "0.5", "" -> "0".
    odd = pc.fill_null(
        pc.or_(pc.or_(pc.starts_with(trimmed, "0"), pc.starts_with(trimmed, ".")), pc.equal(trimmed, "")), False
    )
    if not _any(odd):
        return trimmed
    trimmed, odd = _single_chunk(trimmed), _single_chunk(odd)
    stripped = pc.ascii_ltrim(pc.filter(trimmed, odd), "0")
    needs_zero = pc.or_(pc.equal(stripped, ""), pc.starts_with(stripped, "."))
    fixed = pc.if_else(needs_zero, pc.binary_join_element_wise("0", stripped, ""), stripped)
    return pc.replace_with_mask(trimmed, odd, fixed)


def _any(mask: ArrayLike) -> bool:
    return bool(pc.any(mask).as_py())  # nulls skipped; an empty or all-null mask is False


def _all(mask: ArrayLike) -> bool:
    return pc.all(mask).as_py() is not False  # nulls skipped: the null rows stay null either way


def _single_chunk(values: ArrayLike) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def integer_digits(canonical: ArrayLike) -> ArrayLike:
    """Digits before the point of canonical amounts (the whole length when there is none)."""
    point = pc.find_substring(canonical, ".")
    return pc.if_else(pc.less(point, 0), pc.binary_length(canonical), point)


def fits_decimal(canonical: ArrayLike) -> ArrayLike:
    """Whether each canonical amount is exactly representable as DECIMAL(38,18)."""
    int_digits = integer_digits(canonical)
    # Fraction digits = length - integer digits - 1 for the point (0 when there is no point).
    fraction_digits = pc.max_element_wise(
        pc.subtract(pc.subtract(pc.binary_length(canonical), int_digits), 1), 0
    )
    return pc.and_(
        pc.less_equal(int_digits, DECIMAL_INTEGER_DIGITS),
        pc.less_equal(fraction_digits, DECIMAL_SCALE),
    )


def canonicalize_amounts(
    values: ArrayLike,
    field: str = "amount",
    *,
    page_numbers: ArrayLike | None = None,
    item_indexes: ArrayLike | None = None,
    first_row: int = 0,
    optional: bool = False,
) -> tuple[ArrayLike, ArrayLike]:
    """Validate, then return (canonical strings, exact decimal128(38,18) or NULL where too wide).

    Validation comes first because pyarrow's cast would happily read ``'1e3'`` as 1000.
    The cast itself raises on any rounding, so a wrong ``fits_decimal`` could never round.
    An ``optional`` amount may be null: it stays null in both.
    """
    validate_amounts(
        values, field, page_numbers=page_numbers, item_indexes=item_indexes, first_row=first_row, optional=optional
    )
    canonical = canonical_strings(values)
    fitting = pc.if_else(fits_decimal(canonical), canonical, pa.scalar(None, pa.string()))
    return canonical, pc.cast(fitting, AMOUNT_DECIMAL)


def _difference(minuend: ArrayLike, subtrahend: ArrayLike) -> ArrayLike:
    """``minuend - subtrahend`` of DECIMAL(38,18) amounts, exactly, as DECIMAL(38,18).

    Both operands are below 1e20, so the difference always fits DECIMAL(38,18); but decimal128
    arithmetic on (38,18) operands asks for precision 39 and fails. When every amount has at most
    19 integer digits (practically always) the operands fit (37,18) and the difference is computed
    in decimal128 directly; otherwise through decimal256 (about six times slower).
    """
    try:
        return pc.subtract(pc.cast(minuend, _NARROW_DECIMAL), pc.cast(subtrahend, _NARROW_DECIMAL))
    except pa.ArrowInvalid:  # an amount with 20 integer digits: the (safe) cast refused it
        return pc.cast(
            pc.subtract(pc.cast(minuend, _WIDE_DECIMAL), pc.cast(subtrahend, _WIDE_DECIMAL)), AMOUNT_DECIMAL
        )


def broadcast(value: object, field: pa.Field, rows: int) -> pa.Array:
    """One value repeated for every row, typed as the column it fills."""
    return pa.repeat(pa.scalar(value, field.type), rows)


def plain_decimal_strings(decimals: ArrayLike) -> pa.Array:
    """Decimal -> string without exponent notation.

    pyarrow's decimal -> string cast writes values below 1e-6 like Java's BigDecimal:
    ``0E-18``, ``1.0000000000E-8``. Those mantissas hold every unscaled digit, so the plain
    form is ``0.`` + the digits left-padded with zeros to the scale. Only those rows are rewritten.
    """
    text = pc.cast(decimals, pa.string())
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()  # replace_with_mask takes no chunked arrays
    exponent = pc.match_substring(text, "E")
    small = pc.filter(text, exponent)
    # "-1.00000000000E-7" -> "100000000000" with plain trims (a regex is 10x slower here).
    mantissa = pc.replace_substring(pc.ascii_ltrim(small, "-"), ".", "")
    digits = pc.ascii_rtrim(pc.ascii_rtrim(mantissa, "0123456789"), "E-")
    sign = pc.if_else(pc.starts_with(small, "-"), "-0.", "0.")
    plain = pc.binary_join_element_wise(sign, pc.utf8_lpad(digits, decimals.type.scale, "0"), "")
    return pc.replace_with_mask(text, exponent, plain)


def asset_of(codes: ArrayLike) -> ArrayLike:
    """Underlying asset of NOAH codes: the part before the first ``_``.

    That maps BTC_TEST -> BTC, ETH_TEST_SEPOLIA -> ETH, USDC_TEST -> USDC and unknown codes
    (SOL_TEST -> SOL) without a list that would go stale.
    """
    return pc.list_element(pc.split_pattern(codes, "_", max_splits=1), 0)


def normalize_snapshot(
    items: pa.Table,
    *,
    snapshot_date: datetime.date,
    snapshot_at: datetime.datetime,
    is_late: bool,
    environment: str,
) -> pd.DataFrame:
    """One snapshot's items -> the normalized frame (``schema.COLUMNS``, every column ArrowDtype).

    Raises AmountValidationError on the first invalid amount, ValueError on a naive ``snapshot_at``.
    """
    table = normalize_table(
        items, snapshot_date=snapshot_date, snapshot_at=snapshot_at, is_late=is_late, environment=environment
    )
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def normalize_table(
    items: pa.Table,
    *,
    snapshot_date: datetime.date,
    snapshot_at: datetime.datetime,
    is_late: bool,
    environment: str,
    first_row: int = 0,
) -> pa.Table:
    """Items -> normalized rows (``schema.ARROW_SCHEMA``); a day may be normalized chunk by chunk,
    ``first_row`` being the day's row number of the chunk's first item (named in errors)."""
    if snapshot_at.utcoffset() is None:
        raise ValueError(f"snapshot_at must be timezone-aware, got {snapshot_at!r}")
    items = items.select(ITEMS_SCHEMA.names).cast(ITEMS_SCHEMA)
    positions = {"page_numbers": items["page_number"], "item_indexes": items["item_index"], "first_row": first_row}
    # The two columns are independent and Arrow's kernels release the GIL: one on another thread.
    # Available is judged on this thread, so when both are invalid its error is the one raised.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="normalize") as pool:
        total_job = pool.submit(canonicalize_amounts, items["total_raw"], "Total", **positions)
        available, available_amount = canonicalize_amounts(items["available_raw"], "Available", **positions)
        total, total_amount = total_job.result()
    pending_outflow = _difference(total_amount, available_amount)
    rows = items.num_rows

    columns = {
        "snapshot_date": broadcast(snapshot_date, ARROW_SCHEMA.field("snapshot_date"), rows),
        "snapshot_at": broadcast(snapshot_at.astimezone(datetime.UTC), ARROW_SCHEMA.field("snapshot_at"), rows),
        "is_late": broadcast(is_late, ARROW_SCHEMA.field("is_late"), rows),
        "account_type": items["account_type"],
        "crypto_currency": items["crypto_currency"],
        "asset": asset_of(items["crypto_currency"]),
        "environment": broadcast(environment, ARROW_SCHEMA.field("environment"), rows),
        "available": available,
        "total": total,
        "available_raw": items["available_raw"],
        "total_raw": items["total_raw"],
        "available_amount": available_amount,
        "total_amount": total_amount,
        "pending_outflow": pending_outflow,
        "page_number": items["page_number"],
        "item_index": items["item_index"],
    }
    return pa.Table.from_arrays([columns[name] for name in COLUMN_NAMES], schema=ARROW_SCHEMA)
