"""Parsing and validating the pages of a NOAH list endpoint, shared by the live client and replay.

One code path (:class:`PageAssembler`, configured by the endpoint's item schema) turns page bodies
into columns, so a fetch replayed from landed raw pages is validated exactly like the live fetch
that landed them.
"""

from __future__ import annotations

import decimal
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from balances_etl.noah.errors import MalformedPageError, PageValidationError, PaginationError, redact, snippet
from balances_etl.noah.items import ItemSchema, json_type

ITEMS = "Items"
PAGE_TOKEN = "PageToken"
TOKEN_PREFIX_SHOWN = 8  # tokens are opaque and may be long: messages show only a prefix


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


class ItemColumns:
    """An endpoint's items column by column: a million items cost one pass and no per-item objects.

    Each page becomes an Arrow record batch when it is added (in the client, while the next page is
    in flight), so the whole table is ready when the last page arrives. Values stay exactly as NOAH
    sent them; canonicalisation happens downstream. ``page_number`` is 1-based, ``item_index``
    0-based within its page.
    """

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self._batches: list[pa.RecordBatch] = []
        self._rows = 0
        self._table: pa.Table | None = None

    def __len__(self) -> int:
        return self._rows

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ItemColumns) and self.to_arrow().equals(other.to_arrow())

    __hash__ = None  # type: ignore[assignment]  # mutable: pages are added

    def __repr__(self) -> str:
        return f"ItemColumns({self._rows} items on {len(self._batches)} pages)"

    def add(self, batch: pa.RecordBatch) -> None:
        self._batches.append(batch)
        self._rows += batch.num_rows
        self._table = None

    def batches(self) -> list[pa.RecordBatch]:
        """The pages' items, one record batch per page, in page order."""
        return list(self._batches)

    def to_arrow(self) -> pa.Table:
        """The columns as one Arrow table (contiguous, built once until more pages are added)."""
        if self._table is None:
            self._table = pa.Table.from_batches(self._batches, schema=self.schema).combine_chunks()
        return self._table

    def column(self, name: str) -> list:
        """One column as Python values (for inspection and tests)."""
        return self.to_arrow()[name].to_pylist()


@dataclass
class FetchStats:
    """What one fetch cost: pages, attempts, retries, waits, and NOAH error references.

    ``instances`` lists every NOAH error ``Instance`` seen, retried errors included: it is what
    NOAH support asks for. ``duplicate_keys`` counts items repeating the key of an item already
    seen (the endpoint's key fields, counted as the pages arrive); they are kept, and the
    pipeline's blocking check reports them. ``stopped_early`` says the fetch stopped before the
    last page because its caller had read far enough (an incremental sync's horizon).
    """

    pages: int = 0
    items: int = 0
    attempts: int = 0
    retries: int = 0
    total_wait_seconds: float = 0.0
    instances: list[str] = field(default_factory=list)
    page_sha256: list[str] = field(default_factory=list)
    duplicate_keys: int = 0
    stopped_early: bool = False

    def as_metadata(self) -> dict[str, object]:
        """Plain JSON-able values for Dagster metadata."""
        metadata = asdict(self)
        metadata["total_wait_seconds"] = round(self.total_wait_seconds, 3)
        return metadata


@dataclass(frozen=True)
class Fetched:
    """Every page of one fetch as received, their items column by column, and what it cost."""

    pages: list[RawPage]
    columns: ItemColumns
    stats: FetchStats


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


def token_label(token: str) -> str:
    """A short, safe label for an opaque page token."""
    shown = token[:TOKEN_PREFIX_SHOWN]
    return f"{shown!r}..." if len(token) > TOKEN_PREFIX_SHOWN else repr(shown)


class PageAssembler:
    """Accumulates validated pages of one endpoint into :class:`Fetched` and polices the token chain.

    A page is taken in two halves, so a client can ask for the next page in between:
    ``next_token`` checks the page's envelope and its token (None when the chain ends: token
    absent, "" or null), ``add`` checks its items against the endpoint's schema and keeps them.
    ``accept`` does both. Without ``keep`` the pages and items are only checked and counted: a
    consumer took them (a first sync's 10,000 bodies held here would cost ~300 MB).
    """

    def __init__(self, items: ItemSchema, *, max_pages: int | None, keep: bool = True) -> None:
        self.items = items
        self.max_pages = max_pages
        self._keep = keep
        self.stats = FetchStats()
        self._pages: list[RawPage] = []
        self._columns = ItemColumns(items.arrow_schema)
        self._key_columns = [i for i, f in enumerate(items.fields) if f.name in items.key]
        self._keys_seen: set[tuple[object, ...]] = set()
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
                f"page {page_number} still has a next page token, but one fetch may take at most "
                f"{self.max_pages} pages (NOAH_MAX_PAGES)",
                page_number=page_number,
            )
        return next_token

    def add(self, page: RawPage, document: object, secrets: Sequence[str] = ()) -> pa.RecordBatch:
        """Validate the items of a page whose envelope ``next_token`` accepted, and keep them;
        returns them as a record batch (the endpoint's ``arrow_schema``)."""
        if page.page_number != self.stats.pages + 1:
            raise ValueError(f"page {page.page_number} added after {self.stats.pages} pages: pages are added in order")
        columns = self.items.columns(document[ITEMS])  # type: ignore[index]
        if isinstance(columns, tuple):  # the first invalid item: (index, field, reason)
            index, field, reason = columns
            raise _invalid(reason, page.page_number, secrets, index, field)
        batch = self.items.batch(columns, page.page_number)
        if self._keep:
            self._columns.add(batch)
            self._pages.append(page)
        # Repeated keys are kept (the pipeline's blocking check reports them); counted here, page by
        # page, while the next page is in flight.
        seen_before = len(self._keys_seen)
        self._keys_seen.update(zip(*(columns[i] for i in self._key_columns), strict=True))
        self.stats.duplicate_keys += batch.num_rows - (len(self._keys_seen) - seen_before)
        self.stats.pages += 1
        self.stats.items += batch.num_rows
        self.stats.page_sha256.append(page.sha256)
        return batch

    def fetched(self) -> Fetched:
        return Fetched(pages=list(self._pages), columns=self._columns, stats=self.stats)


def _invalid(reason: str, page_number: int, secrets: Sequence[str], item_index: int | None = None,
             field: str | None = None) -> PageValidationError:
    return PageValidationError(snippet(reason, secrets), page_number=page_number, item_index=item_index, field=field)


def _page_token(document: object, page_number: int, secrets: Sequence[str]) -> str | None:
    """Check a decoded page's envelope (``Items`` and ``PageToken`` of every ``Get...Response``);
    return its next token (None at the end). Unknown fields are allowed (NOAH adds fields over
    time); everything we read is checked."""
    if not isinstance(document, dict):
        raise _invalid(f"expected a JSON object, got {json_type(document)}", page_number, secrets)
    if ITEMS not in document:
        raise _invalid("required field is missing", page_number, secrets, field=ITEMS)
    items = document[ITEMS]
    if not isinstance(items, list):
        raise _invalid(f"expected an array, got {json_type(items)}", page_number, secrets, field=ITEMS)
    token = document.get(PAGE_TOKEN)
    if token is not None and not isinstance(token, str):
        raise _invalid(f"expected a string or null, got {json_type(token)}", page_number, secrets, field=PAGE_TOKEN)
    return token or None
