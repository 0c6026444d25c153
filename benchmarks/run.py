"""balances-etl benchmarks: throughput, scaling and memory, side by side with the floor and dlt.

    .venv/bin/python -m benchmarks.run            # the documented run (10-12 min on 2 cores)
    .venv/bin/python -m benchmarks.run --quick    # smaller sizes, fewer repeats, for iteration
    .venv/bin/python -m benchmarks.run --only extraction normalize
    .venv/bin/python -m benchmarks.run --only transactions   # not in the default run: minutes at 1M

Prints a table (each figure, its target, PASS/MISS) and writes ``benchmarks/results/latest.json``.
Every figure is a median of several runs taken side by side (interleaved) in this invocation,
against the embedded NOAH emulator on loopback, started in this process. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.common import (
    PYTHON,
    REPO,
    base_env,
    child_json,
    emulator,
    machine,
    median,
    pipeline_home,
    run_child,
    start_spawner,
    stop_spawner,
    yesterday_utc,
)

SECTIONS = ("extraction", "normalize", "daily", "history", "reconciliation", "transactions")
DEFAULT_SECTIONS = SECTIONS[:-1]  # a million-transaction sync takes minutes: only with --only transactions
RESULTS_DIR = REPO / "benchmarks" / "results"
MB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    extraction_items: int
    extraction_repeats: int
    normalize_rows: int
    normalize_repeats: int
    daily_items: int
    daily_repeats: int
    history_days: int
    history_items_per_day: int
    history_repeats: int
    query_repeats: int
    transactions_known: int
    transactions_new: int
    transactions_repeats: int  # first syncs (a minute each at a million)
    incremental_repeats: int  # daily syncs: a fraction of a second each, whose rounds scatter by +-20 %


FULL = Sizes(100_000, 9, 1_000_000, 7, 100_000, 9, 1_094, 1_000, 7, 7, 1_000_000, 1_000, 3, 15)
QUICK = Sizes(20_000, 3, 200_000, 3, 20_000, 2, 90, 1_000, 2, 3, 100_000, 1_000, 2, 5)


@dataclass
class Figure:
    section: str
    name: str
    value: float | None
    unit: str
    target: str = ""
    passed: bool | None = None  # None: informational, no target
    note: str = ""

    def shown(self) -> str:
        if self.value is None:
            return "n/a"
        if self.unit == "s":
            return f"{self.value:.3f} s"
        if self.unit == "x":
            return f"{self.value:.2f}x"
        if self.unit == "MB":
            return f"{self.value:,.0f} MB"
        return f"{self.value:,.0f} {self.unit}"


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    samples: dict[str, object] = field(default_factory=dict)

    def add(self, *figures: Figure) -> None:
        for figure in figures:
            self.figures.append(figure)
            print(f"  {figure.name}: {figure.shown()}" + (f"  (target {figure.target})" if figure.target else ""),
                  file=sys.stderr, flush=True)


def paired_ratio(numerators: list[float], denominators: list[float]) -> float:
    """Median of the per-round ratios: each pair was measured side by side, so slow drifts in the
    machine's speed (a shared box) cancel within a pair instead of between two separate medians."""
    return median([n / d for n, d in zip(numerators, denominators, strict=True)])


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _target(value: float | None, limit: float, *, below: bool = True) -> bool | None:
    if value is None:
        return None
    return value <= limit if below else value >= limit


def _keypair() -> tuple[bytes, bytes]:
    from balances_etl.emulator import generate_signing_keypair

    return generate_signing_keypair("P-384")


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {**base_env(), **extra}
    # This sandbox exports PYTHONDONTWRITEBYTECODE=1; a normal install has bytecode caches, so the
    # children may write and use them (the repository's .gitignore covers __pycache__/).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


# 1. Extraction -------------------------------------------------------------------------------


def bench_extraction(sizes: Sizes, root: Path, keys: tuple[bytes, bytes], report: Report) -> dict[str, float]:
    _progress(f"extraction: {sizes.extraction_items:,} balances in pages of 100, client vs floor, "
              f"{sizes.extraction_repeats} interleaved runs each")
    workdir = root / "extraction"
    workdir.mkdir()
    with emulator(*keys, workdir, item_count=sizes.extraction_items) as (_sandbox, noah_env):
        run = run_child(
            [PYTHON, "-m", "benchmarks.workers", "extract", "--base-url", noah_env["NOAH_BASE_URL"],
             "--api-key", noah_env["NOAH_API_KEY"], "--key-path", noah_env["NOAH_SIGNING_KEY_PATH"],
             "--repeats", str(sizes.extraction_repeats)],
            env=_child_env({}), cwd=REPO, log_dir=workdir / "log",
        )
    result = child_json(run, "extraction worker")
    report.samples["extraction"] = result
    pages, items = result["pages"], result["items"]
    client, floor = median(result["wall"]["client"]), median(result["wall"]["floor"])
    ratio = paired_ratio(result["wall"]["client"], result["wall"]["floor"])
    report.add(
        Figure("extraction", "client: pages/s", pages / client, "pages/s"),
        Figure("extraction", "client: items/s", items / client, "items/s"),
        Figure("extraction", "floor: pages/s", pages / floor, "pages/s"),
        Figure("extraction", "floor: items/s", items / floor, "items/s"),
        Figure("extraction", f"client / floor wall time ({items:,} items)", ratio, "x", "<= 1.10x", _target(ratio, 1.10)),
        Figure("extraction", "client / floor CPU time (client process)",
               paired_ratio(result["cpu"]["client"], result["cpu"]["floor"]), "x",
               note="less noisy than wall time on a shared machine"),
    )
    return {"floor_seconds": floor, "client_seconds": client, "items": items}


# 2. Normalize ----------------------------------------------------------------------------------


def bench_normalize(sizes: Sizes, root: Path, report: Report) -> None:
    from benchmarks.data import items_table, write_ipc

    rows = sizes.normalize_rows
    _progress(f"normalize: building {rows:,} rows of input")
    workdir = root / "normalize"
    workdir.mkdir()
    input_path = write_ipc(items_table(dt.date(2026, 1, 1), rows), workdir / "items.arrow")
    env = _child_env({})
    _progress(f"normalize: project vs floor, {sizes.normalize_repeats} interleaved runs each")
    timing = child_json(
        run_child([PYTHON, "-m", "benchmarks.workers", "normalize", "--input", str(input_path), "--mode", "timing",
                   "--repeats", str(sizes.normalize_repeats)], env=env, cwd=REPO, log_dir=workdir / "timing"),
        "normalize timing worker",
    )
    peaks = {}
    for mode in ("project", "floor", "project_with_checks"):
        _progress(f"normalize: peak RSS of one {mode} run in a fresh process")
        peaks[mode] = child_json(
            run_child([PYTHON, "-m", "benchmarks.workers", "normalize", "--input", str(input_path), "--mode", mode],
                      env=env, cwd=REPO, log_dir=workdir / f"peak-{mode}"),
            f"normalize {mode} peak worker",
        )
    report.samples["normalize"] = {"timing": timing, "peaks": peaks}
    project, floor = median(timing["wall"]["project"]), median(timing["wall"]["floor"])
    checked = median(timing["wall"]["project_with_checks"])
    ratio = paired_ratio(timing["wall"]["project"], timing["wall"]["floor"])
    peak = peaks["project"]["peak_rss"] / MB
    report.add(
        Figure("normalize", f"normalize: rows/s ({rows:,} rows)", rows / project, "rows/s"),
        Figure("normalize", "floor (pattern match + DECIMAL cast): rows/s", rows / floor, "rows/s"),
        Figure("normalize", "normalize / floor time", ratio, "x", "<= 2x", _target(ratio, 2.0)),
        Figure("normalize", f"normalize: peak RSS of the process ({rows:,} rows)", peak, "MB",
               "< 1,536 MB" if rows >= 1_000_000 else "", _target(peak, 1536) if rows >= 1_000_000 else None,
               note=f"input + imports before normalize: {peaks['project']['rss_before'] / MB:,.0f} MB"),
        Figure("normalize", "floor: peak RSS of the process", peaks["floor"]["peak_rss"] / MB, "MB"),
        Figure("normalize", "normalize + all snapshot checks: rows/s", rows / checked, "rows/s"),
        Figure("normalize", "normalize + all snapshot checks: peak RSS", peaks["project_with_checks"]["peak_rss"] / MB, "MB"),
    )


# 3 + 5. Whole daily run, and dlt, side by side -------------------------------------------------


def _materialize_argv(day: dt.date) -> list[str]:
    return [PYTHON, "-m", "balances_etl.cli", "materialize", "--date", day.isoformat()]


DAILY_TRANSACTIONS = 100  # a day's transactions behind both accounts of the daily section


def bench_daily(sizes: Sizes, root: Path, keys: tuple[bytes, bytes], report: Report, with_dlt: bool,
                profile: bool) -> None:
    from benchmarks.data import transaction_items

    big = sizes.daily_items
    _progress(f"daily run: `balances-etl materialize` with 1 and {big:,} balances"
              + (", and dlt with the same" if with_dlt else "") + f"; {sizes.daily_repeats} interleaved rounds")
    day = yesterday_utc()
    workdir = root / "daily"
    workdir.mkdir()
    with emulator(*keys, workdir, item_count=1) as (small, small_env), \
            emulator(*keys, workdir, item_count=big) as (large, large_env):
        # The daily job syncs transactions too: both accounts list the same ones, so the marginal
        # cost is that of the balances alone (the transactions sync has its own section, 7).
        transactions = transaction_items(DAILY_TRANSACTIONS, dt.datetime.combine(day, dt.time(23), tzinfo=dt.UTC),
                                         DAILY_TRANSACTIONS)
        for sandbox in (small, large):
            sandbox.configure(transaction_items=transactions)
        noah = {1: small_env, big: large_env}
        variants: dict[str, tuple[list[str], dict[str, str], Path]] = {}
        for items in (1, big):
            home = workdir / f"ours-{items}"
            variants[f"ours-{items}"] = (_materialize_argv(day), _child_env({**noah[items], **pipeline_home(home)}), home)
            if with_dlt:
                peer = workdir / f"dlt-{items}"
                peer.mkdir()
                variants[f"dlt-{items}"] = ([PYTHON, str(REPO / "benchmarks" / "dlt_peer.py"), "--workdir", str(peer)],
                                            _child_env(noah[items]), peer)
        # The extraction floor for the same balances in the same rounds, so the marginal cost and the
        # floor it is compared with see the same machine load.
        variants["floor"] = (
            [PYTHON, "-m", "benchmarks.workers", "extract", "--base-url", large_env["NOAH_BASE_URL"],
             "--api-key", large_env["NOAH_API_KEY"], "--key-path", large_env["NOAH_SIGNING_KEY_PATH"],
             "--repeats", "1", "--floor-only"],
            _child_env({}), REPO,
        )
        # The framework's floor: three no-op assets through the same Dagster machinery.
        noop_home = workdir / "dagster-noop"
        variants["dagster-noop"] = (
            [PYTHON, "-m", "benchmarks.workers", "dagster-noop", "--partition", day.isoformat()],
            _child_env(pipeline_home(noop_home)), REPO,
        )
        runs: dict[str, list] = {name: [] for name in variants}
        for round_number in range(sizes.daily_repeats + 1):  # round 0 warms up (instance, schema, caches)
            for name, (argv, env, home) in variants.items():
                run = run_child(argv, env=env, cwd=home, log_dir=workdir / "logs" / name / f"round-{round_number}")
                if run.returncode != 0:
                    raise RuntimeError(f"{name} failed (exit {run.returncode}):\n{run.stderr[-4000:]}")
                if round_number:
                    runs[name].append(run)
            _progress(f"daily run: round {round_number}/{sizes.daily_repeats} done")
        if profile:
            _profile_materialize(variants[f"ours-{big}"], big)

    def wall(name: str) -> float:
        return median([r.wall_seconds for r in runs[name]])

    def rss(name: str) -> float:
        return max(r.max_rss_bytes for r in runs[name]) / MB

    report.samples["daily"] = {
        name: [{"wall_seconds": r.wall_seconds, "max_rss_bytes": r.max_rss_bytes,
                "cpu_seconds": r.user_seconds + r.system_seconds} for r in samples]
        for name, samples in runs.items()
    }
    one, many = wall("ours-1"), wall(f"ours-{big}")
    marginal = many - one
    floor_runs = [child_json(run, "floor worker") for run in runs.pop("floor")]
    floor_seconds = median([result["wall"]["floor"][0] for result in floor_runs])
    report.samples["daily_floor"] = floor_runs
    report.add(
        Figure("daily", "daily run, 1 balance: wall time (process start included)", one, "s", "< 3 s", _target(one, 3.0),
               note=f"the daily job of both domains: every run also syncs the same {DAILY_TRANSACTIONS} transactions"),
        Figure("daily", "daily run, 1 balance: peak RSS", rss("ours-1"), "MB"),
        Figure("daily", "Dagster alone: 3 no-op assets, same instance, process start included", wall("dagster-noop"),
               "s", note="the framework's floor for a daily run"),
        Figure("daily", f"daily run, {big:,} balances: wall time", many, "s"),
        Figure("daily", f"daily run, {big:,} balances: peak RSS", rss(f"ours-{big}"), "MB"),
        Figure("daily", f"daily run: marginal cost of {big:,} balances ({big:,} - 1)", marginal, "s"),
    )
    walls = {name: [r.wall_seconds for r in samples] for name, samples in runs.items()}
    cpus = {name: [r.user_seconds + r.system_seconds for r in samples] for name, samples in runs.items()}
    marginals = [m - o for m, o in zip(walls[f"ours-{big}"], walls["ours-1"], strict=True)]
    marginal_cpus = [m - o for m, o in zip(cpus[f"ours-{big}"], cpus["ours-1"], strict=True)]
    ratio = paired_ratio(marginals, [result["wall"]["floor"][0] for result in floor_runs])
    report.add(
        Figure("daily", f"extraction floor, {big:,} balances, in the same rounds", floor_seconds, "s",
               note="one cold floor loop per round, timed inside its process (imports excluded)"),
        Figure("daily", "marginal cost / extraction floor", ratio, "x", "<= 1.10x", _target(ratio, 1.10)),
        Figure("daily", "marginal CPU time / floor's CPU time",
               paired_ratio(marginal_cpus, [result["cpu"]["floor"][0] for result in floor_runs]),
               "x", note="CPU seconds of the whole daily-run process (all threads) vs the floor loop's"),
    )
    if with_dlt:
        dlt_one, dlt_many = wall("dlt-1"), wall(f"dlt-{big}")
        dlt_marginal = dlt_many - dlt_one
        dlt_marginals = [m - o for m, o in zip(walls[f"dlt-{big}"], walls["dlt-1"], strict=True)]
        dlt_marginal_cpus = [m - o for m, o in zip(cpus[f"dlt-{big}"], cpus["dlt-1"], strict=True)]
        ratio = paired_ratio(marginals, dlt_marginals)
        report.add(
            Figure("dlt", "dlt, 1 balance: wall time", dlt_one, "s"),
            Figure("dlt", f"dlt, {big:,} balances: wall time", dlt_many, "s"),
            Figure("dlt", f"dlt, {big:,} balances: peak RSS", rss(f"dlt-{big}"), "MB"),
            Figure("dlt", f"dlt: marginal cost of {big:,} balances", dlt_marginal, "s"),
            Figure("dlt", "balances-etl marginal / dlt marginal", ratio, "x", "<= 0.50x", _target(ratio, 0.5)),
            Figure("dlt", "balances-etl marginal CPU / dlt marginal CPU", paired_ratio(marginal_cpus, dlt_marginal_cpus), "x",
                   note="CPU seconds of the whole child; less noisy than wall time on a shared machine"),
        )


def _profile_materialize(variant: tuple[list[str], dict[str, str], Path], items: int) -> None:
    argv, env, home = variant
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    output = RESULTS_DIR / f"profile-daily-{items}.html"
    _progress(f"profiling one daily run of {items:,} balances with pyinstrument -> {output}")
    # main() rather than the command's entry point, which exits without returning to the profiler.
    profiled = [PYTHON, "-m", "pyinstrument", "-i", "0.001", "-r", "html", "-o", str(output),
                "-c", "import sys; from balances_etl.cli import main; sys.exit(main())", *argv[3:]]
    run = run_child(profiled, env=env, cwd=home, log_dir=home / "logs" / "profile")
    if run.returncode != 0:
        _progress(f"profiling failed: {run.stderr[-2000:]}")


# 4 + 6. Scaling with history, and reconciliation queries over it ----------------------------------


def bench_history(sizes: Sizes, root: Path, keys: tuple[bytes, bytes], report: Report, with_queries: bool) -> None:
    from benchmarks.history import build_history

    per_day, days = sizes.history_items_per_day, sizes.history_days
    run_day = yesterday_utc()
    workdir = root / "history"
    workdir.mkdir()
    day_1, day_n = workdir / "day-1", workdir / f"day-{days + 1}"
    env_1, env_n = pipeline_home(day_1), pipeline_home(day_n)
    first_history_day = run_day - dt.timedelta(days=days)
    _progress(f"history: publishing {days:,} days x {per_day:,} balances ({first_history_day} .. "
              f"{run_day - dt.timedelta(days=1)}) and rebuilding the warehouse")
    built = build_history(Path(env_n["BALANCES_ETL_DATA_DIR"]), REPO / "sql", run_day - dt.timedelta(days=1), days, per_day)
    _progress(f"history: built in {built['partitions_seconds']:.1f} s + rebuild {built['rebuild_seconds']:.1f} s, "
              f"warehouse {built['warehouse_bytes'] / MB:,.0f} MB")
    report.samples["history_build"] = built
    settings = {"BALANCES_ETL_START_DATE": first_history_day.isoformat()}
    with emulator(*keys, workdir, item_count=per_day, simulated_date=run_day) as (_sandbox, noah_env):
        variants = {
            "day-1": _child_env({**noah_env, **env_1, **settings}),
            f"day-{days + 1}": _child_env({**noah_env, **env_n, **settings}),
        }
        homes = {"day-1": day_1, f"day-{days + 1}": day_n}
        runs: dict[str, list] = {name: [] for name in variants}
        for round_number in range(sizes.history_repeats + 1):
            for name, env in variants.items():
                run = run_child(_materialize_argv(run_day), env=env, cwd=homes[name],
                                log_dir=homes[name] / "logs" / f"round-{round_number}")
                if run.returncode != 0:
                    raise RuntimeError(f"history {name} failed (exit {run.returncode}):\n{run.stderr[-4000:]}")
                if round_number:
                    runs[name].append(run)
            _progress(f"history: round {round_number}/{sizes.history_repeats} done")
    report.samples["history"] = {
        name: [{"wall_seconds": r.wall_seconds, "cpu_seconds": r.user_seconds + r.system_seconds} for r in samples]
        for name, samples in runs.items()
    }
    first = median([r.wall_seconds for r in runs["day-1"]])
    last = median([r.wall_seconds for r in runs[f"day-{days + 1}"]])
    ratio = paired_ratio([r.wall_seconds for r in runs[f"day-{days + 1}"]], [r.wall_seconds for r in runs["day-1"]])
    cpu_ratio = paired_ratio([r.user_seconds + r.system_seconds for r in runs[f"day-{days + 1}"]],
                             [r.user_seconds + r.system_seconds for r in runs["day-1"]])
    report.add(
        Figure("history", f"daily run ({per_day:,} balances) on day 1", first, "s"),
        Figure("history", f"daily run ({per_day:,} balances) on day {days + 1:,} ({built['rows']:,} rows of history)", last, "s"),
        Figure("history", f"day {days + 1:,} / day 1", ratio, "x", "<= 1.5x", _target(ratio, 1.5)),
        Figure("history", f"day {days + 1:,} / day 1, CPU time", cpu_ratio, "x"),
    )
    if with_queries:
        bench_queries(sizes, Path(env_n["BALANCES_ETL_DATA_DIR"]), days + 1, report)


QUERIES = {
    "v_reconciliation_summary (all days)": "SELECT * FROM v_reconciliation_summary",
    "v_balance_rollforward (all windows, to Arrow)": "SELECT * FROM v_balance_rollforward",
    "v_balance_changes (all rows, to Arrow)": "SELECT * FROM v_balance_changes",
    "v_balance_changes (latest day)":
        "SELECT * FROM v_balance_changes WHERE snapshot_date = (SELECT max(snapshot_date) FROM balance_snapshots)",
}


def bench_queries(sizes: Sizes, data_dir: Path, days: int, report: Report) -> None:
    from balances_etl.storage.warehouse import connect_read_only

    _progress(f"reconciliation: views over {days:,} days of history, {sizes.query_repeats} runs each")
    seconds: dict[str, list[float]] = {name: [] for name in QUERIES}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in QUERIES}
    rows: dict[str, int] = {}
    for round_number in range(sizes.query_repeats + 1):
        for name, sql in QUERIES.items():
            con = connect_read_only(data_dir)  # a fresh connection: nothing cached from the last run
            try:
                started, cpu_started = time.perf_counter(), time.process_time()
                result = con.sql(sql).to_arrow_table()  # exact DECIMALs, every row materialised
                elapsed, cpu_elapsed = time.perf_counter() - started, time.process_time() - cpu_started
            finally:
                con.close()
            rows[name] = result.num_rows
            if round_number:
                seconds[name].append(elapsed)
                cpu_seconds[name].append(cpu_elapsed)
    report.samples["reconciliation"] = {"seconds": seconds, "cpu_seconds": cpu_seconds, "rows": rows}
    for name, samples in seconds.items():
        value = median(samples)
        report.add(
            Figure("reconciliation", f"{name}: {rows[name]:,} rows", value, "s", "< 1 s", _target(value, 1.0)),
            Figure("reconciliation", f"{name}: CPU time (DuckDB's threads)", median(cpu_seconds[name]), "s"),
        )


def _snapshot_days(data_dir: Path) -> int:
    from balances_etl.storage.warehouse import connect_read_only

    con = connect_read_only(data_dir)
    try:
        return con.execute("SELECT count(DISTINCT snapshot_date) FROM balance_snapshots").fetchone()[0]
    finally:
        con.close()


# 7. Transactions: a first sync of everything, then a daily incremental one -----------------------


def bench_transactions(sizes: Sizes, root: Path, keys: tuple[bytes, bytes], report: Report) -> None:
    from balances_etl.storage.warehouse import load_partition
    from benchmarks.data import transaction_items
    from benchmarks.history import publish_days

    known, new = sizes.transactions_known, sizes.transactions_new
    per_day = new  # the history was built at the daily rate the incremental sync sees
    first_day = yesterday_utc() - dt.timedelta(days=1)
    newest_known = dt.datetime.combine(first_day, dt.time(23, 0), tzinfo=dt.UTC)
    workdir = root / "transactions"
    workdir.mkdir()
    data_dir = workdir / "data"
    _progress(f"transactions: generating {known:,} + {new:,} transactions")
    listing = transaction_items(known, newest_known, per_day)
    listing += transaction_items(new, newest_known + dt.timedelta(days=1), per_day, first_id=known)
    with emulator(*keys, workdir, item_count=1) as (sandbox, noah_env):
        noah = ["--base-url", noah_env["NOAH_BASE_URL"], "--api-key", noah_env["NOAH_API_KEY"],
                "--key-path", noah_env["NOAH_SIGNING_KEY_PATH"], "--endpoint", "transactions",
                "--data-dir", str(data_dir)]

        def worker(name: str, day: dt.date, repeats: int, *extra: str) -> dict:
            run = run_child([PYTHON, "-m", "benchmarks.workers", "extract", *noah, "--day", day.isoformat(),
                             "--repeats", str(repeats), *extra],
                            env=_child_env({}), cwd=REPO, log_dir=workdir / name)
            return child_json(run, f"transactions {name} worker")

        sandbox.configure(transaction_items=listing[:known])
        _progress(f"transactions: first sync of {known:,} vs floor, {sizes.transactions_repeats} interleaved runs each")
        first = worker("first-sync", first_day, sizes.transactions_repeats, "--first-sync")
        _progress("transactions: loading the first sync into the warehouse")
        publish_days(str(data_dir), [first_day], 1)  # loads are per balance day
        load_partition(data_dir, first_day, REPO / "sql")
        sandbox.configure(transaction_items=listing)
        del listing
        _progress(f"transactions: incremental sync of {new:,} new over {known:,} known vs floor, "
                  f"{sizes.incremental_repeats} interleaved runs each")
        daily = worker("incremental", first_day + dt.timedelta(days=1), sizes.incremental_repeats)
    report.samples["transactions"] = {"first_sync": first, "incremental": daily}
    sync, floor = median(first["wall"]["client"]), median(first["wall"]["floor"])
    ratio = paired_ratio(first["wall"]["client"], first["wall"]["floor"])
    peak = first["peak_rss"] / MB
    report.add(
        Figure("transactions", f"first sync ({first['items']:,} transactions, {first['pages']:,} pages): rows/s",
               first["items"] / sync, "rows/s"),
        Figure("transactions", "floor: items/s", first["items"] / floor, "items/s"),
        Figure("transactions", "first sync / floor wall time", ratio, "x", "<= 1.10x", _target(ratio, 1.10)),
        Figure("transactions", "first sync / floor CPU time (sync process)",
               paired_ratio(first["cpu"]["client"], first["cpu"]["floor"]), "x"),
        Figure("transactions", "first sync: peak RSS of the process", peak, "MB",
               "< 1,536 MB" if known >= 1_000_000 else "", _target(peak, 1536) if known >= 1_000_000 else None,
               note="the worker process: the syncs and the floor runs, which keep nothing"),
    )
    ratio = paired_ratio(daily["wall"]["client"], daily["wall"]["floor"])
    report.add(
        Figure("transactions", f"incremental sync: {new:,} new over {known:,} known: wall time",
               median(daily["wall"]["client"]), "s",
               note=f"{daily['items']:,} items on {daily['pages']} pages: the new and the 3-day overlap"),
        Figure("transactions", "floor fetching the same pages", median(daily["wall"]["floor"]), "s"),
        Figure("transactions", "incremental sync / floor wall time", ratio, "x", "<= 1.2x", _target(ratio, 1.2)),
        Figure("transactions", "incremental sync / floor CPU time",
               paired_ratio(daily["cpu"]["client"], daily["cpu"]["floor"]), "x"),
    )


# Output ----------------------------------------------------------------------------------------


def render(report: Report) -> str:
    header = ("Figure", "Value", "Target", "Result")
    rows = [
        (f.name, f.shown(), f.target or "-", "-" if f.passed is None else ("PASS" if f.passed else "MISS"))
        for f in report.figures
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    section = None
    for figure, row in zip(report.figures, rows, strict=True):
        if figure.section != section:
            section = figure.section
            lines.append("| " + " | ".join((f"**{section}**" if i == 0 else "").ljust(w) for i, w in enumerate(widths)) + " |")
        lines.append("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (not the documented figures)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--no-dlt", action="store_true", help="skip the dlt peer in the daily section")
    parser.add_argument("--profile", action="store_true", help="also write a pyinstrument profile of one large daily run")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary working directory")
    parser.add_argument("--queries-over", type=Path, metavar="DATA_DIR",
                        help="time only the reconciliation queries over this data directory's warehouse "
                             "(e.g. a history kept with --keep, or one built by `python -m benchmarks.history "
                             "--transactions-per-day 1000 --out DIR`, which also syncs transactions), without "
                             "building one")
    args = parser.parse_args(argv)
    start_spawner()  # first, while this process is small: see benchmarks/spawner.py
    sizes = QUICK if args.quick else FULL
    sections = [] if args.queries_over else args.only or list(DEFAULT_SECTIONS)
    with_dlt = not args.no_dlt
    if with_dlt and "daily" in sections:
        try:
            import dlt  # noqa: F401
        except ImportError:
            parser.error('dlt is not installed: `.venv/bin/python -m pip install -e ".[dev,bench]"` or pass --no-dlt')

    started_at = dt.datetime.now(dt.UTC)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()
    report = Report()
    root = Path(tempfile.mkdtemp(prefix="balances-etl-bench-"))
    _progress(f"working directory {root}")
    keys = _keypair()
    try:
        if "extraction" in sections:
            bench_extraction(sizes, root, keys, report)
        if "normalize" in sections:
            bench_normalize(sizes, root, report)
        if "daily" in sections:
            bench_daily(sizes, root, keys, report, with_dlt, args.profile)
        if "history" in sections or "reconciliation" in sections:
            bench_history(sizes, root, keys, report, with_queries="reconciliation" in sections)
        if "transactions" in sections:
            bench_transactions(sizes, root, keys, report)
        if args.queries_over:
            bench_queries(sizes, args.queries_over, _snapshot_days(args.queries_over), report)
    finally:
        stop_spawner()
        if args.keep:
            _progress(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    total = time.perf_counter() - started
    command = "python -m benchmarks.run" + (" --quick" if args.quick else "") + (
        f" --only {' '.join(args.only)}" if args.only else "") + (" --no-dlt" if args.no_dlt else "") + (
        f" --queries-over {args.queries_over}" if args.queries_over else "")
    document = {
        "command": command,
        "started_at": started_at.isoformat(timespec="seconds"),
        "total_seconds": round(total, 1),
        "quick": args.quick,
        "sizes": asdict(sizes),
        "machine": machine(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "figures": [asdict(f) for f in report.figures],
        "samples": report.samples,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2, default=str))
    info = document["machine"]
    print(f"\nbalances-etl benchmarks ({command}), {started_at:%Y-%m-%d %H:%M} UTC, {total / 60:.1f} min")
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB RAM, {info['os']}, "
          f"Python {info['python']}; load average (1, 5, 15 min) at start {load_at_start}, "
          f"at end {document['load_average_at_end']}\n")
    print(render(report))
    misses = [f.name for f in report.figures if f.passed is False]
    print(f"\n{sum(f.passed is True for f in report.figures)} PASS, {len(misses)} MISS; JSON: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
