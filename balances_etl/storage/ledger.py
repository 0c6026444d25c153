"""The business's own expected balances (ledger CSV files) and the reconciliation settings, in DuckDB.

Ledger files are ours, so they are validated strictly and loaded all-or-nothing: every ``*.csv`` in
the ledger directory is parsed and checked first, and one bad row anywhere raises
``LedgerFileError`` (file, line, column, reason) before the table is touched. The warehouse loader
calls ``replace_ledger_table`` inside its load transaction, so a bad ledger fails the load clearly
and the previously published warehouse stays in place.

CSV format: a header with ``as_of_date,account_type,crypto_currency,expected_total`` and optionally
``expected_available`` and ``tolerance`` (any order; any other column is an error). Dates are ISO
``YYYY-MM-DD``; amounts follow NOAH's rules (``amounts.amount_problem``: exact decimal strings, no
exponent, sign, spaces or separators) and must fit DECIMAL(38,18). An empty ``expected_available``
means "not asserted"; an empty or absent ``tolerance`` means 0. One (as_of_date, account_type,
crypto_currency) per ledger, across all files. Blank lines are skipped; a UTF-8 BOM is accepted.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa

from balances_etl.domain.amounts import amount_problem, canonical_amount, fits_decimal_38_18
from balances_etl.domain.names import Table

REQUIRED_COLUMNS = ("as_of_date", "account_type", "crypto_currency", "expected_total")
OPTIONAL_COLUMNS = ("expected_available", "tolerance")


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ARROW_VIEW = "_ledger_rows_to_insert"


class LedgerFileError(ValueError):
    """A ledger file that cannot be loaded; the message names file, line, column and reason."""

    def __init__(self, path: Path, line: int | None, column: str | None, reason: str) -> None:
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.column = column
        self.reason = reason


@dataclass(frozen=True)
class LedgerRow:
    """One validated assertion; amounts are canonical strings that fit DECIMAL(38,18)."""

    as_of_date: date
    account_type: str
    crypto_currency: str
    expected_total: str
    expected_available: str | None
    tolerance: str
    source_file: str
    source_line: int


def replace_ledger_table(con: duckdb.DuckDBPyConnection, ledger_dir: Path) -> int:
    """Replace the ledger table with the rows of every CSV in ``ledger_dir``; returns rows loaded.

    A missing directory gives an empty table. Raises ``LedgerFileError`` before changing anything
    when any file is invalid.
    """
    rows = read_ledger_dir(ledger_dir)
    con.execute(
        f"CREATE OR REPLACE TABLE {Table.LEDGER} ("
        "as_of_date DATE NOT NULL, account_type VARCHAR NOT NULL, crypto_currency VARCHAR NOT NULL, "
        "expected_total VARCHAR NOT NULL, expected_total_amount DECIMAL(38,18) NOT NULL, "
        "expected_available VARCHAR, expected_available_amount DECIMAL(38,18), "
        "tolerance VARCHAR NOT NULL, tolerance_amount DECIMAL(38,18) NOT NULL, "
        "source_file VARCHAR NOT NULL, source_line INTEGER NOT NULL, "
        "PRIMARY KEY (as_of_date, account_type, crypto_currency))"
    )
    if rows:
        _insert_rows(con, rows)
    return len(rows)


def read_ledger_dir(ledger_dir: Path) -> list[LedgerRow]:
    """Validated rows of every ``*.csv`` in ``ledger_dir`` (file name order); [] if it is missing."""
    if not ledger_dir.exists():
        return []
    if not ledger_dir.is_dir():
        raise LedgerFileError(ledger_dir, None, None, "ledger path is not a directory")
    seen: dict[tuple[date, str, str], LedgerRow] = {}
    for path in sorted(ledger_dir.glob("*.csv")):
        for row in _read_ledger_file(path):
            key = (row.as_of_date, row.account_type, row.crypto_currency)
            first = seen.get(key)
            if first is not None:
                raise LedgerFileError(
                    path,
                    row.source_line,
                    None,
                    f"duplicate key {key[0].isoformat()}/{key[1]}/{key[2]}, "
                    f"already asserted in {first.source_file} line {first.source_line}",
                )
            seen[key] = row
    return list(seen.values())


def _read_ledger_file(path: Path) -> list[LedgerRow]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise LedgerFileError(path, line, None, f"not valid UTF-8 ({exc.reason})") from exc

    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise LedgerFileError(path, 1, None, "empty file, expected a header row")
        _check_header(path, header)
        rows = []
        for fields in reader:
            if not fields:
                continue
            line = reader.line_num
            if len(fields) != len(header):
                raise LedgerFileError(path, line, None, f"expected {len(header)} fields, got {len(fields)}")
            rows.append(_parse_row(path, line, dict(zip(header, fields, strict=True))))
    except csv.Error as exc:
        raise LedgerFileError(path, reader.line_num, None, f"malformed CSV ({exc})") from exc
    return rows


def _check_header(path: Path, header: list[str]) -> None:
    allowed = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
    for name in header:
        if name not in allowed:
            raise LedgerFileError(path, 1, name, f"unknown column; allowed: {', '.join(allowed)}")
        if header.count(name) > 1:
            raise LedgerFileError(path, 1, name, "column appears more than once")
    for name in REQUIRED_COLUMNS:
        if name not in header:
            raise LedgerFileError(path, 1, name, "required column is missing")


def _parse_row(path: Path, line: int, fields: dict[str, str]) -> LedgerRow:
    def fail(column: str, reason: str) -> LedgerFileError:
        return LedgerFileError(path, line, column, reason)

    raw_date = fields["as_of_date"]
    if _ISO_DATE.fullmatch(raw_date) is None:
        raise fail("as_of_date", f"{raw_date!r} is not an ISO date YYYY-MM-DD")
    try:
        as_of_date = date.fromisoformat(raw_date)
    except ValueError as exc:
        raise fail("as_of_date", f"{raw_date!r} is not a valid date ({exc})") from exc

    for column in ("account_type", "crypto_currency"):
        value = fields[column]
        if not value:
            raise fail(column, "empty")
        if value != value.strip():
            raise fail(column, f"{value!r} has leading or trailing whitespace")

    def amount(column: str) -> str:
        value = fields[column]
        problem = amount_problem(value)
        if problem is not None:
            raise fail(column, problem)
        canonical = canonical_amount(value)
        if not fits_decimal_38_18(canonical):
            raise fail(column, f"{value!r} does not fit DECIMAL(38,18) (20 integer, 18 fractional digits)")
        return canonical

    expected_total = amount("expected_total")
    expected_available = amount("expected_available") if fields.get("expected_available") else None
    tolerance = amount("tolerance") if fields.get("tolerance") else "0"
    if expected_available is not None and Decimal(expected_available) > Decimal(expected_total):
        raise fail("expected_available", f"{expected_available} is greater than expected_total {expected_total}")

    return LedgerRow(
        as_of_date=as_of_date,
        account_type=fields["account_type"],
        crypto_currency=fields["crypto_currency"],
        expected_total=expected_total,
        expected_available=expected_available,
        tolerance=tolerance,
        source_file=path.name,
        source_line=line,
    )


def _insert_rows(con: duckdb.DuckDBPyConnection, rows: list[LedgerRow]) -> None:
    # Amounts travel as validated canonical strings and become DECIMAL through an exact CAST.
    table = pa.table(
        {
            "as_of_date": pa.array([r.as_of_date for r in rows], pa.date32()),
            "account_type": [r.account_type for r in rows],
            "crypto_currency": [r.crypto_currency for r in rows],
            "expected_total": [r.expected_total for r in rows],
            "expected_available": pa.array([r.expected_available for r in rows], pa.string()),
            "tolerance": [r.tolerance for r in rows],
            "source_file": [r.source_file for r in rows],
            "source_line": pa.array([r.source_line for r in rows], pa.int32()),
        }
    )
    con.register(_ARROW_VIEW, table)
    try:
        con.execute(
            f"INSERT INTO {Table.LEDGER} SELECT as_of_date, account_type, crypto_currency, "
            "expected_total, CAST(expected_total AS DECIMAL(38,18)), "
            "expected_available, CAST(expected_available AS DECIMAL(38,18)), "
            "tolerance, CAST(tolerance AS DECIMAL(38,18)), source_file, source_line "
            f"FROM {_ARROW_VIEW}"
        )
    finally:
        con.unregister(_ARROW_VIEW)


def write_reconciliation_settings(con: duckdb.DuckDBPyConnection, stale_after_days: int) -> None:
    """Replace the one-row settings table the views read (v_stale_balances, stale_balance breaks).

    The loader passes ``PipelineSettings.stale_after_days`` (env BALANCES_ETL_STALE_AFTER_DAYS).
    """
    if isinstance(stale_after_days, bool) or not isinstance(stale_after_days, int) or stale_after_days < 0:
        raise ValueError(f"stale_after_days must be an int >= 0, got {stale_after_days!r}")
    con.execute(f"CREATE OR REPLACE TABLE {Table.RECONCILIATION_SETTINGS} (stale_after_days INTEGER NOT NULL)")
    con.execute(f"INSERT INTO {Table.RECONCILIATION_SETTINGS} VALUES (?)", [stale_after_days])
