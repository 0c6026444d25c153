"""Every asset check, in one table per checked asset: its name, whether it blocks publication, and what it checks.

The Dagster check specs, the judges in ``transforms.checks``, the failure messages and the README's
check table all read this table; nothing else words or flags a check.
"""

from __future__ import annotations

from dataclasses import dataclass

from balances_etl.domain.names import DOCUMENTED_CURRENCIES, Check
from balances_etl.domain.transactions import FINAL_STATUSES, LEGAL_TRANSITIONS


@dataclass(frozen=True)
class CheckInfo:
    name: Check
    blocking: bool  # a failure stops the day from being published
    description: str


# Worded the same for every domain's partition.
_SCHEMA = CheckInfo(Check.SCHEMA, True,
                    "columns, order and Arrow types exactly as the published schema; no nulls in non-nullable columns.")
_UNKNOWN_CURRENCY = CheckInfo(Check.UNKNOWN_CURRENCY, False,
                              f"crypto_currency is one of the documented codes {', '.join(DOCUMENTED_CURRENCIES)}.")

# On the day's balances partition, in the order they are reported: blocking first.
BALANCE_PARTITION_CHECKS: tuple[CheckInfo, ...] = (
    _SCHEMA,
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
    _UNKNOWN_CURRENCY,
    CheckInfo(Check.CURRENCY_DISAPPEARED, False,
              "every (account_type, crypto_currency) of the previous snapshot is still present (passes without one)."),
    CheckInfo(Check.ZERO_ITEMS, False, "the snapshot holds at least one balance."),
)

_TRANSITIONS = "; ".join(f"{before} -> {' or '.join(after)}" for before, after in LEGAL_TRANSITIONS.items())

# On the day's transactions sync partition, in the order they are reported: blocking first.
TRANSACTION_SYNC_CHECKS: tuple[CheckInfo, ...] = (
    _SCHEMA,
    CheckInfo(Check.AMOUNTS_VALID, True,
              "amount_raw and network_fee_raw, where present, are 1-38 characters matching NOAH's PositiveDecimal "
              "pattern (ASCII digits), and amount and amount_value (network_fee, network_fee_value) are their exact "
              "canonical form and DECIMAL(38,18), NULL only where absent or too wide."),
    CheckInfo(Check.TRANSACTION_IDS_UNIQUE, True, "(snapshot_date, transaction_id) is unique within the sync."),
    CheckInfo(Check.STATUS_TRANSITIONS_LEGAL, True,
              f"every known transaction's status moves only as NOAH documents ({_TRANSITIONS}; "
              f"{' and '.join(FINAL_STATUSES)} are final) from its status before this sync."),
    _UNKNOWN_CURRENCY,
    CheckInfo(Check.AMOUNT_MISSING, False,
              "every transaction has an Amount (one without is kept, but cannot be rolled forward)."),
    CheckInfo(Check.KNOWN_TRANSACTION_MISSING, False,
              "every transaction known from earlier syncs and created at or after the sync's horizon is still "
              "listed by NOAH (a missing one is kept, never deleted)."),
)

# On the day's reconciliation.
RECONCILIATION_CHECKS: tuple[CheckInfo, ...] = (
    CheckInfo(Check.NO_NEW_BREAKS, False,
              "the day has no reconciliation break that the previous snapshot day did not have."),
)
