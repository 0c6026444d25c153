"""The roll-forward, pending and daily-balance views against a simulated NOAH ledger.

A ledger is a list of transactions per currency (In/Out, exact amounts with up to 18 decimals, fees,
created times, settle or fail delays from a minute to days, some never final) and at most one
movement without a transaction. From it the tests build exactly what the pipeline stores: for each
snapshot day D, the balances as of D+1 00:10 UTC (Total = opening + settled In - settled Out and
fees + movement; Available = Total - Out still Pending, with fees), and right after it a sync that
observes every transaction created so far with its status at that instant (status history = first
observation + changes). Some days are skipped (no run), some have a snapshot but no sync.

What an analyst relies on, checked exactly (Decimal, never float):
* every roll-forward window after the baseline is exactly balanced and its flows are the model's;
  a window touching a day without a sync says so and carries no numbers;
* the injected movement shows as exactly its amount in exactly its window, and as one
  rollforward_unexplained break there, nowhere else;
* every pending check is exactly zero;
* an estimated day equals the true end-of-day total when everything created by the end of that day
  had settled or failed by then, and otherwise differs by exactly the flows that settled later;
* a settlement between the balance fetch and the sync is a timing pair, not a break;
* amounts too wide or missing, and sums past 10^20, are reported, never a crash or a wrong number.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, localcontext

import duckdb
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support_history import Observation, day, snapshot_instant, transaction_warehouse

from balances_etl.domain.names import ReconciliationCheck, View
from balances_etl.pipeline.reconciliation import load_query

A, SAVINGS = "Current", "Savings"
BTC, USDC = "BTC_TEST", "USDC_TEST"
CURRENCIES = (BTC, USDC)
SAVINGS_TOTAL = "7.25"  # a Savings key: transactions never move it
D = Decimal
EXACT = 100  # digits of the Decimal context for the model's sums: the default 28 would round them


def midnight_after(d: dt.date) -> dt.datetime:
    return dt.datetime.combine(d + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


def at(d: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(d, dt.time(hour, minute), tzinfo=dt.UTC)


def plain(value: Decimal) -> str:
    """Exact plain text of a Decimal, as NOAH would send it."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# --- the simulated ledger ------------------------------------------------------------------------


@dataclass(frozen=True)
class Tx:
    transaction_id: str
    currency: str
    direction: str  # In | Out
    amount: Decimal
    fee: Decimal | None
    created_at: dt.datetime
    final_at: dt.datetime | None  # None: still Pending at the end of the simulation
    final_status: str = "Settled"  # or Failed

    def status_at(self, t: dt.datetime) -> str | None:
        if t < self.created_at:
            return None
        if self.final_at is None or t < self.final_at:
            return "Pending"
        return self.final_status

    def settled_by(self, t: dt.datetime) -> bool:
        return self.status_at(t) == "Settled"

    @property
    def effect(self) -> Decimal:
        """On Total (and Available) once settled."""
        return self.amount if self.direction == "In" else -(self.amount + (self.fee or 0))

    @property
    def hold(self) -> Decimal:
        """What a Pending one keeps out of Available."""
        return self.amount + (self.fee or 0) if self.direction == "Out" else D(0)


@dataclass(frozen=True)
class Movement:
    """A balance change NOAH made without any transaction."""

    currency: str
    at: dt.datetime
    amount: Decimal


@dataclass
class Ledger:
    kinds: list[str]  # per day index: "synced" | "unsynced" (snapshot, no sync) | "skip" (no run)
    txs: list[Tx]
    movement: Movement | None = None
    extra: Decimal = D(0)
    sync_delay: dt.timedelta = dt.timedelta(0)  # how long after the balance fetch the sync reads NOAH
    initial: dict[str, Decimal] = field(init=False)

    def __post_init__(self) -> None:
        # enough that no total or available ever goes below zero
        with localcontext(prec=EXACT):
            self.initial = self._initial()

    def _initial(self) -> dict[str, Decimal]:
        return {
            c: self.extra + sum((t.hold for t in self.txs if t.currency == c), D(0))
            + (abs(self.movement.amount) if self.movement and self.movement.currency == c else 0)
            for c in CURRENCIES
        }

    def snapshot_days(self) -> list[dt.date]:
        return [day(n) for n, kind in enumerate(self.kinds) if kind != "skip"]

    def synced(self, d: dt.date) -> bool:
        return self.kinds[(d - day(0)).days] == "synced"

    def sync_instant(self, d: dt.date) -> dt.datetime:
        return snapshot_instant(d) + self.sync_delay

    def moved(self, currency: str, after: dt.datetime | None, until: dt.datetime) -> Decimal:
        m = self.movement
        if m and m.currency == currency and (after is None or m.at > after) and m.at <= until:
            return m.amount
        return D(0)

    def total(self, currency: str, t: dt.datetime) -> Decimal:
        with localcontext(prec=EXACT):
            settled = sum((x.effect for x in self.txs if x.currency == currency and x.settled_by(t)), D(0))
            return self.initial[currency] + settled + self.moved(currency, None, t)

    def pending_out(self, currency: str, t: dt.datetime) -> Decimal:
        with localcontext(prec=EXACT):
            return sum((x.hold for x in self.txs if x.currency == currency and x.status_at(t) == "Pending"), D(0))

    def settled_between(self, currency: str, after: dt.datetime, until: dt.datetime) -> list[Tx]:
        return [
            x for x in self.txs
            if x.currency == currency and x.final_status == "Settled" and x.final_at is not None and after < x.final_at <= until
        ]

    # what the pipeline stores

    def balances(self) -> dict[dt.date, list[tuple[str, str, str, str]]]:
        result = {}
        for d in self.snapshot_days():
            at = snapshot_instant(d)
            rows = []
            for c in CURRENCIES:
                total = self.total(c, at)
                with localcontext(prec=EXACT):
                    available = total - self.pending_out(c, at)
                rows.append((A, c, plain(available), plain(total)))
            rows.append((SAVINGS, BTC, SAVINGS_TOTAL, SAVINGS_TOTAL))
            result[d] = rows
        return result

    def observations(self) -> list[Observation]:
        rows = []
        for d in self.snapshot_days():
            if not self.synced(d):
                continue
            at = self.sync_instant(d)
            for x in self.txs:
                status = x.status_at(at)
                if status is not None:
                    rows.append(Observation(d, at, x.transaction_id, x.created_at, status, x.direction, x.currency,
                                            plain(x.amount), None if x.fee is None else plain(x.fee)))
        return rows

    def warehouse(self) -> duckdb.DuckDBPyConnection:
        syncs = {d: self.sync_instant(d) for d in self.snapshot_days() if self.synced(d)}
        return transaction_warehouse(self.balances(), self.observations(), syncs)


# --- strategies ----------------------------------------------------------------------------------

def decimals(below: int) -> st.SearchStrategy[Decimal]:
    """Positive amounts below ``below`` with 0 to 18 decimals (built from text: exact, never rounded)."""
    return st.integers(0, 18).flatmap(lambda scale: st.integers(1, below * 10**scale - 1).map(lambda n: D(f"{n}E-{scale}")))


@st.composite
def ledgers(draw: st.DrawFn) -> Ledger:
    n_days = draw(st.integers(2, 8))
    kinds = draw(st.lists(st.sampled_from(["synced"] * 5 + ["skip"] * 3 + ["unsynced"]), min_size=n_days, max_size=n_days))
    if set(kinds) == {"skip"}:
        kinds[0] = "synced"
    start = dt.datetime.combine(day(0), dt.time(), tzinfo=dt.UTC)
    seconds = st.integers(-86400, n_days * 86400)
    txs = []
    for i in range(draw(st.integers(0, 16))):
        created = start + dt.timedelta(seconds=draw(seconds))
        fate = draw(st.sampled_from(["Settled", "Settled", "Settled", "Failed", "pending"]))
        delay = dt.timedelta(seconds=draw(st.one_of(st.integers(60, 3600), st.integers(3600, 4 * 86400))))
        txs.append(Tx(
            transaction_id=f"tx-{i:03}",
            currency=draw(st.sampled_from(CURRENCIES)),
            direction=draw(st.sampled_from(["In", "Out"])),
            amount=draw(decimals(10**12)),
            fee=draw(st.one_of(st.none(), decimals(10**3), decimals(10**3))),  # In fees too: they must be ignored
            created_at=created,
            final_at=None if fate == "pending" else created + delay,
            final_status="Failed" if fate == "Failed" else "Settled",
        ))
    movement = None
    if draw(st.booleans()):
        amount = draw(decimals(10**6)).copy_sign(D(draw(st.sampled_from([1, -1]))))
        movement = Movement(draw(st.sampled_from(CURRENCIES)), start + dt.timedelta(seconds=draw(seconds)), amount)
    return Ledger(kinds, txs, movement, extra=draw(decimals(10**4)))


# --- helpers -------------------------------------------------------------------------------------

def rows(con: duckdb.DuckDBPyConnection, query: str, *params: object) -> list[tuple]:
    return con.execute(query, list(params)).fetchall()


def as_dicts(con: duckdb.DuckDBPyConnection, query: str, *params: object) -> list[dict]:
    cursor = con.execute(query, list(params))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def windows_of(ledger: Ledger) -> Iterator[tuple[dt.date, dt.date]]:
    snapshot_days = ledger.snapshot_days()
    yield from zip(snapshot_days, snapshot_days[1:], strict=False)


# --- the property --------------------------------------------------------------------------------

# Always tried: every status of a transaction across a day without a run, with fees on both sides, and
# a movement in the window after it.
RICH = Ledger(
    ["synced", "synced", "skip", "synced", "unsynced", "synced"],
    [
        Tx("settles-in-the-gap", BTC, "Out", D("2.5"), D("0.000000000000000001"), at(day(1), 20), at(day(2), 9)),
        Tx("settles-after-the-gap", BTC, "Out", D("1"), D("0.25"), at(day(2), 20), at(day(3), 0, 5)),
        Tx("fails", BTC, "Out", D("4"), D("0.5"), at(day(1), 1), at(day(2), 1), "Failed"),
        Tx("in-with-a-fee", BTC, "In", D("0.75"), D("9"), at(day(2), 5), at(day(2), 6)),
        Tx("pending-forever", USDC, "Out", D("3"), None, at(day(0), 5), None),
        Tx("in-late", USDC, "In", D("123456789.123456789123456789"), None, at(day(2), 23, 59), at(day(3), 3)),
    ],
    Movement(USDC, at(day(1), 12), D("-0.000000000000000001")),
    extra=D("1"),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ledgers())
@example(RICH)
def test_the_views_explain_a_simulated_ledger_exactly(ledger: Ledger) -> None:
    con = ledger.warehouse()
    try:
        with localcontext(prec=EXACT):
            check_rollforward(con, ledger)
            check_pending(con, ledger)
            check_daily_balances(con, ledger)
            check_breaks(con, ledger)
    finally:
        con.close()


def movement_window(ledger: Ledger) -> tuple[str, dt.date] | None:
    """(currency, closing date) of the computable window that holds the movement, if any."""
    m = ledger.movement
    for opening, closing in windows_of(ledger):
        if m and ledger.moved(m.currency, snapshot_instant(opening), snapshot_instant(closing)):
            if ledger.synced(opening) and ledger.synced(closing):
                return m.currency, closing
    return None


def check_rollforward(con: duckdb.DuckDBPyConnection, ledger: Ledger) -> None:
    got = {
        (r["account_type"], r["crypto_currency"], r["period_end_date"]): r
        for r in as_dicts(con, f"SELECT * FROM {View.BALANCE_ROLLFORWARD}")
    }
    expected_keys = set()
    for opening, closing in windows_of(ledger):
        after, until = snapshot_instant(opening), snapshot_instant(closing)
        for account, currency in [(A, c) for c in CURRENCIES] + [(SAVINGS, BTC)]:
            expected_keys.add((account, currency, closing))
            r = got[(account, currency, closing)]
            assert r["period_start_date"] == opening
            if not ledger.synced(opening) or not ledger.synced(closing):
                assert r["status"] == ("no_sync_at_opening" if not ledger.synced(opening) else "no_sync_at_closing")
                assert (r["settled_in"], r["settled_out"], r["network_fees"], r["unexplained_total"]) == (None,) * 4
                assert "no transactions sync" in r["detail"]
                continue
            flows = ledger.settled_between(currency, after, until) if account == A else []
            settled_in = sum((x.amount for x in flows if x.direction == "In"), D(0))
            settled_out = sum((x.amount for x in flows if x.direction == "Out"), D(0))
            fees = sum((x.fee or 0 for x in flows if x.direction == "Out"), D(0))
            moved = ledger.moved(currency, after, until) if account == A else D(0)
            assert (r["settled_in"], r["settled_out"], r["network_fees"]) == (settled_in, settled_out, fees)
            assert (r["settled_in_transactions"], r["settled_out_transactions"]) == (
                sum(x.direction == "In" for x in flows), sum(x.direction == "Out" for x in flows))
            assert r["expected_closing_total"] == r["opening_total"] + settled_in - settled_out - fees
            assert r["unexplained_total"] == moved
            assert r["status"] == ("balanced" if moved == 0 else "unexplained")
    assert set(got) == expected_keys


def check_pending(con: duckdb.DuckDBPyConnection, ledger: Ledger) -> None:
    got = as_dicts(con, f"SELECT * FROM {View.PENDING_EXPLAINED} ORDER BY ALL")
    assert len(got) == len(ledger.snapshot_days()) * (len(CURRENCIES) + 1)
    for r in got:
        d = r["snapshot_date"]
        if not ledger.synced(d):
            assert (r["status"], r["pending_out_transactions"], r["unexplained_pending"]) == ("no_sync", None, None)
            continue
        expected = ledger.pending_out(r["crypto_currency"], snapshot_instant(d)) if r["account_type"] == A else D(0)
        assert (r["pending_outflow"], r["pending_out_transactions"], r["unexplained_pending"], r["status"]) == (
            expected, expected, D(0), "balanced")


def check_daily_balances(con: duckdb.DuckDBPyConnection, ledger: Ledger) -> None:
    got = {(r["crypto_currency"], r["balance_date"]): r
           for r in as_dicts(con, f"SELECT * FROM {View.DAILY_BALANCES} WHERE account_type = ?", A)}
    snapshot_days = ledger.snapshot_days()
    first, last = snapshot_days[0], snapshot_days[-1]
    assert len(got) == len(CURRENCIES) * ((last - first).days + 1)
    for currency in CURRENCIES:
        for opening, closing in windows_of(ledger):
            assert got[(currency, opening)]["total"] == ledger.total(currency, snapshot_instant(opening))
            assert got[(currency, opening)]["source"] == "snapshot"
            for n in range(1, (closing - opening).days):
                e = opening + dt.timedelta(days=n)
                r = got[(currency, e)]
                assert (r["source"], r["previous_snapshot_date"], r["next_snapshot_date"]) == ("estimated", opening, closing)
                if not ledger.synced(opening) or not ledger.synced(closing):
                    assert r["total"] is None and "no transactions sync" in r["note"]
                    continue
                end_of_day = midnight_after(e)
                true_total = ledger.total(currency, end_of_day)
                # created by the end of the day, settled only later (but seen by the next snapshot's sync)
                late = [x for x in ledger.settled_between(currency, end_of_day, snapshot_instant(closing))
                        if x.created_at < end_of_day]
                moved = ledger.moved(currency, snapshot_instant(opening), end_of_day)
                unfinished = [x for x in ledger.txs if x.currency == currency and x.created_at < end_of_day
                              and x.status_at(end_of_day) == "Pending"]
                assert r["total"] - true_total == sum((x.effect for x in late), D(0)) - moved
                if not unfinished:
                    assert r["total"] == true_total - moved
        assert got[(currency, last)]["total"] == ledger.total(currency, snapshot_instant(last))


def check_breaks(con: duckdb.DuckDBPyConnection, ledger: Ledger) -> None:
    got = rows(
        con,
        f"SELECT check_name, snapshot_date, crypto_currency, detail FROM {View.RECONCILIATION_BREAKS} "
        "WHERE check_name IN (?, ?)",
        ReconciliationCheck.ROLLFORWARD_UNEXPLAINED, ReconciliationCheck.PENDING_UNEXPLAINED,
    )
    where = movement_window(ledger)
    if where is None:
        assert got == []
        return
    [(check, on, currency, detail)] = got
    assert (check, currency, on) == (ReconciliationCheck.ROLLFORWARD_UNEXPLAINED, *where)
    assert detail.startswith("closing total ") and f"unexplained {plain(ledger.movement.amount)};" in detail


# --- hand-made ledgers ---------------------------------------------------------------------------

def test_a_settlement_between_the_balance_fetch_and_the_sync_is_a_timing_pair_not_a_break() -> None:
    # The syncs read NOAH five minutes after the balances (00:10 -> 00:15). BTC: an In of 5 settles at
    # 00:12 after day 1, so day 1's total misses it but day 1's sync sees it Settled. USDC: an Out of
    # 2 (fee 0.1) does the same, so day 1's pending outflow still holds it too.
    ledger = Ledger(
        ["synced"] * 4,
        [
            Tx("in-1", BTC, "In", D("5"), None, at(day(1), 20), at(day(2), 0, 12)),
            Tx("out-1", USDC, "Out", D("2"), D("0.1"), at(day(1), 20), at(day(2), 0, 12)),
            Tx("in-2", BTC, "In", D("1.000000000000000001"), None, at(day(2), 9), at(day(2), 10)),
        ],
        extra=D("10"),
        sync_delay=dt.timedelta(minutes=5),
    )
    con = ledger.warehouse()
    got = rows(
        con,
        f"SELECT crypto_currency, period_end_date, unexplained_total, status FROM {View.BALANCE_ROLLFORWARD} "
        "WHERE account_type = ? ORDER BY ALL",
        A,
    )
    assert got == [
        (BTC, day(1), D("-5"), "timing"),
        (BTC, day(2), D("5"), "timing"),
        (BTC, day(3), D("0"), "balanced"),
        (USDC, day(1), D("2.1"), "timing"),
        (USDC, day(2), D("-2.1"), "timing"),
        (USDC, day(3), D("0"), "balanced"),
    ]
    [(detail,)] = rows(con, f"SELECT detail FROM {View.BALANCE_ROLLFORWARD} "
                            "WHERE account_type = ? AND crypto_currency = ? AND period_end_date = ?", A, BTC, day(2))
    assert f"offset by the window {day(0)} to {day(1)}: settled between the balance fetch and the sync" in detail
    assert rows(
        con, f"SELECT crypto_currency, pending_outflow, pending_out_transactions, unexplained_pending, status "
        f"FROM {View.PENDING_EXPLAINED} WHERE snapshot_date = ? AND account_type = ? ORDER BY ALL", day(1), A
    ) == [(BTC, D("0"), D("0"), D("0"), "balanced"), (USDC, D("2.1"), D("0"), D("2.1"), "timing")]
    assert rows(con, f"SELECT * FROM {View.RECONCILIATION_BREAKS}") == []
    for n in range(5):
        assert con.execute(load_query("history_breaks_on_dates"), [day(n)]).fetchall() == []


def test_a_real_break_next_to_a_timing_pair_is_still_a_break() -> None:
    # Same late BTC settlement, plus 0.5 vanishing without a transaction in day 2's window: -5 then
    # +4.5 are no longer opposite, so both windows are unexplained.
    ledger = Ledger(
        ["synced"] * 3,
        [Tx("in-1", BTC, "In", D("5"), None, at(day(1), 20), at(day(2), 0, 12))],
        Movement(BTC, at(day(2), 12), D("-0.5")),
        extra=D("10"),
        sync_delay=dt.timedelta(minutes=5),
    )
    con = ledger.warehouse()
    assert rows(
        con, f"SELECT period_end_date, unexplained_total, status FROM {View.BALANCE_ROLLFORWARD} "
        "WHERE account_type = ? AND crypto_currency = ? ORDER BY ALL", A, BTC
    ) == [(day(1), D("-5"), "unexplained"), (day(2), D("4.5"), "unexplained")]
    assert rows(con, f"SELECT snapshot_date, check_name FROM {View.RECONCILIATION_BREAKS} ORDER BY ALL") == [
        (day(1), ReconciliationCheck.ROLLFORWARD_UNEXPLAINED), (day(2), ReconciliationCheck.ROLLFORWARD_UNEXPLAINED)]


BIG = "99999999999999999999.5"  # fits DECIMAL(38,18); two of them do not


def test_sums_past_ten_to_the_twenty_are_reported_never_a_crash() -> None:
    # Two In and two Out of 99999999999999999999.5 settle in day 1's window (sums ~2e20, too wide
    # for DECIMAL(38,18), where DuckDB's sum() raises); the total is 1 throughout. Day 2: two Out of
    # BIG are Pending, pending outflow is 1.
    syncs = {day(n): snapshot_instant(day(n)) for n in range(3)}
    created = at(day(1), 1)
    observations = [
        Observation(day(1), syncs[day(1)], f"{d}-{i}", created, "Settled", d, BTC, BIG)
        for d in ("In", "Out") for i in range(2)
    ] + [Observation(day(2), syncs[day(2)], f"p-{i}", created, "Pending", "Out", BTC, BIG) for i in range(2)]
    balances = {day(0): [(A, BTC, "1", "1")], day(1): [(A, BTC, "1", "1")], day(2): [(A, BTC, "0", "1")],
                day(4): [(A, BTC, "1", "1")]}
    con = transaction_warehouse(balances, observations, syncs)
    window = as_dicts(con, f"SELECT * FROM {View.BALANCE_ROLLFORWARD} WHERE period_end_date = ?", day(1))[0]
    assert window["status"] == "sum_too_wide"
    assert (window["settled_in"], window["settled_out"], window["expected_closing_total"], window["unexplained_total"]) == (
        None, None, None, None)
    assert window["network_fees"] == D("0")
    assert window["detail"] == (
        "sums do not fit DECIMAL(38,18): in 199999999999999999999, out 199999999999999999999, fees 0, "
        "expected closing total 1, unexplained 0"
    )
    pending = as_dicts(con, f"SELECT * FROM {View.PENDING_EXPLAINED} WHERE snapshot_date = ?", day(2))[0]
    assert (pending["status"], pending["pending_out_transactions"], pending["unexplained_pending"]) == ("sum_too_wide", None, None)
    assert "Pending Out transactions 199999999999999999999, unexplained -199999999999999999998" in pending["detail"]
    # day 3 is estimated from day 2, then day 4 has no sync: said, not computed
    assert rows(con, f"SELECT total, note FROM {View.DAILY_BALANCES} WHERE balance_date = ?", day(3)) == [
        (None, f"not estimated: no transactions sync on {day(4)} (the next snapshot date)")]
    # everything downstream still answers
    assert rows(con, f"SELECT count(*) FROM {View.RECONCILIATION_SUMMARY}")[0][0] >= 0
    for n in range(5):
        con.execute(load_query("history_breaks_on_dates"), [day(n)]).fetchall()


def test_estimates_past_ten_to_the_twenty_are_said_not_computed() -> None:
    syncs = {day(0): snapshot_instant(day(0)), day(2): snapshot_instant(day(2))}
    observations = [Observation(day(2), syncs[day(2)], f"in-{i}", at(day(1), 3), "Settled", "In", BTC, BIG) for i in range(2)]
    con = transaction_warehouse({day(0): [(A, BTC, "1", "1")], day(2): [(A, BTC, "1", "1")]}, observations, syncs)
    assert rows(con, f"SELECT total, note FROM {View.DAILY_BALANCES} WHERE balance_date = ?", day(1)) == [
        (None, "not estimated: estimated total 200000000000000000000 does not fit DECIMAL(38,18)")]


def test_a_settled_transaction_without_an_amount_or_too_wide_makes_the_window_not_computable() -> None:
    syncs = {day(n): snapshot_instant(day(n)) for n in range(4)}
    wide = "123456789012345678901"  # 21 integer digits
    observations = [
        Observation(day(1), syncs[day(1)], "no-amount", at(day(1), 2), "Settled", "In", BTC, None),
        Observation(day(2), syncs[day(2)], "wide-fee", at(day(2), 2), "Settled", "Out", BTC, "1", wide),
        Observation(day(3), syncs[day(3)], "wide-pending", at(day(3), 2), "Pending", "Out", BTC, "1", "0." + "0" * 18 + "1"),
    ]
    balances = {day(n): [(A, BTC, "5", "5")] for n in range(4)}
    con = transaction_warehouse(balances, observations, syncs)
    got = rows(con, f"SELECT period_end_date, settled_in, settled_out, network_fees, unexplained_total, status, detail "
                    f"FROM {View.BALANCE_ROLLFORWARD} ORDER BY ALL")
    assert got == [
        (day(1), None, D("0"), D("0"), None, "amount_missing",
         "1 transaction(s) settled without an Amount (e.g. no-amount): not rolled forward"),
        (day(2), D("0"), D("1"), None, None, "amount_too_wide",
         "1 settled transaction(s) with an Amount or NetworkFee too wide for DECIMAL(38,18) (e.g. wide-fee): not rolled forward"),
        (day(3), D("0"), D("0"), D("0"), D("0"), "balanced", None),
    ]
    assert rows(con, f"SELECT snapshot_date, pending_out_transactions, unexplained_pending, status FROM {View.PENDING_EXPLAINED} "
                     "ORDER BY ALL") == [
        (day(0), D("0"), D("0"), "balanced"), (day(1), D("0"), D("0"), "balanced"), (day(2), D("0"), D("0"), "balanced"),
        (day(3), None, None, "amount_too_wide"),
    ]
    # not computable is not a break, and never a number
    assert rows(con, f"SELECT * FROM {View.RECONCILIATION_BREAKS}") == []


def test_the_first_synced_snapshot_is_the_baseline() -> None:
    # Transactions settled before the first sync are in its balance already: nothing before the
    # baseline is rolled forward, and a later sync that first sees an old settlement would count it
    # twice if it were.
    syncs = {day(1): snapshot_instant(day(1)), day(2): snapshot_instant(day(2))}
    observations = [
        Observation(day(1), syncs[day(1)], "old", at(day(0), 5), "Settled", "In", BTC, "3"),
        Observation(day(2), syncs[day(2)], "old", at(day(0), 5), "Settled", "In", BTC, "3"),
        Observation(day(2), syncs[day(2)], "new", at(day(2), 5), "Settled", "Out", BTC, "1", "0.25"),
    ]
    balances = {day(0): [(A, BTC, "0", "0")], day(1): [(A, BTC, "3", "3")], day(2): [(A, BTC, "1.75", "1.75")]}
    con = transaction_warehouse(balances, observations, syncs)
    assert rows(con, f"SELECT period_start_date, settled_in, settled_out, network_fees, expected_closing_total, "
                     f"unexplained_total, status FROM {View.BALANCE_ROLLFORWARD} ORDER BY ALL") == [
        (day(0), None, None, None, None, None, "no_sync_at_opening"),
        (day(1), D("0"), D("1"), D("0.25"), D("1.75"), D("0"), "balanced"),
    ]


def test_exact_unit_macros_round_trip_at_the_edges() -> None:
    con = transaction_warehouse({day(0): [(A, BTC, "1", "1")]})
    for text in ["0", "0.000000000000000001", "1", "10", "100.5", "99999999999999999999.999999999999999999"]:
        for sign in ("", "-"):
            value = sign + text if text != "0" else text
            got = rows(con, "SELECT units_text(decimal_units(CAST(? AS DECIMAL(38,18)))), "
                            "units_decimal(decimal_units(CAST(? AS DECIMAL(38,18))))", value, value)
            assert got == [(value, D(value))]
    assert rows(con, "SELECT units_decimal(CAST('100000000000000000000000000000000000000' AS BIGNUM)), "
                     "units_text(CAST('100000000000000000000000000000000000000' AS BIGNUM))") == [
        (None, "100000000000000000000")]


@pytest.mark.parametrize("n_days", [1, 3])
def test_views_answer_on_a_warehouse_without_any_transaction(n_days: int) -> None:
    con = transaction_warehouse({day(n): [(A, BTC, "1", "2")] for n in range(n_days)})
    assert {r[0] for r in rows(con, f"SELECT status FROM {View.BALANCE_ROLLFORWARD}")} <= {"no_sync_at_opening"}
    assert {r[0] for r in rows(con, f"SELECT status FROM {View.PENDING_EXPLAINED}")} == {"no_sync"}
    assert rows(con, f"SELECT count(*) FROM {View.DAILY_BALANCES}") == [(n_days,)]
