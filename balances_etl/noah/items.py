"""The items of a NOAH list endpoint, field by field: one declarative schema per endpoint validates a
page's items and hands them over column by column.

A million items cost a few C-level passes per page (one per field and rule) and no per-item
objects; only when a page holds an invalid item is each item examined, to name the first one:
page, item, field and reason, as NOAH's schema words it. Fields the pipeline does not use are
ignored here and stay in the raw landing.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from enum import Enum

import pyarrow as pa

from balances_etl.domain.amounts import AMOUNT_MAX_LENGTH, amount_pattern, amount_problem

_AMOUNT_FULLMATCH = amount_pattern().fullmatch
# RFC 3339 date-time (ASCII digits only): 2026-11-20T10:00:00Z, 2026-11-20T10:00:00.123456789+02:00.
_INSTANT_FULLMATCH = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:[.][0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
).fullmatch
_DICT, _STR = frozenset({dict}), frozenset({str})


class Kind(Enum):
    TEXT = "text"  # a string; required ones must not be empty
    AMOUNT = "amount"  # NOAH's PositiveDecimal: 1-38 characters, the pattern, ASCII digits
    CHOICE = "choice"  # one of ``choices``
    INSTANT = "instant"  # an RFC 3339 date-time


@dataclass(frozen=True)
class ItemField:
    """One field of an item: NOAH's name, the column it lands in, and what a valid value is."""

    name: str
    column: str
    kind: Kind = Kind.TEXT
    required: bool = True
    choices: tuple[str, ...] = ()

    def shape_problem(self, item: dict) -> str | None:
        """Why this field of ``item`` is missing or of the wrong JSON type, or None."""
        if self.name not in item:
            return "required field is missing" if self.required else None
        value = item[self.name]
        if value is None and not self.required:
            return None
        return None if isinstance(value, str) else f"expected a string, got {json_type(value)}"

    def value_problem(self, value: str) -> str | None:
        """Why a string value of this field is invalid, or None."""
        if self.kind is Kind.AMOUNT:
            return amount_problem(value)
        if self.kind is Kind.CHOICE and value not in self.choices:
            return f"{value[:40]!r} is not one of {', '.join(self.choices)}"
        if self.kind is Kind.INSTANT and _INSTANT_FULLMATCH(value) is None:
            return f"{value[:40]!r} is not an RFC 3339 date-time"
        if self.kind is Kind.TEXT and self.required and not value:
            return "empty string"
        return None

    def all_valid(self, values: list[object]) -> bool:
        """Whether every value is valid: the fast path, exactly as strict as the two ``*_problem`` methods."""
        present = values if self.required else [v for v in values if v is not None]
        if not set(map(type, present)) <= _STR:
            return False
        if self.kind is Kind.AMOUNT:
            return max(map(len, present), default=0) <= AMOUNT_MAX_LENGTH and all(map(_AMOUNT_FULLMATCH, present))
        if self.kind is Kind.CHOICE:
            return set(present) <= set(self.choices)
        if self.kind is Kind.INSTANT:
            return all(map(_INSTANT_FULLMATCH, present))
        return not self.required or "" not in present


@dataclass(frozen=True)
class ItemSchema:
    """An endpoint's items: their fields, and which fields identify an item (repeats are counted)."""

    fields: tuple[ItemField, ...]
    key: tuple[str, ...]

    @cached_property
    def arrow_schema(self) -> pa.Schema:
        """The items column by column (strings exactly as NOAH sent them), with their page and index."""
        return pa.schema(
            [pa.field(f.column, pa.string(), nullable=not f.required) for f in self.fields]
            + [pa.field("page_number", pa.int32(), nullable=False), pa.field("item_index", pa.int32(), nullable=False)]
        )

    def columns(self, items: list[object]) -> list[list[object]] | tuple[int, str | None, str]:
        """The items' fields column by column when every item is valid; otherwise the first invalid
        item as (index, field, reason)."""
        if set(map(type, items)) <= _DICT:
            columns = [[item.get(f.name) for item in items] for f in self.fields]  # type: ignore[union-attr]
            if all(f.all_valid(values) for f, values in zip(self.fields, columns, strict=True)):
                return columns
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                return index, None, f"expected an object, got {json_type(item)}"
            # Every field's presence and type first, then the values (a wrong type says more).
            for field in self.fields:
                if (reason := field.shape_problem(item)) is not None:
                    return index, field.name, reason
            for field in self.fields:
                value = item.get(field.name)
                if value is not None and (reason := field.value_problem(value)) is not None:
                    return index, field.name, reason
        raise AssertionError("a page whose every item is valid failed the fast path")

    def batch(self, columns: Sequence[list[object]], page_number: int) -> pa.RecordBatch:
        count = len(columns[0]) if columns else 0
        return pa.record_batch(
            [*columns, pa.array([page_number] * count, pa.int32()), pa.array(range(count), pa.int32())],
            schema=self.arrow_schema,
        )


def json_type(value: object) -> str:
    """The JSON type of a decoded value, as NOAH's schema would name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, decimal.Decimal)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"
