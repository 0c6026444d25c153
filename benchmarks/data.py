"""Benchmark inputs built from the emulator's own deterministic dataset (the data the API serves)."""

from __future__ import annotations

import datetime as dt
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
