"""Deterministic, realistic balances for the NOAH sandbox emulator.

Every item is a pure function of (seed, simulated date, environment, item index), so the same
inputs give byte-identical pages and any slice of a 1,000,000-item account is generated on its
own, without building the rest. The rules, which the pipeline's analytics are meant to notice:

- ``AccountType`` is always ``Current``.
- Items 0-2 carry the documented codes of the environment (sandbox ``BTC_TEST``,
  ``ETH_TEST_SEPOLIA``, ``USDC_TEST``; production ``BTC``, ``ETH``, ``USDC``). Item ``i >= 3``
  carries the synthetic code ``TOK{i:06d}_TEST`` (sandbox) / ``TOK{i:06d}`` (production), so
  (AccountType, CryptoCurrency) stays unique at any size.
- Decimal places follow ``index % 3``: 8 (BTC-like), 18 (ETH-like), 6 (USDC-like). Amounts are
  fixed-scale strings built from integers (``"1.50000000"``: trailing zeros are on the wire);
  each code keeps between 2 and all of its fraction digits significant.
- ``Total`` drifts within +/-20 % of a per-code base, a new value each day. On about one day in
  three a code has a pending outflow (``Total > Available``); otherwise ``Available == Total``.
- Dormant balance: the documented USDC-like code (item 2) never moves (a reserve nobody touches),
  so a history of more than a week always has a stale balance to report; its pending outflow, if
  any, is one Out created when it fell dormant (``Dormancy.since``) that stays Pending, or settles
  on ``Dormancy.settles`` (Total then drops by it, once).
- Appearing currency: an account of 1 to 3 items also holds ``SOL_TEST`` (sandbox) / ``SOL``
  (production), 9 decimal places, as its last item, only on dates where
  ``(date.toordinal() // 7) % 2 == 0``: two weeks on, two weeks off.
"""

from __future__ import annotations

import datetime
import hashlib
from decimal import Decimal
from dataclasses import dataclass
from typing import Literal, Protocol

Environment = Literal["sandbox", "production"]
ENVIRONMENTS: tuple[Environment, ...] = ("sandbox", "production")
# The codes NOAH documents per environment (CryptoCurrencyCode in NOAH's OpenAPI document), in the
# order of its table: BTC, ETH, USDC. The emulator stands for NOAH, so it keeps its own copy.
DOCUMENTED_CODES: dict[Environment, tuple[str, ...]] = {
    "sandbox": ("BTC_TEST", "ETH_TEST_SEPOLIA", "USDC_TEST"),
    "production": ("BTC", "ETH", "USDC"),
}
ACCOUNT_TYPE = "Current"
SOMETIMES_PRESENT_MAX_ITEMS = 3


@dataclass(frozen=True)
class _Family:
    """How one kind of asset looks: decimal places and the range of its base balance."""

    scale: int
    low_minor: int
    high_minor: int


_BTC_LIKE = _Family(scale=8, low_minor=5 * 10**6, high_minor=25 * 10**8)  # 0.05 .. 25
_ETH_LIKE = _Family(scale=18, low_minor=5 * 10**17, high_minor=800 * 10**18)  # 0.5 .. 800
_USDC_LIKE = _Family(scale=6, low_minor=100 * 10**6, high_minor=2_000_000 * 10**6)  # 100 .. 2M
_SOL_LIKE = _Family(scale=9, low_minor=10**9, high_minor=20_000 * 10**9)  # 1 .. 20,000
_FAMILY_CYCLE = (_BTC_LIKE, _ETH_LIKE, _USDC_LIKE)
DORMANT_INDEX = 2  # the documented USDC-like code
DORMANT_SINCE = datetime.date(2026, 1, 1)
_DORMANT_ORDINAL = DORMANT_SINCE.toordinal()


@dataclass(frozen=True)
class Dormancy:
    """When the dormant item's pending Out was created, and the day it settles (None: never).

    Configurable because a perpetual Pending pulls an incremental sync's horizon back to ``since``.
    """

    since: datetime.date = DORMANT_SINCE
    settles: datetime.date | None = None

    def __post_init__(self) -> None:
        if self.settles is not None and self.settles <= self.since:
            raise ValueError("the dormant pending outflow must settle after it was created")

    def settled_by(self, day: datetime.date) -> bool:
        return self.settles is not None and self.settles <= day


def documented_currencies(environment: Environment) -> tuple[str, ...]:
    return DOCUMENTED_CODES[environment]


def _environment_code(base: str, environment: Environment) -> str:
    return f"{base}_TEST" if environment == "sandbox" else base


def unknown_currency_code(environment: Environment) -> str:
    """A code outside the documented list, for the UNKNOWN_CURRENCY fault."""
    return _environment_code("NEWCOIN", environment)


def sometimes_present_code(environment: Environment) -> str:
    return _environment_code("SOL", environment)


def holds_sometimes_present_code(item_count: int, day: datetime.date) -> bool:
    return 1 <= item_count <= SOMETIMES_PRESENT_MAX_ITEMS and (day.toordinal() // 7) % 2 == 0


def _digest(text: str) -> int:
    """A stable 128-bit integer (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "big")


def _fixed(minor: int, scale: int) -> str:
    """``minor`` units as a decimal string with exactly ``scale`` fraction digits."""
    digits = str(minor).rjust(scale + 1, "0")
    return f"{digits[:-scale]}.{digits[-scale:]}"


def _units(seed: int, code: str, family: _Family, day_ordinal: int) -> tuple[int, int]:
    """(Total, pending outflow) of one code on one day, in units of 10^-scale."""
    profile = _digest(f"{seed}:{code}")
    base = family.low_minor + profile % (family.high_minor - family.low_minor)
    significant_fraction_digits = 2 + (profile >> 64) % (family.scale - 1)
    quantum = 10 ** (family.scale - significant_fraction_digits)

    day = _digest(f"{seed}:{code}:{day_ordinal}")
    drift_per_mille = day % 401 - 200
    total = base + base * drift_per_mille // 1000
    total -= total % quantum
    pending = 0
    if (day >> 16) % 3 == 0:
        pending = total * ((day >> 32) % 250 + 1) // 1000
        pending -= pending % quantum
    return total, pending


@dataclass(frozen=True)
class ItemDay:
    """One generated item on one day, in units of 10^-scale; ``shift`` is injected movements."""

    code: str
    scale: int
    total: int
    pending: int

    def amounts(self, shift: int = 0) -> tuple[str, str]:
        """(Available, Total) as exact fixed-scale strings."""
        return _fixed(self.total + shift - self.pending, self.scale), _fixed(self.total + shift, self.scale)


def item_day(seed: int, index: int, item_count: int, environment: Environment, day: datetime.date,
             dormancy: Dormancy = Dormancy()) -> ItemDay:
    """Item ``index`` of an account of ``item_count`` (``item_count`` itself: the sometimes-present code)."""
    if index >= item_count:
        code, family = sometimes_present_code(environment), _SOL_LIKE
    else:
        documented = documented_currencies(environment)
        code = documented[index] if index < len(documented) else _environment_code(f"TOK{index:06d}", environment)
        family = _FAMILY_CYCLE[index % 3]
        if index == DORMANT_INDEX:
            total, pending = _units(seed, code, family, _DORMANT_ORDINAL)
            if dormancy.settled_by(day):
                total, pending = total - pending, 0
            return ItemDay(code, family.scale, total, pending)
    return ItemDay(code, family.scale, *_units(seed, code, family, day.toordinal()))


def _item(code: str, amounts: tuple[str, str]) -> dict[str, str]:
    available, total = amounts
    return {"AccountType": ACCOUNT_TYPE, "CryptoCurrency": code, "Available": available, "Total": total}


class BalanceSource(Protocol):
    """The account's items, served page by page."""

    def __len__(self) -> int: ...

    def slice(self, start: int, stop: int) -> list[object]: ...


@dataclass(frozen=True)
class GeneratedBalances:
    """The generated account; items are built only for the slice asked for."""

    seed: int
    day: datetime.date
    item_count: int
    environment: Environment

    def __len__(self) -> int:
        return self.item_count + int(holds_sometimes_present_code(self.item_count, self.day))

    def slice(self, start: int, stop: int) -> list[object]:
        return [self._generate(index) for index in range(max(start, 0), min(stop, len(self)))]

    movements: tuple[tuple[str, Decimal], ...] = ()  # (code, amount) injected on or before ``day``
    dormancy: Dormancy = Dormancy()

    def _generate(self, index: int) -> dict[str, str]:
        generated = item_day(self.seed, index, self.item_count, self.environment, self.day, self.dormancy)
        shift = sum(int(amount.scaleb(generated.scale)) for code, amount in self.movements if code == generated.code)
        return _item(generated.code, generated.amounts(shift))


@dataclass(frozen=True)
class VerbatimBalances:
    """Items a test configured explicitly, served exactly as given (any JSON values)."""

    items: tuple[object, ...]

    def __len__(self) -> int:
        return len(self.items)

    def slice(self, start: int, stop: int) -> list[object]:
        return list(self.items[start:stop])
