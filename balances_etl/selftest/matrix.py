"""The fault matrix: every scenario of ``balances-etl selftest`` and ``tests/test_fault_matrix.py``.

``SCENARIOS`` is the one definition: a fault, the endpoint and page it strikes, what a user must then
see. Every fault that can strike a list endpoint strikes ``/v1/balances`` and ``/v1/transactions``
alike (the same rows, configured per endpoint by ``_Fields``); the warnings are the balances' own.
Each scenario runs for its own day (``scenario_day``), after the installation loaded an earlier
day (``anchor_day``) that must stay untouched.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from balances_etl.domain.names import Check
from balances_etl.emulator import Fault, FaultKind, NoahSandbox
from balances_etl.emulator.dataset import documented_currencies, unknown_currency_code
from balances_etl.noah.client import RETRY_AFTER_MINIMUM_SECONDS
from balances_etl.selftest.endpoints import BALANCES, ENDPOINTS, TRANSACTIONS, MatrixEndpoint

# The account every scenario reads: the three documented sandbox currencies and three transactions,
# one per page, so each endpoint has a first, a middle and a last page and a healthy day raises no
# warning at all.
PAGE_SIZE = 1
ITEM_COUNT = 3
FIRST, MIDDLE, LAST = 1, 2, 3
WHERE = {FIRST: "first page", MIDDLE: "middle page", LAST: "last page"}
MAX_ATTEMPTS = 3
READ_TIMEOUT_SECONDS = 0.25
SLOW_SECONDS = 1.0
# Small retry settings so the matrix is fast; the Retry-After scenarios still wait for real.
MATRIX_ENV: dict[str, str] = {
    "NOAH_PAGE_SIZE": str(PAGE_SIZE),
    "NOAH_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    "NOAH_BACKOFF_BASE_SECONDS": "0.01",
    "NOAH_BACKOFF_MAX_SECONDS": "0.05",
    "NOAH_CONNECT_TIMEOUT_SECONDS": "5",
    "NOAH_READ_TIMEOUT_SECONDS": "10",
}
_TIMEOUT_ENV = (("NOAH_READ_TIMEOUT_SECONDS", str(READ_TIMEOUT_SECONDS)),)


class Expect(StrEnum):
    RECOVERED = "recovered"
    FAILED_CLEANLY = "failed cleanly"


Items = list[dict[str, object]]


@dataclass(frozen=True)
class Scenario:
    """One row of the matrix: a fault, where it strikes, and what a user must then see."""

    key: str  # stable id (pytest id, --only)
    fault: str  # what goes wrong, in words
    where: str  # first / middle / last page
    expect: Expect
    page: int  # the page the fault strikes
    endpoint: str = BALANCES.name  # the list endpoint it strikes (``selftest.endpoints``)
    faults: tuple[Fault, ...] = ()
    # Substrings the error must contain: the cause, named.
    mentions: tuple[str, ...] = ()
    # Non-blocking checks of the Parquet asset that must warn (and only these).
    warnings: frozenset[str] = frozenset()
    # How the fault changes what NOAH serves (items in order); None: what the account holds.
    serves: Callable[[Items], Items] | None = None
    # Requests for the faulted page in the faulted run (None: not judged).
    attempts: int | None = None
    # The retry must reach NOAH at least this long after the faulted answer.
    retry_gap_seconds: float | None = None
    # Retry-After is an HTTP date this many seconds ahead; the retry must not come before it.
    retry_after_date_in: int | None = None
    # Forget every page token after answering this page (the next request carries an unknown token).
    expire_tokens_after_page: int | None = None
    env: tuple[tuple[str, str], ...] = ()
    core: bool = False  # part of the default test suite (the rest is marked slow)

    @property
    def target(self) -> MatrixEndpoint:
        return ENDPOINTS[self.endpoint]

    @property
    def expected(self) -> str:
        if self.warnings:
            return f"recovered, warns {', '.join(sorted(self.warnings))}"
        return self.expect.value


def _replace_item(page: int, **changes: object) -> Callable[[Items], Items]:
    """NOAH serves the first item of ``page`` with ``changes`` applied."""

    def serves(items: Items) -> Items:
        index = (page - 1) * PAGE_SIZE
        return [{**item, **changes} if position == index else item for position, item in enumerate(items)]

    return serves


def _no_items(_items: Items) -> Items:
    return []


@dataclass(frozen=True)
class _Fields:
    """What the same faults bend on one endpoint: fields its items require, what its errors name."""

    endpoint: MatrixEndpoint
    required: str  # the field an item goes without
    wrong_type: dict[int, tuple[str, object, str]]  # per page: field, the JSON value, its JSON type
    amount: str  # the amount that fails the pattern
    wide_amount: str  # the amount of 39 characters
    disabled: str  # a 403's Detail
    duplicate_mentions: tuple[str, ...]  # what the error names when an item repeats on a later page
    core: frozenset[str] | None  # the faults in the default suite's core (None: every one's core_at)
    warnings: bool  # the rows whose whole point is a warning of this endpoint's checks


_BALANCE_FIELDS = _Fields(
    BALANCES, "Total", {FIRST: ("Available", 12.5, "number"), MIDDLE: ("Total", None, "null"), LAST: ("CryptoCurrency", 7, "number")},
    "Available", "Total", "Balances are disabled for this key", (Check.KEYS_UNIQUE, "nothing was published", "BTC_TEST"),
    None, True,
)
# The transactions core: one fault of each family, so `make test` proves the per-endpoint wiring.
_TRANSACTION_FIELDS = _Fields(
    TRANSACTIONS, "Status", {FIRST: ("Amount", 12.5, "number"), MIDDLE: ("Created", None, "null"), LAST: ("ID", 7, "number")},
    "Amount", "Amount", "Transactions are disabled for this key",
    (Check.TRANSACTION_IDS_UNIQUE, "nothing was published"),
    frozenset({"429-retry-after-seconds", "http-502-persistent", "connection-dropped-once", "truncated-json-persistent",
               "item-missing-field", "token-cycle", "http-401", "duplicate-key-across-pages"}),
    False,
)


def _matrix() -> tuple[Scenario, ...]:
    rows = [row for fields in (_BALANCE_FIELDS, _TRANSACTION_FIELDS) for row in _endpoint_rows(fields)]
    keys = [row.key for row in rows]
    duplicated = [key for key, count in Counter(keys).items() if count > 1]
    if duplicated:
        raise AssertionError(f"duplicate scenario keys: {duplicated}")
    return tuple(rows)


def _endpoint_rows(fields: _Fields) -> list[Scenario]:
    """Every scenario striking ``fields.endpoint``; the balances' keep their historical keys."""
    rows: list[Scenario] = []
    recovered, failed = Expect.RECOVERED, Expect.FAILED_CLEANLY
    once, persistent = 1, None
    name = fields.endpoint.name
    prefix = "" if fields.endpoint is BALANCES else f"{name}/"

    # core_at: the page at which this fault is part of the default suite's representative core (None: never).
    def at(page: int, key: str, fault: str, expect: Expect, core_at: int | None, *,
           faults: tuple[Fault, ...] = (), **details: object) -> None:
        rows.append(
            Scenario(
                key=f"{prefix}{key}@{WHERE[page].split()[0]}",
                fault=fault,
                where=WHERE[page],
                expect=expect,
                page=page,
                endpoint=name,
                faults=tuple(dataclasses.replace(f, endpoint=name) for f in faults),
                core=page == core_at and (fields.core is None or key in fields.core),
                **details,  # type: ignore[arg-type]
            )
        )

    gave_up = ("gave up after 3 attempts",)
    for page in (FIRST, MIDDLE, LAST):
        # 429 Too Many Requests
        at(page, "429-retry-after-seconds", "429, Retry-After: 1 (seconds)", recovered, MIDDLE,
           faults=(Fault(FaultKind.RATE_LIMIT, page=page, retry_after="1"),), attempts=2, retry_gap_seconds=1.0)
        at(page, "429-retry-after-http-date", "429, Retry-After: an HTTP date (seconds ahead)", recovered, FIRST,
           faults=(Fault(FaultKind.RATE_LIMIT, page=page),), attempts=2, retry_after_date_in=2)
        at(page, "429-retry-after-zero", "429, Retry-After: 0", recovered, None,
           faults=(Fault(FaultKind.RATE_LIMIT, page=page, retry_after="0"),), attempts=2,
           retry_gap_seconds=RETRY_AFTER_MINIMUM_SECONDS)
        at(page, "429-retry-after-above-cap", "429, Retry-After: 999 (above the 300 s cap)", failed, MIDDLE,
           faults=(Fault(FaultKind.RATE_LIMIT, page=page, retry_after="999"),), attempts=1,
           mentions=("429", "more than the cap", "NOAH_RETRY_AFTER_CAP_SECONDS"))
        # 5xx, once (recovered) and on every attempt (failed)
        for status, core_once, core_persistent in ((500, FIRST, None), (502, None, LAST), (503, LAST, None), (504, None, FIRST)):
            at(page, f"http-{status}-once", f"HTTP {status} once", recovered, core_once,
               faults=(Fault(FaultKind.STATUS, page=page, status=status, times=once),), attempts=2)
            at(page, f"http-{status}-persistent", f"HTTP {status} on every attempt", failed, core_persistent,
               faults=(Fault(FaultKind.STATUS, page=page, status=status, times=persistent),), attempts=MAX_ATTEMPTS,
               mentions=(*gave_up, f"HTTP {status}", "Instance"))
        # transport
        at(page, "connection-dropped-once", "connection dropped mid-body, once", recovered, MIDDLE,
           faults=(Fault(FaultKind.DROP_CONNECTION, page=page, times=once),), attempts=2)
        at(page, "connection-dropped-persistent", "connection dropped mid-body, every attempt", failed, None,
           faults=(Fault(FaultKind.DROP_CONNECTION, page=page, times=persistent),), attempts=MAX_ATTEMPTS,
           mentions=(*gave_up, "connection dropped while reading the body"))
        at(page, "read-timeout-once", f"read timeout ({SLOW_SECONDS:g} s answer, {READ_TIMEOUT_SECONDS:g} s timeout), once",
           recovered, FIRST, faults=(Fault(FaultKind.SLOW, page=page, delay_seconds=SLOW_SECONDS, times=once),),
           attempts=2, env=_TIMEOUT_ENV)
        at(page, "read-timeout-persistent", "read timeout, every attempt", failed, None,
           faults=(Fault(FaultKind.SLOW, page=page, delay_seconds=SLOW_SECONDS, times=persistent),),
           attempts=MAX_ATTEMPTS, env=_TIMEOUT_ENV, mentions=(*gave_up, f"read timed out after {READ_TIMEOUT_SECONDS:g} s"))
        # broken 200 bodies
        at(page, "truncated-json-once", "truncated JSON (200), once", recovered, None,
           faults=(Fault(FaultKind.TRUNCATED_JSON, page=page, times=once),), attempts=2)
        at(page, "truncated-json-persistent", "truncated JSON (200), every attempt", failed, MIDDLE,
           faults=(Fault(FaultKind.TRUNCATED_JSON, page=page, times=persistent),), attempts=MAX_ATTEMPTS,
           mentions=(f"page {page} is not valid JSON after 3 attempts", "first bytes"))
        at(page, "non-json-200-once", "HTML instead of JSON (200), once", recovered, MIDDLE,
           faults=(Fault(FaultKind.NON_JSON_200, page=page, times=once),), attempts=2)
        at(page, "non-json-200-persistent", "HTML instead of JSON (200), every attempt", failed, None,
           faults=(Fault(FaultKind.NON_JSON_200, page=page, times=persistent),), attempts=MAX_ATTEMPTS,
           mentions=(f"page {page} is not valid JSON after 3 attempts", "Service maintenance"))
        # pages that parse but break GetBalancesResponse: bad data, never retried
        at(page, "items-missing", 'page without "Items"', failed, LAST,
           faults=(Fault(FaultKind.MISSING_ITEMS, page=page),), attempts=1,
           mentions=(f"NOAH page {page} field Items: required field is missing",))
        at(page, "item-missing-field", f"an item without {fields.required}", failed, MIDDLE,
           faults=(Fault(FaultKind.MISSING_FIELD, page=page, field=fields.required),), attempts=1,
           mentions=(f"NOAH page {page} item 0 field {fields.required}: required field is missing",))
        wrong_type = fields.wrong_type[page]
        at(page, "wrong-type", f"{wrong_type[0]} is a JSON {wrong_type[2]}", failed, FIRST,
           faults=(Fault(FaultKind.WRONG_TYPE, page=page, field=wrong_type[0], value=wrong_type[1]),), attempts=1,
           mentions=(f"NOAH page {page} item 0 field {wrong_type[0]}: expected a string, got {wrong_type[2]}",))
        bad_amount = {FIRST: "1e3", MIDDLE: "-1.5", LAST: "\u0661\u0662\u0663"}[page]
        at(page, "amount-off-pattern", f"amount {bad_amount!r} (fails the pattern)", failed, MIDDLE,
           faults=(Fault(FaultKind.INVALID_AMOUNT, page=page, field=fields.amount, value=bad_amount),), attempts=1,
           mentions=(f"NOAH page {page} item 0 field {fields.amount}", "does not match the PositiveDecimal pattern"))
        at(page, "amount-39-characters", "amount of 39 characters", failed, LAST,
           faults=(Fault(FaultKind.INVALID_AMOUNT, page=page, field=fields.wide_amount, value="1" * 20 + "." + "1" * 18),),
           attempts=1, mentions=(f"NOAH page {page} item 0 field {fields.wide_amount}: 39 characters, more than 38",))
        at(page, "token-cycle", "PageToken leads back to this page", failed, MIDDLE,
           faults=(Fault(FaultKind.TOKEN_CYCLE, page=page, times=persistent),), mentions=("token cycle",))
        at(page, "http-401", "401 with a NOAH error body", failed, FIRST,
           faults=(Fault(FaultKind.STATUS, page=page, status=401, error_type="Unauthorized", detail="Invalid signature"),),
           attempts=1, mentions=("HTTP 401 Unauthorized", "Invalid signature", "Instance"))
        at(page, "http-403", "403 with a NOAH error body", failed, MIDDLE,
           faults=(Fault(FaultKind.STATUS, page=page, status=403, error_type="Forbidden", detail=fields.disabled),),
           attempts=1, mentions=("HTTP 403 Forbidden", fields.disabled, "Instance"))
        if fields.warnings:
            at(page, "unknown-currency", "an unknown currency code", recovered, LAST,
               faults=(Fault(FaultKind.UNKNOWN_CURRENCY, page=page),), attempts=1,
               serves=_replace_item(page, CryptoCurrency=unknown_currency_code("sandbox")),
               warnings=frozenset({Check.UNKNOWN_CURRENCY}))
        at(page, "non-json-error-once", "502 with an HTML body (a proxy), once", recovered, None,
           faults=(Fault(FaultKind.NON_JSON_ERROR, page=page, times=once),), attempts=2)
        at(page, "non-json-error-persistent", "502 with an HTML body, every attempt", failed, LAST,
           faults=(Fault(FaultKind.NON_JSON_ERROR, page=page, times=persistent),), attempts=MAX_ATTEMPTS,
           mentions=(*gave_up, "HTTP 502", "body is not a NOAH error", "Bad Gateway"))
        at(page, "non-json-403", "403 with an HTML body (a WAF)", failed, MIDDLE,
           faults=(Fault(FaultKind.NON_JSON_ERROR, page=page, status=403),), attempts=1,
           mentions=("HTTP 403 Forbidden", "body is not a NOAH error"))
        if page != FIRST:  # the first page is asked for without a token
            at(page, "duplicate-key-across-pages", "an item repeated on a later page", failed, LAST,
               faults=(Fault(FaultKind.DUPLICATE_ITEM, page=page),), attempts=1,
               mentions=fields.duplicate_mentions)
            at(page, "unknown-page-token", "unknown PageToken (400 from NOAH)", failed, MIDDLE,
               expire_tokens_after_page=page - 1, attempts=1,
               mentions=("HTTP 400", "PageToken is not a token this API issued"))
    for kind, label in ((FaultKind.EMPTY_TOKEN_END, '"PageToken": ""'), (FaultKind.NULL_TOKEN_END, '"PageToken": null')):
        at(LAST, f"token-end-{kind.value.split('_')[0].lower()}", f"the last page says {label}", recovered,
           LAST if kind is FaultKind.EMPTY_TOKEN_END else None,
           faults=(Fault(kind, page=LAST),), attempts=1)
    if fields.warnings:
        at(FIRST, "zero-items", "no balances at all (Items: [])", recovered, FIRST,
           faults=(Fault(FaultKind.ZERO_ITEMS, page=FIRST),), attempts=1, serves=_no_items,
           warnings=frozenset({Check.ZERO_ITEMS}))
        at(MIDDLE, "amount-38-characters", "amount of 38 characters (the limit; too wide for DECIMAL)", recovered, MIDDLE,
           faults=(Fault(FaultKind.INVALID_AMOUNT, page=MIDDLE, field="Total", value="9" * 38),), attempts=1,
           serves=_replace_item(MIDDLE, Total="9" * 38), warnings=frozenset({Check.AMOUNT_TOO_WIDE}))
    return rows


SCENARIOS: tuple[Scenario, ...] = _matrix()
CORE_SCENARIOS: tuple[Scenario, ...] = tuple(s for s in SCENARIOS if s.core)


def scenario_day(scenario: Scenario, today: dt.date | None = None) -> dt.date:
    """The day a scenario runs for: its own, two days apart from every other one.

    The gap keeps the previous calendar day unloaded, so ``currency_disappeared`` never depends on
    which scenarios ran before (pytest-xdist splits them between workers).
    """
    return anchor_day(today) - dt.timedelta(days=2 * (SCENARIOS.index(scenario) + 1))


_TODAY = dt.datetime.now(dt.UTC).date()  # fixed per process: a run crossing midnight keeps its days


def anchor_day(today: dt.date | None = None) -> dt.date:
    """The earlier day every installation loads first; scenarios must leave it untouched."""
    return (today or _TODAY) - dt.timedelta(days=2)


def day_transactions(day: dt.date) -> Items:
    """Three transactions created during ``day``, oldest first, one per page: an In, an Out with a
    fee, a Pending Out. Their IDs are the day's own, so no day's sync can see another's."""
    codes = documented_currencies("sandbox")
    shapes = (("Settled", "In", "0.5", None, "BitcoinTest"),
              ("Settled", "Out", "1.250000000000000000", "0.000021", "EthereumTestSepolia"),
              ("Pending", "Out", "100.000001", None, "EthereumTestSepolia"))
    items: Items = []
    for number, (code, (status, direction, amount, fee, network)) in enumerate(zip(codes, shapes, strict=True)):
        item: dict[str, object] = {
            "ID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"balances-etl-selftest:{day}:{number}")),
            "Created": f"{day}T{6 + 6 * number:02d}:00:00.000Z", "Status": status, "Direction": direction,
            "CryptoCurrency": code, "Amount": amount, "Network": network, "PublicID": f"pub-{day}-{number}",
        }
        items.append(item | ({"NetworkFee": fee} if fee else {}))
    return items


def prepare_account(sandbox: NoahSandbox, day: dt.date) -> dict[str, Items]:
    """Serve the account for ``day``: its documented currencies with that day's amounts and the day's
    transactions; returns the items by endpoint, as NOAH lists them.

    The emulator adds a ``SOL_TEST`` balance to small accounts every other fortnight; holding the
    items verbatim keeps every scenario's account the same three documented currencies.
    """
    sandbox.configure(simulated_date=day, items=None)
    items = sandbox.expected_items()[:ITEM_COUNT]
    transactions = day_transactions(day)
    sandbox.configure(items=items, transaction_items=transactions)
    return {BALANCES.name: items, TRANSACTIONS.name: transactions[::-1]}  # type: ignore[dict-item]


def taken_after(day: dt.date, minutes: int = 10) -> dt.datetime:
    """A snapshot time shortly after ``day`` ended."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC) + dt.timedelta(minutes=minutes)


def select(scenarios: Sequence[Scenario], core_only: bool, only: Sequence[str]) -> list[Scenario]:
    chosen = [s for s in scenarios if not core_only or s.core]
    if only:
        unknown = sorted(set(only) - {s.key for s in scenarios})
        if unknown:
            raise ValueError(f"unknown scenario keys: {', '.join(unknown)}")
        chosen = [s for s in chosen if s.key in only]
    return chosen

