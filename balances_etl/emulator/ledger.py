"""The transactions behind the generated balances: ``GET /v1/transactions`` explains every change of
``GET /v1/balances`` exactly, so a clean history rolls forward to zero.

NOAH's model: ``Total`` includes outflows not yet settled, ``Available`` excludes them. An Out lowers
Available by Amount + NetworkFee while Pending and Total by the same when it settles (a Failed one
gives Available back); an In raises both when it settles. Per item and day D (in units of 10^-scale):

- the day's pending outflow p(D) = Total - Available is one Out created during D, Pending at the end
  of D, Settled at the end of D+1 (one in eight Failed instead), Amount + NetworkFee = p(D);
- the rest of the change, X = T(D) - T(D-1) + p(D-1) when that Out settled on D, is one In (X > 0)
  or one Out with a fee (X < 0), created and settled during D.
- The dormant item never moves: its pending outflow is one Out, created when it fell dormant, that
  stays Pending, or settles on the configured day (``dataset.Dormancy``): the one old Pending an
  incremental sync must still see settle.
- Only the first ``transacting_items`` items transact (plus the sometimes-present code, every day,
  listed or not, so a window across its absence rolls forward); the others' changes are unexplained.

A listing at simulated date D holds the transactions created in the ``ledger_days`` days up to the
end of D, with their status at the end of D. Injected movements (``NoahSandbox.inject_movement``)
change balances without a transaction. Everything is a pure function of the configuration; one
listing is built per configuration and cached.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import uuid
from dataclasses import dataclass

from balances_etl.emulator.dataset import DORMANT_INDEX, SOMETIMES_PRESENT_MAX_ITEMS, Dormancy, Environment, _fixed, item_day

_NETWORKS = {8: ("Bitcoin", "BitcoinTest"), 18: ("Ethereum", "EthereumTestSepolia"), 6: ("Ethereum", "EthereumTestSepolia"),
             9: ("Solana", "SolanaDevnet")}
FAILED_ONE_IN = 8


@dataclass(frozen=True)
class LedgerConfig:
    seed: int
    day: datetime.date  # the listing's simulated date
    item_count: int
    environment: Environment
    ledger_days: int
    transacting_items: int
    dormancy: Dormancy = Dormancy()


def _digest(*parts: object) -> bytes:
    return hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=16).digest()


def _instant(day: datetime.date, hour: int, digest: bytes) -> str:
    """An instant during ``day`` from ``hour`` on, to the millisecond, RFC 3339 UTC."""
    offset = int.from_bytes(digest[:4], "big") % 3_600_000
    at = datetime.datetime.combine(day, datetime.time(hour), tzinfo=datetime.UTC) + datetime.timedelta(milliseconds=offset)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _split_fee(units: int) -> tuple[int, int]:
    """(Amount, NetworkFee) summing to ``units``: a fee of about 1 %, none when that rounds to 0."""
    fee = units // 100
    return units - fee, fee


def _transaction(config: LedgerConfig, code: str, scale: int, day: datetime.date, kind: str, direction: str,
                 units: int, *, with_fee: bool, status: str, hour: int) -> dict[str, object]:
    digest = _digest(config.seed, code, day.isoformat(), kind)
    amount, fee = _split_fee(units) if with_fee else (units, 0)
    networks = _NETWORKS[scale]
    item: dict[str, object] = {
        "ID": str(uuid.UUID(bytes=digest)),
        "PublicID": f"pub-{digest.hex()[:12]}",
        "Network": networks[1] if config.environment == "sandbox" else networks[0],
        "Created": _instant(day, hour, digest),
        "Status": status,
        "Direction": direction,
        "CryptoCurrency": code,
        "Amount": _fixed(amount, scale),
    }
    if fee:
        item["NetworkFee"] = _fixed(fee, scale)
    if digest[5] % 3 == 0:
        item["ExternalID"] = f"ext-{digest.hex()[12:20]}"
    return item


def _pending_settles(config: LedgerConfig, code: str, created: datetime.date) -> bool:
    return _digest(config.seed, code, created.isoformat(), "pending")[6] % FAILED_ONE_IN != 0


def _item_transactions(config: LedgerConfig, index: int) -> list[dict[str, object]]:
    first = config.day - datetime.timedelta(days=config.ledger_days - 1)
    days = [first + datetime.timedelta(days=n) for n in range(config.ledger_days)]
    listed: list[dict[str, object]] = []
    if index == DORMANT_INDEX:
        dormancy = config.dormancy
        generated = item_day(config.seed, index, config.item_count, config.environment, dormancy.since)
        if generated.pending and dormancy.since <= config.day:
            status = "Settled" if dormancy.settled_by(config.day) else "Pending"
            listed.append(_transaction(config, generated.code, generated.scale, dormancy.since, "dormant-pending",
                                       "Out", generated.pending, with_fee=True, status=status, hour=3))
        return listed
    state = {d: item_day(config.seed, index, config.item_count, config.environment, d)
             for d in [first - datetime.timedelta(days=1), *days]}
    for day in days:
        today, yesterday = state[day], state[day - datetime.timedelta(days=1)]
        if today.pending:
            status = "Pending"
            if day < config.day:
                status = "Settled" if _pending_settles(config, today.code, day) else "Failed"
            listed.append(_transaction(config, today.code, today.scale, day, "pending", "Out", today.pending,
                                       with_fee=True, status=status, hour=6))
        settled_yesterday = yesterday.pending if _pending_settles(config, today.code, day - datetime.timedelta(days=1)) else 0
        change = today.total - yesterday.total + settled_yesterday
        if change:
            direction = "In" if change > 0 else "Out"
            listed.append(_transaction(config, today.code, today.scale, day, "change", direction, abs(change),
                                       with_fee=direction == "Out", status="Settled", hour=12))
    return listed


@functools.lru_cache(maxsize=4)
def build_listing(config: LedgerConfig) -> tuple[dict[str, object], ...]:
    """Every transaction of the listing, oldest first (Created, then ID); cached, so never mutate one."""
    indexes = list(range(min(config.item_count, config.transacting_items)))
    if 1 <= config.item_count <= SOMETIMES_PRESENT_MAX_ITEMS:
        indexes.append(config.item_count)  # the sometimes-present code, every day
    listed = [item for index in indexes for item in _item_transactions(config, index)]
    listed.sort(key=lambda item: (str(item["Created"]), str(item["ID"])))
    return tuple(listed)
