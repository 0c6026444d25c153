"""Every asset check in one table: its name, whether it blocks publication, and what it checks.

The Dagster check specs, the judges in ``transforms.checks``, the failure messages and the README's
check table all read this table; nothing else words or flags a check.
"""

from __future__ import annotations

from dataclasses import dataclass

from balances_etl.domain.names import DOCUMENTED_CURRENCIES, Check


@dataclass(frozen=True)
class CheckInfo:
    name: Check
    blocking: bool  # a failure stops the day from being published
    description: str


# On the day's balances partition, in the order they are reported: blocking first.
BALANCE_PARTITION_CHECKS: tuple[CheckInfo, ...] = (
    CheckInfo(Check.SCHEMA, True,
              "columns, order and Arrow types exactly as the published schema; no nulls in non-nullable columns."),
    CheckInfo(Check.AMOUNTS_VALID, True,
              "available_raw and total_raw are 1-38 characters matching NOAH's PositiveDecimal pattern (ASCII digits)."),
    CheckInfo(Check.KEYS_UNIQUE, True,
              "(snapshot_date, account_type, crypto_currency) is unique within the partition."),
    CheckInfo(Check.AVAILABLE_NOT_ABOVE_TOTAL, True,
              "available <= total on every row: as DECIMAL(38,18) where both fit, else as exact canonical strings."),
    CheckInfo(Check.CANONICAL_MATCHES_DECIMAL, True,
              "canonical == canonical form of raw; decimal == canonical exactly where non-null; "
              "NULL only where the value does not fit DECIMAL(38,18)."),
    CheckInfo(Check.AMOUNT_TOO_WIDE, False,
              "valid amounts not representable in DECIMAL(38,18) (kept as exact strings, decimal NULL)."),
    CheckInfo(Check.UNKNOWN_CURRENCY, False,
              f"crypto_currency is one of the documented codes {', '.join(DOCUMENTED_CURRENCIES)}."),
    CheckInfo(Check.CURRENCY_DISAPPEARED, False,
              "every (account_type, crypto_currency) of the previous snapshot is still present (passes without one)."),
    CheckInfo(Check.ZERO_ITEMS, False, "the snapshot holds at least one balance."),
)

# On the day's reconciliation.
RECONCILIATION_CHECKS: tuple[CheckInfo, ...] = (
    CheckInfo(Check.NO_NEW_BREAKS, False,
              "the day has no reconciliation break that the previous snapshot day did not have."),
)

ALL_CHECKS: dict[Check, CheckInfo] = {info.name: info for info in BALANCE_PARTITION_CHECKS + RECONCILIATION_CHECKS}
