"""What the emulated account holds: the configuration every answer of the emulator is a pure function of."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal

from balances_etl.emulator.dataset import BalanceSource, Dormancy, Environment, GeneratedBalances, VerbatimBalances
from balances_etl.emulator.ledger import LedgerConfig, build_listing
from balances_etl.emulator.responses import encode_json


@dataclass(frozen=True)
class SandboxConfig:
    """What the account holds. ``simulated_date=None`` follows today's UTC date."""

    seed: int
    simulated_date: datetime.date | None
    item_count: int
    items: tuple[object, ...] | None = None  # served verbatim instead of generated data
    ledger_days: int = 30  # days of transactions a listing holds, up to the simulated date
    transacting_items: int = 1000  # the first items that have transactions (see ``ledger``)
    movements: tuple[tuple[str, Decimal, datetime.date], ...] = ()  # balance changes without a transaction
    dormancy: Dormancy = Dormancy()  # the dormant item's pending outflow: created when, settles when
    transaction_items: tuple[object, ...] | None = None  # served verbatim instead of the ledger's listing

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise TypeError("seed must be an integer")
        if not isinstance(self.item_count, int) or isinstance(self.item_count, bool) or self.item_count < 0:
            raise ValueError("item_count must be an integer >= 0")
        for name in ("ledger_days", "transacting_items"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1")
        if self.simulated_date is not None and not isinstance(self.simulated_date, datetime.date):
            raise TypeError("simulated_date must be a datetime.date or None")
        for verbatim in (self.items, self.transaction_items):
            if verbatim is not None:
                encode_json(list(verbatim))  # fail now, not on the first request

    @property
    def effective_date(self) -> datetime.date:
        return self.simulated_date or datetime.datetime.now(datetime.UTC).date()

    def source(self, environment: Environment) -> BalanceSource:
        if self.items is not None:
            return VerbatimBalances(self.items)
        day = self.effective_date
        movements = tuple((code, amount) for code, amount, on in self.movements if on <= day)
        return GeneratedBalances(self.seed, day, self.item_count, environment, movements, self.dormancy)

    def transactions(self, environment: Environment) -> tuple[object, ...]:
        """The transactions listing at the simulated date, oldest first: the verbatim transaction items,
        else the ledger's (none with verbatim balance items: no ledger explains them)."""
        if self.transaction_items is not None:
            return self.transaction_items
        if self.items is not None:
            return ()
        return build_listing(LedgerConfig(self.seed, self.effective_date, self.item_count, environment,
                                          self.ledger_days, self.transacting_items, self.dormancy))

    def to_json(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "simulated_date": self.simulated_date.isoformat() if self.simulated_date else None,
            "effective_date": self.effective_date.isoformat(),
            "item_count": self.item_count,
            "ledger_days": self.ledger_days,
            "transacting_items": self.transacting_items,
            "movements": [[code, str(amount), on.isoformat()] for code, amount, on in self.movements],
            "dormant_since": self.dormancy.since.isoformat(),
            "dormant_settles": self.dormancy.settles.isoformat() if self.dormancy.settles else None,
            "items": list(self.items) if self.items is not None else None,
            "transaction_items": list(self.transaction_items) if self.transaction_items is not None else None,
        }
