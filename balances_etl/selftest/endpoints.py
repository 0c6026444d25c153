"""The list endpoints the fault matrix strikes, each described once: where its pages go on the wire,
where its rows land (Parquet dataset, warehouse table), and the row an item NOAH served must become.

The matrix and its judge are one mechanism configured per endpoint, not one copy per endpoint.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from balances_etl.domain.amounts import canonical_amount, fits_decimal_38_18
from balances_etl.domain.names import BalancesAsset, Table, TransactionsAsset
from balances_etl.emulator.server import BALANCES_PATH, TRANSACTIONS_PATH
from balances_etl.storage.parquet import BALANCE_SNAPSHOTS, TRANSACTION_SYNCS, Dataset

Row = tuple[object, ...]


def _exact(raw: object) -> tuple[str | None, Decimal | None]:
    """An amount as the pipeline keeps it: canonical string, exact DECIMAL(38,18) when it fits."""
    if raw is None:
        return None, None
    canonical = canonical_amount(str(raw))
    return canonical, Decimal(canonical) if fits_decimal_38_18(canonical) else None


def _balance_row(day: dt.date, item: Mapping[str, object]) -> Row:
    (available, available_value), (total, total_value) = _exact(item["Available"]), _exact(item["Total"])
    return (day, item["AccountType"], item["CryptoCurrency"], item["Available"], item["Total"], available, total,
            available_value, total_value)


def _transaction_row(day: dt.date, item: Mapping[str, object]) -> Row:
    (amount, amount_value), (fee, fee_value) = _exact(item.get("Amount")), _exact(item.get("NetworkFee"))
    return (day, item["ID"], item["Created"], item["Status"], item["Direction"], item["CryptoCurrency"], item["Network"],
            item.get("Amount"), amount, amount_value, item.get("NetworkFee"), fee, fee_value)


@dataclass(frozen=True)
class MatrixEndpoint:
    """One list endpoint under test; ``columns`` are read alike from its Parquet partition and its table
    (the day first, the identifying strings next, the exact DECIMALs last)."""

    name: str  # the emulator's Fault.endpoint, the raw landing's folder
    path: str
    dataset: Dataset
    table: str
    columns: tuple[str, ...]
    identifying: int  # the leading columns that identify a row as text; the rest compare by value
    partition_asset: str  # whose non-blocking checks are the row's warnings
    expected_row: Callable[[dt.date, Mapping[str, object]], Row]


BALANCES = MatrixEndpoint(
    "balances", BALANCES_PATH, BALANCE_SNAPSHOTS, Table.BALANCE_SNAPSHOTS,
    ("snapshot_date", "account_type", "crypto_currency", "available_raw", "total_raw", "available", "total",
     "available_amount", "total_amount"),
    7, BalancesAsset.PARTITION, _balance_row,
)
TRANSACTIONS = MatrixEndpoint(
    "transactions", TRANSACTIONS_PATH, TRANSACTION_SYNCS, Table.TRANSACTION_OBSERVATIONS,
    ("snapshot_date", "transaction_id", "created_raw", "status", "direction", "crypto_currency", "network",
     "amount_raw", "amount", "amount_value", "network_fee_raw", "network_fee", "network_fee_value"),
    9, TransactionsAsset.PARTITION, _transaction_row,
)
ENDPOINTS = {endpoint.name: endpoint for endpoint in (BALANCES, TRANSACTIONS)}
