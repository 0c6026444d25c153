"""Injected faults: what can go wrong between NOAH and the client, on demand and deterministically.

A fault fires on requests that passed authentication and query validation (a rejected request
never consumes one), selected by ``page`` (1-based page the request asks for; page 1 has no
PageToken) and/or ``request`` (1-based request number, see ``NoahSandbox.requests``). Faults
that only make sense on some pages (the token-end ones on the last page, the item ones on a page
that has item ``item_index``) neither fire nor count elsewhere.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from balances_etl.emulator.responses import Response, encode_json, error_response, html_response, json_response


class FaultKind(StrEnum):
    STATUS = "STATUS"  # `status` (default 500) with a NOAH Error body of `error_type`
    RATE_LIMIT = "RATE_LIMIT"  # 429 (`status` ignored); header Retry-After: `retry_after`, omitted when None
    DROP_CONNECTION = "DROP_CONNECTION"  # headers + half the body, then the socket closes
    SLOW = "SLOW"  # the normal answer after `delay_seconds`
    TRUNCATED_JSON = "TRUNCATED_JSON"  # 200, body cut in the middle, Content-Length of the cut body
    NON_JSON_200 = "NON_JSON_200"  # 200 with an HTML body
    NON_JSON_ERROR = "NON_JSON_ERROR"  # `status` (default 502) with an HTML body, like a proxy's
    MISSING_ITEMS = "MISSING_ITEMS"  # 200 without "Items"
    MISSING_FIELD = "MISSING_FIELD"  # item `item_index` lacks `field`
    WRONG_TYPE = "WRONG_TYPE"  # item `item_index`'s `field` = `value`, a JSON number or null
    INVALID_AMOUNT = "INVALID_AMOUNT"  # item `item_index`'s `field` = `value` (default "1e3")
    DUPLICATE_ITEM = "DUPLICATE_ITEM"  # the page also carries a copy of the account's first item
    TOKEN_CYCLE = "TOKEN_CYCLE"  # PageToken leads back to page `cycle_to_page` (default: this page)
    EMPTY_TOKEN_END = "EMPTY_TOKEN_END"  # the last page says "PageToken": ""
    NULL_TOKEN_END = "NULL_TOKEN_END"  # the last page says "PageToken": null
    UNKNOWN_CURRENCY = "UNKNOWN_CURRENCY"  # item `item_index`'s code = `value` (default NEWCOIN[_TEST])
    ZERO_ITEMS = "ZERO_ITEMS"  # {"Items": []}


_ITEM_FAULTS = frozenset(
    {FaultKind.MISSING_FIELD, FaultKind.WRONG_TYPE, FaultKind.INVALID_AMOUNT, FaultKind.UNKNOWN_CURRENCY}
)
_LAST_PAGE_FAULTS = frozenset({FaultKind.EMPTY_TOKEN_END, FaultKind.NULL_TOKEN_END})
_DEFAULT_STATUS = {FaultKind.STATUS: 500, FaultKind.NON_JSON_ERROR: 502}
DEFAULT_INVALID_AMOUNT = "1e3"
ENDPOINTS = ("balances", "transactions")  # /v1/<endpoint>


@dataclass
class Fault:
    """One injected fault; ``times=None`` fires on every matching request."""

    kind: FaultKind
    page: int | None = None
    request: int | None = None
    times: int | None = 1
    status: int | None = None  # STATUS / NON_JSON_ERROR only; None: 500 / 502
    error_type: str = "Unexpected"
    detail: str | None = None
    retry_after: str | None = None
    delay_seconds: float = 0.0
    field: str = "Available"
    item_index: int = 0
    value: object = None
    cycle_to_page: int | None = None
    endpoint: str = "balances"  # the list endpoint it strikes: "balances" or "transactions"

    def __post_init__(self) -> None:
        self.kind = FaultKind(self.kind)
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"Fault.endpoint must be one of {list(ENDPOINTS)}, got {self.endpoint!r}")
        for name in ("page", "request", "times", "cycle_to_page"):
            number = getattr(self, name)
            if number is not None and (not isinstance(number, int) or number < 1):
                raise ValueError(f"Fault.{name} must be an integer >= 1 or None, got {number!r}")
        if self.item_index < 0 or self.delay_seconds < 0:
            raise ValueError("Fault.item_index and Fault.delay_seconds must not be negative")

    @classmethod
    def from_json(cls, data: object) -> Fault:
        """A fault from the control surface's JSON (the field names of this class)."""
        if not isinstance(data, dict):
            raise ValueError("a fault is a JSON object")
        unknown = set(data) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        return cls(**data)

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def applies_to(self, target: FaultTarget) -> bool:
        return (
            self.endpoint == target.endpoint
            and (self.page is None or self.page == target.page_number)
            and (self.request is None or self.request == target.request_number)
            and (self.kind not in _LAST_PAGE_FAULTS or target.is_last_page)
            and (self.kind not in _ITEM_FAULTS or self.item_index < target.items_on_page)
        )


@dataclass(frozen=True)
class FaultTarget:
    """The request a fault may fire on."""

    endpoint: str
    request_number: int
    page_number: int
    is_last_page: bool
    items_on_page: int


class FaultBook:
    """The armed faults, thread-safe; each keeps its own copy and counts down its ``times``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._armed.append(dataclasses.replace(fault))

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def armed(self) -> list[Fault]:
        """Copies of the faults still armed, ``times`` = firings left."""
        with self._lock:
            return [dataclasses.replace(fault) for fault in self._armed]

    def take(self, target: FaultTarget) -> Fault | None:
        """The first armed fault that applies to ``target``, counting one firing."""
        with self._lock:
            for fault in self._armed:
                if fault.applies_to(target):
                    fired = dataclasses.replace(fault)
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times == 0:
                            self._armed.remove(fault)
                    return fired
        return None


@dataclass(frozen=True)
class Page:
    """A healthy page, plus what the faults need to bend it."""

    page_number: int
    items: list[object]
    next_token: str | None
    account_head: list[object]  # the account's first item (empty for an empty account)
    token_for_page: Callable[[int], str]
    unknown_currency: str
    action: str

    def body(self) -> dict[str, object]:
        return {"Items": self.items} | ({"PageToken": self.next_token} if self.next_token is not None else {})


def respond(page: Page, fault: Fault | None) -> Response:
    """The response to a valid balances request, with ``fault`` (if any) applied."""
    if fault is None:
        return json_response(200, page.body())
    status = fault.status if fault.status is not None else _DEFAULT_STATUS.get(fault.kind, 200)
    match fault.kind:
        case FaultKind.STATUS:
            detail = fault.detail or f"Injected fault: HTTP {status}"
            return error_response(status, fault.error_type, detail, page.action)
        case FaultKind.RATE_LIMIT:
            headers = (("Retry-After", fault.retry_after),) if fault.retry_after is not None else ()
            return error_response(429, fault.error_type, fault.detail or "Too many requests", page.action, headers)
        case FaultKind.NON_JSON_ERROR:
            return html_response(status, f"{status} Bad Gateway" if status == 502 else f"{status} Error")
        case FaultKind.NON_JSON_200:
            return html_response(200, "Service maintenance")
        case FaultKind.SLOW:
            return dataclasses.replace(json_response(200, page.body()), delay_seconds=fault.delay_seconds)
        case FaultKind.DROP_CONNECTION:
            whole = json_response(200, page.body())
            return dataclasses.replace(whole, send_bytes=len(whole.body) // 2)
        case FaultKind.TRUNCATED_JSON:
            body = encode_json(page.body())
            return Response(200, body[: len(body) // 2])
        case FaultKind.MISSING_ITEMS:
            return json_response(200, {key: value for key, value in page.body().items() if key != "Items"})
        case FaultKind.ZERO_ITEMS:
            return json_response(200, {"Items": []})
        case FaultKind.DUPLICATE_ITEM:
            return json_response(200, {**page.body(), "Items": page.items + page.account_head})
        case FaultKind.TOKEN_CYCLE | FaultKind.EMPTY_TOKEN_END | FaultKind.NULL_TOKEN_END:
            return json_response(200, {"Items": page.items, "PageToken": _bent_token(page, fault)})
        case _:
            return json_response(200, {**page.body(), "Items": _bend_item(page, fault)})


def _bent_token(page: Page, fault: Fault) -> str | None:
    if fault.kind == FaultKind.TOKEN_CYCLE:
        return page.token_for_page(fault.cycle_to_page or page.page_number)
    return "" if fault.kind == FaultKind.EMPTY_TOKEN_END else None


def _bend_item(page: Page, fault: Fault) -> list[object]:
    """The page's items with item ``item_index`` altered by an item fault (non-objects stay as they are)."""
    items = list(page.items)
    item = items[fault.item_index]
    if not isinstance(item, dict):
        return items
    bent = dict(item)
    if fault.kind == FaultKind.MISSING_FIELD:
        bent.pop(fault.field, None)
    elif fault.kind == FaultKind.WRONG_TYPE:
        bent[fault.field] = fault.value
    elif fault.kind == FaultKind.INVALID_AMOUNT:
        bent[fault.field] = DEFAULT_INVALID_AMOUNT if fault.value is None else fault.value
    else:  # UNKNOWN_CURRENCY
        bent["CryptoCurrency"] = page.unknown_currency if fault.value is None else fault.value
    items[fault.item_index] = bent
    return items
