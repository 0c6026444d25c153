"""NoahClient over real HTTP against the embedded NOAH emulator, plus the pieces it is built from.

Waits go through an injected recording ``sleep`` (one test uses the real one), so the suite is fast
and the waits themselves are asserted.
"""

from __future__ import annotations

import dataclasses
import decimal
import email.utils
import hashlib
import json
import logging
import pickle
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
import pyarrow as pa
import pytest
from transports import RecordingTransport, ScriptedTransport
from transports import canned as canned_transport

from balances_etl.emulator import Fault, FaultKind, NoahSandbox, generate_signing_keypair
from balances_etl.noah import (
    BALANCES,
    Fetched,
    MalformedPageError,
    NoahAuthError,
    NoahClient,
    NoahConfig,
    NoahConnectionError,
    NoahError,
    NoahHTTPError,
    PageValidationError,
    PaginationError,
    RateLimitError,
    replay,
    RequestSigner,
    RetriesExhausted,
    parse_retry_after,
    redact,
)
from balances_etl.noah.client import RETRY_AFTER_MINIMUM_SECONDS, USER_AGENT
from balances_etl.noah.errors import snippet
from balances_etl.noah.pages import decode_body
from balances_etl.noah.signing import load_private_key

SIMULATED_DATE = datetime(2026, 11, 20).date()
FAST_BACKOFF = {"backoff_base_seconds": 0.001, "backoff_max_seconds": 0.004}


class RecordedSleep:
    """An injected ``sleep`` that records instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@dataclasses.dataclass
class Harness:
    """A sandbox plus a client factory whose config has fast backoff and small timeouts."""

    sandbox: NoahSandbox
    config: NoahConfig
    sleep: RecordedSleep = dataclasses.field(default_factory=RecordedSleep)

    def client(self, **overrides: Any) -> NoahClient:
        return NoahClient(dataclasses.replace(self.config, **overrides), sleep=self.sleep)

    def fetch(self, **overrides: Any) -> Fetched:
        with self.client(**overrides) as client:
            return client.fetch(BALANCES)

    def fail(self, expected: type[NoahError], **overrides: Any) -> Any:
        with pytest.raises(expected) as caught:
            self.fetch(**overrides)
        return caught.value

    @property
    def requests(self) -> list[Any]:
        return self.sandbox.requests


def harness_for(sandbox: NoahSandbox, api_key: str, private_pem: bytes | None) -> Harness:
    config = NoahConfig(
        api_key=api_key,
        signing_key=load_private_key(private_pem) if private_pem is not None else None,
        base_url=sandbox.base_url,
        connect_timeout_seconds=2,
        read_timeout_seconds=5,
        **FAST_BACKOFF,
    )
    return Harness(sandbox, config)


@pytest.fixture
def harness(sandbox: NoahSandbox, api_key: str, p384_keypair: tuple[bytes, bytes]) -> Harness:
    return harness_for(sandbox, api_key, p384_keypair[0])


@pytest.fixture
def paged(harness: Harness) -> Harness:
    """250 items: three pages of 100, 100 and 50."""
    harness.sandbox.configure(item_count=250)
    return harness


def item_rows(snapshot: Fetched) -> list[tuple[str, str, str, str]]:
    columns = snapshot.columns
    return list(zip(columns.column("account_type"), columns.column("crypto_currency"), columns.column("available_raw"), columns.column("total_raw"), strict=True))


def expected_rows(sandbox: NoahSandbox) -> list[tuple[str, str, str, str]]:
    return [(i["AccountType"], i["CryptoCurrency"], i["Available"], i["Total"]) for i in sandbox.expected_items()]


def http_date_in(seconds: float) -> str:
    return email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


# happy path, exactly as served


def test_multi_page_account_returns_every_item_exactly_and_in_order(paged: Harness) -> None:
    snapshot = paged.fetch()
    assert item_rows(snapshot) == expected_rows(paged.sandbox) and len(snapshot.columns) == 250
    columns = snapshot.columns
    assert columns.column("page_number") == [1] * 100 + [2] * 100 + [3] * 50
    assert columns.column("item_index") == list(range(100)) * 2 + list(range(50))
    assert [page.page_number for page in snapshot.pages] == [1, 2, 3]
    for page, request in zip(snapshot.pages, paged.requests, strict=True):
        assert page.query == request.query and page.request_path == "/v1/balances" == request.path
        assert page.status == 200 and page.attempts == 1 and page.elapsed_seconds >= 0
        assert page.sha256 == hashlib.sha256(page.body).hexdigest()
        assert page.received_at.tzinfo is UTC
    assert snapshot.pages[0].query == {"PageSize": "100"}
    assert set(snapshot.pages[1].query) == {"PageSize", "PageToken"}
    stats = snapshot.stats
    assert (stats.pages, stats.items, stats.attempts, stats.retries, stats.total_wait_seconds) == (3, 250, 3, 0, 0)
    assert stats.page_sha256 == [page.sha256 for page in snapshot.pages] and stats.duplicate_keys == 0
    assert paged.sleep.waits == []


def test_columns_to_arrow_have_the_declared_types(harness: Harness) -> None:
    table = harness.fetch().columns.to_arrow()
    assert table.schema.names == ["account_type", "crypto_currency", "available_raw", "total_raw", "page_number", "item_index"]
    assert [field.type for field in table.schema] == [pa.string()] * 4 + [pa.int32()] * 2
    assert table.num_rows == 3


def test_claims_are_exactly_as_documented_on_the_server_side(paged: Harness) -> None:
    before = int(time.time())
    paged.fetch()
    after = int(time.time())
    assert len(paged.requests) == 3
    for request in paged.requests:
        claims = request.claims
        assert set(claims) == {"aud", "iat", "exp", "method", "path", "queryParams"}
        assert claims["aud"] == "https://api.noah.com"
        assert before <= claims["iat"] <= after and claims["exp"] - claims["iat"] == 300
        assert claims["method"] == "GET" and claims["path"] == "/v1/balances"
        assert claims["queryParams"] == request.query and all(isinstance(v, str) for v in request.query.values())
        assert "bodyHash" not in claims


def test_every_retry_is_signed_with_a_fresh_token(harness: Harness) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.STATUS, page=1, status=503))
    snapshot = harness.fetch()
    first, second = harness.requests
    assert (first.status, second.status) == (503, 200)
    assert first.token_sha256 != second.token_sha256
    assert snapshot.pages[0].attempts == 2 and snapshot.stats.retries == 1


def test_unsigned_sandbox_key_works_without_signing(unsigned_sandbox: NoahSandbox, api_key: str) -> None:
    snapshot = harness_for(unsigned_sandbox, api_key, None).fetch()
    assert len(snapshot.columns) == 3
    assert unsigned_sandbox.requests[0].claims is None and unsigned_sandbox.requests[0].token_sha256 is None


@pytest.mark.parametrize("curve, fmt", [("P-256", "pkcs8"), ("P-256", "sec1"), ("P-384", "sec1"), ("P-384", "pkcs8")])
def test_signing_keys_of_both_curves_and_pem_formats(api_key: str, curve: str, fmt: str) -> None:
    private_pem, public_pem = generate_signing_keypair(curve, fmt=fmt)  # type: ignore[arg-type]
    with NoahSandbox(api_key=api_key, public_key_pem=public_pem, simulated_date=SIMULATED_DATE) as sandbox:
        config = NoahConfig.from_env(
            {"NOAH_API_KEY": api_key, "NOAH_SIGNING_KEY": private_pem.decode(), "NOAH_BASE_URL": sandbox.base_url}
        )
        assert config.signing_algorithm == ("ES256" if curve == "P-256" else "ES384")
        with NoahClient(config) as client:
            assert len(client.fetch(BALANCES).columns) == 3
        assert sandbox.requests[0].status == 200 and sandbox.requests[0].claims is not None


def test_one_info_line_per_snapshot_and_debug_per_attempt(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.STATUS, page=1, status=500))
    with caplog.at_level(logging.DEBUG, logger="balances_etl.noah"):
        harness.fetch()
    ours = [record for record in caplog.records if record.name == "balances_etl.noah"]
    assert [r.levelno for r in ours].count(logging.INFO) == 1
    debug = [r.getMessage() for r in ours if r.levelno == logging.DEBUG]
    assert any("page 1 attempt 1: HTTP 500" in line for line in debug)
    assert any("retrying in" in line for line in debug)
    assert any("page 1 attempt 2: HTTP 200" in line for line in debug)


# Retry-After


def test_retry_after_seconds_is_honoured(harness: Harness) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.RATE_LIMIT, page=1, retry_after="2"))
    snapshot = harness.fetch()
    assert harness.sleep.waits == [2.0]
    assert snapshot.stats.total_wait_seconds == 2.0 and snapshot.stats.retries == 1
    assert [r.status for r in harness.requests] == [429, 200]


def test_retry_after_http_date_is_honoured(harness: Harness) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.RATE_LIMIT, page=1, retry_after=http_date_in(3)))
    harness.fetch()
    (wait,) = harness.sleep.waits
    assert 1.5 <= wait <= 3.0  # the date has one-second resolution


@pytest.mark.parametrize("retry_after", ["0", "past-date"])
def test_retry_after_zero_or_past_still_waits_a_little(harness: Harness, retry_after: str) -> None:
    value = http_date_in(-30) if retry_after == "past-date" else retry_after
    harness.sandbox.add_fault(Fault(kind=FaultKind.RATE_LIMIT, page=1, retry_after=value))
    harness.fetch()
    assert harness.sleep.waits == [RETRY_AFTER_MINIMUM_SECONDS]


def test_retry_after_above_the_cap_fails_at_once(harness: Harness) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.RATE_LIMIT, page=1, retry_after="301", times=None))
    error = harness.fail(RateLimitError, retry_after_cap_seconds=300)
    assert harness.sleep.waits == [] and len(harness.requests) == 1
    assert (error.status, error.retry_after_seconds, error.cap_seconds, error.page_number) == (429, 301, 300, 1)
    assert "301 s" in str(error) and "300 s" in str(error) and "NOAH_RETRY_AFTER_CAP_SECONDS" in str(error)
    assert error.stats.instances == [error.instance]


def test_rate_limit_without_retry_after_uses_backoff(harness: Harness) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.RATE_LIMIT, page=1, times=2))
    harness.fetch()
    assert len(harness.sleep.waits) == 2
    assert 0 <= harness.sleep.waits[0] <= 0.001 and 0 <= harness.sleep.waits[1] <= 0.002


def test_real_sleep_really_waits_for_retry_after(harness: Harness) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.RATE_LIMIT, page=1, retry_after="1"))
    started = time.monotonic()
    with NoahClient(harness.config) as client:  # the default, real time.sleep
        snapshot = client.fetch(BALANCES)
    assert time.monotonic() - started >= 1.0
    assert snapshot.stats.total_wait_seconds == 1.0


def test_retry_budget_bounds_the_total_wait(harness: Harness) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.RATE_LIMIT, retry_after="2", times=None))
    error = harness.fail(RetriesExhausted, retry_budget_seconds=5)
    assert harness.sleep.waits == [2.0, 2.0] and error.attempts == 3
    assert "NOAH_RETRY_BUDGET_SECONDS" in str(error) and error.status == 429
    assert isinstance(error.last_error, RateLimitError)


# transient failures


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_transient_status_once_is_recovered(harness: Harness, status: int) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.STATUS, page=1, status=status))
    snapshot = harness.fetch()
    assert [r.status for r in harness.requests] == [status, 200]
    assert len(snapshot.columns) == 3 and len(snapshot.stats.instances) == 1
    assert len(harness.sleep.waits) == 1 and 0 <= harness.sleep.waits[0] <= 0.001


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_persistent_transient_status_exhausts_retries(harness: Harness, status: int) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.STATUS, status=status, times=None, detail="still broken"))
    error = harness.fail(RetriesExhausted, max_attempts=4)
    assert len(harness.requests) == 4 and error.attempts == 4 and len(harness.sleep.waits) == 3
    assert error.status == status and error.page_number == 1
    assert isinstance(error.last_error, NoahHTTPError) and error.last_error.detail == "still broken"
    assert error.instance == error.stats.instances[-1] and len(set(error.stats.instances)) == 4
    assert "gave up after 4 attempts" in str(error) and "NOAH_MAX_ATTEMPTS" in str(error)
    assert f"HTTP {status}" in str(error) and "Detail 'still broken'" in str(error)
    # backoff doubles per retry and stays within its ceiling (full jitter)
    for retry, wait in enumerate(harness.sleep.waits):
        assert 0 <= wait <= min(0.004, 0.001 * 2**retry)


def test_dropped_connection_is_retried(harness: Harness) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.DROP_CONNECTION, page=1))
    snapshot = harness.fetch()
    assert len(snapshot.columns) == 3 and snapshot.stats.retries == 1 and len(harness.requests) == 2


def test_persistently_dropped_connection_exhausts_retries(harness: Harness) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.DROP_CONNECTION, times=None))
    error = harness.fail(RetriesExhausted, max_attempts=3)
    assert isinstance(error.last_error, NoahConnectionError) and error.status is None
    assert "connection dropped while reading the body" in str(error) and error.attempts == 3


def test_read_timeout_is_retried(harness: Harness) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.SLOW, page=1, delay_seconds=2.0))
    snapshot = harness.fetch(read_timeout_seconds=0.2)
    assert len(snapshot.columns) == 3 and snapshot.stats.retries == 1


def test_persistent_read_timeout_exhausts_retries(harness: Harness) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.SLOW, delay_seconds=2.0, times=None))
    error = harness.fail(RetriesExhausted, read_timeout_seconds=0.2, max_attempts=2)
    assert isinstance(error.last_error, NoahConnectionError)
    assert "read timed out after 0.2 s" in str(error) and error.attempts == 2


def test_connection_refused_exhausts_retries(api_key: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = NoahConfig(api_key=api_key, base_url=f"http://127.0.0.1:{port}/v1", max_attempts=2, **FAST_BACKOFF)
    sleep = RecordedSleep()
    with NoahClient(config, sleep=sleep) as client, pytest.raises(RetriesExhausted) as caught:
        client.fetch(BALANCES)
    assert "ConnectionRefusedError" in str(caught.value) and len(sleep.waits) == 1


@pytest.mark.parametrize("kind", [FaultKind.TRUNCATED_JSON, FaultKind.NON_JSON_200])
def test_broken_200_body_once_is_retried(harness: Harness, kind: FaultKind) -> None:
    harness.sandbox.add_fault(Fault(kind=kind, page=1))
    snapshot = harness.fetch()
    assert len(snapshot.columns) == 3 and snapshot.pages[0].attempts == 2


@pytest.mark.parametrize("kind, first_bytes", [(FaultKind.TRUNCATED_JSON, '{"Items":['), (FaultKind.NON_JSON_200, "<html>")])
def test_persistently_broken_200_body_fails_with_its_first_bytes(harness: Harness, kind: FaultKind, first_bytes: str) -> None:
    harness.sandbox.add_fault(Fault(kind=kind, times=None))
    error = harness.fail(MalformedPageError, max_attempts=3)
    assert error.page_number == 1 and error.attempts == 3 and len(harness.requests) == 3
    assert error.body_prefix.startswith(first_bytes) and first_bytes in str(error)
    assert "page 1 is not valid JSON after 3 attempts" in str(error)


def test_persistent_non_json_error_shows_status_and_first_bytes(harness: Harness) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.NON_JSON_ERROR, times=None))
    error = harness.fail(RetriesExhausted, max_attempts=2)
    assert error.status == 502 and "502 Bad Gateway" in error.last_error.body_snippet
    assert "HTTP 502 Bad Gateway on page 1; body is not a NOAH error, first bytes: '<html>" in str(error)


# never retried


@pytest.mark.parametrize(
    "status, error_class, error_type",
    [(400, NoahHTTPError, "InvalidMessage"), (401, NoahAuthError, "Unauthorized"),
     (403, NoahAuthError, "Forbidden"), (404, NoahHTTPError, "ResourceNotFound"), (409, NoahHTTPError, "Unexpected")],
)
def test_client_errors_are_never_retried(harness: Harness, status: int, error_class: type, error_type: str) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.STATUS, status=status, error_type=error_type, detail="nope", times=None))
    error = harness.fail(error_class)
    assert type(error) is error_class
    assert len(harness.requests) == 1 and harness.sleep.waits == []
    assert (error.status, error.error_type, error.detail, error.page_number) == (status, error_type, "nope", 1)
    assert error.action == "GET /v1/balances" and error.instance and error.stats.instances == [error.instance]
    assert str(error).startswith(f"NOAH returned HTTP {status} ")
    assert f"on page 1: Detail 'nope' (Type '{error_type}', Action 'GET /v1/balances', Instance '{error.instance}')" in str(error)


def test_non_json_client_error_is_not_retried(harness: Harness) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.NON_JSON_ERROR, status=403, times=None))
    error = harness.fail(NoahAuthError)
    assert len(harness.requests) == 1 and error.detail is None and "<html>" in str(error)


def test_wrong_api_key_is_a_401_from_real_authentication(harness: Harness) -> None:
    error = harness.fail(NoahAuthError, api_key="apikey_sandbox_not-the-right-one")
    assert error.status == 401 and error.detail == "Invalid API key" and len(harness.requests) == 1


def test_wrong_signing_key_is_a_401_from_real_authentication(harness: Harness) -> None:
    other_key = load_private_key(generate_signing_keypair("P-384")[0])
    error = harness.fail(NoahAuthError, signing_key=other_key)
    assert error.status == 401 and "signature does not verify" in error.detail and len(harness.requests) == 1


# pagination


def test_token_cycle_to_the_same_token(paged: Harness) -> None:
    paged.sandbox.add_fault(Fault(kind=FaultKind.TOKEN_CYCLE, page=2))
    error = paged.fail(PaginationError)
    assert "token cycle at page 2 (token first seen on page 1)" in str(error) and error.page_number == 2
    token = paged.requests[1].query["PageToken"]
    assert token not in str(error) and token[:8] in str(error)
    assert len(paged.requests) == 2


def test_token_cycle_back_to_an_earlier_token(harness: Harness) -> None:
    harness.sandbox.configure(item_count=400)
    harness.sandbox.add_fault(Fault(kind=FaultKind.TOKEN_CYCLE, page=3, cycle_to_page=2))
    error = harness.fail(PaginationError)
    assert "token cycle at page 3 (token first seen on page 1)" in str(error) and len(harness.requests) == 3


def test_page_cap(paged: Harness) -> None:
    error = paged.fail(PaginationError, max_pages=2)
    assert "at most 2 pages (NOAH_MAX_PAGES)" in str(error) and len(paged.requests) == 2
    assert paged.fetch(max_pages=3).stats.pages == 3


@pytest.mark.parametrize("kind", [FaultKind.EMPTY_TOKEN_END, FaultKind.NULL_TOKEN_END])
def test_empty_or_null_final_token_means_done(paged: Harness, kind: FaultKind) -> None:
    paged.sandbox.add_fault(Fault(kind=kind))
    snapshot = paged.fetch()
    assert item_rows(snapshot) == expected_rows(paged.sandbox) and len(paged.requests) == 3
    assert paged.requests[-1].fault == kind


def test_zero_items_is_a_valid_empty_snapshot(harness: Harness) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.ZERO_ITEMS))
    snapshot = harness.fetch()
    assert len(snapshot.columns) == 0 and snapshot.stats.pages == 1 and snapshot.columns.to_arrow().num_rows == 0


def test_duplicate_keys_are_kept_and_counted(harness: Harness) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.DUPLICATE_ITEM))
    snapshot = harness.fetch()
    assert snapshot.stats.duplicate_keys == 1 and snapshot.stats.items == 4
    assert item_rows(snapshot)[3] == item_rows(snapshot)[0]


def test_unknown_currency_is_not_the_clients_business(harness: Harness) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.UNKNOWN_CURRENCY, item_index=1))
    assert harness.fetch().columns.column("crypto_currency")[1] not in {"BTC_TEST", "ETH_TEST_SEPOLIA", "USDC_TEST"}


def test_each_page_is_handed_on_once_in_order_while_the_next_one_is_in_flight(paged: Harness) -> None:
    """The landing writes page N while NOAH prepares page N+1: one page of read-ahead, no more."""
    transport = RecordingTransport(paged.config.base_url)
    handed: list[tuple[int, int]] = []  # (page handed on, requests sent by then)
    with NoahClient(paged.config, transport=transport) as client:
        snapshot = client.fetch(BALANCES, on_page=lambda page, items: handed.append((page.page_number, len(transport.sent), items.num_rows)))
    transport.close()
    assert handed == [(1, 2, 100), (2, 3, 100), (3, 3, 50)]
    # the pages went to the consumer, not into memory for the whole fetch
    assert (snapshot.stats.pages, snapshot.stats.items, snapshot.pages, len(snapshot.columns)) == (3, 250, [], 0)


def test_a_failing_page_consumer_stops_the_fetch_with_its_own_error(paged: Harness) -> None:
    def disk_full(page: object, items: object) -> None:
        raise OSError(28, "No space left on device")

    with paged.client() as client, pytest.raises(OSError, match="No space left") as caught:
        client.fetch(BALANCES, on_page=disk_full)
    assert not isinstance(caught.value, NoahError)  # not mistaken for a network failure, so not retried
    # Page 2 was in flight (NOAH may not have finished it when the connection closed); nothing retried.
    assert [r.page_number for r in paged.requests] in ([1], [1, 2]) and paged.sleep.waits == []


def test_invalid_items_are_never_handed_on(paged: Harness) -> None:
    paged.sandbox.add_fault(Fault(kind=FaultKind.INVALID_AMOUNT, page=2, item_index=5, field="Total", value="1e5"))
    handed: list[int] = []
    with paged.client() as client, pytest.raises(PageValidationError, match="NOAH page 2 item 5 field Total"):
        client.fetch(BALANCES, on_page=lambda page, items: handed.append(page.page_number))
    assert handed == [1]


# validation: bad data is named precisely and never retried


def validation_error(harness: Harness, fault: Fault) -> PageValidationError:
    harness.sandbox.configure(item_count=250)
    harness.sandbox.add_fault(fault)
    error = harness.fail(PageValidationError)
    assert [r.status for r in harness.requests][-1] == 200
    # Not retried: the bad page was asked for once; the next one may have been in flight already
    # (items are checked while it is), and is not asked for again either.
    requested = [r.page_number for r in harness.requests]
    assert requested in ([*range(1, fault.page + 1)], [*range(1, fault.page + 2)]) and harness.sleep.waits == []
    return error


def test_missing_items(harness: Harness) -> None:
    error = validation_error(harness, Fault(kind=FaultKind.MISSING_ITEMS, page=2))
    assert (error.page_number, error.item_index, error.field) == (2, None, "Items")
    assert str(error) == "NOAH page 2 field Items: required field is missing"


@pytest.mark.parametrize("field", ["AccountType", "CryptoCurrency", "Available", "Total"])
def test_missing_field(harness: Harness, field: str) -> None:
    error = validation_error(harness, Fault(kind=FaultKind.MISSING_FIELD, page=2, item_index=7, field=field))
    assert (error.page_number, error.item_index, error.field, error.reason) == (2, 7, field, "required field is missing")
    assert str(error) == f"NOAH page 2 item 7 field {field}: required field is missing"


@pytest.mark.parametrize("value, json_type", [(7, "number"), (1.5, "number"), (None, "null"), (True, "boolean")])
@pytest.mark.parametrize("field", ["CryptoCurrency", "Total"])
def test_wrong_type(harness: Harness, field: str, value: object, json_type: str) -> None:
    error = validation_error(harness, Fault(kind=FaultKind.WRONG_TYPE, page=3, item_index=4, field=field, value=value))
    assert (error.page_number, error.item_index, error.field) == (3, 4, field)
    assert str(error) == f"NOAH page 3 item 4 field {field}: expected a string, got {json_type}"


@pytest.mark.parametrize(
    "value, reason",
    [
        ("١٢٣", "does not match the PositiveDecimal pattern"),
        ("1.5\n", "does not match the PositiveDecimal pattern"),
        (" 1", "does not match the PositiveDecimal pattern"),
        ("1e3", "does not match the PositiveDecimal pattern"),
        ("1_000", "does not match the PositiveDecimal pattern"),
        ("-1", "does not match the PositiveDecimal pattern"),
        ("", "empty string"),
        ("1" * 39, "39 characters, more than 38"),
    ],
)
@pytest.mark.parametrize("field", ["Available", "Total"])
def test_invalid_amount(harness: Harness, field: str, value: str, reason: str) -> None:
    error = validation_error(harness, Fault(kind=FaultKind.INVALID_AMOUNT, page=1, item_index=2, field=field, value=value))
    assert (error.page_number, error.item_index, error.field) == (1, 2, field)
    assert reason in error.reason and str(error).startswith(f"NOAH page 1 item 2 field {field}: ")
    assert "\n" not in str(error)


@pytest.mark.parametrize("field", ["AccountType", "CryptoCurrency"])
def test_empty_identifier(harness: Harness, field: str) -> None:
    error = validation_error(harness, Fault(kind=FaultKind.INVALID_AMOUNT, page=1, item_index=0, field=field, value=""))
    assert str(error) == f"NOAH page 1 item 0 field {field}: empty string"


@pytest.mark.parametrize(
    "body, where, reason",
    [
        (b"[]", "NOAH page 1", "expected a JSON object, got array"),
        (b'{"Items": {}}', "NOAH page 1 field Items", "expected an array, got object"),
        (b'{"Items": [], "PageToken": 5}', "NOAH page 1 field PageToken", "expected a string or null, got number"),
        (b'{"Items": ["x"]}', "NOAH page 1 item 0", "expected an object, got string"),
        (b'{"Items": [], "Items": []}', "NOAH page 1 field Items", "repeats this key"),
    ],
)
def test_page_level_problems(body: bytes, where: str, reason: str) -> None:
    with pytest.raises(PageValidationError) as caught:
        replay(BALANCES, [body])
    assert str(caught.value).startswith(where + ": ") and reason in str(caught.value)


def test_json_numbers_never_become_floats(harness: Harness) -> None:
    items = [
        {"AccountType": "Current", "CryptoCurrency": "BTC_TEST", "Available": "0.1", "Total": "0.10",
         "Extra": 0.1, "Huge": 1.5e300, "Nested": {"Rate": 123456789012345678901234567890}},
    ]
    harness.sandbox.configure(items=items)
    snapshot = harness.fetch()  # unknown fields are allowed
    assert item_rows(snapshot) == [("Current", "BTC_TEST", "0.1", "0.10")]
    document = decode_body(snapshot.pages[0].body, page_number=1)
    item = document["Items"][0]
    assert type(item["Extra"]) is decimal.Decimal and item["Extra"] == decimal.Decimal("0.1")
    assert type(item["Huge"]) is decimal.Decimal and item["Huge"] == decimal.Decimal("1.5e300")
    assert item["Nested"]["Rate"] == 123456789012345678901234567890 and type(item["Nested"]["Rate"]) is int
    assert decode_body(b"[1e400, 0.30000000000000004]", 1) == [decimal.Decimal("1e400"), decimal.Decimal("0.30000000000000004")]
    with pytest.raises(MalformedPageError, match="non-standard JSON constant NaN"):
        decode_body(b'{"Items": [], "X": NaN}', 1)


# replay


def test_replay_gives_the_same_columns_as_the_live_fetch(paged: Harness) -> None:
    paged.sandbox.add_fault(Fault(kind=FaultKind.DUPLICATE_ITEM, page=3))
    live = paged.fetch()
    replayed = replay(BALANCES, [page.body for page in live.pages])
    assert replayed.columns == live.columns
    assert replayed.columns.to_arrow().equals(live.columns.to_arrow())
    assert replayed.stats.page_sha256 == live.stats.page_sha256
    assert (replayed.stats.items, replayed.stats.duplicate_keys, replayed.stats.attempts) == (251, 1, 0)
    assert [page.body for page in replayed.pages] == [page.body for page in live.pages]


def test_replay_refuses_an_incomplete_or_overlong_landing(paged: Harness) -> None:
    bodies = [page.body for page in paged.fetch().pages]
    with pytest.raises(PaginationError, match="landed pages are incomplete"):
        replay(BALANCES, bodies[:2])
    with pytest.raises(PaginationError, match="page 3 ends pagination but 1 more bodies follow"):
        replay(BALANCES, [*bodies, bodies[-1]])
    with pytest.raises(PaginationError, match="no page bodies"):
        replay(BALANCES, [])
    with pytest.raises(PaginationError, match="token cycle at page 3"):
        replay(BALANCES, [bodies[0], bodies[1], bodies[1]])


def test_replay_validates_like_the_live_fetch(harness: Harness) -> None:
    harness.sandbox.add_fault(Fault(kind=FaultKind.INVALID_AMOUNT, page=1, item_index=1, field="Total", value="1e3"))
    transport = RecordingTransport(harness.config.base_url)
    with NoahClient(harness.config, transport=transport) as client, pytest.raises(PageValidationError) as live:
        client.fetch(BALANCES)
    transport.close()
    with pytest.raises(PageValidationError) as replayed:
        replay(BALANCES, [response.body for response in transport.responses])
    assert str(replayed.value) == str(live.value) == "NOAH page 1 item 1 field Total: " + live.value.reason


# stats


def test_stats_record_attempts_waits_and_error_instances(paged: Harness) -> None:
    paged.sandbox.add_fault(Fault(kind=FaultKind.STATUS, page=2, status=503))
    paged.sandbox.add_fault(Fault(kind=FaultKind.RATE_LIMIT, page=3, retry_after="1"))
    paged.sandbox.add_fault(Fault(kind=FaultKind.DROP_CONNECTION, page=3))
    snapshot = paged.fetch()
    stats = snapshot.stats
    assert (stats.pages, stats.items, stats.attempts, stats.retries) == (3, 250, 6, 3)
    assert stats.total_wait_seconds == pytest.approx(sum(paged.sleep.waits)) and 1.0 in paged.sleep.waits
    assert len(stats.instances) == 2 and all(stats.instances)
    assert [page.attempts for page in snapshot.pages] == [1, 2, 3]
    metadata = stats.as_metadata()
    assert json.loads(json.dumps(metadata)) == metadata
    assert set(metadata) == {"pages", "items", "attempts", "retries", "total_wait_seconds", "instances",
                             "page_sha256", "duplicate_keys", "stopped_early"}


def test_failure_carries_partial_stats(paged: Harness) -> None:
    paged.sandbox.add_fault(Fault(kind=FaultKind.STATUS, page=3, status=401, error_type="Unauthorized"))
    error = paged.fail(NoahAuthError)
    assert (error.stats.pages, error.stats.items, error.stats.attempts) == (2, 200, 3)


# building blocks, without the network


@pytest.fixture
def canned() -> Iterator[tuple[NoahClient, list[tuple[int, dict[str, str], bytes]], ScriptedTransport, RecordedSleep]]:
    """A client whose transport answers from a list the test fills: (status, headers, body)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    answers: list[tuple[int, dict[str, str], bytes]] = []
    transport = canned_transport(answers)
    config = NoahConfig(api_key="apikey_sandbox_canned-0001", signing_key=ec.generate_private_key(ec.SECP384R1()), **FAST_BACKOFF)
    sleep = RecordedSleep()
    with NoahClient(config, transport=transport, sleep=sleep) as client:
        yield client, answers, transport, sleep


def page_body(token: object = None, count: int = 1) -> bytes:
    items = [{"AccountType": "Current", "CryptoCurrency": f"C{i}", "Available": "1", "Total": "1"} for i in range(count)]
    return json.dumps({"Items": items, "PageToken": token}).encode()


def test_wire_query_equals_signed_query_params_for_awkward_tokens(canned) -> None:  # noqa: ANN001
    client, answers, transport, _ = canned
    awkward = "a+b/c=d e&f%25?ü#"
    answers += [(200, {}, page_body(awkward)), (200, {}, page_body(None))]
    client.fetch(BALANCES)
    first, second = transport.sent
    for request in (first, second):
        claims = jwt.decode(request.headers["Api-Signature"], options={"verify_signature": False})
        assert dict(parse_qsl(urlsplit(request.url).query, keep_blank_values=True, strict_parsing=True)) == claims["queryParams"]
        assert urlsplit(request.url).path == claims["path"] == "/v1/balances"
    assert jwt.decode(second.headers["Api-Signature"], options={"verify_signature": False})["queryParams"]["PageToken"] == awkward
    for request in transport.sent:
        assert request.headers["X-Api-Key"] == "apikey_sandbox_canned-0001"
        assert request.headers["Accept"] == "application/json" and request.headers["User-Agent"] == USER_AGENT
        assert USER_AGENT.startswith("balances-etl/")
        assert request.timeout == (10, 60)


@pytest.mark.parametrize(
    "first_page, field",
    [
        (b'{"Items": [{"AccountType": "Current", "AccountType": "Other", "CryptoCurrency": "BTC_TEST", '
         b'"Available": "1", "Total": "1"}], "PageToken": "next"}', "AccountType"),
        (b'{"Items": [], "PageToken": "next", "PageToken": "other"}', "PageToken"),
    ],
)
def test_a_repeated_json_key_fails_the_live_fetch_and_the_page_is_never_handed_on(
    canned, first_page: bytes, field: str  # noqa: ANN001
) -> None:
    """The next page is requested on a lenient decode; the strict one runs while it is in flight."""
    client, answers, transport, sleep = canned
    answers += [(200, {}, first_page), (200, {}, page_body(None))]
    handed: list[int] = []
    with pytest.raises(PageValidationError, match=f"NOAH page 1 field {field}: .*repeats this key"):
        client.fetch(BALANCES, on_page=lambda page, items: handed.append(page.page_number))
    assert handed == [] and len(transport.sent) == 2 and sleep.waits == []


def test_redirects_are_not_followed(canned) -> None:  # noqa: ANN001
    client, answers, transport, sleep = canned
    answers.append((302, {"Location": "https://elsewhere.example/v1/balances"}, b""))
    with pytest.raises(NoahHTTPError, match="HTTP 302 Found on page 1 with an empty body"):
        client.fetch(BALANCES)
    assert len(transport.sent) == 1 and sleep.waits == []


def test_server_echoing_the_key_is_redacted(canned) -> None:  # noqa: ANN001
    client, answers, _, _ = canned
    echo = json.dumps({"Detail": "bad key apikey_sandbox_canned-0001", "Instance": "i-1"}).encode()
    answers.append((401, {}, echo))
    with pytest.raises(NoahAuthError) as caught:
        client.fetch(BALANCES)
    assert "apikey_sandbox_canned-0001" not in str(caught.value) and "[REDACTED]" in caught.value.detail


def test_retry_after_parsing() -> None:
    now = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after(None, now) is None
    assert parse_retry_after(" 120 ", now) == 120
    assert parse_retry_after("1.5", now) == 1.5
    assert parse_retry_after("Fri, 20 Nov 2026 12:00:30 GMT", now) == 30
    assert parse_retry_after("Fri, 20 Nov 2026 11:00:00 GMT", now) == 0
    assert parse_retry_after("Fri, 20 Nov 2026 12:00:30 -0000", now) == 30
    for garbage in ("soon", "-5", "1e3", ""):
        assert parse_retry_after(garbage, now) is None


def test_signer_claims_and_freshness() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    signer = RequestSigner(key, clock=lambda: 1_800_000_000.9)
    assert signer.algorithm == "ES256" and "PRIVATE" not in repr(signer)
    tokens = {signer.sign("GET", "/v1/balances", {"PageSize": "5"}) for _ in range(3)}
    assert len(tokens) == 3  # ECDSA is randomised: never the same token twice
    claims = jwt.decode(tokens.pop(), key.public_key(), algorithms=["ES256"], audience="https://api.noah.com",
                        options={"verify_exp": False, "verify_iat": False})
    assert claims == {"aud": "https://api.noah.com", "iat": 1_800_000_000, "exp": 1_800_000_300, "method": "GET",
                      "path": "/v1/balances", "queryParams": {"PageSize": "5"}}
    for empty in (None, {}):
        assert "queryParams" not in signer.claims("GET", "/v1/balances", empty)


def test_redact_and_snippet() -> None:
    secret = "apikey_sandbox_supersecret"
    assert redact(f"x {secret} y {secret}", [secret, None, ""]) == "x [REDACTED] y [REDACTED]"
    assert redact("short abc", ["abc"]) == "short abc"  # too short to be a credential
    straddling = ("." * 190 + secret).encode()
    assert secret[:10] not in snippet(straddling, [secret], limit=200)
    assert snippet("a\nb\x00c\u202e") == "a\\nb\\x00c\\u202e"
    assert snippet(b"\xff" * 3) == "\ufffd" * 3
    assert snippet("x" * 300).endswith("...") and len(snippet("x" * 300)) == 203


@pytest.mark.parametrize(
    "error",
    [
        NoahHTTPError(503, "Unexpected", "d", "a", "i", 2, body_snippet=None),
        RateLimitError(429, None, None, None, None, 1, retry_after_seconds=9, cap_seconds=5),
        RetriesExhausted(NoahConnectionError("reset", page_number=3), attempts=6, waited_seconds=1.5, why="x"),
        PageValidationError("bad", page_number=1, item_index=2, field="Total"),
        MalformedPageError("cut", page_number=1, body_prefix="{", attempts=2),
    ],
)
def test_errors_survive_pickling(error: NoahError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error) and copy.__dict__.keys() == error.__dict__.keys()
