"""The NOAH sandbox emulator as a client sees it: real HTTP, signed by an independent signer.

The signer below uses PyJWT directly (not project code), so a bug shared by the emulator and the
project's client cannot hide itself.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from balances_etl.domain.amounts import amount_problem
from balances_etl.emulator import Exchange, Fault, FaultKind, NoahSandbox, generate_signing_keypair
from balances_etl.emulator.dataset import GeneratedBalances
from balances_etl.domain.names import DOCUMENTED_CURRENCIES, PRODUCTION_CURRENCIES, SANDBOX_CURRENCIES
from conftest import API_KEY, SIMULATED_DATE

AUDIENCE = "https://api.noah.com"
OPENAPI_PATH = Path(__file__).resolve().parents[2] / "shared/noah/openapi.json"
OPENAPI_URI = "urn:noah:openapi"
_REGISTRY = Registry().with_resource(
    OPENAPI_URI, Resource(contents=json.loads(OPENAPI_PATH.read_text()), specification=DRAFT4)
)


def schema(name: str) -> Draft4Validator:
    """A validator for one of NOAH's component schemas, with $refs resolved over the whole document."""
    return Draft4Validator({"$ref": f"{OPENAPI_URI}#/components/schemas/{name}"}, registry=_REGISTRY)


BALANCES_SCHEMA = schema("GetBalancesResponse")
ERROR_SCHEMA = schema("Error")
DROP = object()  # a claim value meaning "leave this claim out"


class Client:
    """Calls the sandbox as a NOAH client would, signing each call with a fresh PyJWT token."""

    def __init__(self, base_url: str, private_key: object = None, algorithm: str = "ES384") -> None:
        self.base_url = base_url
        self.private_key = private_key
        self.algorithm = algorithm
        self.session = requests.Session()

    def claims(self, params: dict[str, str] | None, **changes: object) -> dict[str, object]:
        now = int(time.time())
        claims: dict[str, object] = {
            "aud": AUDIENCE, "iat": now, "exp": now + 300, "method": "GET", "path": "/v1/balances"
        }
        if params:
            claims["queryParams"] = dict(params)
        claims.update(changes)
        return {name: value for name, value in claims.items() if value is not DROP}

    def sign(self, claims: dict[str, object]) -> str:
        return jwt.encode(claims, self.private_key, algorithm=self.algorithm)

    def get(
        self,
        params: dict[str, str] | None = None,
        *,
        token: str | None = None,
        signed: bool = True,
        api_key: str | None = API_KEY,
        timeout: float = 5,
    ) -> requests.Response:
        headers = {"X-Api-Key": api_key} if api_key is not None else {}
        if token is None and signed and self.private_key is not None:
            token = self.sign(self.claims(params))
        if token is not None:
            headers["Api-Signature"] = token
        return self.session.get(f"{self.base_url}/balances", params=params, headers=headers, timeout=timeout)

    def pages(self, page_size: int | None = None, limit: int = 20) -> list[requests.Response]:
        """Follow PageToken until a page has none (at most ``limit`` pages)."""
        responses: list[requests.Response] = []
        params = {} if page_size is None else {"PageSize": str(page_size)}
        while len(responses) < limit:
            response = self.get(params)
            responses.append(response)
            token = response.json().get("PageToken") if response.status_code == 200 else None
            if not token:
                break
            params = {**params, "PageToken": token}
        return responses


@pytest.fixture
def client(sandbox: NoahSandbox, p384_keypair: tuple[bytes, bytes]) -> Client:
    return Client(sandbox.base_url, p384_keypair[0])


@pytest.fixture
def unsigned_client(unsigned_sandbox: NoahSandbox) -> Client:
    return Client(unsigned_sandbox.base_url)


def balances_of(response: requests.Response) -> dict[str, object]:
    assert response.status_code == 200, response.text
    body = response.json()
    BALANCES_SCHEMA.validate(body)
    return body


def error_of(response: requests.Response, status: int, error_type: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    ERROR_SCHEMA.validate(body)
    assert body["Type"] == error_type and body["Instance"] and body["Detail"]
    return body


def items_of(responses: list[requests.Response]) -> list[object]:
    return [item for response in responses for item in balances_of(response)["Items"]]


def page_token(response: requests.Response) -> str:
    return balances_of(response)["PageToken"]


# pagination


def test_a_250_item_account_comes_in_three_pages_of_the_expected_items(sandbox: NoahSandbox, client: Client) -> None:
    sandbox.configure(item_count=250)
    pages = client.pages(page_size=100)
    assert [len(balances_of(page)["Items"]) for page in pages] == [100, 100, 50]
    assert "PageToken" not in pages[-1].json()
    assert items_of(pages) == sandbox.expected_items()
    assert [record.page_number for record in sandbox.requests] == [1, 2, 3]


def test_page_size_defaults_to_20_and_is_capped_at_100(sandbox: NoahSandbox, client: Client) -> None:
    sandbox.configure(item_count=150)
    assert len(balances_of(client.get())["Items"]) == 20
    assert len(balances_of(client.get({"PageSize": "500"}))["Items"]) == 100


@pytest.mark.parametrize("page_size", ["0", "-1", "abc", "1.5", "", "10 "])
def test_a_page_size_that_is_not_a_positive_integer_is_invalid(client: Client, page_size: str) -> None:
    body = error_of(client.get({"PageSize": page_size}), 400, "InvalidMessage")
    assert "PageSize" in body["Detail"]


def test_page_tokens_are_opaque_and_unknown_ones_are_invalid(client: Client) -> None:
    token = page_token(client.get({"PageSize": "2"}))
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    guessed = base64.urlsafe_b64encode((2).to_bytes(4, "big") + (2).to_bytes(4, "big")).decode()
    for bad in (tampered, guessed, "not-a-token", ""):
        body = error_of(client.get({"PageSize": "2", "PageToken": bad}), 400, "InvalidMessage")
        assert "PageToken" in body["Detail"]


def test_a_repeated_query_parameter_is_invalid(unsigned_sandbox: NoahSandbox) -> None:
    response = requests.get(
        f"{unsigned_sandbox.base_url}/balances?PageSize=1&PageSize=2", headers={"X-Api-Key": API_KEY}, timeout=5
    )
    error_of(response, 400, "InvalidMessage")


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/payments"), ("POST", "/v1/transactions"), ("POST", "/v1/balances"), ("GET", "/balances")]
)
def test_other_paths_and_methods_are_not_found(unsigned_sandbox: NoahSandbox, method: str, path: str) -> None:
    root = unsigned_sandbox.base_url.removesuffix("/v1")
    response = requests.request(method, root + path, headers={"X-Api-Key": API_KEY}, timeout=5)
    error_of(response, 404, "ResourceNotFound")


def test_the_schema_check_is_not_vacuous() -> None:
    item = {"AccountType": "Current", "CryptoCurrency": "BTC", "Available": "1", "Total": "1"}
    assert BALANCES_SCHEMA.is_valid({"Items": [item]})
    assert not BALANCES_SCHEMA.is_valid({"Items": [{**item, "Total": "1e3"}]})
    assert not BALANCES_SCHEMA.is_valid({"Items": [{key: item[key] for key in list(item)[:3]}]})
    assert not ERROR_SCHEMA.is_valid({"Type": 1})


# authentication


def _alg_none(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


PARAMS = {"PageSize": "5"}
Forge = Callable[[Client], "str | None"]


def _signed(**changes: object) -> Forge:
    """A correctly signed token whose claims carry ``changes`` (DROP removes a claim)."""
    return lambda client: client.sign(client.claims(PARAMS, **changes))


def _timed(iat: float, exp: float | object) -> Forge:
    """A correctly signed token with ``iat`` / ``exp`` these seconds from the signing time (DROP: no exp)."""

    def forge(client: Client) -> str:
        now = int(time.time())
        return client.sign(client.claims(PARAMS, iat=now + iat, exp=exp if exp is DROP else now + exp))

    return forge


def _signed_with(key: object, algorithm: str) -> Forge:
    return lambda client: jwt.encode(client.claims(PARAMS), key, algorithm=algorithm)


OTHER_P384_KEY = ec.generate_private_key(ec.SECP384R1())
P256_KEY = ec.generate_private_key(ec.SECP256R1())
AUTH_FAILURES = [
    pytest.param(lambda c: None, "Missing Api-Signature", id="missing header"),
    pytest.param(lambda c: "not.a.jwt", "not a well-formed JWT", id="garbage token"),
    pytest.param(_signed_with(OTHER_P384_KEY, "ES384"), "signature does not verify", id="wrong key"),
    pytest.param(_signed_with("a-shared-secret-of-32-bytes-or-more", "HS256"), "algorithm 'HS256'", id="HS256"),
    pytest.param(lambda c: _alg_none(c.claims(PARAMS)), "algorithm 'none'", id="alg none"),
    pytest.param(_signed_with(P256_KEY, "ES256"), "algorithm 'ES256'", id="ES256 for P-384"),
    pytest.param(_signed(aud="https://api.sandbox.noah.com"), "'aud'", id="wrong aud"),
    pytest.param(_timed(0.5, 300), "'iat' must be an integer", id="float iat"),
    pytest.param(_timed(0, DROP), "'exp' must be an integer", id="missing exp"),
    pytest.param(_timed(-600, -60), "expired", id="expired"),
    pytest.param(_timed(0, 901), "exceeds 900", id="lifetime over 900 s"),
    pytest.param(_timed(300, 600), "in the future", id="iat in the future"),
    pytest.param(_signed(method="POST"), "'method'", id="wrong method"),
    pytest.param(_signed(path="/balances"), "'path'", id="path without /v1"),
    pytest.param(_signed(queryParams=DROP), "'queryParams' is missing", id="queryParams missing"),
    pytest.param(_signed(queryParams={"PageSize": "6"}), "different value: ['PageSize']", id="queryParams different"),
    pytest.param(_signed(queryParams={**PARAMS, "X": "1"}), "not in the request: ['X']", id="queryParams extra key"),
    pytest.param(_signed(queryParams={"PageSize": 5}), "string value", id="queryParams integer value"),
    pytest.param(_signed(bodyHash=hashlib.sha256(b"").hexdigest()), "'bodyHash'", id="bodyHash on a GET"),
]


@pytest.mark.parametrize(("forge", "detail"), AUTH_FAILURES)
def test_each_bad_signature_is_unauthorized_with_a_specific_detail(
    sandbox: NoahSandbox, client: Client, forge: Forge, detail: str
) -> None:
    token = forge(client)
    response = client.get(PARAMS, token=token, signed=False)
    body = error_of(response, 401, "Unauthorized")
    assert detail in body["Detail"]
    assert API_KEY not in response.text and (token is None or token not in response.text)
    assert sandbox.requests[-1].claims is None


def test_query_params_claim_must_be_absent_without_a_query(client: Client) -> None:
    body = error_of(client.get(token=client.sign(client.claims(None, queryParams={}))), 401, "Unauthorized")
    assert "must be absent" in body["Detail"]


@pytest.mark.parametrize(
    ("api_key", "detail"), [(None, "Missing X-Api-Key"), ("apikey_sandbox_other", "Invalid API key")]
)
def test_a_missing_or_wrong_api_key_is_unauthorized(client: Client, api_key: str | None, detail: str) -> None:
    response = client.get(api_key=api_key)
    assert detail in error_of(response, 401, "Unauthorized")["Detail"]
    assert "apikey_sandbox_other" not in response.text


def test_each_error_has_its_own_instance(client: Client) -> None:
    first, second = (error_of(client.get(api_key=None), 401, "Unauthorized") for _ in range(2))
    assert first["Instance"] != second["Instance"]


def test_production_rejects_a_sandbox_key_and_serves_production_codes() -> None:
    with NoahSandbox(environment="production", simulated_date=SIMULATED_DATE) as production:
        client = Client(production.base_url)
        detail = error_of(client.get(api_key=API_KEY), 401, "Unauthorized")["Detail"]
        assert "sandbox environment" in detail
        items = balances_of(client.get(api_key=production.api_key))["Items"]
    assert production.api_key.startswith("apikey_prod_")
    assert [item["CryptoCurrency"] for item in items] == list(PRODUCTION_CURRENCIES)


def test_an_unsigned_sandbox_key_accepts_calls_without_a_signature(
    unsigned_sandbox: NoahSandbox, unsigned_client: Client
) -> None:
    items = balances_of(unsigned_client.get())["Items"]
    assert [item["CryptoCurrency"] for item in items] == list(SANDBOX_CURRENCIES)
    record = unsigned_sandbox.requests[-1]
    assert record.claims is None and record.token_sha256 is None


@pytest.mark.parametrize("fmt", ["pkcs8", "sec1"])
def test_p256_keys_sign_es256_in_either_private_key_format(fmt: str) -> None:
    private_pem, public_pem = generate_signing_keypair("P-256", fmt=fmt)
    assert private_pem.startswith(b"-----BEGIN EC PRIVATE KEY" if fmt == "sec1" else b"-----BEGIN PRIVATE KEY")
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY")
    with NoahSandbox(public_key_pem=public_pem, simulated_date=SIMULATED_DATE) as p256:
        balances_of(Client(p256.base_url, private_pem, algorithm="ES256").get({"PageSize": "1"}))


def test_the_request_log_keeps_claims_and_a_hash_of_each_fresh_token(sandbox: NoahSandbox, client: Client) -> None:
    tokens = [client.sign(client.claims(PARAMS, iat=int(time.time()) - age)) for age in (0, 1)]
    for token in tokens:
        balances_of(client.get(PARAMS, token=token))
    records = sandbox.requests
    assert [record.number for record in records] == [1, 2]
    assert [record.token_sha256 for record in records] == [hashlib.sha256(t.encode()).hexdigest() for t in tokens]
    assert records[0].claims == jwt.decode(tokens[0], options={"verify_signature": False})
    assert records[0].query == PARAMS and records[0].status == 200
    sandbox.reset_requests()
    client.get()
    assert [record.number for record in sandbox.requests] == [1]


# the wire, for listeners in the same process


def test_an_on_exchange_listener_sees_each_request_and_answer_as_they_go_over_the_wire(
    p384_keypair: tuple[bytes, bytes],
) -> None:
    seen: list[Exchange] = []
    with NoahSandbox(
        api_key=API_KEY, public_key_pem=p384_keypair[1], simulated_date=SIMULATED_DATE, on_exchange=seen.append
    ) as sandbox:
        client = Client(sandbox.base_url, p384_keypair[0])
        token = client.sign(client.claims({"PageSize": "2"}))
        served = client.get({"PageSize": "2"}, token=token)
        sandbox.add_fault(Fault(FaultKind.RATE_LIMIT, retry_after="1"))
        limited = client.get()
        sandbox.add_fault(Fault(FaultKind.DROP_CONNECTION))
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            client.get()
        requests.get(sandbox.base_url.removesuffix("/v1") + "/_sandbox/config", timeout=5)  # not a /v1 exchange
        log = sandbox.requests
    assert [(exchange.status, exchange.request) for exchange in seen] == [(200, log[0]), (429, log[1]), (200, log[2])]
    first = seen[0]
    assert (first.method, first.target) == ("GET", "/v1/balances?PageSize=2")
    assert first.header("api-signature") == token and first.header("X-Api-Key") == API_KEY  # verbatim, any case
    assert first.header("X-Not-Sent") is None
    assert first.body_bytes == len(served.content)
    assert dict(first.response_headers)["Content-Length"] == served.headers["Content-Length"]
    assert dict(seen[1].response_headers)["Retry-After"] == limited.headers["Retry-After"] == "1"
    dropped = seen[2]
    assert 0 < dropped.body_bytes < int(dict(dropped.response_headers)["Content-Length"])
    assert first.at <= seen[1].at <= dropped.at


def test_a_failing_listener_is_logged_and_the_answer_still_goes_out(
    sandbox: NoahSandbox, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.on_exchange = lambda exchange: 1 / 0
    balances_of(client.get())
    assert "the on_exchange listener failed" in caplog.text
    sandbox.on_exchange = None
    balances_of(client.get())


def test_expired_page_tokens_are_refused_and_later_ones_work(sandbox: NoahSandbox, client: Client) -> None:
    old = page_token(client.get({"PageSize": "1"}))
    sandbox.expire_page_tokens()
    body = error_of(client.get({"PageSize": "1", "PageToken": old}), 400, "InvalidMessage")
    assert body["Detail"] == "PageToken is not a token this API issued"
    assert items_of(client.pages(page_size=1)) == sandbox.expected_items()


def test_a_listener_runs_before_the_answer_reaches_the_client(sandbox: NoahSandbox, client: Client) -> None:
    # Expiring the tokens from the listener: the token the client then receives is already unknown.
    sandbox.on_exchange = lambda exchange: sandbox.expire_page_tokens()
    token = page_token(client.get({"PageSize": "1"}))
    error_of(client.get({"PageSize": "1", "PageToken": token}), 400, "InvalidMessage")


# faults


def test_status_fault_fires_once_on_its_page(sandbox: NoahSandbox, client: Client) -> None:
    sandbox.add_fault(Fault(FaultKind.STATUS, page=2, status=503, detail="maintenance"))
    first = client.get({"PageSize": "2"})
    params = {"PageSize": "2", "PageToken": page_token(first)}
    assert error_of(client.get(params), 503, "Unexpected")["Detail"] == "maintenance"
    balances_of(client.get(params))
    assert [(r.status, r.fault) for r in sandbox.requests] == [(200, None), (503, "STATUS"), (200, None)]
    assert sandbox.requests[1].error_detail == "maintenance"


def test_persistent_and_request_numbered_faults(sandbox: NoahSandbox, client: Client) -> None:
    sandbox.add_fault(Fault(FaultKind.STATUS, request=2, status=500))
    assert [client.get().status_code for _ in range(3)] == [200, 500, 200]
    sandbox.add_fault(Fault(FaultKind.STATUS, status=502, times=None))
    assert [client.get().status_code for _ in range(3)] == [502, 502, 502]
    assert len(sandbox.faults) == 1
    sandbox.clear_faults()
    assert client.get().status_code == 200


def test_a_rejected_request_does_not_consume_a_fault(sandbox: NoahSandbox, client: Client) -> None:
    sandbox.add_fault(Fault(FaultKind.STATUS, status=500))
    error_of(client.get(api_key=None), 401, "Unauthorized")
    assert client.get().status_code == 500


@pytest.mark.parametrize("retry_after", ["1", "0", "Wed, 21 Oct 2026 07:28:00 GMT"], ids=["seconds", "zero", "date"])
def test_rate_limit_sends_retry_after(sandbox: NoahSandbox, client: Client, retry_after: str) -> None:
    sandbox.add_fault(Fault(FaultKind.RATE_LIMIT, retry_after=retry_after))
    response = client.get()
    error_of(response, 429, "Unexpected")
    assert response.headers["Retry-After"] == retry_after


def test_rate_limit_without_retry_after(sandbox: NoahSandbox, client: Client) -> None:
    sandbox.add_fault(Fault(FaultKind.RATE_LIMIT))
    response = client.get()
    assert response.status_code == 429 and "Retry-After" not in response.headers


def test_a_dropped_connection_cuts_the_body_then_the_next_call_works(sandbox: NoahSandbox, client: Client) -> None:
    sandbox.add_fault(Fault(FaultKind.DROP_CONNECTION))
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        client.get()
    balances_of(client.get())


def test_a_slow_answer_trips_the_client_read_timeout(sandbox: NoahSandbox, client: Client) -> None:
    sandbox.add_fault(Fault(FaultKind.SLOW, delay_seconds=2.0))
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.get(timeout=0.2)
    assert sandbox.requests[-1].fault == "SLOW"


def test_truncated_json_is_a_prefix_of_the_page_with_a_matching_length(sandbox: NoahSandbox, client: Client) -> None:
    sandbox.add_fault(Fault(FaultKind.TRUNCATED_JSON))
    truncated = client.get()
    assert truncated.status_code == 200 and int(truncated.headers["Content-Length"]) == len(truncated.content)
    with pytest.raises(ValueError):
        truncated.json()
    assert client.get().content.startswith(truncated.content)


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        (Fault(FaultKind.NON_JSON_200), 200),
        (Fault(FaultKind.NON_JSON_ERROR), 502),
        (Fault(FaultKind.NON_JSON_ERROR, status=504), 504),
    ],
)
def test_html_answers(sandbox: NoahSandbox, client: Client, fault: Fault, status: int) -> None:
    sandbox.add_fault(fault)
    response = client.get()
    assert response.status_code == status and response.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        response.json()


def test_missing_items_breaks_the_schema(sandbox: NoahSandbox, client: Client) -> None:
    sandbox.add_fault(Fault(FaultKind.MISSING_ITEMS))
    body = client.get().json()
    assert "Items" not in body and not BALANCES_SCHEMA.is_valid(body)


def test_zero_items(sandbox: NoahSandbox, client: Client) -> None:
    sandbox.add_fault(Fault(FaultKind.ZERO_ITEMS))
    assert client.get().content == b'{"Items":[]}'


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        (Fault(FaultKind.MISSING_FIELD, item_index=1, field="Total"), lambda item: "Total" not in item),
        (Fault(FaultKind.WRONG_TYPE, value=10.5), lambda item: item["Available"] == 10.5),
        (Fault(FaultKind.WRONG_TYPE, field="Total"), lambda item: item["Total"] is None),
        (Fault(FaultKind.INVALID_AMOUNT), lambda item: item["Available"] == "1e3"),
        (Fault(FaultKind.INVALID_AMOUNT, value="1,5"), lambda item: item["Available"] == "1,5"),
        (Fault(FaultKind.INVALID_AMOUNT, value="1" * 39), lambda item: item["Available"] == "1" * 39),
        (Fault(FaultKind.UNKNOWN_CURRENCY), lambda item: item["CryptoCurrency"] not in DOCUMENTED_CURRENCIES),
    ],
    ids=["missing field", "number", "null", "exponent", "comma", "39 chars", "unknown currency"],
)
def test_item_faults_bend_one_item_only(
    sandbox: NoahSandbox, client: Client, fault: Fault, check: Callable[[dict], bool]
) -> None:
    expected = sandbox.expected_items()
    sandbox.add_fault(fault)
    items = client.get().json()["Items"]
    assert check(items[fault.item_index])
    assert [item for i, item in enumerate(items) if i != fault.item_index] == [
        item for i, item in enumerate(expected) if i != fault.item_index
    ]


def test_duplicate_item_repeats_a_key_of_an_earlier_page(sandbox: NoahSandbox, client: Client) -> None:
    sandbox.add_fault(Fault(FaultKind.DUPLICATE_ITEM, page=2))
    first, second = client.pages(page_size=2)
    keys = [(item["AccountType"], item["CryptoCurrency"]) for item in items_of([first, second])]
    assert len(keys) == 4 and len(set(keys)) == 3
    assert balances_of(second)["Items"][-1] == balances_of(first)["Items"][0]


def test_token_cycle_to_the_same_page(sandbox: NoahSandbox, client: Client) -> None:
    sandbox.add_fault(Fault(FaultKind.TOKEN_CYCLE, page=2, cycle_to_page=2))
    sandbox.configure(item_count=5)
    token_2 = page_token(client.get({"PageSize": "2"}))
    assert page_token(client.get({"PageSize": "2", "PageToken": token_2})) == token_2


def test_token_cycle_back_to_an_earlier_page(sandbox: NoahSandbox, client: Client) -> None:
    sandbox.add_fault(Fault(FaultKind.TOKEN_CYCLE, page=3, cycle_to_page=2))
    token_2 = page_token(client.get({"PageSize": "1"}))
    token_3 = page_token(client.get({"PageSize": "1", "PageToken": token_2}))
    assert page_token(client.get({"PageSize": "1", "PageToken": token_3})) == token_2


@pytest.mark.parametrize(("kind", "end"), [(FaultKind.EMPTY_TOKEN_END, ""), (FaultKind.NULL_TOKEN_END, None)])
def test_token_end_faults_wait_for_the_last_page(
    sandbox: NoahSandbox, client: Client, kind: FaultKind, end: str | None
) -> None:
    sandbox.add_fault(Fault(kind))
    first = client.get({"PageSize": "2"})
    last = client.get({"PageSize": "2", "PageToken": page_token(first)})
    assert last.json() == {"Items": sandbox.expected_items()[2:], "PageToken": end}


# data


def test_same_seed_and_date_give_identical_bytes_and_other_days_other_values() -> None:
    """Page tokens are keyed per sandbox, so across sandboxes the bytes before the token match."""

    def first_page(seed: int, day: datetime.date) -> bytes:
        with NoahSandbox(seed=seed, simulated_date=day, item_count=250) as sb:
            client = Client(sb.base_url)
            content = client.get({"PageSize": "100"}).content
            assert client.get({"PageSize": "100"}).content == content
            return content.partition(b',"PageToken"')[0]

    reference = first_page(7, SIMULATED_DATE)
    assert first_page(7, SIMULATED_DATE) == reference
    assert first_page(8, SIMULATED_DATE) != reference
    other_day = json.loads(first_page(7, SIMULATED_DATE + datetime.timedelta(days=1)) + b"}")["Items"]
    assert [item["Total"] for item in other_day] != [item["Total"] for item in json.loads(reference + b"}")["Items"]]


def test_amounts_are_valid_fixed_scale_strings_with_total_not_below_available(unsigned_sandbox: NoahSandbox) -> None:
    unsigned_sandbox.configure(item_count=60)
    items = unsigned_sandbox.expected_items()
    scales = {item["CryptoCurrency"]: len(item["Total"].partition(".")[2]) for item in items}
    assert [scales[code] for code in SANDBOX_CURRENCIES] == [8, 18, 6]
    assert [scales[item["CryptoCurrency"]] for item in items[3:9]] == [8, 18, 6, 8, 18, 6]
    assert items[3]["CryptoCurrency"] == "TOK000003_TEST"
    for item in items:
        assert amount_problem(item["Available"]) is None and amount_problem(item["Total"]) is None
        assert len(item["Available"].partition(".")[2]) == scales[item["CryptoCurrency"]]
        assert Decimal(item["Total"]) >= Decimal(item["Available"]) > 0
    assert any(item["Total"].endswith("0") for item in items)


def _month(environment: str = "sandbox") -> dict[datetime.date, dict[str, dict[str, str]]]:
    days = [SIMULATED_DATE + datetime.timedelta(days=offset) for offset in range(40)]
    return {
        day: {item["CryptoCurrency"]: item for item in GeneratedBalances(7, day, 3, environment).slice(0, 10)}
        for day in days
    }


def test_pending_outflows_come_and_go() -> None:
    pending = {day: items["BTC_TEST"]["Total"] != items["BTC_TEST"]["Available"] for day, items in _month().items()}
    assert any(pending.values()) and not all(pending.values())


def test_usdc_is_dormant_while_btc_moves() -> None:
    month = _month()
    days = sorted(month)
    assert all(month[day]["USDC_TEST"] == month[days[0]]["USDC_TEST"] for day in days)
    assert any(month[day]["BTC_TEST"] != month[days[0]]["BTC_TEST"] for day in days[1:10])


def test_sol_is_held_every_other_week_only() -> None:
    for day, items in _month().items():
        assert ("SOL_TEST" in items) == ((day.toordinal() // 7) % 2 == 0)
        assert list(items)[:3] == list(SANDBOX_CURRENCIES)
    assert "SOL" in _month("production")[SIMULATED_DATE + datetime.timedelta(days=7)]


def test_a_million_item_account_is_served_slice_by_slice(sandbox: NoahSandbox, client: Client) -> None:
    sandbox.configure(item_count=1_000_000)
    assert len(balances_of(client.get({"PageSize": "100"}))["Items"]) == 100
    tail = GeneratedBalances(7, SIMULATED_DATE, 1_000_000, "sandbox").slice(999_998, 1_000_005)
    assert [item["CryptoCurrency"] for item in tail] == ["TOK999998_TEST", "TOK999999_TEST"]


def test_configured_items_are_served_verbatim(sandbox: NoahSandbox, client: Client) -> None:
    adversarial = [
        {"AccountType": "Current", "CryptoCurrency": "BTC_TEST", "Available": "+.5", "Total": "0010.0100"},
        {"AccountType": "Current", "CryptoCurrency": "ETH_TEST_SEPOLIA", "Available": 1.5, "Total": None},
        "not an object",
    ]
    sandbox.configure(items=adversarial)
    assert client.get().json()["Items"] == adversarial == sandbox.expected_items()
    sandbox.configure(items=None)
    assert len(client.get().json()["Items"]) == 3


# control surface and server hygiene


def test_the_control_surface_drives_the_sandbox_over_http(sandbox: NoahSandbox, client: Client) -> None:
    control = sandbox.base_url.removesuffix("/v1") + "/_sandbox"
    config = requests.post(f"{control}/config", json={"item_count": 5, "simulated_date": "2026-01-02"}, timeout=5)
    assert config.json()["item_count"] == 5 and config.json()["simulated_date"] == "2026-01-02"
    assert requests.post(f"{control}/faults", json={"kind": "STATUS", "status": 503}, timeout=5).status_code == 201
    assert [fault["kind"] for fault in requests.get(f"{control}/faults", timeout=5).json()] == ["STATUS"]
    assert client.get().status_code == 503
    assert len(balances_of(client.get())["Items"]) == 5
    log = requests.get(f"{control}/requests", timeout=5).json()
    assert [(entry["status"], entry["fault"]) for entry in log] == [(503, "STATUS"), (200, None)]
    assert log[1]["claims"]["path"] == "/v1/balances"
    requests.post(f"{control}/faults", json={"kind": "ZERO_ITEMS"}, timeout=5)
    assert requests.delete(f"{control}/faults", timeout=5).ok and client.get().json()["Items"]
    assert requests.delete(f"{control}/requests", timeout=5).ok and sandbox.requests == []
    for bad in ({"kind": "NOPE"}, {"kind": "STATUS", "colour": "red"}):
        error_of(requests.post(f"{control}/faults", json=bad, timeout=5), 400, "InvalidMessage")
    error_of(requests.post(f"{control}/config", data=b"{", timeout=5), 400, "InvalidMessage")
    dormant = requests.post(f"{control}/config", json={"dormant_since": "2026-01-01", "dormant_settles": "2026-01-05",
                                                       "transaction_items": [{"ID": "t-1"}]}, timeout=5).json()
    assert (dormant["dormant_since"], dormant["dormant_settles"], dormant["transaction_items"]) == (
        "2026-01-01", "2026-01-05", [{"ID": "t-1"}])
    error_of(requests.post(f"{control}/config", json={"dormant_settles": "2025-12-31"}, timeout=5), 400, "InvalidMessage")


def test_accepted_sockets_have_tcp_nodelay(unsigned_sandbox: NoahSandbox, unsigned_client: Client) -> None:
    """Without TCP_NODELAY, keep-alive requests wait ~40 ms each on Nagle + delayed ACK."""
    balances_of(unsigned_client.get())
    connections = unsigned_sandbox._http.open_connections()  # the server side of the keep-alive socket
    assert connections and all(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for sock in connections)


def test_stop_closes_keep_alive_connections_and_ends_slow_answers() -> None:
    sandbox = NoahSandbox(simulated_date=SIMULATED_DATE).start()
    balances_of(Client(sandbox.base_url).get())  # leaves an idle keep-alive connection
    sandbox.add_fault(Fault(FaultKind.SLOW, delay_seconds=60))
    host, port = sandbox.base_url.removeprefix("http://").removesuffix("/v1").split(":")
    raw = socket.create_connection((host, int(port)))
    raw.sendall(f"GET /v1/balances HTTP/1.1\r\nHost: x\r\nX-Api-Key: {API_KEY}\r\n\r\n".encode())
    for _ in range(500):
        if len(sandbox.requests) == 2:
            break
        time.sleep(0.01)
    sandbox.stop()
    assert raw.recv(1024) == b""  # the slow answer was cut short, not served after 60 s
    deadline = time.monotonic() + 10  # handler threads finish on their own once their sockets close
    while [t for t in threading.enumerate() if t.name.startswith("noah-sandbox")] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("noah-sandbox")]
    raw.close()



def test_the_cli_serves_signed_calls_with_a_generated_key_and_cleans_up() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "balances_etl.emulator", "--items", "4", "--date", "2026-11-20"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        banner: dict[str, str] = {}
        for line in process.stdout:
            if line.startswith("Press Ctrl-C"):
                break
            name, _, value = line.strip().partition(": ")
            banner[name] = value.strip()
        key_path = Path(banner["private key"].split(" ")[0])
        assert key_path.stat().st_mode & 0o777 == 0o600
        assert "PRIVATE KEY-----" not in "".join(banner.values())
        cli = Client(banner["base URL"], key_path.read_bytes())
        assert len(balances_of(cli.get(api_key=banner["API key"]))["Items"]) == 4
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
    assert process.returncode == 0 and not key_path.exists()
