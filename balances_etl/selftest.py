"""`balances-etl selftest`: the fault matrix, run end to end, printed as a table a user can read.

Every scenario runs the real daily job (Dagster run, the embedded NOAH emulator over HTTP with
ES384-signed requests, Parquet, DuckDB, views) for its own day with one fault injected, and is
judged by what a user would see afterwards:

* **recovered**: the run succeeded and the day holds exactly the rows NOAH served, every raw and
  canonical string and every DECIMAL(38,18) compared one by one (warnings only where expected);
* **failed cleanly**: the run failed with an error naming the cause, nothing was published for the
  day (no Parquet partition, no warehouse rows), and a re-run after the fault cleared recovered
  the day exactly.

For both, every other day already loaded must be untouched (Parquet bytes and warehouse rows), and
nothing the pipeline wrote (data directory, Dagster home with its sqlite run and event storage and
compute logs, Dagster events and metadata, captured output and logs, error messages) may contain
the API key, the private signing key or any JWT.

``SCENARIOS`` is the one definition of the matrix: ``tests/test_fault_matrix.py`` runs it with
pytest, ``balances-etl selftest`` runs it for people and writes ``docs/reliability.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import email.utils
import io
import logging
import math
import os
import platform
import re
import secrets as secrets_module
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import dagster as dg

from balances_etl.domain.amounts import canonical_amount, fits_decimal_38_18
from balances_etl.emulator import Fault, FaultKind, NoahSandbox, RecordedRequest, generate_signing_keypair
from balances_etl.emulator.dataset import unknown_currency_code
from balances_etl.domain.names import BalancesAsset, Check, Table
from balances_etl.orchestration.runner import RunOutcome, run_daily_job
from balances_etl.settings import DAGSTER_YAML_TEMPLATE, temporary_environment


# The account every scenario reads: the three documented sandbox currencies, one per page, so there is
# a first, a middle and a last page and a healthy day raises no warning at all.
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
RETRY_AFTER_MINIMUM_SECONDS = 0.05  # the client's floor for "Retry-After: 0" (noah.client)


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


def _matrix() -> tuple[Scenario, ...]:
    rows: list[Scenario] = []
    recovered, failed = Expect.RECOVERED, Expect.FAILED_CLEANLY
    once, persistent = 1, None

    # core_at: the page at which this fault is part of the default suite's representative core (None: never).
    def at(page: int, key: str, fault: str, expect: Expect, core_at: int | None, **details: object) -> None:
        rows.append(
            Scenario(
                key=f"{key}@{WHERE[page].split()[0]}",
                fault=fault,
                where=WHERE[page],
                expect=expect,
                page=page,
                core=page == core_at,
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
        at(page, "item-missing-field", "an item without Total", failed, MIDDLE,
           faults=(Fault(FaultKind.MISSING_FIELD, page=page, field="Total"),), attempts=1,
           mentions=(f"NOAH page {page} item 0 field Total: required field is missing",))
        wrong_type = {FIRST: ("Available", 12.5, "number"), MIDDLE: ("Total", None, "null"), LAST: ("CryptoCurrency", 7, "number")}[page]
        at(page, "wrong-type", f"{wrong_type[0]} is a JSON {wrong_type[2]}", failed, FIRST,
           faults=(Fault(FaultKind.WRONG_TYPE, page=page, field=wrong_type[0], value=wrong_type[1]),), attempts=1,
           mentions=(f"NOAH page {page} item 0 field {wrong_type[0]}: expected a string, got {wrong_type[2]}",))
        bad_amount = {FIRST: "1e3", MIDDLE: "-1.5", LAST: "\u0661\u0662\u0663"}[page]
        at(page, "amount-off-pattern", f"amount {bad_amount!r} (fails the pattern)", failed, MIDDLE,
           faults=(Fault(FaultKind.INVALID_AMOUNT, page=page, field="Available", value=bad_amount),), attempts=1,
           mentions=(f"NOAH page {page} item 0 field Available", "does not match the PositiveDecimal pattern"))
        at(page, "amount-39-characters", "amount of 39 characters", failed, LAST,
           faults=(Fault(FaultKind.INVALID_AMOUNT, page=page, field="Total", value="1" * 20 + "." + "1" * 18),),
           attempts=1, mentions=(f"NOAH page {page} item 0 field Total: 39 characters, more than 38",))
        at(page, "token-cycle", "PageToken leads back to this page", failed, MIDDLE,
           faults=(Fault(FaultKind.TOKEN_CYCLE, page=page, times=persistent),), mentions=("token cycle",))
        at(page, "http-401", "401 with a NOAH error body", failed, FIRST,
           faults=(Fault(FaultKind.STATUS, page=page, status=401, error_type="Unauthorized", detail="Invalid signature"),),
           attempts=1, mentions=("HTTP 401 Unauthorized", "Invalid signature", "Instance"))
        at(page, "http-403", "403 with a NOAH error body", failed, MIDDLE,
           faults=(Fault(FaultKind.STATUS, page=page, status=403, error_type="Forbidden", detail="Balances are disabled for this key"),),
           attempts=1, mentions=("HTTP 403 Forbidden", "Balances are disabled for this key", "Instance"))
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
               mentions=(Check.KEYS_UNIQUE, "nothing was published", "BTC_TEST"))
            at(page, "unknown-page-token", "unknown PageToken (400 from NOAH)", failed, MIDDLE,
               expire_tokens_after_page=page - 1, attempts=1,
               mentions=("HTTP 400", "PageToken is not a token this API issued"))
    at(FIRST, "zero-items", "no balances at all (Items: [])", recovered, FIRST,
       faults=(Fault(FaultKind.ZERO_ITEMS, page=FIRST),), attempts=1, serves=_no_items,
       warnings=frozenset({Check.ZERO_ITEMS}))
    for kind, label in ((FaultKind.EMPTY_TOKEN_END, '"PageToken": ""'), (FaultKind.NULL_TOKEN_END, '"PageToken": null')):
        at(LAST, f"token-end-{kind.value.split('_')[0].lower()}", f"the last page says {label}", recovered,
           LAST if kind is FaultKind.EMPTY_TOKEN_END else None,
           faults=(Fault(kind, page=LAST),), attempts=1)
    at(MIDDLE, "amount-38-characters", "amount of 38 characters (the limit; too wide for DECIMAL)", recovered, MIDDLE,
       faults=(Fault(FaultKind.INVALID_AMOUNT, page=MIDDLE, field="Total", value="9" * 38),), attempts=1,
       serves=_replace_item(MIDDLE, Total="9" * 38), warnings=frozenset({Check.AMOUNT_TOO_WIDE}))
    keys = [row.key for row in rows]
    duplicated = [key for key, count in Counter(keys).items() if count > 1]
    if duplicated:
        raise AssertionError(f"duplicate scenario keys: {duplicated}")
    return tuple(rows)


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


def prepare_account(sandbox: NoahSandbox, day: dt.date) -> Items:
    """Serve the account for ``day``: its documented currencies with that day's amounts; returns the items.

    The emulator adds a ``SOL_TEST`` balance to small accounts every other fortnight; holding the
    items verbatim keeps every scenario's account the same three documented currencies.
    """
    sandbox.configure(simulated_date=day, items=None)
    items = sandbox.expected_items()[:ITEM_COUNT]
    sandbox.configure(items=items)
    return items  # type: ignore[return-value]


def taken_after(day: dt.date, minutes: int = 10) -> dt.datetime:
    """A snapshot time shortly after ``day`` ended."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC) + dt.timedelta(minutes=minutes)


# --- the emulator, also keeping what its own log leaves out on purpose -----------------------


@dataclass(frozen=True)
class WireRecord:
    """One ``/v1`` request: when it was answered (server clock), its exact Api-Signature, the log entry."""

    at: float
    signature: str | None
    request: RecordedRequest

    @property
    def page(self) -> int | None:
        return self.request.page_number


class RecordingSandbox(NoahSandbox):
    """The NOAH emulator plus a wire log: answer times and the exact JWTs, for the scans and the matrix.

    The emulator's own request log stores only a hash of each token (it is a credential); the
    secret scans need the tokens themselves to search for them.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._wire_lock = threading.Lock()
        self._wire: list[WireRecord] = []
        self._signatures: list[str] = []
        self._expire_after_page: int | None = None

    def expire_tokens_after_page(self, page: int | None) -> None:
        """Once page ``page`` has been answered, forget every token issued so far.

        As after a NOAH deploy that rotated its token key: the next request's PageToken is then
        one "this API" never issued, and the emulator answers it with its real 400.
        """
        with self._wire_lock:
            self._expire_after_page = page

    @property
    def wire(self) -> list[WireRecord]:
        with self._wire_lock:
            return list(self._wire)

    @property
    def signatures(self) -> list[str]:
        """Every Api-Signature ever received (not cleared by ``reset_wire``)."""
        with self._wire_lock:
            return list(self._signatures)

    def reset_wire(self) -> None:
        with self._wire_lock:
            self._wire.clear()

    def _answer_api(self, method: str, target: str, headers: object) -> object:  # type: ignore[override]
        signature = headers.get("Api-Signature")  # type: ignore[attr-defined]
        with self._wire_lock:  # one answer at a time, so the last log entry is this request's
            response = super()._answer_api(method, target, headers)  # type: ignore[arg-type]
            record = self.requests[-1]
            expire = self._expire_after_page
            if expire is not None and record.page_number == expire and record.status == 200:
                self._tokens = type(self._tokens)()  # a new HMAC key: every issued token is now unknown
                self._expire_after_page = None
            self._wire.append(WireRecord(time.time(), signature, record))
            if signature:
                self._signatures.append(signature)
        return response


# --- scanning for secrets ---------------------------------------------------------------------

JWT_PATTERN = re.compile(rb"eyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.")
_MIN_NEEDLE = 16  # shorter fragments of a PEM (its last line) could match by chance


@dataclass(frozen=True)
class SecretHit:
    secret: str  # which secret, never the secret itself
    where: str

    def __str__(self) -> str:
        return f"{self.secret} in {self.where}"


def private_key_needles(private_pem: bytes) -> dict[bytes, str]:
    """The private key as it could leak: the PEM, each base64 line, the body joined, the scalar."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    text = private_pem.decode()
    lines = [line for line in text.splitlines() if line and not line.startswith("-----")]
    needles = {text.strip().encode(): "private key PEM", "".join(lines).encode(): "private key (base64 body)"}
    for number, line in enumerate(lines, start=1):
        if len(line) >= _MIN_NEEDLE:
            needles[line.encode()] = f"private key (PEM line {number})"
    scalar = load_pem_private_key(private_pem, password=None).private_numbers().private_value  # type: ignore[union-attr]
    needles[str(scalar).encode()] = "private key (scalar, decimal)"
    needles[f"{scalar:x}".encode()] = "private key (scalar, hex)"
    return needles


def token_needles(tokens: Iterable[str]) -> dict[bytes, str]:
    """Each JWT, its signature segment and a window inside it: a partial leak is still a leak."""
    needles: dict[bytes, str] = {}
    for token in tokens:
        signature = token.rsplit(".", 1)[-1]
        needles[token.encode()] = "a JWT sent as Api-Signature"
        if len(signature) >= _MIN_NEEDLE:
            needles[signature.encode()] = "a JWT's signature segment"
            needles[signature[8:40].encode()] = "part of a JWT's signature"
    return needles


class SecretScanner:
    """Searches what the pipeline wrote for the API key, the private key and JWTs.

    Files are scanned when new or changed since the last scan (sqlite databases and their WALs,
    compute logs, Parquet, DuckDB, raw pages, manifests: every byte, no decoding needed since
    all of them store text as UTF-8); Dagster runs are also read back through the instance
    (every event with its metadata, the run's config and tags), so compression or encoding in
    storage cannot hide anything.
    """

    def __init__(self, roots: Sequence[Path], api_key: str, private_pem: bytes) -> None:
        self.roots = [Path(root) for root in roots]
        self.static: dict[bytes, str] = {api_key.encode(): "API key", **private_key_needles(private_pem)}
        self._seen: dict[Path, tuple[int, int]] = {}

    def scan(
        self,
        *,
        tokens: Iterable[str] = (),
        texts: Mapping[str, str | None] | None = None,
        instance: dg.DagsterInstance | None = None,
        run_ids: Iterable[str] = (),
        changed_only: bool = True,
    ) -> list[SecretHit]:
        needles = {**self.static, **token_needles(tokens)}
        hits: list[SecretHit] = []
        for where, text in (texts or {}).items():
            if text:
                hits += _search(text.encode("utf-8", "replace"), needles, where)
        for path in self._files(changed_only):
            try:
                data = path.read_bytes()
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                continue
            hits += _search(data, needles, str(path))
        if instance is not None:
            for run_id in run_ids:
                hits += _search(_run_text(instance, run_id).encode("utf-8", "replace"), needles, f"Dagster run {run_id}")
        return hits

    def _files(self, changed_only: bool) -> list[Path]:
        files = []
        for root in self.roots:
            if not root.exists():
                continue
            for path in root.rglob("*"):
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                if not path.is_file():
                    continue
                signature = (stat.st_mtime_ns, stat.st_size)
                if changed_only and self._seen.get(path) == signature:
                    continue
                self._seen[path] = signature
                files.append(path)
        return files


def _search(data: bytes, needles: Mapping[bytes, str], where: str) -> list[SecretHit]:
    hits = [SecretHit(label, where) for needle, label in needles.items() if needle in data]
    if JWT_PATTERN.search(data):
        hits.append(SecretHit("JWT-shaped text (eyJ...eyJ...)", where))
    return list(dict.fromkeys(hits))


def _run_text(instance: dg.DagsterInstance, run_id: str) -> str:
    """Everything Dagster keeps about a run: its record (config, tags) and every event with metadata."""
    parts = []
    run = instance.get_run_by_id(run_id)
    if run is not None:
        parts.append(dg.serialize_value(run))
    for entry in instance.all_logs(run_id):
        parts.append(dg.serialize_value(entry))
    return "\n".join(parts)


# --- running one scenario ---------------------------------------------------------------------


class Installation(Protocol):
    """A pipeline wired to a temp data dir, a Dagster home and a RecordingSandbox.

    ``tests.pipeline_support.Pipeline`` and ``SelftestInstallation`` both fit.
    """

    sandbox: RecordingSandbox
    instance: dg.DagsterInstance

    @property
    def data_dir(self) -> Path: ...

    def run(self, day: dt.date) -> RunOutcome: ...


Row = tuple[object, ...]
_ROW_SQL = (
    f"SELECT snapshot_date, account_type, crypto_currency, available_raw, total_raw, available, total, "
    f"available_amount, total_amount FROM {Table.BALANCE_SNAPSHOTS} ORDER BY ALL"
)


def expected_row(day: dt.date, item: Mapping[str, object]) -> Row:
    """The warehouse row an item must become: raw strings as sent, canonical strings, exact DECIMALs."""
    available, total = canonical_amount(str(item["Available"])), canonical_amount(str(item["Total"]))
    return (
        day, item["AccountType"], item["CryptoCurrency"], item["Available"], item["Total"], available, total,
        Decimal(available) if fits_decimal_38_18(available) else None,
        Decimal(total) if fits_decimal_38_18(total) else None,
    )


def warehouse_rows(data_dir: Path) -> dict[dt.date, list[Row]]:
    """Every row of the published warehouse by day (empty before the first load)."""
    from balances_etl.storage.warehouse import connect_read_only, warehouse_path

    if not warehouse_path(data_dir).exists():
        return {}
    con = connect_read_only(data_dir)
    try:
        rows = con.execute(_ROW_SQL).fetchall()
    finally:
        con.close()
    by_day: dict[dt.date, list[Row]] = {}
    for row in rows:
        by_day.setdefault(row[0], []).append(tuple(row))
    return by_day


def parquet_rows(data_dir: Path, day: dt.date) -> list[Row] | None:
    """The day's Parquet partition in the same shape, or None when there is none."""
    import pyarrow.parquet as pq

    from balances_etl.storage.parquet import partition_path

    path = partition_path(data_dir, day)
    if not path.exists():
        return None
    columns = ["snapshot_date", "account_type", "crypto_currency", "available_raw", "total_raw", "available", "total",
               "available_amount", "total_amount"]
    table = pq.read_table(path, columns=columns).to_pydict()
    return sorted((tuple(values) for values in zip(*(table[c] for c in columns), strict=True)), key=_sort_key)


def parquet_digests(data_dir: Path) -> dict[str, str]:
    """sha256 of every published Parquet file, by path relative to the data dir."""
    import hashlib

    from balances_etl.storage.parquet import parquet_root

    root = parquet_root(data_dir)
    return {
        str(path.relative_to(data_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*.parquet"))
    } if root.exists() else {}


def _sort_key(row: Row) -> tuple[str, ...]:
    # The strings identify a row; DECIMALs compare by value (1.5 == 1.500000000000000000), not by text.
    return tuple("" if value is None else str(value) for value in row[:7])


def _multiset_missing(expected: Sequence[Row], actual: Sequence[Row]) -> int:
    return sum((Counter(expected) - Counter(actual)).values())


@contextlib.contextmanager
def captured_output() -> Iterator[io.StringIO]:
    """stdout, stderr and every log record (balances_etl at DEBUG) of what runs inside, as text."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root, package = logging.getLogger(), logging.getLogger("balances_etl")
    old_level = package.level
    root.addHandler(handler)
    package.setLevel(logging.DEBUG)
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield buffer
    finally:
        root.removeHandler(handler)
        package.setLevel(old_level)


@dataclass
class ScenarioResult:
    """What was observed; ``problems`` lists every way it differs from the scenario's expectation."""

    scenario: Scenario
    day: dt.date
    success: bool = False
    error: str | None = None
    warnings: frozenset[str] = frozenset()
    attempts: int = 0
    retry_gap_seconds: float | None = None
    retry_after_date: float | None = None  # the Retry-After HTTP date sent (epoch seconds), if any
    fault_fired: bool = False
    published_after_fault: int | None = None  # Parquet rows for the day right after the faulted run
    warehouse_after_fault: int = 0
    rerun_success: bool | None = None
    rerun_error: str | None = None
    rows_expected: int = 0
    rows_lost: int = 0
    rows_unexpected: int = 0
    other_days_changed: list[str] = field(default_factory=list)
    secrets: list[SecretHit] = field(default_factory=list)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def as_expected(self) -> bool:
        return not self.problems

    @property
    def cause(self) -> str:
        """The error, shortened for a table cell (the full text is in ``error``)."""
        return short_cause(self.error)

    @property
    def observed(self) -> str:
        if self.success:
            text = f"recovered: {self.rows_expected - self.rows_lost}/{self.rows_expected} rows exact"
            if self.attempts:
                text += f", {self.attempts} request{'s' if self.attempts != 1 else ''} for the page"
            if self.retry_gap_seconds is not None:
                text += f", retried after {self.retry_gap_seconds:.2f} s"
                if self.retry_after_date is not None:
                    text += " (not before the Retry-After date)"
            if self.warnings:
                text += f", warned {', '.join(sorted(self.warnings))}"
            return text
        text = f"failed: {self.cause}"
        if self.rerun_success is not None:
            text += f"; re-run {'recovered' if self.rerun_success else 'FAILED'} "
            text += f"{self.rows_expected - self.rows_lost}/{self.rows_expected} rows exact"
        return text


def short_cause(error: str | None, limit: int = 150) -> str:
    """An error message cut to what a table cell needs: the step name, request ids and budgets go."""
    lines = (error or "").strip().splitlines()
    if not lines:
        return ""
    text = re.sub(r"^[a-z_]+: ", "", lines[0])
    if text.startswith("Blocking checks failed") and len(lines) > 1:
        text = text.split(";")[0] + ": " + re.sub(r"^[a-z_]+: ", "", lines[1]).split(":")[0]
    text = re.sub(r" \(Type '[^']*'(, Action '[^']*')?(, Instance '[0-9a-f-]{36}')?\)", "", text)
    text = re.sub(r"(gave up after \d+ attempts) \(.*?\); last error: ", r"\1; last error: ", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_scenario(installation: Installation, scenario: Scenario, day: dt.date, scanner: SecretScanner) -> ScenarioResult:
    """Run ``scenario`` for ``day`` on ``installation`` and judge it; see the module docstring."""
    started = time.perf_counter()
    sandbox = installation.sandbox
    data_dir = installation.data_dir
    result = ScenarioResult(scenario, day)
    problems = result.problems

    sandbox.clear_faults()
    sandbox.expire_tokens_after_page(None)
    held = prepare_account(sandbox, day)
    served = scenario.serves(held) if scenario.serves else held
    before_rows = warehouse_rows(data_dir)
    before_parquet = parquet_digests(data_dir)
    if day in before_rows:
        problems.append(f"{day} was already loaded before the scenario ran")

    faults = list(scenario.faults)
    not_before = None
    if scenario.retry_after_date_in is not None:
        not_before = math.ceil(time.time()) + scenario.retry_after_date_in
        header = email.utils.formatdate(not_before, usegmt=True)
        faults = [dataclasses.replace(fault, retry_after=header) for fault in faults]
        result.retry_after_date = not_before
    sandbox.reset_wire()
    for fault in faults:
        sandbox.add_fault(fault)
    sandbox.expire_tokens_after_page(scenario.expire_tokens_after_page)

    texts: dict[str, str | None] = {}
    with temporary_environment({**MATRIX_ENV, **dict(scenario.env)}), captured_output() as output:
        outcome = installation.run(day)
    texts["output of the run"], texts["error of the run"] = output.getvalue(), outcome.error
    run_ids = [outcome.run_id]
    wire = sandbox.wire
    sandbox.clear_faults()
    sandbox.expire_tokens_after_page(None)

    result.success, result.error = outcome.success, outcome.error
    result.warnings = frozenset(c.name for c in outcome.checks if c.asset == BalancesAsset.PARTITION and not c.blocking and not c.passed)
    result.fault_fired = any(r.request.fault is not None or r.request.status != 200 for r in wire)
    result.attempts = sum(1 for r in wire if r.page == scenario.page or r.page is None)
    _judge_retry(result, scenario, wire, not_before)
    after_fault = parquet_rows(data_dir, day)
    result.published_after_fault = None if after_fault is None else len(after_fault)
    result.warehouse_after_fault = len(warehouse_rows(data_dir).get(day, []))
    if not result.fault_fired:
        problems.append("the fault never fired: the scenario tested nothing")
    if scenario.attempts is not None and result.attempts != scenario.attempts:
        problems.append(f"{result.attempts} requests for page {scenario.page}, expected {scenario.attempts}")

    if scenario.expect is Expect.RECOVERED:
        if not outcome.success:
            problems.append(f"expected recovery, the run failed: {result.cause}")
        if result.warnings != scenario.warnings:
            problems.append(f"warnings {sorted(result.warnings)}, expected {sorted(scenario.warnings)}")
    else:
        if outcome.success:
            problems.append("expected a clean failure, the run succeeded")
        missing = [m for m in scenario.mentions if m not in (outcome.error or "")]
        if missing:
            problems.append(f"the error does not mention {missing}: {outcome.error!r}")
        if "Traceback" in (outcome.error or ""):
            problems.append("the error carries a traceback")
        if after_fault is not None:
            problems.append(f"{len(after_fault)} rows were published to Parquet for the failed day")
        if result.warehouse_after_fault:
            problems.append(f"{result.warehouse_after_fault} rows reached the warehouse for the failed day")
        problems += _landings_incomplete(data_dir, day)
        with temporary_environment(MATRIX_ENV), captured_output() as output:
            rerun = installation.run(day)
        texts["output of the re-run"], texts["error of the re-run"] = output.getvalue(), rerun.error
        run_ids.append(rerun.run_id)
        result.rerun_success, result.rerun_error = rerun.success, rerun.error
        served = held  # the fault cleared: NOAH serves what the account holds
        if not rerun.success:
            problems.append(f"the re-run after the fault cleared failed: {rerun.error}")

    _judge_data(result, data_dir, day, served, before_rows, before_parquet)
    tokens = [r.signature for r in sandbox.wire if r.signature]
    result.secrets = scanner.scan(tokens=tokens, texts=texts, instance=installation.instance, run_ids=run_ids)
    if result.secrets:
        problems.append("secrets found: " + "; ".join(str(hit) for hit in result.secrets))
    result.seconds = time.perf_counter() - started
    return result


def _judge_retry(result: ScenarioResult, scenario: Scenario, wire: list[WireRecord], not_before: float | None) -> None:
    faulted = [i for i, r in enumerate(wire) if r.request.fault is not None]
    if not faulted:
        return
    first = faulted[0]
    retry = next((r for r in wire[first + 1 :] if r.page == wire[first].page), None)
    if retry is None:
        if scenario.retry_gap_seconds is not None or not_before is not None:
            result.problems.append("the client never retried")
        return
    result.retry_gap_seconds = retry.at - wire[first].at
    if scenario.retry_gap_seconds is not None and result.retry_gap_seconds < scenario.retry_gap_seconds:
        result.problems.append(
            f"retried {result.retry_gap_seconds:.3f} s after the fault, before the {scenario.retry_gap_seconds:g} s asked for"
        )
    if not_before is not None and retry.at < not_before:
        result.problems.append(f"retried {not_before - retry.at:.3f} s before the Retry-After date")


def _landings_incomplete(data_dir: Path, day: dt.date) -> list[str]:
    """Every raw landing of the day that exists must be whole (manifest and page hashes agree)."""
    from balances_etl.storage.raw import raw_root, read_raw_bodies

    problems = []
    for landing in sorted((raw_root(data_dir) / f"snapshot_date={day}").glob("taken_at=*")):
        try:
            read_raw_bodies(landing)
        except (OSError, ValueError, KeyError) as error:
            problems.append(f"incomplete raw landing {landing.name}: {error}")
    return problems


def _judge_data(
    result: ScenarioResult,
    data_dir: Path,
    day: dt.date,
    served: Items,
    before_rows: dict[dt.date, list[Row]],
    before_parquet: dict[str, str],
) -> None:
    problems = result.problems
    expected = sorted((expected_row(day, item) for item in served), key=_sort_key)
    result.rows_expected = len(expected)
    after = warehouse_rows(data_dir)
    actual = sorted(after.get(day, []), key=_sort_key)
    day_published = result.success or bool(result.rerun_success)
    if day_published:
        result.rows_lost = _multiset_missing(expected, actual)
        result.rows_unexpected = _multiset_missing(actual, expected)
        if result.rows_lost or result.rows_unexpected:
            problems.append(f"{result.rows_lost} rows lost or changed, {result.rows_unexpected} unexpected rows in the warehouse")
        published = parquet_rows(data_dir, day)
        if published != expected:
            problems.append("the Parquet partition differs from what NOAH served")
    else:
        result.rows_lost = len(expected)
    # Earlier days: the same rows, the same Parquet bytes.
    for other, rows in before_rows.items():
        if other != day and sorted(after.get(other, []), key=_sort_key) != sorted(rows, key=_sort_key):
            result.other_days_changed.append(str(other))
            result.rows_lost += _multiset_missing(rows, after.get(other, []))
    after_parquet = parquet_digests(data_dir)
    for path, digest in before_parquet.items():
        if f"snapshot_date={day}" not in path and after_parquet.get(path) != digest:
            result.other_days_changed.append(path)
    if result.other_days_changed:
        problems.append(f"other days changed: {', '.join(result.other_days_changed)}")


# --- the selftest command ---------------------------------------------------------------------

_DAGSTER_YAML = """telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1
"""


@dataclass
class SelftestInstallation:
    """A throwaway pipeline installation for the selftest: temp dirs, its own emulator and key."""

    root: Path
    sandbox: RecordingSandbox
    private_pem: bytes
    instance: dg.DagsterInstance

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    def run(self, day: dt.date) -> RunOutcome:
        self.sandbox.configure(simulated_date=day)
        return run_daily_job(day, instance=self.instance, simulated_now=taken_after(day))

    def scanner(self) -> SecretScanner:
        """Scans the data dir and the Dagster home for the API key, the private key and JWTs."""
        return SecretScanner([self.data_dir, self.dagster_home], self.sandbox.api_key, self.private_pem)

    def env(self) -> dict[str, str]:
        """The variables that point a pipeline process at this installation and its emulator."""
        return installation_env(self.root, self.sandbox, self.private_pem)


def installation_env(root: Path, sandbox: NoahSandbox, private_pem: bytes) -> dict[str, str]:
    """Data dir and Dagster home under ``root``, NOAH at ``sandbox``, requests signed with ``private_pem``."""
    return {
        "BALANCES_ETL_DATA_DIR": str(root / "data"),
        "DAGSTER_HOME": str(root / "dagster_home"),
        "NOAH_BASE_URL": sandbox.base_url,
        "NOAH_API_KEY": sandbox.api_key,
        "NOAH_SIGNING_KEY": private_pem.decode(),
    }


@contextlib.contextmanager
def selftest_installation(root: Path) -> Iterator[SelftestInstallation]:
    """Wire a fresh installation under ``root``; the process environment is restored afterwards."""
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    template = DAGSTER_YAML_TEMPLATE
    if template.is_file():
        shutil.copy(template, home / "dagster.yaml")
    else:
        (home / "dagster.yaml").write_text(_DAGSTER_YAML)
    private_pem, public_pem = generate_signing_keypair("P-384")
    api_key = f"apikey_sandbox_selftest{secrets_module.token_hex(12)}"
    # Only the selftest's own settings: a user's NOAH_* or data dir must neither leak in nor be touched.
    removed = {
        name: os.environ.pop(name)
        for name in list(os.environ)
        if name.startswith(("NOAH_", "BALANCES_ETL_")) and name != "BALANCES_ETL_START_DATE"
    }
    try:
        with RecordingSandbox(api_key=api_key, public_key_pem=public_pem, item_count=ITEM_COUNT) as sandbox:
            with temporary_environment({**installation_env(root, sandbox, private_pem), **MATRIX_ENV}):
                instance = dg.DagsterInstance.from_config(str(home))
                try:
                    yield SelftestInstallation(root, sandbox, private_pem, instance)
                finally:
                    instance.dispose()
    finally:
        os.environ.update(removed)


@dataclass
class MatrixReport:
    results: list[ScenarioResult]
    started_at: dt.datetime
    seconds: float
    baseline_error: str | None = None

    @property
    def passed(self) -> bool:
        return self.baseline_error is None and all(r.as_expected for r in self.results)


def run_matrix(
    installation: Installation,
    scanner: SecretScanner,
    scenarios: Sequence[Scenario] = SCENARIOS,
    *,
    progress: Callable[[int, int, ScenarioResult], None] | None = None,
) -> MatrixReport:
    """Load the anchor day, then run every scenario on its own day; never raises for a failed scenario."""
    started_at = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    prepare_account(installation.sandbox, anchor_day())
    with temporary_environment(MATRIX_ENV), captured_output():
        baseline = installation.run(anchor_day())
    if not baseline.success:
        return MatrixReport([], started_at, time.perf_counter() - clock, baseline_error=baseline.error)
    results = []
    for number, scenario in enumerate(scenarios, start=1):
        result = run_scenario(installation, scenario, scenario_day(scenario), scanner)
        results.append(result)
        if progress is not None:
            progress(number, len(scenarios), result)
    return MatrixReport(results, started_at, time.perf_counter() - clock)


def _cell(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_table(results: Sequence[ScenarioResult]) -> str:
    """The matrix as a markdown table: fault, where, expected, observed, rows lost, secrets found."""
    header = "| # | fault | where | expected | observed | rows lost | secrets found | as expected |"
    lines = [header, "|---:|---|---|---|---|---:|---:|---|"]
    for number, result in enumerate(results, start=1):
        s = result.scenario
        verdict = "yes" if result.as_expected else "**NO**: " + "; ".join(result.problems)
        lines.append(
            "| " + " | ".join(
                _cell(v) for v in (number, s.fault, s.where, s.expected, result.observed, result.rows_lost,
                                   len(result.secrets), verdict)
            ) + " |"
        )
    return "\n".join(lines)


def summary(report: MatrixReport) -> str:
    results = report.results
    if report.baseline_error is not None:
        return f"The baseline day could not be loaded, so no scenario ran:\n{report.baseline_error}"
    recovered = sum(1 for r in results if r.scenario.expect is Expect.RECOVERED)
    unexpected = [r for r in results if not r.as_expected]
    return (
        f"{len(results)} scenarios in {report.seconds:.0f} s: {recovered} expected to recover, "
        f"{len(results) - recovered} expected to fail cleanly; "
        f"{len(results) - len(unexpected)} as expected, {len(unexpected)} not; "
        f"rows lost {sum(r.rows_lost for r in results)}, secrets found {sum(len(r.secrets) for r in results)}."
    )


def machine_description() -> str:
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"dagster {dg.__version__}"
    )


def render_document(report: MatrixReport, command: str) -> str:
    """docs/reliability.md: how to read the table, how to reproduce it, and the table itself."""
    when = report.started_at.strftime("%Y-%m-%d %H:%M UTC")
    return f"""# Reliability: what happens when things go wrong

Every row below is one run of the real daily job (a Dagster run; the embedded NOAH emulator over
HTTP on loopback with ES384-signed requests; the raw landing; the Parquet partition; the DuckDB
warehouse and its views) for its own day, with one fault injected where the row says. The
account holds {ITEM_COUNT} balances (the documented sandbox currencies with that day's amounts),
{PAGE_SIZE} per page, so there is a first, a middle and a last page. The client ran with
`NOAH_MAX_ATTEMPTS={MAX_ATTEMPTS}`, a backoff of 0.01-0.05 s and, for the timeout rows, a
{READ_TIMEOUT_SECONDS:g} s read timeout; the Retry-After rows wait for real.

- **recovered**: the run succeeded and the day holds exactly the rows NOAH served: every raw and
  canonical amount string and every `DECIMAL(38,18)` compared one by one, with a warning only
  where the row expects one. "retried after" is measured at the emulator, from the faulted
  answer to the retry.
- **failed cleanly**: the run failed with an error naming the cause (shortened here: request ids
  and retry budgets removed), nothing was published for that day (no Parquet partition, no
  warehouse rows), and a re-run after the fault cleared recovered the day exactly.
- In every row, every other day already loaded stayed untouched (its Parquet bytes and its
  warehouse rows). **rows lost** counts rows NOAH served that were not in the warehouse, exactly,
  at the end of the row (after the re-run, for failures). **secrets found** counts occurrences
  of the API key, the private signing key (the PEM, each base64 line, the scalar) or any JWT
  (every `Api-Signature` actually sent, and anything shaped `eyJ...eyJ...`) in everything the
  run wrote: the data directory, the Dagster home (sqlite run and event storage, compute logs),
  every Dagster event with its metadata, the captured output and logs, and the error messages.

Reproduce: `{command}` (exit status 0 only when every row is as expected).
The same table runs as `tests/test_fault_matrix.py`: a representative core in `make test`, the
other rows in `make test-slow`. Crashes (SIGKILL at each stage and at random instants), concurrent runs, an
analyst holding the warehouse, a full disk and a read-only data directory are exercised by
`tests/test_crash_and_concurrency.py`, not by this command.

Run on {when}, {machine_description()}.

{summary(report)}

{render_table(report.results)}
"""


def select(scenarios: Sequence[Scenario], core_only: bool, only: Sequence[str]) -> list[Scenario]:
    chosen = [s for s in scenarios if not core_only or s.core]
    if only:
        unknown = sorted(set(only) - {s.key for s in scenarios})
        if unknown:
            raise ValueError(f"unknown scenario keys: {', '.join(unknown)}")
        chosen = [s for s in chosen if s.key in only]
    return chosen


def main(*, core_only: bool = False, only: Sequence[str] = (), report: Path | None = None, keep: bool = False) -> int:
    """Run the matrix, print the table; 0 only when every row is as expected."""
    from balances_etl.defs.partitions import daily_partitions

    try:
        scenarios = select(SCENARIOS, core_only, only)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    first_day = min((scenario_day(s) for s in scenarios), default=anchor_day())
    start = daily_partitions.start.date()
    if first_day < start:
        print(f"the selftest needs daily partitions from {first_day}; BALANCES_ETL_START_DATE is {start}", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="balances-etl-selftest-"))
    print(f"Running {len(scenarios)} fault scenarios end to end against the embedded NOAH emulator (work dir {root}).",
          file=sys.stderr)

    def progress(number: int, total: int, result: ScenarioResult) -> None:
        mark = "ok" if result.as_expected else "NOT AS EXPECTED"
        print(f"[{number:3d}/{total}] {result.scenario.key:45s} {mark} ({result.seconds:.1f} s)", file=sys.stderr, flush=True)

    try:
        with selftest_installation(root) as installation:
            matrix = run_matrix(installation, installation.scanner(), scenarios, progress=progress)
    finally:
        if keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(render_table(matrix.results))
    print()
    print(summary(matrix))
    if report is not None:
        command = "balances-etl selftest" + (" --core" if core_only else "") + "".join(f" --only {k}" for k in only)
        command += f" --report {report}"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(render_document(matrix, command))
        print(f"wrote {report}", file=sys.stderr)
    return 0 if matrix.passed else 1
