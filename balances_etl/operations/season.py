"""A season of NOAH outages on a simulated clock: the real schedule, catch-up, alert and status code
against the real emulator, day after day, checking that no day is captured twice, lost silently or
published half-done.

What is real:

- NOAH: the embedded emulator (``NoahSandbox``) serving HTTP on 127.0.0.1 with ES384-signed
  requests, its balances those of the day being taken (``configure(simulated_date=day)``);
- the NOAH client (``NoahClient``: signing, pagination, retries) and the day's snapshot exactly as
  the daily job's op takes it (``NoahDaySource`` + ``take_day_snapshot``: raw landing, normalize,
  blocking checks, atomic Parquet publish), into a real data directory;
- every decision: ``operations.tick.tick`` (``judge_days``, ``catchup_decisions``, ``alert_events``,
  ``send_alerts`` with its ``AlertLedger`` file), the captures read back from the Parquet store by
  ``operations.history.captures``, and the status (``judge_days`` + ``status.build_status``,
  ``as_json``, ``render_text``: what ``balances-etl status`` prints, but for run history);
- alerts, POSTed as JSON over HTTP by ``AlertSender`` to a webhook receiver on 127.0.0.1.

What is simulated:

- the clock: UTC instants ``BALANCES_ETL_CATCHUP_EVERY_MINUTES`` (10) apart, the sensor's interval;
- the outages: seeded random spans from minutes to three days, each one of: HTTP 503 on every
  request, a proxy's HTML 502, the connection dropped mid-answer, no answer (the client's read
  timeout), or the connection refused (the emulator stopped);
- the Dagster schedule (``tick.scheduled_days``: at 00:10 the day that just ended) and the run
  launcher: a launch runs the day's snapshot synchronously in this process instead of a Dagster
  run, and is recorded as an ``Attempt`` (what ``history.attempts`` reads from Dagster) lasting
  ``RUN_MINUTES`` simulated minutes, running until then;
- the client's pauses: 2 attempts per page, milliseconds of backoff and a 0.3 s read timeout, so a
  failed run costs under a second of real time (its simulated duration is ``RUN_MINUTES`` whatever
  its retries).

Not covered: the Dagster daemon, run queue and run storage (``tests/test_catchup.py`` runs the
sensor against a real instance), the warehouse load and the transactions sync of the daily job.

``python -m balances_etl.operations.season --days 90 --report docs/reliability.md`` runs a season,
prints the tables and exits 0 only when every check held; ``tests/test_simulation.py`` runs a short
season by default and the 90 days with ``-m slow``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import random
import re
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from balances_etl.domain.timing import end_of_day
from balances_etl.emulator import NoahSandbox, generate_signing_keypair
from balances_etl.markdown import SEASON_MARKER, markdown_table, write_section
from balances_etl.noah import NoahClient, NoahConfig
from balances_etl.operations import history
from balances_etl.operations.alerts import AlertKind, AlertLedger, AlertSender, AlertSettings
from balances_etl.operations.catchup import Backoff
from balances_etl.operations.days import Attempt, Capture, DayStatus, Policy, RunState, duration, judge_days, utc
from balances_etl.operations.outages import (
    RUN_MINUTES,
    Expectation,
    Noah,
    Outage,
    WebhookReceiver,
    expected_outcome,
    random_outages,
)
from balances_etl.operations.status import Health, as_json, build_status, render_text
from balances_etl.operations.tick import scheduled_days, tick
from balances_etl.pipeline.snapshot import NoahDaySource, SnapshotFailed, blocking_failure_message, take_day_snapshot
from balances_etl.settings import PipelineSettings
from balances_etl.storage.parquet import partition_path
from balances_etl.storage.raw import raw_root

SEASON_START = dt.date(2026, 1, 1)
PAGE_SIZE = 2  # two pages a day, so a snapshot paginates
_INSTANCE = re.compile(r"Instance '([^']+)'")
_ALERT_TEXT = re.compile(r"^balances-etl: (?:the daily balances run for )?(\d{4}-\d{2}-\d{2}) "
                         r"(failed|was not captured|is lost|recovered)")
_ALERT_KINDS = {"failed": AlertKind.RUN_FAILED, "was not captured": AlertKind.FRESHNESS_MISSED,
                "is lost": AlertKind.LOST, "recovered": AlertKind.RECOVERED}


@dataclass
class Run:
    """A launched run: its outcome is known at once, the sensor sees it running for RUN_MINUTES."""

    final: Attempt

    def seen_at(self, now: dt.datetime) -> Attempt:
        assert self.final.ended_at is not None
        if now >= self.final.ended_at:
            return self.final
        return dataclasses.replace(self.final, state=RunState.RUNNING, ended_at=None, error=None, noah_instance=None)


@dataclass(frozen=True)
class DayResult:
    day: dt.date
    expected: Expectation
    outcome: str  # "on time", "caught up" or "lost"
    runs: int
    capture: Capture | None
    alerts: tuple[AlertKind, ...]
    status: str  # what the status computation says at the end of the season


@dataclass
class SeasonReport:
    seed: int
    start: dt.date
    policy: Policy
    days: list[DayResult]
    outages: list[Outage]
    runs: list[Attempt]
    webhook_texts: list[str]
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    ticks: int = 0
    status_text: str = ""

    def count(self, outcome: str) -> int:
        return sum(1 for d in self.days if d.outcome == outcome)

    def season_runs(self) -> list[Attempt]:
        last = self.days[-1].day
        return [a for a in self.runs if a.day <= last]

    def summary_rows(self) -> list[dict[str, object]]:
        runs = self.season_runs()
        alerts = Counter(kind for d in self.days for kind in d.alerts)
        margin = sum(1 for d in self.days if d.expected is Expectation.EITHER)
        delays = [d.capture.delay for d in self.days if d.outcome == "caught up" and d.capture]
        return [
            {"figure": "days", "value": len(self.days)},
            {"figure": "days on time (the 00:10 scheduled run)", "value": self.count("on time")},
            {"figure": "days caught up (a catch-up run inside the window)", "value": self.count("caught up")},
            {"figure": "days lost (reported lost, one alert each)", "value": self.count("lost")},
            {"figure": "days in the margin (NOAH back too briefly or too late to be sure)", "value": margin},
            {"figure": "outages", "value": len(self.outages)},
            {"figure": "alerts sent (run failed / freshness missed / lost / recovered)",
             "value": f"{sum(alerts.values())} ({alerts[AlertKind.RUN_FAILED]} / {alerts[AlertKind.FRESHNESS_MISSED]}"
                      f" / {alerts[AlertKind.LOST]} / {alerts[AlertKind.RECOVERED]})"},
            {"figure": "runs launched (schedule + catch-up), failed",
             "value": f"{len(runs)} ({sum(a.launched_by == 'schedule' for a in runs)} + "
                      f"{sum(a.launched_by == 'catch-up' for a in runs)}), "
                      f"{sum(a.state is RunState.FAILED for a in runs)} failed"},
            {"figure": "catch-up delay, median / longest",
             "value": f"{duration(sorted(delays)[len(delays) // 2])} / {duration(max(delays))}" if delays else "-"},
            {"figure": "captured twice, published half-done, lost without an alert, wrong status",
             "value": "none" if not self.problems else f"{len(self.problems)} problems"},
        ]

    def outage_rows(self) -> list[dict[str, object]]:
        """Each outage, and the days it held up: those it overlapped between their scheduled run and
        their capture (or their window's close)."""
        rows = []
        for outage in self.outages:
            hit = []
            for d in self.days:
                scheduled = self.policy.scheduled_at(d.day)
                done = d.capture.taken_at if d.capture else self.policy.window_closes(d.day)
                if outage.start < max(done, scheduled + dt.timedelta(seconds=1)) and outage.end > scheduled:
                    hit.append(d)
            rows.append({
                "from": utc(outage.start), "to": utc(outage.end), "lasted": duration(outage.end - outage.start),
                "kind": outage.kind.value,
                "days it held up": ", ".join(f"{d.day:%m-%d} {d.outcome}" for d in hit) or "none",
            })
        return rows

    def render_markdown(self) -> str:
        return (markdown_table(self.summary_rows(), limit=100) + "\n\n" + markdown_table(self.outage_rows(), limit=1000))


# --- the season -------------------------------------------------------------------------------------------


def run_season(root: Path, *, days: int, seed: int, start: dt.date = SEASON_START,
               progress: bool = False) -> SeasonReport:
    """Simulate ``days`` days from ``start`` with seeded random outages, in ``root`` (a data dir)."""
    began = time.monotonic()
    settings = PipelineSettings.from_env({"BALANCES_ETL_START_DATE": start.isoformat(),
                                          "BALANCES_ETL_DATA_DIR": str(root / "data")})
    policy, backoff = Policy.from_settings(settings), Backoff()
    interval = dt.timedelta(minutes=settings.catchup_every_minutes)
    data_dir = settings.data_dir
    season = [start + dt.timedelta(days=n) for n in range(days)]
    clock_start = end_of_day(start - dt.timedelta(days=1))
    clock_end = policy.window_closes(season[-1]) + interval
    rng = random.Random(seed)
    outages = random_outages(rng, clock_start, clock_end)
    private_pem, public_pem = generate_signing_keypair("P-384")

    receiver = WebhookReceiver()
    noah = Noah(public_pem)
    quiet = logging.getLogger(f"{__name__}.alerts")
    quiet.propagate = False
    quiet.addHandler(logging.NullHandler())
    sender = AlertSender(AlertSettings(webhook_url=receiver.url), log=quiet)
    ledger = AlertLedger.in_data_dir(data_dir)
    config = NoahConfig(api_key=noah.sandbox.api_key, signing_key=load_pem_private_key(private_pem, None),  # type: ignore[arg-type]
                        base_url=noah.base_url, page_size=PAGE_SIZE, max_attempts=2, connect_timeout_seconds=1.0,
                        read_timeout_seconds=0.25, backoff_base_seconds=0.001, backoff_max_seconds=0.002)
    runs: list[Run] = []
    captures: dict[dt.date, Capture] = {}
    delivered: list[str] = []

    def launch(day: dt.date, now: dt.datetime, launched_by: str) -> None:
        noah.enter(next((o.kind for o in outages if o.covers(now)), None))
        noah.sandbox.configure(simulated_date=day)
        run_id = uuid.uuid4().hex
        error = None
        try:
            with NoahClient(config) as client:
                source = NoahDaySource(client, day, now, lateness=policy.lateness, allow_late=False)
                snapshot = take_day_snapshot(source, data_dir, day, run_id=run_id)
            if snapshot.published is None:
                error = blocking_failure_message(day, snapshot.blocking_failures)
        except SnapshotFailed as failure:
            error = str(failure)
        instances = _INSTANCE.findall(error or "")
        runs.append(Run(Attempt(run_id, day, RunState.FAILED if error else RunState.SUCCEEDED, now,
                                now + dt.timedelta(minutes=RUN_MINUTES), launched_by, error,
                                instances[-1] if instances else None)))
        # Only this run may have changed the store of record: read its day back as the sensor would.
        # (Days it did not publish are checked at the end: nothing of a failed run may be there.)
        captures.update(history.captures(data_dir, [day]))

    try:
        now, previous, ticks = clock_start, clock_start - interval, 0
        while now <= clock_end:
            for day in scheduled_days(previous, now, policy):
                launch(day, now, "schedule")
            result = tick(now, policy, captures, [run.seen_at(now) for run in runs], ledger, sender, backoff)
            delivered += [key for key, channel in result.delivered if channel.value == "webhook"]
            for request in result.launches:
                launch(request.day, now, "catch-up")
            previous, now, ticks = now, now + interval, ticks + 1
            if progress and now.hour == 0 and now.minute == 0:
                print(f"  {now:%Y-%m-%d}: {len(runs)} runs, {len(delivered)} alerts", file=sys.stderr, flush=True)
        end = previous
    finally:
        noah.enter(None)
        noah.close()
        receiver.close()

    attempts = [run.final for run in runs]
    report = _judge(season, outages, attempts, receiver.texts, delivered, data_dir, policy, backoff, interval, end,
                    noah.sandbox, seed, start)
    report.seconds, report.ticks = time.monotonic() - began, ticks
    return report


def _judge(season: list[dt.date], outages: list[Outage], attempts: list[Attempt], texts: list[str],
           delivered: list[str], data_dir: Path, policy: Policy, backoff: Backoff, interval: dt.timedelta,
           end: dt.datetime, sandbox: NoahSandbox, seed: int, start: dt.date) -> SeasonReport:
    """Check every day of the season against what must have happened; record the problems."""
    problems: list[str] = []
    alerts_by_day: dict[dt.date, list[AlertKind]] = {}
    for text in texts:
        match = _ALERT_TEXT.match(text)
        if match is None:
            problems.append(f"an alert the simulation cannot read: {text[:80]!r}")
            continue
        alerts_by_day.setdefault(dt.date.fromisoformat(match[1]), []).append(_ALERT_KINDS[match[2]])
    if len(texts) != len(delivered) or len(set(delivered)) != len(delivered):
        problems.append(f"the webhook got {len(texts)} alerts for {len(delivered)} deliveries "
                        f"({len(delivered) - len(set(delivered))} repeated)")

    newest_first = sorted(season, reverse=True)
    captures = history.captures(data_dir, season)
    status = build_status(end, judge_days(end, newest_first, captures, attempts, policy), policy)
    status_days = {entry["day"]: entry["status"] for entry in as_json(status)["days"]}
    expected_health = Health.LOST if any(day not in captures for day in season) else Health.WELL
    if status.health is not expected_health:
        problems.append(f"status exits {int(status.health)}, expected {int(expected_health)}")

    results = []
    for day in season:
        mine = [a for a in attempts if a.day == day]
        succeeded = [a for a in mine if a.state is RunState.SUCCEEDED]
        alerts = tuple(alerts_by_day.get(day, []))
        expected = expected_outcome(day, outages, policy, backoff, interval)
        capture = captures.get(day)
        said = status_days.get(day.isoformat(), "missing")
        closes = policy.window_closes(day)

        def problem(text: str, day: dt.date = day) -> None:
            problems.append(f"{day}: {text}")

        late_launches = [a for a in mine if a.created_at >= closes]
        if late_launches:
            problem(f"{len(late_launches)} runs launched after its window closed")
        if capture is not None:
            outcome = "on time" if succeeded and succeeded[0].launched_by == "schedule" else "caught up"
            if len(succeeded) != 1:
                problem(f"captured with {len(succeeded)} successful runs, not exactly one")
            elif mine[-1] is not succeeded[0]:
                problem("a run was launched after it was captured")
            elif capture.taken_at != succeeded[0].created_at:
                problem("its partition's snapshot_at is not when its successful run took it")
            if capture.is_late or capture.taken_at >= closes:
                problem("captured late")
            if said != DayStatus.CAPTURED.value:
                problem(f"captured, but status says {said}")
            if AlertKind.LOST in alerts:
                problem("captured, but a lost alert was sent")
            alerted = AlertKind.RUN_FAILED in alerts or AlertKind.FRESHNESS_MISSED in alerts
            if alerts.count(AlertKind.RECOVERED) != int(alerted):
                problem(f"{alerts.count(AlertKind.RECOVERED)} recovered alerts after {list(map(str, alerts))}")
            problems.extend(f"{day}: {p}" for p in _check_partition(data_dir, day, sandbox))
        else:
            outcome = "lost"
            if said != DayStatus.LOST.value:
                problem(f"not captured, but status says {said}")
            if alerts.count(AlertKind.LOST) != 1:
                problem(f"{alerts.count(AlertKind.LOST)} lost alerts, not exactly one")
            if succeeded:
                problem("a run succeeded but nothing was published")
            if partition_path(data_dir, day).parent.exists() or (raw_root(data_dir) / f"snapshot_date={day}").exists():
                problem("lost, yet something of it was published")
        for kind in (AlertKind.RUN_FAILED, AlertKind.FRESHNESS_MISSED):
            if alerts.count(kind) > 1:
                problem(f"{alerts.count(kind)} {kind} alerts")
        if expected is Expectation.ON_TIME and outcome != "on time":
            problem(f"NOAH answered at its scheduled run, yet it was {outcome}")
        if expected is Expectation.CAPTURED and outcome == "lost":
            problem("NOAH was back long enough inside its window, yet it was lost")
        if expected is Expectation.LOST and outcome != "lost":
            problem("NOAH never answered inside its window, yet it was captured")
        results.append(DayResult(day, expected, outcome, len(mine), capture, alerts, said))

    problems += [f"left behind: {path.relative_to(data_dir)}" for path in _temporaries(data_dir)]
    report = SeasonReport(seed, start, policy, results, outages, attempts, texts, problems)
    report.status_text = render_text(status)
    return report


def _check_partition(data_dir: Path, day: dt.date, sandbox: NoahSandbox) -> list[str]:
    """One Parquet file holding exactly the balances NOAH served for the day; one raw landing."""
    problems = []
    folder = partition_path(data_dir, day).parent
    files = sorted(p.name for p in folder.iterdir() if not _is_lock(p))
    if files != [partition_path(data_dir, day).name]:
        problems.append(f"its partition folder holds {files}")
    landings = list((raw_root(data_dir) / f"snapshot_date={day}").iterdir())
    if len(landings) != 1:
        problems.append(f"{len(landings)} raw landings, not one")
    sandbox.configure(simulated_date=day)
    served = [(i["AccountType"], i["CryptoCurrency"], i["Available"], i["Total"])  # type: ignore[index]
              for i in sandbox.expected_items()]
    table = pq.read_table(partition_path(data_dir, day),
                          columns=["account_type", "crypto_currency", "available_raw", "total_raw"]).to_pylist()
    stored = [(r["account_type"], r["crypto_currency"], r["available_raw"], r["total_raw"]) for r in table]
    if stored != served:
        problems.append(f"its partition holds {stored}, NOAH served {served}")
    return problems


def _is_lock(path: Path) -> bool:
    """A lock file (``.publish.lock``, ``alerts.lock``): kept on purpose, holding at most its last
    holder's pid, never data."""
    return path.suffix == ".lock" and path.is_file() and path.stat().st_size <= 32


def _temporaries(data_dir: Path) -> list[Path]:
    """Anything a half-done write leaves: hidden staging folders and temporaries (``.writing-``,
    ``.staging-``, ``.<name>.tmp-``)."""
    return sorted(p for p in data_dir.rglob("*") if (p.name.startswith(".") or ".tmp" in p.name) and not _is_lock(p))


# --- command line -----------------------------------------------------------------------------------------


def render_document(report: SeasonReport, command: str) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = report.status_text.splitlines()
    lost = [f"{line}\n{lines[n + 1]}" for n, line in enumerate(lines[:-1]) if "  LOST: " in line]
    status = "\n".join(lost) if lost else "(no day was lost)"
    problems = "none." if not report.problems else "\n" + "\n".join("- " + p for p in report.problems)
    return f"""## A season of NOAH outages

{len(report.days)} simulated days from {report.start} (seed {report.seed}) with {len(report.outages)} random NOAH
outages lasting from minutes to three days, on a simulated clock that ticks every 10 minutes like the
catch-up sensor. Real: the emulator over HTTP with signed requests, the NOAH client, the daily job's
snapshot code writing real Parquet, the catch-up, alert and status decisions, alerts POSTed to a local
webhook. Simulated: the clock, the outages, the schedule and the run launcher (each run is the daily
job's snapshot code called in-process, not a Dagster run). What exactly is real and what is simulated:
the docstring of `balances_etl/operations/season.py`.

Every day is checked: a day NOAH answered at its 00:10 run is captured on time; a day NOAH came back for
long enough inside its lateness window (2 h 12 min: the 2 h backoff cap, one sensor tick and the run) is
captured; a day NOAH did not answer at any tick inside its window is lost; days "in the margin" (NOAH
back only briefly, or too close to the window's end) may go either way. Whatever the outcome, a
captured day has exactly one successful run, never launched again, one Parquet file holding exactly the
balances NOAH served, `snapshot_at` its run's time and `is_late` false; a lost day has exactly one
"lost" alert on the webhook, `status` saying lost and nothing of it published. No alert is sent twice,
no run is launched after a window closes, and the data directory holds no temporary file at the end.
Runs and alerts are counted for the season's days; the clock stops when the last day's window closes.

Reproduce: `{command}`
(exit status 0 only when every check held). The same runs as `tests/test_simulation.py`: a 14-day
season in `make test`, these 90 days in `make test-slow`. This section is rewritten by that command;
`balances-etl selftest --report` keeps it.

Run on {when}: {report.ticks} sensor ticks, {len(report.season_runs())} runs, {report.seconds:.0f} s of real time.

{markdown_table(report.summary_rows(), limit=100)}

Each outage, and the days it held up (those whose run it hit, between their 00:10 schedule and their
capture or the close of their window):

{markdown_table(report.outage_rows(), limit=1000)}

What `balances-etl status` (the same computation) said about the lost days when the clock stopped:

```
{status}
```

Problems: {problems}
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m balances_etl.operations.season", description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=90, help="days in the season (default 90)")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the random outages (default 2026)")
    parser.add_argument("--report", type=Path, help="also write the tables as the season section of this markdown document (docs/reliability.md)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="balances-etl-season-") as root:
        report = run_season(Path(root), days=args.days, seed=args.seed, progress=True)
    print(report.render_markdown())
    print()
    print(f"{len(report.days)} days, {report.ticks} ticks, {report.seconds:.0f} s; problems: {len(report.problems)}")
    for problem in report.problems:
        print(f"  {problem}")
    if args.report is not None:
        command = f"python -m balances_etl.operations.season --days {args.days} --seed {args.seed} --report {args.report}"
        write_section(args.report, SEASON_MARKER, render_document(report, command))
        print(f"wrote {args.report}", file=sys.stderr)
    return 0 if not report.problems else 1


if __name__ == "__main__":
    sys.exit(main())
