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
    load_query,
    new_breaks_vs_previous_day,
    reconcile_day,
    summarize_day,
)
from balances_etl.settings import PROJECT_ROOT
from balances_etl.storage.warehouse import connect_read_only
from support_history import SQL_DIR, Observation, build_history, day, snapshot_instant, transaction_warehouse

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


# Transactions (the warehouse's transaction tables filled as the pipeline derives them from its syncs).
# Syncs on days 0, 1 and 3 right after each snapshot; day 2 has no run at all, day 4 a snapshot but
# no sync. BTC: t0 (In 10) settled before the first sync, the baseline; day 1: t2 (In 1.25) settled,
# t1 (Out 2.5, fee 1e-18) Pending; day 3: t1 and t3 (In 0.75, created on day 2) settled, and 0.1 left
# the account without any transaction. ETH: 0.5 held out of available on day 1 with no Pending Out.
def _created(n: int, hour: int) -> dt.datetime:
    return dt.datetime.combine(day(n), dt.time(hour), tzinfo=dt.UTC)


FLOW_HISTORY = {
    day(0): [(A, BTC, "10", "10"), (A, ETH, "1", "1")],
    day(1): [(A, BTC, "8.749999999999999999", "11.25"), (A, ETH, "0.5", "1")],
    day(3): [(A, BTC, "9.399999999999999999", "9.399999999999999999"), (A, ETH, "1", "1")],
    day(4): [(A, BTC, "9.399999999999999999", "9.399999999999999999"), (A, ETH, "1", "1")],
}
FLOW_SYNCS = {day(n): snapshot_instant(day(n)) for n in (0, 1, 3)}
_T0 = ("t0", _created(-1, 9), "In", BTC, "10")
_T1 = ("t1", _created(1, 10), "Out", BTC, "2.50", "0.000000000000000001")
_T2 = ("t2", _created(1, 8), "In", BTC, "1.25")
_T3 = ("t3", _created(2, 5), "In", BTC, "0.75")
FLOW_OBSERVATIONS = [
    Observation(d, FLOW_SYNCS[d], tx[0], tx[1], status, tx[2], tx[3], *tx[4:])
    for d, seen in [
        (day(0), [(_T0, "Settled")]),
        (day(1), [(_T0, "Settled"), (_T1, "Pending"), (_T2, "Settled")]),
        (day(3), [(_T0, "Settled"), (_T1, "Settled"), (_T2, "Settled"), (_T3, "Settled")]),
    ]
    for tx, status in seen
]
ROLLFORWARD_DETAIL = (
    f"closing total 9.399999999999999999 on {day(3)}, expected 9.499999999999999999 = opening total 11.25 on {day(1)}"
    " + in 0.75 - out 2.5 - fees 0.000000000000000001"
    f" (2 transaction(s) first seen Settled in the syncs after {day(1)} up to {day(3)}): unexplained -0.1;"
    " look for a movement without a transaction, or a transaction GET /v1/transactions did not return"
)
PENDING_DETAIL = (
    f"pending outflow 0.5 (total 1 - available 0.5) vs 0 in the 0 Out transaction(s) Pending in the {day(1)} sync:"
    " unexplained 0.5; look for a Pending Out transaction GET /v1/transactions did not return, or a hold without one"
)


def flow_warehouse() -> duckdb.DuckDBPyConnection:
    return transaction_warehouse(FLOW_HISTORY, FLOW_OBSERVATIONS, FLOW_SYNCS)


@pytest.fixture(scope="module")
def flows() -> Iterator[duckdb.DuckDBPyConnection]:
    with flow_warehouse() as con:
        yield con


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
    history: duckdb.DuckDBPyConnection,
    stale: duckdb.DuckDBPyConnection,
    ledger: duckdb.DuckDBPyConnection,
    flows: duckdb.DuckDBPyConnection,
) -> None:
    # statically: every snake_case literal of the breaks view and of the history checks' definition
    # is a check name, and each constant is there
    sql = next((PROJECT_ROOT / "sql").glob(f"*_{View.RECONCILIATION_BREAKS}.sql")).read_text()
    sql += (PROJECT_ROOT / "sql" / "queries" / "history_breaks_since.sql").read_text()
    literals = set(re.findall(r"'([a-z]+(?:_[a-z0-9]+)+)'", sql))
    assert literals == set(ReconciliationCheck)
    # and the four histories between them make the view emit each one
    emitted = {
        name
        for con in (history, stale, ledger, flows)
        for (name,) in rows(con, f"SELECT DISTINCT check_name FROM {View.RECONCILIATION_BREAKS}")
    }
    assert emitted == set(ReconciliationCheck)


# --- transactions: v_balance_rollforward, v_pending_explained, v_daily_balances ----------------


def test_rollforward_windows_with_exact_flows_and_statuses(flows: duckdb.DuckDBPyConnection) -> None:
    got = rows(
        flows,
        f"SELECT crypto_currency, period_start_date, period_end_date, opening_total, settled_in, settled_out, network_fees, "
        f"expected_closing_total, closing_total, unexplained_total, status, settled_in_transactions, settled_out_transactions "
        f"FROM {View.BALANCE_ROLLFORWARD} ORDER BY crypto_currency, period_end_date",
    )
    assert got == [
        # t0 settled before the first sync: in day 0's balance already, counted nowhere
        (BTC, day(0), day(1), D("10"), D("1.25"), D("0"), D("0"), D("11.25"), D("11.25"), D("0"), "balanced", 1, 0),
        # across the day without a run: t3 (In) and t1 (Out, with its fee) settled, 0.1 unexplained
        (BTC, day(1), day(3), D("11.25"), D("0.75"), D("2.5"), D("0.000000000000000001"), D("9.499999999999999999"),
         D("9.399999999999999999"), D("-0.1"), "unexplained", 1, 1),
        # day 4 had no sync: not rolled forward, no number
        (BTC, day(3), day(4), D("9.399999999999999999"), None, None, None, None, D("9.399999999999999999"), None,
         "no_sync_at_closing", None, None),
        (ETH, day(0), day(1), D("1"), D("0"), D("0"), D("0"), D("1"), D("1"), D("0"), "balanced", 0, 0),
        (ETH, day(1), day(3), D("1"), D("0"), D("0"), D("0"), D("1"), D("1"), D("0"), "balanced", 0, 0),
        (ETH, day(3), day(4), D("1"), None, None, None, None, D("1"), None, "no_sync_at_closing", None, None),
    ]
    assert rows(flows, f"SELECT detail FROM {View.BALANCE_ROLLFORWARD} WHERE status <> 'balanced' ORDER BY ALL") == [
        (ROLLFORWARD_DETAIL,),
        (f"no transactions sync on {day(4)} (the closing snapshot date) yet: not rolled forward",),
        (f"no transactions sync on {day(4)} (the closing snapshot date) yet: not rolled forward",),
    ]


def test_pending_outflow_explained_by_pending_out_transactions(flows: duckdb.DuckDBPyConnection) -> None:
    got = rows(
        flows,
        f"SELECT snapshot_date, crypto_currency, pending_outflow, pending_out_transactions, unexplained_pending, status, "
        f"pending_out_count, detail FROM {View.PENDING_EXPLAINED} WHERE status <> 'balanced' OR snapshot_date = ? "
        "ORDER BY snapshot_date, crypto_currency",
        day(1),
    )
    assert got == [
        # t1's Amount + NetworkFee, to the last 1e-18
        (day(1), BTC, D("2.500000000000000001"), D("2.500000000000000001"), D("0"), "balanced", 1, None),
        (day(1), ETH, D("0.5"), D("0"), D("0.5"), "unexplained", 0, PENDING_DETAIL),
        (day(4), BTC, D("0"), None, None, "no_sync", None, f"no transactions sync on {day(4)}: pending outflow not compared"),
        (day(4), ETH, D("0"), None, None, "no_sync", None, f"no transactions sync on {day(4)}: pending outflow not compared"),
    ]


def test_daily_balances_estimate_the_day_without_a_snapshot(flows: duckdb.DuckDBPyConnection) -> None:
    got = rows(
        flows,
        f"SELECT balance_date, crypto_currency, total, source, previous_snapshot_date, next_snapshot_date, "
        f"settled_transactions, note FROM {View.DAILY_BALANCES} WHERE crypto_currency = ? ORDER BY balance_date",
        BTC,
    )
    assert got == [
        (day(0), BTC, D("10"), "snapshot", None, None, None, None),
        (day(1), BTC, D("11.25"), "snapshot", None, None, None, None),
        # 11.25 + t3 (created on day 2) - t1 and its fee; the unexplained 0.1 is not a transaction
        (day(2), BTC, D("9.499999999999999999"), "estimated", day(1), day(3), 2, None),
        (day(3), BTC, D("9.399999999999999999"), "snapshot", None, None, None, None),
        (day(4), BTC, D("9.399999999999999999"), "snapshot", None, None, None, None),
    ]
    # nothing estimated is ever written into the snapshots
    assert rows(flows, "SELECT count(*) FROM balance_snapshots WHERE snapshot_date = ?", day(2)) == [(0,)]


def test_rollforward_and_pending_breaks(flows: duckdb.DuckDBPyConnection) -> None:
    got = rows(
        flows,
        f"SELECT check_name, snapshot_date, account_type, crypto_currency, detail FROM {View.RECONCILIATION_BREAKS} "
        "WHERE check_name IN (?, ?) ORDER BY ALL",
        ReconciliationCheck.ROLLFORWARD_UNEXPLAINED, ReconciliationCheck.PENDING_UNEXPLAINED,
    )
    assert got == [
        (ReconciliationCheck.PENDING_UNEXPLAINED, day(1), A, ETH, PENDING_DETAIL),
        (ReconciliationCheck.ROLLFORWARD_UNEXPLAINED, day(3), A, BTC, ROLLFORWARD_DETAIL),
    ]
    assert rows(flows, f"SELECT snapshot_date, check_name, breaks FROM {View.RECONCILIATION_SUMMARY} ORDER BY ALL") == [
        (day(1), ReconciliationCheck.PENDING_UNEXPLAINED, 1),
        (day(2), ReconciliationCheck.SNAPSHOT_GAP, 2),
        (day(3), ReconciliationCheck.ROLLFORWARD_UNEXPLAINED, 1),
    ]


def test_daily_reconciliation_reports_the_new_checks_from_two_dates() -> None:
    con = flow_warehouse()  # reconcile_day shadows the view on its connection: a connection of its own
    try:
        summary, new = reconcile_day(con, day(3))
    finally:
        con.close()
    assert summary.breaks_by_check == {ReconciliationCheck.ROLLFORWARD_UNEXPLAINED: 1}
    assert [(b["check_name"], b["crypto_currency"], b["detail"]) for b in new] == [
        (ReconciliationCheck.ROLLFORWARD_UNEXPLAINED, BTC, ROLLFORWARD_DETAIL)]


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


# --- the rows each load stores (storage/reconciliation_rows.py) ---------------------------------


def stored_and_defined(data_dir: Path) -> tuple[list[tuple], list[tuple]]:
    """The breaks the loads stored, and the same rows computed from their definition over all history."""
    with connect_read_only(data_dir) as con:
        stored = sorted(con.execute("SELECT * FROM history_breaks").fetchall())
        defined = sorted(con.execute(load_query("history_breaks_since"), [dt.date.min]).fetchall())
    return stored, defined


def test_a_new_stale_after_days_an_older_warehouse_and_new_sql_each_recompute_every_stored_row(tmp_path: Path) -> None:
    from balances_etl.storage.warehouse import load_partition, writer_path

    data_dir = build_history(tmp_path, STALE_HISTORY, stale_after_days=STALE_AFTER_DAYS)
    last = max(STALE_HISTORY)
    stored, defined = stored_and_defined(data_dir)
    assert stored == defined and any(row[0] == ReconciliationCheck.STALE_BALANCE for row in stored)

    # a larger threshold: the stale rows of every earlier date go, not only the reloaded day's
    load_partition(data_dir, last, SQL_DIR, stale_after_days=100)
    stored, defined = stored_and_defined(data_dir)
    assert stored == defined and not any(row[0] == ReconciliationCheck.STALE_BALANCE for row in stored)

    # a warehouse written before the rows were stored: the next load fills them
    with duckdb.connect(str(writer_path(data_dir))) as con:
        con.execute("DROP TABLE rollforward_windows")
        con.execute("DROP TABLE history_breaks")
        con.execute("DROP TABLE reconciliation_rows_state")
    load_partition(data_dir, last, SQL_DIR, stale_after_days=STALE_AFTER_DAYS)
    stored, defined = stored_and_defined(data_dir)
    assert stored == defined and any(row[0] == ReconciliationCheck.STALE_BALANCE for row in stored)

    # new SQL (here a stale rule that never fires): every date is recomputed with it
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    for view in SQL_DIR.glob("*.sql"):
        text = view.read_text(encoding="utf-8")
        if view.stem.endswith(View.BALANCE_CHANGES):
            rule = "snapshot_date - total_unchanged_since AS days_total_unchanged"
            assert rule in text
            text = text.replace(rule, "0 AS days_total_unchanged")
        (sql_dir / view.name).write_text(text, encoding="utf-8")
    load_partition(data_dir, last, sql_dir, stale_after_days=STALE_AFTER_DAYS)
    stored, defined = stored_and_defined(data_dir)
    assert stored == defined and not any(row[0] == ReconciliationCheck.STALE_BALANCE for row in stored)
