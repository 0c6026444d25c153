"""Measurements that run in their own child process (``python -m benchmarks.workers ...``).

Extraction runs in a child so the client and the emulator (in the parent) each have their own
interpreter and core, as in a real daily run. Normalize runs in a child so its peak RSS is its own.
Each worker prints one JSON object on its last stdout line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import time
from pathlib import Path


def _rss_now_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def extract(args: argparse.Namespace) -> dict:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from balances_etl.noah import BALANCES, NoahClient, NoahConfig
    from benchmarks.floor import fetch_all_floor

    pem = Path(args.key_path).read_bytes()
    private_key = load_pem_private_key(pem, password=None)
    config = NoahConfig(api_key=args.api_key, signing_key=private_key, base_url=args.base_url, page_size=100)
    finish = None
    if args.endpoint == "transactions":
        client, floor, finish = _transactions_variants(args, config, private_key)
    else:
        def client() -> tuple[int, int]:
            with NoahClient(config) as noah:
                snapshot = noah.fetch(BALANCES)
            return snapshot.stats.pages, len(snapshot.columns)

        def floor() -> tuple[int, int]:
            return fetch_all_floor(args.base_url, args.api_key, private_key)

    variants = {"client": client, "floor": floor}
    if args.floor_only or args.endpoint == "transactions":
        # the floor alone: one cold run, as a daily run is cold; transactions: a million-item warm-up
        # costs a round, so each round checks instead
        variants = {"floor": floor} if args.floor_only else variants
        shape = {}
    else:
        shape = {name: run() for name, run in variants.items()}  # warm-up: connections, caches, imports
        if shape["client"] != shape["floor"]:
            raise SystemExit(f"client and floor disagree on the snapshot: {shape}")
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            cpu_started, started = time.process_time(), time.perf_counter()
            seen = run()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - cpu_started)
            if shape.setdefault(name, seen) != seen:
                raise SystemExit(f"{name} read {seen}, earlier {shape[name]}")
        if not args.floor_only and shape["client"] != shape["floor"]:
            raise SystemExit(f"client and floor disagree on the snapshot: {shape}")
    if finish is not None:
        finish()
    pages, items = shape.get("client", shape["floor"])
    return {"pages": pages, "items": items, "wall": wall, "cpu": cpu, "peak_rss": _peak_rss_bytes()}


def _transactions_variants(args: argparse.Namespace, config: object, private_key: object) -> tuple:
    """The real transactions sync of ``--day`` into ``--data-dir`` (with ``--first-sync``, each into
    an empty directory beside it, the last one left as ``--data-dir`` by ``finish``, untimed; else on
    top of what its warehouse knows), and the floor reading the same pages: all of them, or down to
    the first lying entirely before the sync's horizon."""
    import itertools
    import shutil

    from balances_etl.noah import TRANSACTIONS, NoahClient
    from balances_etl.pipeline.transactions_sync import NoahTransactionsSource, sync_horizon, sync_transactions
    from balances_etl.settings import DEFAULT_TRANSACTIONS_OVERLAP
    from balances_etl.storage.transaction_reads import previous_transaction_sync, published_syncs
    from benchmarks.floor import fetch_all_floor

    data_dir, day = Path(args.data_dir), dt.date.fromisoformat(args.day)
    now = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 11), tzinfo=dt.UTC)  # the daily run's instant
    horizon = None
    if not args.first_sync:
        with published_syncs(data_dir) as syncs:
            horizon = sync_horizon(previous_transaction_sync(syncs, day), DEFAULT_TRANSACTIONS_OVERLAP)
    runs = itertools.count()
    targets: list[Path] = []

    def client() -> tuple[int, int]:
        run = next(runs)
        target = data_dir.with_name(f"{data_dir.name}-{run}") if args.first_sync else data_dir
        targets.append(target)
        with NoahClient(config) as noah:
            sync = sync_transactions(NoahTransactionsSource(noah, now), target, day, run_id=f"{run:08d}")
        return sync.pages, sync.rows

    def finish() -> None:
        if args.first_sync:
            *earlier, last = targets
            for target in earlier:
                shutil.rmtree(target)
            last.rename(data_dir)

    def before_horizon(items: list[dict]) -> bool:
        return bool(items) and all(dt.datetime.fromisoformat(item["Created"]) < horizon for item in items)

    def floor() -> tuple[int, int]:
        return fetch_all_floor(args.base_url, args.api_key, private_key, path=TRANSACTIONS.path, query=TRANSACTIONS.query,
                               stop_after=None if horizon is None else before_horizon)

    return client, floor, finish


def normalize(args: argparse.Namespace) -> dict:
    from balances_etl.transforms.checks import evaluate_snapshot_checks
    from balances_etl.transforms.normalize import normalize_snapshot
    from benchmarks.data import read_ipc
    from benchmarks.floor import normalize_floor

    items = read_ipc(Path(args.input))
    day = dt.date(2026, 1, 1)
    at = dt.datetime(2026, 1, 2, 0, 10, tzinfo=dt.UTC)

    def project():
        return normalize_snapshot(items, snapshot_date=day, snapshot_at=at, is_late=False, environment="sandbox")

    def project_with_checks():
        outcomes = evaluate_snapshot_checks(project(), None)
        failed = [o.name for o in outcomes if o.blocking and not o.passed]
        if failed:
            raise SystemExit(f"blocking checks failed on benchmark data: {failed}")
        return outcomes

    def floor():
        return normalize_floor(items)

    variants = {"project": project, "floor": floor, "project_with_checks": project_with_checks}
    if args.mode != "timing":  # one run of one variant: this process's peak RSS is that variant's
        rss_before = _rss_now_bytes()
        started = time.perf_counter()
        result = variants[args.mode]()
        seconds = time.perf_counter() - started
        del result
        return {"rows": items.num_rows, "rss_before": rss_before, "peak_rss": _peak_rss_bytes(), "seconds": seconds}
    for run in variants.values():
        run()  # warm-up
    wall: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            started = time.perf_counter()
            run()
            wall[name].append(time.perf_counter() - started)
    return {"rows": items.num_rows, "wall": wall}


def dagster_noop(args: argparse.Namespace) -> dict:
    """The framework's own floor: three no-op daily-partitioned assets run like the daily job.

    Same Dagster, same kind of instance (SQLite under $DAGSTER_HOME), ``execute_in_process``; no
    pandas, pyarrow, DuckDB or HTTP. The process's wall time is what a daily run costs before any work.
    """
    import dagster as dg

    partitions = dg.DailyPartitionsDefinition(start_date="2025-01-01", end_offset=0)

    @dg.asset(partitions_def=partitions)
    def first() -> None:
        return None

    @dg.asset(partitions_def=partitions, deps=[first])
    def second() -> None:
        return None

    @dg.asset(partitions_def=partitions, deps=[second])
    def third() -> None:
        return None

    job = dg.define_asset_job("noop_job", selection=[first, second, third], partitions_def=partitions)
    defs = dg.Definitions(assets=[first, second, third], jobs=[job])
    result = defs.resolve_job_def("noop_job").execute_in_process(
        instance=dg.DagsterInstance.get(), partition_key=args.partition, raise_on_error=True
    )
    return {"success": result.success}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers")
    commands = parser.add_subparsers(dest="command", required=True)
    ex = commands.add_parser("extract")
    ex.add_argument("--base-url", required=True)
    ex.add_argument("--api-key", required=True)
    ex.add_argument("--key-path", required=True)
    ex.add_argument("--repeats", type=int, default=5)
    ex.add_argument("--floor-only", action="store_true", help="only the floor, no warm-up run")
    ex.add_argument("--endpoint", choices=["balances", "transactions"], default="balances")
    ex.add_argument("--data-dir", help="transactions: the sync's data directory")
    ex.add_argument("--day", help="transactions: the day synced (YYYY-MM-DD)")
    ex.add_argument("--first-sync", action="store_true", help="transactions: each sync starts from an empty data dir")
    no = commands.add_parser("normalize")
    no.add_argument("--input", required=True)
    no.add_argument("--mode", choices=["timing", "project", "floor", "project_with_checks"], default="timing")
    no.add_argument("--repeats", type=int, default=5)
    noop = commands.add_parser("dagster-noop")
    noop.add_argument("--partition", required=True)
    args = parser.parse_args(argv)
    result = {"extract": extract, "normalize": normalize, "dagster-noop": dagster_noop}[args.command](args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    code = main()
    # Exit like the `balances-etl` command (no interpreter teardown), so "Dagster alone" and the
    # daily run are compared like for like.
    sys.stdout.flush()
    os._exit(code)
