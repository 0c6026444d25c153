"""Benchmark inputs: balances from the emulator's own deterministic dataset (the data the API serves), and
a generated transactions listing for the emulator to serve."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pyarrow as pa

from balances_etl.emulator.dataset import GeneratedBalances
from balances_etl.noah.endpoints import BALANCES

SEED = 7  # the emulator's default seed
PAGE_SIZE = 100


def items_table(day: dt.date, count: int, *, seed: int = SEED) -> pa.Table:
    """The raw item columns the NOAH client hands to normalize, for ``count`` generated balances."""
    items = GeneratedBalances(seed, day, count, "sandbox").slice(0, count)
    return pa.table(
        {
            "account_type": [item["AccountType"] for item in items],
            "crypto_currency": [item["CryptoCurrency"] for item in items],
            "available_raw": [item["Available"] for item in items],
            "total_raw": [item["Total"] for item in items],
            "page_number": [1 + index // PAGE_SIZE for index in range(len(items))],
            "item_index": [index % PAGE_SIZE for index in range(len(items))],
        },
        schema=BALANCES.items.arrow_schema,
    )


def write_ipc(table: pa.Table, path: Path) -> Path:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return path


def read_ipc(path: Path) -> pa.Table:
    """Read into process memory (not a memory map), as the pipeline holds its items."""
    with pa.OSFile(str(path), "rb") as source:
        return pa.ipc.open_file(source).read_all()


_TRANSACTION_KINDS = (("BTC_TEST", "BitcoinTest"), ("ETH_TEST_SEPOLIA", "EthereumTestSepolia"),
                      ("USDC_TEST", "EthereumTestSepolia"))


def transaction_items(count: int, newest: dt.datetime, per_day: int, *, first_id: int = 0) -> list[dict[str, str]]:
    """``count`` NOAH Transaction items, oldest first (as the emulator holds a listing), ``per_day``
    a day ending at ``newest``. All Settled: no Pending one drags a later sync's horizon back, so an
    incremental sync reads only the new ones and the overlap."""
    spacing = dt.timedelta(days=1) / per_day
    oldest = newest - spacing * (count - 1)
    items = []
    for index in range(count):
        number = first_id + index
        currency, network = _TRANSACTION_KINDS[number % len(_TRANSACTION_KINDS)]
        item = {
            "ID": str(uuid.UUID(int=number)),
            "Network": network,
            "Created": (oldest + spacing * index).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "Status": "Settled",
            "Direction": "In" if number % 3 else "Out",
            "CryptoCurrency": currency,
            "Amount": f"{1 + number % 997}.{number % 10_000:04d}",
            "PublicID": f"pub-{number}",
        }
        if item["Direction"] == "Out":
            item["NetworkFee"] = f"0.{1 + number % 999:04d}"
        items.append(item)
    return items
