"""Ledger CSV loading: strict validation, exact amounts, all-or-nothing; and the settings table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from balances_etl.domain.names import Table
from balances_etl.storage.ledger import (
    LedgerFileError,
    replace_ledger_table,
    write_reconciliation_settings,
)
from balances_etl.storage.warehouse import connect_read_only, load_partition
from support_history import SQL_DIR, build_history, day

HEADER = "as_of_date,account_type,crypto_currency,expected_total,expected_available,tolerance\n"
GOOD = HEADER + "2026-03-01,Current,BTC_TEST,10.10,1,\n"
SELECT_ALL = (
    f"SELECT as_of_date, account_type, crypto_currency, expected_total, expected_total_amount, expected_available, "
    f"expected_available_amount, tolerance, tolerance_amount, source_file, source_line FROM {Table.LEDGER} ORDER BY ALL"
)


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    with duckdb.connect() as connection:
        yield connection


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def test_loads_every_csv_exactly(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    ledger_dir = write(
        tmp_path / "ledger",
        {
            "a.csv": HEADER
            + "2026-03-01,Current,BTC_TEST,0010.10,+.5,0.000000000000000001\n"
            + "2026-03-01,Current,ETH_TEST_SEPOLIA,99999999999999999999.12345678901234567,,\n",
            # optional columns absent, columns in another order, a blank line, a UTF-8 BOM
            "b.csv": "\ufeffcrypto_currency,as_of_date,expected_total,account_type\n\nUSDC_TEST,2026-03-02,1.000000000000000001,Current\n",
            "notes.txt": "not a ledger file",
        },
    )
    assert replace_ledger_table(con, ledger_dir) == 3
    assert con.execute(SELECT_ALL).fetchall() == [
        (dt.date(2026, 3, 1), "Current", "BTC_TEST", "10.1", Decimal("10.1"), "0.5", Decimal("0.5"),
         "0.000000000000000001", Decimal("0.000000000000000001"), "a.csv", 2),
        (dt.date(2026, 3, 1), "Current", "ETH_TEST_SEPOLIA", "99999999999999999999.12345678901234567",
         Decimal("99999999999999999999.12345678901234567"), None, None, "0", Decimal("0"), "a.csv", 3),
        (dt.date(2026, 3, 2), "Current", "USDC_TEST", "1.000000000000000001", Decimal("1.000000000000000001"),
         None, None, "0", Decimal("0"), "b.csv", 3),
    ]


def test_missing_directory_gives_an_empty_table(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    assert replace_ledger_table(con, tmp_path / "absent") == 0
    assert con.execute(f"SELECT count(*) FROM {Table.LEDGER}").fetchall() == [(0,)]


def test_reload_replaces_previous_rows(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    replace_ledger_table(con, write(tmp_path / "one", {"a.csv": GOOD}))
    replace_ledger_table(con, write(tmp_path / "two", {"a.csv": HEADER + "2026-03-05,Current,ETH_TEST_SEPOLIA,2,,\n"}))
    assert con.execute(f"SELECT as_of_date, crypto_currency FROM {Table.LEDGER}").fetchall() == [
        (dt.date(2026, 3, 5), "ETH_TEST_SEPOLIA")
    ]


def row(fields: str) -> str:
    return HEADER + "2026-03-01,Current,ETH_TEST_SEPOLIA,2,,\n" + fields + "\n"


@pytest.mark.parametrize(
    ("text", "line", "column", "reason"),
    [
        (row("2026/03/01,Current,BTC_TEST,1,,"), 3, "as_of_date", "is not an ISO date"),
        (row("20260301,Current,BTC_TEST,1,,"), 3, "as_of_date", "is not an ISO date"),
        (row("2026-02-30,Current,BTC_TEST,1,,"), 3, "as_of_date", "is not a valid date"),
        (row("2026-03-01,Current,BTC_TEST,1e3,,"), 3, "expected_total", "does not match the PositiveDecimal pattern"),
        (row("2026-03-01,Current,BTC_TEST, 1.5,,"), 3, "expected_total", "does not match the PositiveDecimal pattern"),
        (row("2026-03-01,Current,BTC_TEST,1_000,,"), 3, "expected_total", "does not match the PositiveDecimal pattern"),
        (row("2026-03-01,Current,BTC_TEST,-1,,"), 3, "expected_total", "does not match the PositiveDecimal pattern"),
        (row("2026-03-01,Current,BTC_TEST,,,"), 3, "expected_total", "empty string"),
        (row("2026-03-01,Current,BTC_TEST,123456789012345678901,,"), 3, "expected_total", "does not fit DECIMAL(38,18)"),
        (row("2026-03-01,Current,BTC_TEST,0.0000000000000000001,,"), 3, "expected_total", "does not fit DECIMAL(38,18)"),
        (row("2026-03-01,Current,BTC_TEST,1,NaN,"), 3, "expected_available", "does not match the PositiveDecimal pattern"),
        (row("2026-03-01,Current,BTC_TEST,1,2,"), 3, "expected_available", "greater than expected_total 1"),
        (row("2026-03-01,Current,BTC_TEST,1,,1e-3"), 3, "tolerance", "does not match the PositiveDecimal pattern"),
        (row("2026-03-01,,BTC_TEST,1,,"), 3, "account_type", "empty"),
        (row("2026-03-01,Current,BTC_TEST ,1,,"), 3, "crypto_currency", "leading or trailing whitespace"),
        (row("2026-03-01,Current,ETH_TEST_SEPOLIA,3,,"), 3, None, "duplicate key 2026-03-01/Current/ETH_TEST_SEPOLIA, already asserted in bad.csv line 2"),
        (row("2026-03-01,Current,BTC_TEST,1,"), 3, None, "expected 6 fields, got 5"),
        (row('2026-03-01,Current,"BTC_TEST"x,1,,'), 3, None, "malformed CSV"),
        ("as_of_date,account_type,crypto_currency\n2026-03-01,Current,BTC_TEST\n", 1, "expected_total", "required column is missing"),
        ("as_of_date,account_type,crypto_currency,expected_total,comment\n", 1, "comment", "unknown column"),
        ("as_of_date,account_type,crypto_currency,expected_total,tolerance,tolerance\n", 1, "tolerance", "more than once"),
        ("", 1, None, "empty file"),
    ],
)
def test_bad_row_names_file_line_column_and_loads_nothing(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, text: str, line: int, column: str | None, reason: str
) -> None:
    replace_ledger_table(con, write(tmp_path / "previous", {"a.csv": GOOD}))
    bad_dir = write(tmp_path / "ledger", {"bad.csv": text})
    with pytest.raises(LedgerFileError) as error:
        replace_ledger_table(con, bad_dir)
    assert (error.value.path, error.value.line, error.value.column) == (bad_dir / "bad.csv", line, column)
    assert reason in error.value.reason
    message = str(error.value)
    assert "bad.csv" in message and f"line {line}" in message and reason in message
    if column is not None:
        assert repr(column) in message
    # the previous ledger is untouched
    assert con.execute(f"SELECT crypto_currency FROM {Table.LEDGER}").fetchall() == [("BTC_TEST",)]


def test_non_utf8_file_names_the_line(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    (ledger_dir / "latin1.csv").write_bytes(HEADER.encode() + "2026-03-01,Courant,BTC_TEST,1,,\n2026-03-02,Épargne,BTC_TEST,1,,\n".encode("latin-1"))
    with pytest.raises(LedgerFileError, match=r"latin1\.csv, line 3: not valid UTF-8"):
        replace_ledger_table(con, ledger_dir)


def test_duplicate_across_files_and_one_bad_file_aborts_the_whole_ledger(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    replace_ledger_table(con, write(tmp_path / "previous", {"a.csv": GOOD}))
    ledger_dir = write(
        tmp_path / "ledger",
        {"1.csv": HEADER + "2026-03-09,Current,USDC_TEST,1,,\n", "2.csv": HEADER + "2026-03-09,Current,USDC_TEST,1,,\n"},
    )
    with pytest.raises(LedgerFileError, match=r"2\.csv, line 2: duplicate key 2026-03-09/Current/USDC_TEST, already asserted in 1\.csv line 2"):
        replace_ledger_table(con, ledger_dir)
    assert con.execute(f"SELECT as_of_date FROM {Table.LEDGER}").fetchall() == [(dt.date(2026, 3, 1),)]


def test_bad_ledger_fails_the_daily_load_and_the_published_warehouse_keeps_the_old_one(tmp_path: Path) -> None:
    data_dir = build_history(tmp_path, {day(0): [("Current", "BTC_TEST", "1", "10.10")]}, {"a.csv": GOOD})
    (data_dir / "ledger" / "b.csv").write_text(HEADER + "2026-03-02,Current,BTC_TEST,1e3,,\n")
    with pytest.raises(LedgerFileError, match=r"b\.csv, line 2, column 'expected_total'"):
        load_partition(data_dir, day(0), SQL_DIR)
    with connect_read_only(data_dir) as con:
        assert con.execute(f"SELECT source_file, expected_total FROM {Table.LEDGER}").fetchall() == [("a.csv", "10.1")]


def test_ledger_path_that_is_a_file_is_an_error(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    path.write_text(GOOD)
    with pytest.raises(LedgerFileError, match="not a directory"):
        replace_ledger_table(con, path)


def test_settings_table_is_replaced_with_one_row(con: duckdb.DuckDBPyConnection) -> None:
    write_reconciliation_settings(con, 7)
    write_reconciliation_settings(con, 3)
    assert con.execute(f"SELECT stale_after_days FROM {Table.RECONCILIATION_SETTINGS}").fetchall() == [(3,)]


@pytest.mark.parametrize("value", [-1, True, 2.5, "7"])
def test_settings_reject_non_day_counts(con: duckdb.DuckDBPyConnection, value: object) -> None:
    with pytest.raises(ValueError, match="stale_after_days"):
        write_reconciliation_settings(con, value)  # type: ignore[arg-type]
