"""Measurements that run in their own child process (``python -m benchmarks.workers ...``).

Extraction runs in a child so the client and the emulator (in the parent) each have their own
interpreter and core, as in a real daily run. Normalize runs in a child so its peak RSS is its own.
Each worker prints one JSON object on its last stdout line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
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

    from balances_etl.noah import NoahClient, NoahConfig
    from benchmarks.floor import fetch_all_floor

    pem = Path(args.key_path).read_bytes()
    private_key = load_pem_private_key(pem, password=None)
    config = NoahConfig(api_key=args.api_key, signing_key=private_key, base_url=args.base_url, page_size=100)

    def client() -> tuple[int, int]:
        with NoahClient(config) as noah:
            snapshot = noah.fetch_snapshot()
        return snapshot.stats.pages, len(snapshot.columns)

    def floor() -> tuple[int, int]:
        return fetch_all_floor(args.base_url, args.api_key, private_key)

    variants = {"client": client, "floor": floor}
    shape = {name: run() for name, run in variants.items()}  # warm-up: connections, caches, imports
    if shape["client"] != shape["floor"]:
        raise SystemExit(f"client and floor disagree on the snapshot: {shape}")
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            cpu_started, started = time.process_time(), time.perf_counter()
            run()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - cpu_started)
    pages, items = shape["client"]
    return {"pages": pages, "items": items, "wall": wall, "cpu": cpu}


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers")
    commands = parser.add_subparsers(dest="command", required=True)
    ex = commands.add_parser("extract")
    ex.add_argument("--base-url", required=True)
    ex.add_argument("--api-key", required=True)
    ex.add_argument("--key-path", required=True)
    ex.add_argument("--repeats", type=int, default=5)
    no = commands.add_parser("normalize")
    no.add_argument("--input", required=True)
    no.add_argument("--mode", choices=["timing", "project", "floor", "project_with_checks"], default="timing")
    no.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    result = extract(args) if args.command == "extract" else normalize(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
