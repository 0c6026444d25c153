"""The emulator's GET /v1/transactions, through the real client over loopback: NOAH's schema, the
order asked for, every transaction once, and a ledger that explains every balance change exactly."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from test_emulator import schema
from test_snapshot import client_for

from balances_etl.emulator import Fault, FaultKind, NoahSandbox
from balances_etl.emulator.dataset import Dormancy
from balances_etl.noah import BALANCES, TRANSACTIONS
from balances_etl.noah.endpoints import Endpoint

TRANSACTIONS_SCHEMA = schema("GetTransactionsResponse")
START = dt.date(2026, 11, 1)
DAYS = 20


def listing(sandbox: NoahSandbox, private_pem: bytes, endpoint: Endpoint = TRANSACTIONS) -> tuple[list[dict], list[dict]]:
    """Every item of ``endpoint`` and every page body, through the real client."""
    bodies: list[dict] = []
    with client_for(sandbox, private_pem) as client:
        client.fetch(endpoint, on_page=lambda page, _items: bodies.append(json.loads(page.body)))
    return [item for body in bodies for item in body["Items"]], bodies


def test_pages_follow_the_openapi_schema_newest_first_each_transaction_once(sandbox, p384_keypair):
    items, bodies = listing(sandbox, p384_keypair[0])
    for body in bodies:
        TRANSACTIONS_SCHEMA.validate(body)
    assert len(bodies) > 1 and len({item["ID"] for item in items}) == len(items) == len(sandbox.config.transactions("sandbox"))
    order = [(item["Created"], item["ID"]) for item in items]
    assert order == sorted(order, reverse=True)
    transactions_requests = [r for r in sandbox.requests if r.path == "/v1/transactions"]
    assert {r.claims["queryParams"]["SortDirection"] for r in transactions_requests} == {"DESC"}


def test_a_bad_sort_direction_is_noahs_400(sandbox):
    import urllib.error
    import urllib.request

    unsigned = NoahSandbox(api_key=sandbox.api_key, simulated_date=START, item_count=3).start()
    try:
        request = urllib.request.Request(f"{unsigned.base_url}/transactions?SortDirection=SIDEWAYS",
                                         headers={"X-Api-Key": unsigned.api_key})
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=10)
        assert answer.value.code == 400 and b"SortDirection" in answer.value.read()
    finally:
        unsigned.stop()


def _observe(sandbox: NoahSandbox, private_pem: bytes, day: dt.date) -> tuple[dict, dict]:
    sandbox.configure(simulated_date=day)
    balances, _ = listing(sandbox, private_pem, BALANCES)
    transactions, _ = listing(sandbox, private_pem)
    return {b["CryptoCurrency"]: b for b in balances}, {t["ID"]: t for t in transactions}


def _outflow(transaction: dict) -> Decimal:
    return Decimal(transaction["Amount"]) + Decimal(transaction.get("NetworkFee", "0"))


def test_the_ledger_explains_every_change_and_pending_outflow_except_an_injected_movement(sandbox, p384_keypair):
    sandbox.inject_movement("BTC_TEST", "-0.00000123", START + dt.timedelta(days=12))
    unexplained, last = _roll_forward(sandbox, p384_keypair[0])
    assert unexplained == [(START + dt.timedelta(days=12), "BTC_TEST", Decimal("-0.00000123"))]
    assert {t["Status"] for t in last.values()} == {"Pending", "Settled", "Failed"}


def test_the_dormant_reserves_old_pending_outflow_settles_when_configured_and_stays_explained(sandbox, p384_keypair):
    settles = START + dt.timedelta(days=5)
    sandbox.configure(seed=4, dormancy=Dormancy(since=START - dt.timedelta(days=40), settles=settles))  # seed 4: it has one
    unexplained, last = _roll_forward(sandbox, p384_keypair[0])
    assert unexplained == []
    dormant = [t for t in last.values() if t["Created"].startswith(str(START - dt.timedelta(days=40)))]
    assert [t["Status"] for t in dormant] == ["Settled"]
    _, before = _observe(sandbox, p384_keypair[0], settles - dt.timedelta(days=1))
    assert before[dormant[0]["ID"]]["Status"] == "Pending"


def _roll_forward(sandbox: NoahSandbox, private_pem: bytes) -> tuple[list[tuple], dict]:
    """Every (day, code, difference) the newly settled transactions leave unexplained over DAYS days
    (pending outflows must match Total - Available exactly), and the last day's transactions."""
    previous_balances, previous = _observe(sandbox, private_pem, START)
    unexplained = []
    for offset in range(1, DAYS):
        day = START + dt.timedelta(days=offset)
        balances, transactions = _observe(sandbox, private_pem, day)
        for code, balance in balances.items():
            pending = sum((_outflow(t) for t in transactions.values()
                           if t["CryptoCurrency"] == code and t["Status"] == "Pending" and t["Direction"] == "Out"),
                          Decimal(0))
            assert pending == Decimal(balance["Total"]) - Decimal(balance["Available"]), (day, code)
            if code not in previous_balances:
                continue
            newly_settled = [t for tid, t in transactions.items() if t["CryptoCurrency"] == code
                             and t["Status"] == "Settled" and previous.get(tid, {}).get("Status") != "Settled"]
            flows = sum((Decimal(t["Amount"]) if t["Direction"] == "In" else -_outflow(t) for t in newly_settled),
                        Decimal(0))
            difference = Decimal(balance["Total"]) - Decimal(previous_balances[code]["Total"]) - flows
            if difference:
                unexplained.append((day, code, difference))
        previous_balances, previous = balances, transactions
    return unexplained, previous


def test_a_transactions_fault_strikes_only_transactions(sandbox, p384_keypair):
    sandbox.add_fault(Fault(kind=FaultKind.STATUS, status=503, times=None, endpoint="transactions"))
    balances, _ = listing(sandbox, p384_keypair[0], BALANCES)
    assert len(balances) == 3
    with pytest.raises(Exception, match="503"):
        listing(sandbox, p384_keypair[0])
    with pytest.raises(ValueError, match="endpoint"):
        Fault(kind=FaultKind.STATUS, endpoint="payments")
