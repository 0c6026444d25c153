"""Parsing and validating ``GET /balances`` pages, shared by the live client and the replay source.

One code path (:class:`SnapshotAssembler`) turns page bodies into columns, so a snapshot replayed
from landed raw pages is validated exactly like the live fetch that landed them.
"""

from __future__ import annotations

import decimal
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from balances_etl.domain.amounts import AMOUNT_MAX_LENGTH, amount_pattern, amount_problem
from balances_etl.domain.balances import NOAH_ITEMS_SCHEMA
from balances_etl.noah.errors import MalformedPageError, PageValidationError, PaginationError, redact, snippet

ITEMS = "Items"
PAGE_TOKEN = "PageToken"
IDENTIFIER_FIELDS = ("AccountType", "CryptoCurrency")
AMOUNT_FIELDS = ("Available", "Total")
TOKEN_PREFIX_SHOWN = 8  # tokens are opaque and may be long: messages show only a prefix
# Columns of one page's items: AccountType, CryptoCurrency, Available, Total.
_ItemFields = tuple[list[str], list[str], list[str], list[str]]
_DICT, _STR = frozenset({dict}), frozenset({str})
_AMOUNT_FULLMATCH = amount_pattern().fullmatch



@dataclass(frozen=True)
class RawPage:
    """One 200 response exactly as received, for landing and replay.

    ``query`` is what was sent on the wire (and signed); ``attempts`` counts tries for this page;
    ``elapsed_seconds`` is the successful attempt's request time (waits excluded).
    """

    page_number: int
    request_path: str
    query: dict[str, str]
    status: int
    body: bytes
    sha256: str
    received_at: datetime
    attempts: int
    elapsed_seconds: float

    @classmethod
    def received(
        cls, page_number: int, body: bytes, *, request_path: str, query: dict[str, str], attempts: int,
        elapsed_seconds: float,
    ) -> RawPage:
        """A 200 page received now, with its body's SHA-256."""
        return cls(
            page_number=page_number, request_path=request_path, query=query, status=200, body=body,
            sha256=hashlib.sha256(body).hexdigest(), received_at=datetime.now(UTC), attempts=attempts,
            elapsed_seconds=elapsed_seconds,
        )


class BalanceColumns:
    """Balance items column by column: a million items cost one pass and no per-item objects.

    Each page becomes an Arrow record batch when it is added (in the client, while the next page is
    in flight), so the day's table is ready when the last page arrives. Amounts stay exactly as
    NOAH sent them (``*_raw``); canonicalisation happens downstream. ``page_number`` is 1-based,
    ``item_index`` 0-based within its page. The list properties are for inspection (tests).
    """

    def __init__(self) -> None:
        self._batches: list[pa.RecordBatch] = []
        self._rows = 0
        self._table: pa.Table | None = None

    def __len__(self) -> int:
        return self._rows

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BalanceColumns) and self.to_arrow().equals(other.to_arrow())

    __hash__ = None  # type: ignore[assignment]  # mutable: pages are added

    def __repr__(self) -> str:
        return f"BalanceColumns({self._rows} items on {len(self._batches)} pages)"

    def add_page(self, page_number: int, fields: _ItemFields) -> pa.RecordBatch:
        """Keep one page's items; returns them as a record batch."""
        account_type, crypto_currency, available, total = fields
        count = len(account_type)
        numbers = pa.array([page_number] * count, pa.int32())
        indexes = pa.array(range(count), pa.int32())
        batch = pa.record_batch(
            [account_type, crypto_currency, available, total, numbers, indexes], schema=NOAH_ITEMS_SCHEMA
        )
        self._batches.append(batch)
        self._rows += count
        self._table = None
        return batch

    def batches(self) -> list[pa.RecordBatch]:
        """The pages' items, one record batch per page, in page order."""
        return list(self._batches)

    def to_arrow(self) -> pa.Table:
        """The columns as one Arrow table (contiguous, built once until more pages are added)."""
        if self._table is None:
            self._table = pa.Table.from_batches(self._batches, schema=NOAH_ITEMS_SCHEMA).combine_chunks()
        return self._table

    def _column(self, name: str) -> list:
        return self.to_arrow()[name].to_pylist()

    account_type = property(lambda self: self._column("account_type"))
    crypto_currency = property(lambda self: self._column("crypto_currency"))
    available_raw = property(lambda self: self._column("available_raw"))
    total_raw = property(lambda self: self._column("total_raw"))
    page_number = property(lambda self: self._column("page_number"))
    item_index = property(lambda self: self._column("item_index"))


@dataclass
class SnapshotStats:
    """What one snapshot cost: pages, attempts, retries, waits, and NOAH error references.

    ``instances`` lists every NOAH error ``Instance`` seen, retried errors included: it is what
    NOAH support asks for. ``duplicate_keys`` counts items repeating an (AccountType,
    CryptoCurrency) pair already seen (counted as the pages arrive); they are kept, and the
    pipeline's blocking check reports them.
    """

    pages: int = 0
    items: int = 0
    attempts: int = 0
    retries: int = 0
    total_wait_seconds: float = 0.0
    instances: list[str] = field(default_factory=list)
    page_sha256: list[str] = field(default_factory=list)
    duplicate_keys: int = 0

    def as_metadata(self) -> dict[str, object]:
        """Plain JSON-able values for Dagster metadata."""
        metadata = asdict(self)
        metadata["total_wait_seconds"] = round(self.total_wait_seconds, 3)
        return metadata


@dataclass(frozen=True)
class BalanceSnapshot:
    pages: list[RawPage]
    columns: BalanceColumns
    stats: SnapshotStats


class _DuplicateJSONKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _reject_constant(name: str) -> None:
    raise ValueError(f"non-standard JSON constant {name}")


def _object_without_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # Parsers disagree on which duplicate wins; for money data an ambiguous field is an error.
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateJSONKey(key)
            seen.add(key)
    return result


def decode_body(
    body: bytes, page_number: int, secrets: Sequence[str] = (), *, reject_duplicate_keys: bool = True
) -> object:
    """Parse a response body without ever producing a float: numbers become ``Decimal`` or ``int``.

    Raises :class:`MalformedPageError` when the body is not complete JSON (the client retries
    that) and :class:`PageValidationError` for a duplicated object key (bad data, not retried).
    Without ``reject_duplicate_keys`` the last duplicate wins, at half the cost: the client reads
    the next token that way and decodes the body again, strictly, before it keeps the items.
    """
    pairs_hook = _object_without_duplicate_keys if reject_duplicate_keys else None
    try:
        return json.loads(
            body,
            parse_float=decimal.Decimal,
            parse_constant=_reject_constant,
            object_pairs_hook=pairs_hook,
        )
    except _DuplicateJSONKey as duplicate:
        raise PageValidationError(
            "a JSON object repeats this key, so its value is ambiguous",
            page_number=page_number,
            item_index=None,
            field=snippet(duplicate.key, secrets, limit=60),
        ) from None
    except (ValueError, RecursionError) as problem:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MalformedPageError(
            snippet(str(problem), secrets, limit=120),
            page_number=page_number,
            body_prefix=snippet(body, secrets, limit=80),
        ) from None


def _json_type(value: object) -> str:
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


def token_label(token: str) -> str:
    """A short, safe label for an opaque page token."""
    shown = token[:TOKEN_PREFIX_SHOWN]
    return f"{shown!r}..." if len(token) > TOKEN_PREFIX_SHOWN else repr(shown)


class SnapshotAssembler:
    """Accumulates validated pages into a :class:`BalanceSnapshot` and polices the token chain.

    A page is taken in two halves, so a client can ask for the next page in between:
    ``next_token`` checks the page's envelope and its token (None when the chain ends: token
    absent, "" or null), ``add`` checks its items and keeps them. ``accept`` does both.
    """

    def __init__(self, *, max_pages: int | None) -> None:
        self.max_pages = max_pages
        self.stats = SnapshotStats()
        self._pages: list[RawPage] = []
        self._columns = BalanceColumns()
        self._pairs_seen: set[tuple[str, str]] = set()
        self._token_first_seen: dict[str, int] = {}

    def accept(self, page: RawPage, document: object, secrets: Sequence[str] = ()) -> str | None:
        token = self.next_token(page.page_number, document, secrets)
        self.add(page, document, secrets)
        return token

    def next_token(self, page_number: int, document: object, secrets: Sequence[str] = ()) -> str | None:
        """The page's next token once envelope, cycle and page cap are checked; its items are not yet."""
        next_token = _page_token(document, page_number, secrets)
        if next_token is None:
            return None
        first_seen = self._token_first_seen.setdefault(next_token, page_number)
        if first_seen != page_number:
            raise PaginationError(
                f"token cycle at page {page_number} (token first seen on page {first_seen}): NOAH returned "
                f"page token {redact(token_label(next_token), secrets)} again, so pagination would never end",
                page_number=page_number,
            )
        if self.max_pages is not None and page_number >= self.max_pages:
            raise PaginationError(
                f"page {page_number} still has a next page token, but a snapshot may take at most "
                f"{self.max_pages} pages (NOAH_MAX_PAGES)",
                page_number=page_number,
            )
        return next_token

    def add(self, page: RawPage, document: object, secrets: Sequence[str] = ()) -> pa.RecordBatch:
        """Validate the items of a page whose envelope ``next_token`` accepted, and keep them;
        returns them as a record batch (``NOAH_ITEMS_SCHEMA``)."""
        if page.page_number != self.stats.pages + 1:
            raise ValueError(f"page {page.page_number} added after {self.stats.pages} pages: pages are added in order")
        fields = _item_columns(document[ITEMS], page.page_number, secrets)  # type: ignore[index]
        batch = self._columns.add_page(page.page_number, fields)
        # Repeated (AccountType, CryptoCurrency) pairs are kept (the pipeline's blocking check
        # reports them); counted here, page by page, while the next page is in flight.
        seen_before = len(self._pairs_seen)
        self._pairs_seen.update(zip(fields[0], fields[1], strict=True))
        self.stats.duplicate_keys += len(fields[0]) - (len(self._pairs_seen) - seen_before)
        self.stats.pages += 1
        self.stats.items += len(fields[0])
        self.stats.page_sha256.append(page.sha256)
        self._pages.append(page)
        return batch

    def snapshot(self) -> BalanceSnapshot:
        return BalanceSnapshot(pages=list(self._pages), columns=self._columns, stats=self.stats)


def _invalid(reason: str, page_number: int, secrets: Sequence[str], item_index: int | None = None,
             field: str | None = None) -> PageValidationError:
    return PageValidationError(snippet(reason, secrets), page_number=page_number, item_index=item_index, field=field)


def _page_token(document: object, page_number: int, secrets: Sequence[str]) -> str | None:
    """Check a decoded page's envelope against ``GetBalancesResponse``; return its next token (None
    at the end). Unknown fields are allowed (NOAH adds fields over time); everything we read is checked."""
    if not isinstance(document, dict):
        raise _invalid(f"expected a JSON object, got {_json_type(document)}", page_number, secrets)
    if ITEMS not in document:
        raise _invalid("required field is missing", page_number, secrets, field=ITEMS)
    items = document[ITEMS]
    if not isinstance(items, list):
        raise _invalid(f"expected an array, got {_json_type(items)}", page_number, secrets, field=ITEMS)
    token = document.get(PAGE_TOKEN)
    if token is not None and not isinstance(token, str):
        raise _invalid(f"expected a string or null, got {_json_type(token)}", page_number, secrets, field=PAGE_TOKEN)
    return token or None


def _item_columns(items: list[object], page_number: int, secrets: Sequence[str]) -> _ItemFields:
    """The items' fields column by column, each item checked against ``Balance``; the first invalid
    one is named (page, index, field, reason)."""
    fields = _valid_item_fields(items)
    if fields is None:  # some item is invalid (or the fast path could not tell): find and name it
        for index, item in enumerate(items):
            if not _item_is_valid(item):
                field, reason = _item_problem(item)
                raise _invalid(reason, page_number, secrets, index, field)
        fields = tuple([item[name] for item in items] for name in IDENTIFIER_FIELDS + AMOUNT_FIELDS)  # type: ignore[assignment,index]
    return fields  # type: ignore[return-value]


def _valid_item_fields(items: list[object]) -> _ItemFields | None:
    """The page's (AccountType, CryptoCurrency, Available, Total) columns when every item is valid, else None.

    The fast path for big snapshots: a few C-level passes per page instead of several Python calls
    per item. It accepts exactly what :func:`_item_is_valid` accepts (JSON objects are plain dicts,
    strings plain str); anything else returns None and the per-item path diagnoses it.
    """
    try:
        account_type = [item["AccountType"] for item in items]  # type: ignore[index]
        crypto_currency = [item["CryptoCurrency"] for item in items]  # type: ignore[index]
        available = [item["Available"] for item in items]  # type: ignore[index]
        total = [item["Total"] for item in items]  # type: ignore[index]
    except (KeyError, TypeError, IndexError):  # not an object, or a field missing
        return None
    if not (
        set(map(type, items)) <= _DICT
        and set(map(type, account_type)) <= _STR
        and set(map(type, crypto_currency)) <= _STR
        and set(map(type, available)) <= _STR
        and set(map(type, total)) <= _STR
        and "" not in account_type
        and "" not in crypto_currency
        and max(map(len, available), default=0) <= AMOUNT_MAX_LENGTH
        and max(map(len, total), default=0) <= AMOUNT_MAX_LENGTH
        and all(map(_AMOUNT_FULLMATCH, available))
        and all(map(_AMOUNT_FULLMATCH, total))
    ):
        return None
    return account_type, crypto_currency, available, total


def _item_is_valid(item: object) -> bool:
    """Fast path for the million-item case: one expression per item, no diagnosis."""
    if type(item) is not dict:
        return False
    account_type, crypto_currency = item.get("AccountType"), item.get("CryptoCurrency")
    available, total = item.get("Available"), item.get("Total")
    return (
        type(account_type) is str and account_type != ""
        and type(crypto_currency) is str and crypto_currency != ""
        and amount_problem(available) is None
        and amount_problem(total) is None
    )


def _item_problem(item: object) -> tuple[str | None, str]:
    """Why an item failed :func:`_item_is_valid`: (field, reason)."""
    if not isinstance(item, dict):
        return None, f"expected an object, got {_json_type(item)}"
    for name in IDENTIFIER_FIELDS + AMOUNT_FIELDS:
        if name not in item:
            return name, "required field is missing"
        if not isinstance(item[name], str):
            return name, f"expected a string, got {_json_type(item[name])}"
    for name in IDENTIFIER_FIELDS:
        if not item[name]:
            return name, "empty string"
    for name in AMOUNT_FIELDS:
        problem = amount_problem(item[name])
        if problem is not None:
            return name, problem
    raise AssertionError("_item_problem called for a valid item")
