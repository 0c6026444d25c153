"""The analysts' views and the daily reconciliation, on small histories with hand-computed answers.

Histories go through the real path (normalize -> Parquet partition -> warehouse load, one day at a
time); amounts are read with fetchall, so every expectation is an exact Decimal.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from balances_etl.domain.names import View
from balances_etl.domain.names import ReconciliationCheck
from balances_etl.pipeline.reconciliation import (
    DayReconciliation,
    new_breaks_vs_previous_day,
    summarize_day,
)
from balances_etl.settings import PROJECT_ROOT
from balances_etl.storage.warehouse import connect_read_only
from support_history import build_history, day

A = "Current"
BTC, ETH, USDC, SOL = "BTC_TEST", "ETH_TEST_SEPOLIA", "USDC_TEST", "SOL_TEST"
WIDE = "123456789012345678901"  # 21 integer digits: does not fit DECIMAL(38,18)
TINY = "0.0000000000000000001"  # 19 fractional digits: does not fit either

# Trailing zeros, an 18-decimal amount, a day with no snapshot (day 3), USDC disappearing on day 2
# and coming back on day 4, an amount too wide for DECIMAL(38,18), available > total (BTC, day 4).
HISTORY = {
    day(0): [(A, BTC, "10.10", "10.10"), (A, ETH, "0.000000000000000001", "1.000000000000000001"), (A, USDC, "5", "5")],
    day(1): [(A, BTC, "10.1", "10.1"), (A, ETH, "0.5", "1.000000000000000001"), (A, USDC, "5", "5.0")],
    day(2): [(A, BTC, "12", "12.5"), (A, ETH, "0.5", "2")],
    day(4): [(A, BTC, "13", "12.5"), (A, ETH, "0.5", "2"), (A, USDC, "5", "5"), (A, SOL, "1", WIDE)],
    day(5): [(A, BTC, "12", "12.5"), (A, ETH, "0.5", "2"), (A, USDC, "6", "6"), (A, SOL, "1", "2")],
}

# BTC's total never changes (spelled three ways); USDC stays put for 5 days then moves; ETH moves daily.
STALE_AFTER_DAYS = 3
STALE_HISTORY = {
    day(n): [
        (A, BTC, "1", ("1", "1.0", "01.00")[n % 3]),
        (A, ETH, "0", str(n + 1)),
        (A, USDC, "7", "7" if n <= 4 else "8"),
    ]
    for n in range(7)
}

LEDGER_HISTORY = {
    day(0): [(A, BTC, "1", "10"), (A, ETH, "2", "2"), (A, USDC, "3", "3"), (A, SOL, "0", TINY)],
    day(1): [(A, BTC, "1", "10"), (A, ETH, "2", "2.5"), (A, USDC, "3", "3")],
    day(2): [(A, BTC, "1", "10"), (A, ETH, "2", "2.5"), (A, USDC, "3", "3")],
}
LEDGER_CSVS = {
    "main.csv": (
        "as_of_date,account_type,crypto_currency,expected_total,expected_available,tolerance\n"
        f"{day(0)},{A},{BTC},10.00,1,\n"  # match, available asserted and matching
        f"{day(0)},{A},{ETH},2.000000000000000001,,\n"  # break by 1e-18
        f"{day(0)},{A},{USDC},3.05,,0.05\n"  # difference -0.05, exactly the tolerance: match
        f"{day(0)},{A},{SOL},0,,1\n"  # NOAH's total too wide: a break whatever the tolerance
        f"{day(0)},{A},DOGE,1,,\n"  # NOAH has no such key
        f"{day(1)},{A},{BTC},10,2,\n"  # total matches, available does not
        f"{day(1)},{A},{ETH},2,,\n"  # still a break (not new on day 1)
        # day 1: USDC is not asserted although NOAH reports it
    ),
    "later.csv": f"as_of_date,account_type,crypto_currency,expected_total\n{day(9)},{A},{BTC},1\n",
}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    with connect_read_only(build_history(tmp_path_factory.mktemp("history"), HISTORY)) as con:
        yield con


@pytest.fixture(scope="module")
def stale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    data_dir = build_history(tmp_path_factory.mktemp("stale"), STALE_HISTORY, stale_after_days=STALE_AFTER_DAYS)
    with connect_read_only(data_dir) as con:
        yield con


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    with connect_read_only(build_history(tmp_path_factory.mktemp("ledger"), LEDGER_HISTORY, LEDGER_CSVS)) as con:
        yield con


def rows(con: duckdb.DuckDBPyConnection, query: str, *params: object) -> list[tuple]:
    return con.execute(query, list(params)).fetchall()


D = Decimal


# --- v_latest_balances -------------------------------------------------------------------------


def test_latest_balances_one_row_per_key_with_exact_amounts_and_age(history: duckdb.DuckDBPyConnection) -> None:
    today = dt.datetime.now(dt.UTC).date()
    got = rows(
        history,
        f"SELECT account_type, crypto_currency, snapshot_date, available, total, available_amount, total_amount, age_days "
        f"FROM {View.LATEST_BALANCES} ORDER BY crypto_currency",
    )
    age = (today - day(5)).days
    assert got == [
        (A, BTC, day(5), "12", "12.5", D("12"), D("12.5"), age),
        (A, ETH, day(5), "0.5", "2", D("0.5"), D("2"), age),
        (A, SOL, day(5), "1", "2", D("1"), D("2"), age),
        (A, USDC, day(5), "6", "6", D("6"), D("6"), age),
    ]


# --- v_balance_changes -------------------------------------------------------------------------


def test_balance_changes_exact_deltas(history: duckdb.DuckDBPyConnection) -> None:
    got = rows(
        history,
        f"SELECT snapshot_date, crypto_currency, prev_snapshot_date, days_since_prev, prev_available_amount, "
        f"available_amount, delta_available, prev_total_amount, total_amount, delta_total, total_changed "
        f"FROM {View.BALANCE_CHANGES} WHERE crypto_currency IN (?, ?) ORDER BY crypto_currency, snapshot_date",
        BTC,
        ETH,
    )
    assert got == [
        # first snapshot: no previous, no delta
        (day(0), BTC, None, None, None, D("10.1"), None, None, D("10.1"), None, None),
        # 10.10 then 10.1: no change
        (day(1), BTC, day(0), 1, D("10.1"), D("10.1"), D("0"), D("10.1"), D("10.1"), D("0"), False),
        (day(2), BTC, day(1), 1, D("10.1"), D("12"), D("1.9"), D("10.1"), D("12.5"), D("2.4"), True),
        # day 3 has no snapshot: the previous one is two days back
        (day(4), BTC, day(2), 2, D("12"), D("13"), D("1"), D("12.5"), D("12.5"), D("0"), False),
        (day(5), BTC, day(4), 1, D("13"), D("12"), D("-1"), D("12.5"), D("12.5"), D("0"), False),
        (day(0), ETH, None, None, None, D("0.000000000000000001"), None, None, D("1.000000000000000001"), None, None),
        (day(1), ETH, day(0), 1, D("0.000000000000000001"), D("0.5"), D("0.499999999999999999"),
         D("1.000000000000000001"), D("1.000000000000000001"), D("0"), False),
        (day(2), ETH, day(1), 1, D("0.5"), D("0.5"), D("0"), D("1.000000000000000001"), D("2"), D("0.999999999999999999"), True),
        (day(4), ETH, day(2), 2, D("0.5"), D("0.5"), D("0"), D("2"), D("2"), D("0"), False),
        (day(5), ETH, day(4), 1, D("0.5"), D("0.5"), D("0"), D("2"), D("2"), D("0"), False),
    ]


def test_balance_changes_too_wide_amount_gives_null_delta_never_a_number(history: duckdb.DuckDBPyConnection) -> None:
    got = rows(
        history,
        f"SELECT snapshot_date, total, total_amount, prev_total_amount, delta_total, total_changed, delta_available "
        f"FROM {View.BALANCE_CHANGES} WHERE crypto_currency = ? ORDER BY snapshot_date",
        SOL,
    )
    assert got == [
        (day(4), WIDE, None, None, None, None, None),
        (day(5), "2", D("2"), None, None, True, D("0")),
    ]


# --- v_pending_outflows ------------------------------------------------------------------------


def test_pending_outflows_status(history: duckdb.DuckDBPyConnection) -> None:
    got = rows(
        history,
        f"SELECT snapshot_date, crypto_currency, pending_outflow, status FROM {View.PENDING_OUTFLOWS} "
        "WHERE status <> 'OK' OR (crypto_currency = ? AND snapshot_date = ?) ORDER BY snapshot_date, crypto_currency",
        ETH,
        day(0),
    )
    assert got == [
        (day(0), ETH, D("1"), "OK"),
        (day(4), BTC, D("-0.5"), "NEGATIVE"),
        (day(4), SOL, None, "AMOUNT_TOO_WIDE"),
    ]


# --- v_snapshot_gaps ---------------------------------------------------------------------------


def test_snapshot_gaps_missing_day_for_every_key_and_a_missing_key(history: duckdb.DuckDBPyConnection) -> None:
    got = rows(
        history,
        f"SELECT account_type, crypto_currency, missing_date, whole_day_missing FROM {View.SNAPSHOT_GAPS} "
        "ORDER BY missing_date, crypto_currency",
    )
    assert got == [
        (A, USDC, day(2), False),
        # day 3: no snapshot at all; SOL_TEST only starts on day 4, so it has no gap
        (A, BTC, day(3), True),
        (A, ETH, day(3), True),
        (A, USDC, day(3), True),
    ]


# --- v_currency_changes ------------------------------------------------------------------------


def test_currency_changes_between_snapshot_dates(history: duckdb.DuckDBPyConnection) -> None:
    got = rows(
        history,
        f"SELECT snapshot_date, account_type, crypto_currency, change, prev_snapshot_date FROM {View.CURRENCY_CHANGES} "
        "ORDER BY snapshot_date, crypto_currency",
    )
    # day 0 keys are not APPEARED; day 4 compares with day 2 (day 3 has no snapshot)
    assert got == [
        (day(2), A, USDC, "DISAPPEARED", day(1)),
        (day(4), A, SOL, "APPEARED", day(2)),
        (day(4), A, USDC, "APPEARED", day(2)),
    ]


# --- v_stale_balances --------------------------------------------------------------------------


def test_stale_balances_as_of_latest_snapshot_with_configured_days(stale: duckdb.DuckDBPyConnection) -> None:
    assert rows(stale, "SELECT stale_after_days FROM reconciliation_settings") == [(STALE_AFTER_DAYS,)]
    got = rows(
        stale,
        f"SELECT account_type, crypto_currency, unchanged_since, days_unchanged, as_of_date, total_amount "
        f"FROM {View.STALE_BALANCES} ORDER BY crypto_currency",
    )
    # USDC was stale on day 4 but moved on day 5: not stale as of its latest snapshot
    assert got == [(A, BTC, day(0), 6, day(6), D("1"))]


def test_stale_breaks_start_once_days_exceed_the_setting(stale: duckdb.DuckDBPyConnection) -> None:
    got = rows(
        stale,
        f"SELECT snapshot_date, crypto_currency, detail FROM {View.RECONCILIATION_BREAKS} "
        "WHERE check_name = ? ORDER BY snapshot_date, crypto_currency",
        ReconciliationCheck.STALE_BALANCE,
    )
    assert got == [
        (day(4), BTC, f"total 1 unchanged since {day(0)} (4 days, more than 3)"),
        (day(4), USDC, f"total 7 unchanged since {day(0)} (4 days, more than 3)"),
        (day(5), BTC, f"total 1 unchanged since {day(0)} (5 days, more than 3)"),
        (day(6), BTC, f"total 1 unchanged since {day(0)} (6 days, more than 3)"),
    ]


def test_default_stale_setting_is_seven_days(history: duckdb.DuckDBPyConnection) -> None:
    assert rows(history, "SELECT stale_after_days FROM reconciliation_settings") == [(7,)]
    assert rows(history, f"SELECT count(*) FROM {View.STALE_BALANCES}") == [(0,)]


# --- v_ledger_reconciliation -------------------------------------------------------------------


def test_ledger_reconciliation_statuses(ledger: duckdb.DuckDBPyConnection) -> None:
    got = rows(
        ledger,
        f"SELECT as_of_date, account_type, crypto_currency, expected_total, noah_total, difference, tolerance, status, "
        f"expected_available, noah_available, available_difference, note "
        f"FROM {View.LEDGER_RECONCILIATION} ORDER BY as_of_date, crypto_currency",
    )
    # day 2 is not asserted by the ledger: absent; day 9 is asserted but has no snapshot at all
    assert got == [
        (day(0), A, BTC, D("10"), D("10"), D("0"), D("0"), "MATCH", D("1"), D("1"), D("0"), None),
        (day(0), A, "DOGE", D("1"), None, None, D("0"), "MISSING_AT_NOAH", None, None, None, None),
        (day(0), A, ETH, D("2.000000000000000001"), D("2"), D("-0.000000000000000001"), D("0"), "BREAK", None, D("2"), None, None),
        (day(0), A, SOL, D("0"), None, None, D("1"), "BREAK", None, D("0"), None, "amount_too_wide"),
        (day(0), A, USDC, D("3.05"), D("3"), D("-0.05"), D("0.05"), "MATCH", None, D("3"), None, None),
        (day(1), A, BTC, D("10"), D("10"), D("0"), D("0"), "BREAK", D("2"), D("1"), D("-1"), None),
        (day(1), A, ETH, D("2"), D("2.5"), D("0.5"), D("0"), "BREAK", None, D("2"), None, None),
        (day(1), A, USDC, None, D("3"), None, D("0"), "MISSING_IN_LEDGER", None, D("3"), None, None),
        (day(9), A, BTC, D("1"), None, None, D("0"), "MISSING_AT_NOAH", None, None, None, None),
    ]


def test_ledger_breaks_explain_themselves_from_exact_strings(ledger: duckdb.DuckDBPyConnection) -> None:
    got = rows(
        ledger,
        f"SELECT as_of_date, crypto_currency, detail FROM {View.LEDGER_RECONCILIATION} "
        "WHERE status <> 'MATCH' ORDER BY as_of_date, crypto_currency",
    )
    assert got == [
        (day(0), "DOGE", "ledger expects total 1, NOAH reported no balance"),
        (day(0), ETH, "NOAH total 2 vs ledger 2.000000000000000001; difference -0.000000000000000001"),
        (day(0), SOL, f"NOAH total {TINY} vs ledger 0; tolerance 1; amount too wide for DECIMAL(38,18)"),
        (day(1), BTC, "NOAH total 10 vs ledger 10; difference 0; NOAH available 1 vs ledger 2; available difference -1"),
        (day(1), ETH, "NOAH total 2.5 vs ledger 2; difference 0.5"),
        (day(1), USDC, "NOAH total 3, no ledger assertion for this key"),
        (day(9), BTC, "ledger expects total 1, NOAH reported no balance"),
    ]


# --- v_reconciliation_breaks / v_reconciliation_summary ----------------------------------------


def test_breaks_of_the_history(history: duckdb.DuckDBPyConnection) -> None:
    got = rows(
        history,
        f"SELECT check_name, snapshot_date, account_type, crypto_currency, detail FROM {View.RECONCILIATION_BREAKS} "
        "ORDER BY snapshot_date, check_name, crypto_currency",
    )
    assert got == [
        (ReconciliationCheck.CURRENCY_DISAPPEARED, day(2), A, USDC, f"reported on {day(1)}, absent from this snapshot"),
        (ReconciliationCheck.SNAPSHOT_GAP, day(2), A, USDC,
         f"key absent from this day's snapshot (key reported on {day(1)} and {day(4)})"),
        (ReconciliationCheck.SNAPSHOT_GAP, day(3), A, BTC, f"no snapshot at all on this day (key reported on {day(2)} and {day(4)})"),
        (ReconciliationCheck.SNAPSHOT_GAP, day(3), A, ETH, f"no snapshot at all on this day (key reported on {day(2)} and {day(4)})"),
        (ReconciliationCheck.SNAPSHOT_GAP, day(3), A, USDC, f"no snapshot at all on this day (key reported on {day(1)} and {day(4)})"),
        (ReconciliationCheck.AMOUNT_TOO_WIDE, day(4), A, SOL, f"total {WIDE} does not fit DECIMAL(38,18)"),
        (ReconciliationCheck.NEGATIVE_PENDING_OUTFLOW, day(4), A, BTC, "available 13 is greater than total 12.5"),
    ]


def test_summary_counts(ledger: duckdb.DuckDBPyConnection) -> None:
    got = rows(ledger, f"SELECT snapshot_date, check_name, breaks FROM {View.RECONCILIATION_SUMMARY} ORDER BY ALL")
    assert got == [
        (day(0), ReconciliationCheck.AMOUNT_TOO_WIDE, 1),
        (day(0), ReconciliationCheck.LEDGER_BREAK, 2),
        (day(0), ReconciliationCheck.MISSING_AT_NOAH, 1),
        (day(1), ReconciliationCheck.CURRENCY_DISAPPEARED, 1),
        (day(1), ReconciliationCheck.LEDGER_BREAK, 2),
        (day(1), ReconciliationCheck.MISSING_IN_LEDGER, 1),
        (day(9), ReconciliationCheck.MISSING_AT_NOAH, 1),
    ]


def test_every_check_name_is_a_constant_and_every_constant_is_emitted(
    history: duckdb.DuckDBPyConnection, stale: duckdb.DuckDBPyConnection, ledger: duckdb.DuckDBPyConnection
) -> None:
    # statically: every snake_case literal of the breaks view is a check name, and each constant is there
    sql = next((PROJECT_ROOT / "sql").glob(f"*_{View.RECONCILIATION_BREAKS}.sql")).read_text()
    literals = set(re.findall(r"'([a-z]+(?:_[a-z0-9]+)+)'", sql))
    assert literals == set(ReconciliationCheck)
    # and the three histories between them make the view emit each one
    emitted = {
        name
        for con in (history, stale, ledger)
        for (name,) in rows(con, f"SELECT DISTINCT check_name FROM {View.RECONCILIATION_BREAKS}")
    }
    assert emitted == set(ReconciliationCheck)


# --- reconciliation.py -------------------------------------------------------------------------


def test_summarize_day(ledger: duckdb.DuckDBPyConnection) -> None:
    summary = summarize_day(ledger, day(1))
    assert summary == DayReconciliation(
        snapshot_date=day(1),
        breaks_by_check={
            ReconciliationCheck.CURRENCY_DISAPPEARED: 1,
            ReconciliationCheck.LEDGER_BREAK: 2,
            ReconciliationCheck.MISSING_IN_LEDGER: 1,
        },
        sample=[
            {"check_name": "currency_disappeared", "snapshot_date": str(day(1)), "account_type": A,
             "crypto_currency": SOL, "detail": f"reported on {day(0)}, absent from this snapshot"},
            {"check_name": "ledger_break", "snapshot_date": str(day(1)), "account_type": A, "crypto_currency": BTC,
             "detail": "NOAH total 10 vs ledger 10; difference 0; NOAH available 1 vs ledger 2; available difference -1"},
            {"check_name": "ledger_break", "snapshot_date": str(day(1)), "account_type": A, "crypto_currency": ETH,
             "detail": "NOAH total 2.5 vs ledger 2; difference 0.5"},
            {"check_name": "missing_in_ledger", "snapshot_date": str(day(1)), "account_type": A,
             "crypto_currency": USDC, "detail": "NOAH total 3, no ledger assertion for this key"},
        ],
    )
    assert summary.total_breaks == 4
    assert summarize_day(ledger, day(2)) == DayReconciliation(day(2), {}, [])


def test_summarize_day_samples_at_most_twenty(tmp_path: Path) -> None:
    wide = {day(0): [(A, f"C{i:02}", "1", WIDE) for i in range(25)]}
    with connect_read_only(build_history(tmp_path, wide)) as con:
        summary = summarize_day(con, day(0))
    assert summary.breaks_by_check == {ReconciliationCheck.AMOUNT_TOO_WIDE: 25}
    assert summary.total_breaks == 25
    assert [row["crypto_currency"] for row in summary.sample] == [f"C{i:02}" for i in range(20)]


def test_new_breaks_vs_previous_day(ledger: duckdb.DuckDBPyConnection) -> None:
    def keys(day_: dt.date) -> list[tuple[str, str]]:
        return [(row["check_name"], row["crypto_currency"]) for row in new_breaks_vs_previous_day(ledger, day_)]

    # no previous snapshot date: every break is new
    assert keys(day(0)) == [
        (ReconciliationCheck.AMOUNT_TOO_WIDE, SOL),
        (ReconciliationCheck.LEDGER_BREAK, ETH),
        (ReconciliationCheck.LEDGER_BREAK, SOL),
        (ReconciliationCheck.MISSING_AT_NOAH, "DOGE"),
    ]
    # ETH's ledger break was already there on day 0
    assert keys(day(1)) == [
        (ReconciliationCheck.CURRENCY_DISAPPEARED, SOL),
        (ReconciliationCheck.LEDGER_BREAK, BTC),
        (ReconciliationCheck.MISSING_IN_LEDGER, USDC),
    ]
    assert keys(day(2)) == []


def test_new_stale_breaks_fire_once(stale: duckdb.DuckDBPyConnection) -> None:
    def keys(day_: dt.date) -> list[tuple[str, str]]:
        return [(row["check_name"], row["crypto_currency"]) for row in new_breaks_vs_previous_day(stale, day_)]

    assert keys(day(4)) == [(ReconciliationCheck.STALE_BALANCE, BTC), (ReconciliationCheck.STALE_BALANCE, USDC)]
    assert keys(day(5)) == []
    assert keys(day(6)) == []
