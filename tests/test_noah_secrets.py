"""No credential ever leaks: not in logs (all loggers, DEBUG), errors, tracebacks, stats or reprs.

Secrets are the API key, the signing PEM (whole, each base64 line, a distinctive substring) and
every JWT actually sent, recorded by a transport wrapped around the client's real one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import traceback
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from transports import RecordingTransport

from balances_etl.emulator import Fault, FaultKind, NoahSandbox, generate_signing_keypair
from balances_etl.noah import BALANCES, ConfigError, NoahClient, NoahConfig, NoahError
from balances_etl.noah.signing import load_private_key

WRONG_API_KEY = "apikey_sandbox_wrong-but-still-secret"


def pem_secrets(pem: bytes) -> list[str]:
    lines = [line for line in pem.decode().splitlines() if line and not line.startswith("-----")]
    return [pem.decode().strip(), *lines, lines[1][8:40]]


def jwt_secrets(tokens: list[str]) -> list[str]:
    """Each token, its signature segment, and a window inside it (a partial leak is still a leak)."""
    return [part for token in tokens for part in (token, token.rsplit(".", 1)[1], token.rsplit(".", 1)[1][8:40])]


def assert_nothing_leaks(texts: list[str], secrets: list[str]) -> None:
    haystack = "\n".join(texts)
    for secret in secrets:
        assert secret and secret not in haystack, f"a secret ({len(secret)} chars) leaked"


def error_texts(error: BaseException) -> list[str]:
    texts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    if isinstance(error, NoahError) and error.stats is not None:
        texts.append(json.dumps(error.stats.as_metadata()))
    for name, value in vars(error).items():
        texts.append(f"{name}={value!r}")
    return texts


SCENARIOS: dict[str, tuple[list[Fault], dict[str, Any]]] = {
    "success": ([], {}),
    "success-after-every-transient": (
        [Fault(kind=FaultKind.STATUS, page=1, status=503), Fault(kind=FaultKind.RATE_LIMIT, page=2, retry_after="0"),
         Fault(kind=FaultKind.DROP_CONNECTION, page=2), Fault(kind=FaultKind.TRUNCATED_JSON, page=3),
         Fault(kind=FaultKind.NON_JSON_200, page=3), Fault(kind=FaultKind.NON_JSON_ERROR, page=3),
         Fault(kind=FaultKind.SLOW, page=3, delay_seconds=1.0), Fault(kind=FaultKind.DUPLICATE_ITEM, page=3)],
        {"read_timeout_seconds": 0.3, "max_attempts": 10},
    ),
    "rate-limit-above-cap": ([Fault(kind=FaultKind.RATE_LIMIT, retry_after="999", times=None)], {}),
    "retry-budget": ([Fault(kind=FaultKind.RATE_LIMIT, retry_after="5", times=None)], {"retry_budget_seconds": 8}),
    "persistent-503": ([Fault(kind=FaultKind.STATUS, status=503, times=None)], {"max_attempts": 3}),
    "persistent-drop": ([Fault(kind=FaultKind.DROP_CONNECTION, times=None)], {"max_attempts": 2}),
    "persistent-timeout": ([Fault(kind=FaultKind.SLOW, delay_seconds=1.0, times=None)],
                           {"max_attempts": 2, "read_timeout_seconds": 0.2}),
    "persistent-truncated": ([Fault(kind=FaultKind.TRUNCATED_JSON, times=None)], {"max_attempts": 2}),
    "persistent-non-json-200": ([Fault(kind=FaultKind.NON_JSON_200, times=None)], {"max_attempts": 2}),
    "persistent-non-json-error": ([Fault(kind=FaultKind.NON_JSON_ERROR, times=None)], {"max_attempts": 2}),
    **{
        f"status-{status}": ([Fault(kind=FaultKind.STATUS, status=status, times=None)], {})
        for status in (400, 401, 403, 404)
    },
    "wrong-api-key": ([], {"api_key": WRONG_API_KEY}),
    "wrong-signing-key": ([], {"signing_key": "other"}),
    "token-cycle": ([Fault(kind=FaultKind.TOKEN_CYCLE, page=2)], {}),
    "page-cap": ([], {"max_pages": 1}),
    "missing-items": ([Fault(kind=FaultKind.MISSING_ITEMS, page=2)], {}),
    "missing-field": ([Fault(kind=FaultKind.MISSING_FIELD, page=2, field="Total")], {}),
    "wrong-type": ([Fault(kind=FaultKind.WRONG_TYPE, page=2, value=None)], {}),
    "invalid-amount": ([Fault(kind=FaultKind.INVALID_AMOUNT, page=2, value="1_000")], {}),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_no_secret_in_logs_errors_or_stats(
    scenario: str, sandbox: NoahSandbox, api_key: str, p384_keypair: tuple[bytes, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    faults, overrides = SCENARIOS[scenario]
    sandbox.configure(item_count=250)
    for fault in faults:
        sandbox.add_fault(fault)
    if overrides.get("signing_key") == "other":
        overrides = {**overrides, "signing_key": load_private_key(generate_signing_keypair("P-384")[0])}
    config = NoahConfig(
        api_key=api_key, signing_key=load_private_key(p384_keypair[0]), base_url=sandbox.base_url,
        backoff_base_seconds=0.001, backoff_max_seconds=0.002,
    )
    config = dataclasses.replace(config, **overrides)
    transport = RecordingTransport(config.base_url)
    caplog.set_level(logging.DEBUG)  # the root logger: ours and the emulator's

    texts = [repr(config), str(config)]
    with NoahClient(config, transport=transport, sleep=lambda seconds: None) as client:
        texts.append(repr(client))
        try:
            snapshot = client.fetch(BALANCES)
        except NoahError as error:
            assert scenario not in ("success", "success-after-every-transient")
            texts += error_texts(error)
        else:
            texts.append(json.dumps(snapshot.stats.as_metadata()))
    transport.close()
    texts += [caplog.text, *(record.getMessage() for record in caplog.records)]

    signatures = [request.headers["Api-Signature"] for request in transport.sent if "Api-Signature" in request.headers]
    assert signatures and any(r.name == "balances_etl.noah" for r in caplog.records)
    assert_nothing_leaks(texts, [api_key, WRONG_API_KEY, *pem_secrets(p384_keypair[0]), *jwt_secrets(signatures)])


@pytest.mark.parametrize("kind", [FaultKind.STATUS, FaultKind.RATE_LIMIT])
def test_server_echoing_the_api_key_is_redacted(
    kind: FaultKind, sandbox: NoahSandbox, api_key: str, p384_keypair: tuple[bytes, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.add_fault(Fault(kind=kind, status=400, retry_after="999", detail=f"rejected key {api_key}", times=None))
    config = NoahConfig(api_key=api_key, signing_key=load_private_key(p384_keypair[0]), base_url=sandbox.base_url)
    caplog.set_level(logging.DEBUG)
    with NoahClient(config) as client, pytest.raises(NoahError) as caught:
        client.fetch(BALANCES)
    assert "rejected key [REDACTED]" in str(caught.value)
    assert_nothing_leaks([*error_texts(caught.value), caplog.text], [api_key])


def test_item_value_echoing_the_api_key_is_redacted(sandbox: NoahSandbox, api_key: str, p384_keypair: tuple[bytes, bytes]) -> None:
    sandbox.add_fault(Fault(kind=FaultKind.INVALID_AMOUNT, value=f"{api_key}!"))
    config = NoahConfig(api_key=api_key, signing_key=load_private_key(p384_keypair[0]), base_url=sandbox.base_url)
    with NoahClient(config) as client, pytest.raises(NoahError) as caught:
        client.fetch(BALANCES)
    assert "[REDACTED]" in str(caught.value)
    assert_nothing_leaks(error_texts(caught.value), [api_key])


def _rsa_pem() -> str:
    key = rsa.generate_private_key(65537, 2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


@pytest.mark.parametrize(
    "case",
    ["garbage-pem", "rsa-pem", "both-keys", "prod-unsigned", "credentials-in-url", "key-with-space"],
)
def test_config_errors_leak_nothing(case: str, p384_keypair: tuple[bytes, bytes], caplog: pytest.LogCaptureFixture) -> None:
    pem = p384_keypair[0].decode()
    garbage = "-----BEGIN EC PRIVATE KEY-----\nZGlzdGluY3RpdmVHYXJiYWdlUGVtQm9keVRoYXRJc05vdEFLZXk=\n-----END EC PRIVATE KEY-----"
    rsa_pem = _rsa_pem()
    key = "apikey_sandbox_config-secret-1234"
    environ = {
        "garbage-pem": {"NOAH_API_KEY": key, "NOAH_SIGNING_KEY": garbage},
        "rsa-pem": {"NOAH_API_KEY": key, "NOAH_SIGNING_KEY": rsa_pem},
        "both-keys": {"NOAH_API_KEY": key, "NOAH_SIGNING_KEY": pem, "NOAH_SIGNING_KEY_PATH": "/nonexistent.pem"},
        "prod-unsigned": {"NOAH_API_KEY": "apikey_prod_config-secret-1234"},
        "credentials-in-url": {"NOAH_API_KEY": key, "NOAH_BASE_URL": "https://user:url-secret-pass@h.example/v1"},
        "key-with-space": {"NOAH_API_KEY": "apikey_sandbox_config secret"},
    }[case]
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as caught:
        NoahConfig.from_env(environ)
    secrets = [key, "apikey_prod_config-secret-1234", "config secret", "url-secret-pass",
               "ZGlzdGluY3RpdmVHYXJiYWdl", *pem_secrets(p384_keypair[0]), *pem_secrets(rsa_pem.encode())]
    assert_nothing_leaks([*error_texts(caught.value), caplog.text], secrets)
