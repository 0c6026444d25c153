"""The demo: the real daily job, run for N consecutive days against the embedded NOAH emulator.

It signs every request with a freshly generated P-384 key, advances the emulator's simulated date
day by day (balances and transactions come from one simulated ledger), simulates one NOAH outage
(that day fails cleanly, shows as a gap and is estimated in v_daily_balances), injects one balance
movement without a transaction (the one window the roll-forward cannot explain, to the last digit),
and writes a sample ledger so every reconciliation view has something to say.
"""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import Decimal, localcontext
from pathlib import Path

from tqdm import tqdm

from balances_etl.markdown import markdown_table
from balances_etl.emulator import Fault, FaultKind, NoahSandbox, generate_signing_keypair
from balances_etl.domain.names import View
from balances_etl.orchestration.runner import RunOutcome, open_instance, run_daily_job
from balances_etl.settings import PipelineSettings, temporary_environment
from balances_etl.storage.warehouse import connect_read_only

DEMO_SEED = 7
# The one balance movement NOAH lists no transaction for: the roll-forward finds exactly this amount.
DEMO_MOVEMENT = ("BTC_TEST", "0.00012345")
LEDGER_FILE = "demo_ledger.csv"
# Quick retries so the simulated outage fails in seconds, not minutes.
DEMO_CLIENT_ENV = {"NOAH_MAX_ATTEMPTS": "3", "NOAH_BACKOFF_BASE_SECONDS": "0.05", "NOAH_BACKOFF_MAX_SECONDS": "0.2"}


def emulator_environment(sandbox: NoahSandbox, private_pem: bytes) -> AbstractContextManager[None]:
    """Point this process's NOAH_* settings at the emulator for the duration of the demo."""
    overrides = {
        "NOAH_BASE_URL": sandbox.base_url,
        "NOAH_API_KEY": sandbox.api_key,
        "NOAH_SIGNING_KEY": private_pem.decode(),
        **DEMO_CLIENT_ENV,
    }
    return temporary_environment(overrides, unset=["NOAH_SIGNING_KEY_PATH"])


def demo_dates(days: int, today: dt.date) -> list[dt.date]:
    """The N days that ended most recently, oldest first."""
    return [today - dt.timedelta(days=offset) for offset in range(days, 0, -1)]


def write_sample_ledger(ledger_dir: Path, sandbox: NoahSandbox, dates: list[dt.date]) -> Path:
    """A ledger that agrees, disagrees, agrees within tolerance and misses rows on both sides."""
    lines = ["as_of_date,account_type,crypto_currency,expected_total,tolerance"]
    for index, day in enumerate(dates[-2:]):
        sandbox.configure(simulated_date=day)
        totals = {item["CryptoCurrency"]: item["Total"] for item in sandbox.expected_items()}
        with localcontext(prec=80):
            lines.append(f"{day},Current,BTC_TEST,{totals['BTC_TEST']},0")
            lines.append(f"{day},Current,ETH_TEST_SEPOLIA,{Decimal(totals['ETH_TEST_SEPOLIA']) + Decimal('1e-18'):f},0")
            if index == 0:  # USDC within tolerance on one day, absent from the ledger on the other
                lines.append(f"{day},Current,USDC_TEST,{Decimal(totals['USDC_TEST']) - Decimal('0.01'):f},0.05")
        lines.append(f"{day},Current,DOGE_TEST,5,0")
    ledger_dir.mkdir(parents=True, exist_ok=True)
    path = ledger_dir / LEDGER_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class DemoResult:
    outcomes: list[RunOutcome]
    outage_day: dt.date | None
    movement_day: dt.date | None  # the day of the injected movement without a transaction

    @property
    def succeeded(self) -> bool:
        """Every day loaded, except the simulated outage, which must have failed."""
        return all(o.success != (o.snapshot_date == self.outage_day) for o in self.outcomes)


def run_demo(days: int, *, today: dt.date | None = None, show_progress: bool = True) -> DemoResult:
    settings = PipelineSettings.from_env()
    instance = open_instance()
    today = today or dt.datetime.now(dt.UTC).date()
    dates = demo_dates(days, today)
    outage_day = dates[len(dates) // 2] if len(dates) >= 5 else None
    movement_day = dates[-2] if len(dates) >= 5 else None
    private_pem, public_pem = generate_signing_keypair(curve="P-384")
    outcomes = []
    with NoahSandbox(public_key_pem=public_pem, seed=DEMO_SEED) as sandbox, emulator_environment(sandbox, private_pem):
        ledger = write_sample_ledger(settings.data_dir / "ledger", sandbox, dates)
        print(f"NOAH emulator at {sandbox.base_url} (requests signed ES384); sample ledger {ledger}")
        progress = tqdm(dates, desc="daily runs", unit="day", disable=not show_progress)
        for day in progress:
            sandbox.configure(simulated_date=day)
            sandbox.clear_faults()
            if day == movement_day:
                currency, amount = DEMO_MOVEMENT
                sandbox.inject_movement(currency, amount, day)
            if day == outage_day:
                sandbox.add_fault(Fault(kind=FaultKind.STATUS, status=503, times=None, error_type="Unexpected", detail="simulated outage"))
            taken_at = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 10), tzinfo=dt.UTC)
            outcome = run_daily_job(day, instance=instance, simulated_now=taken_at)
            outcomes.append(outcome)
            progress.set_postfix_str(f"{day} {'ok' if outcome.success else 'FAILED'}")
    print_report(settings, outcomes, outage_day)
    return DemoResult(outcomes, outage_day, movement_day)


def print_report(settings: PipelineSettings, outcomes: list[RunOutcome], outage_day: dt.date | None) -> None:
    print("\nDaily runs")
    print(markdown_table([_run_row(o, outage_day) for o in outcomes], limit=len(outcomes)))
    con = connect_read_only(settings.data_dir)
    try:
        for title, query in (
            ("Latest balances (v_latest_balances)", f"SELECT account_type, crypto_currency, snapshot_date, available, total, age_days FROM {View.LATEST_BALANCES} ORDER BY crypto_currency"),
            ("Open reconciliation breaks, last 5 snapshot days (v_reconciliation_summary)", f"SELECT * FROM {View.RECONCILIATION_SUMMARY} WHERE snapshot_date >= (SELECT max(snapshot_date) - 4 FROM {View.RECONCILIATION_SUMMARY}) ORDER BY snapshot_date, check_name"),
            ("Ledger reconciliation (v_ledger_reconciliation)", f"SELECT as_of_date, crypto_currency, expected_total, noah_total, difference, tolerance, status FROM {View.LEDGER_RECONCILIATION} ORDER BY as_of_date, crypto_currency"),
            ("Roll-forward windows per status (v_balance_rollforward)", f"SELECT status, count(*) AS windows FROM {View.BALANCE_ROLLFORWARD} GROUP BY status ORDER BY status"),
            ("Roll-forward windows that do not balance (v_balance_rollforward)", f"SELECT crypto_currency, period_start_date, period_end_date, opening_total, settled_in, settled_out, network_fees, closing_total, unexplained_total, status FROM {View.BALANCE_ROLLFORWARD} WHERE status IN ('unexplained', 'timing') ORDER BY period_end_date, crypto_currency"),
            ("Pending outflows against their transactions (v_pending_explained)", f"SELECT status, count(*) AS snapshots, count(*) FILTER (WHERE pending_outflow <> 0) AS with_pending_outflow FROM {View.PENDING_EXPLAINED} GROUP BY status ORDER BY status"),
            ("Estimated days (v_daily_balances)", f"SELECT balance_date, crypto_currency, total, source FROM {View.DAILY_BALANCES} WHERE source = 'estimated' ORDER BY balance_date, crypto_currency"),
        ):
            cursor = con.execute(query)
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            print(f"\n{title}\n{markdown_table(rows, limit=40) or '(none)'}")
    finally:
        con.close()
    print(f"\nWarehouse: {settings.data_dir / 'warehouse.duckdb'} (open it read-only; see README 'For analysts').")
    print("Browse runs, checks and metadata: balances-etl dev")


def _run_row(outcome: RunOutcome, outage_day: dt.date | None) -> dict[str, object]:
    warnings = sorted({c.name for c in outcome.checks if not c.blocking and not c.passed})
    if outcome.success:
        result = "ok"
    elif outcome.snapshot_date == outage_day:
        result = "failed cleanly (simulated NOAH outage)"
    else:
        result = "FAILED: " + (outcome.error or "").splitlines()[0][:120]
    return {"day": outcome.snapshot_date, "result": result, "warnings": ", ".join(warnings) or "-", "run": outcome.run_id[:8]}

