"""Fixtures shared by every test: signing keys and a running NOAH sandbox emulator."""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest

from balances_etl.emulator import NoahSandbox, generate_signing_keypair

API_KEY = "apikey_sandbox_emulator"
SIMULATED_DATE = datetime.date(2026, 11, 20)


@pytest.fixture(scope="session")
def api_key() -> str:
    return API_KEY


@pytest.fixture(scope="session")
def p384_keypair() -> tuple[bytes, bytes]:
    """(private PEM, public PEM) for ES384 request signing."""
    return generate_signing_keypair("P-384")


@pytest.fixture(scope="session")
def p256_keypair() -> tuple[bytes, bytes]:
    """(private PEM, public PEM) for ES256 request signing."""
    return generate_signing_keypair("P-256")


@pytest.fixture
def sandbox(p384_keypair: tuple[bytes, bytes]) -> Iterator[NoahSandbox]:
    """A running sandbox requiring ES384 signatures: 3 items on 2026-11-20."""
    public_pem = p384_keypair[1]
    with NoahSandbox(api_key=API_KEY, public_key_pem=public_pem, simulated_date=SIMULATED_DATE, item_count=3) as sb:
        yield sb


@pytest.fixture
def unsigned_sandbox() -> Iterator[NoahSandbox]:
    """A running sandbox whose key accepts unsigned calls: 3 items on 2026-11-20."""
    with NoahSandbox(api_key=API_KEY, simulated_date=SIMULATED_DATE, item_count=3) as sb:
        yield sb
