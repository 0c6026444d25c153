"""`balances-etl rebuild` over years of history, against the floor of reading the same Parquet files
into a DuckDB table directly, and against replaying those days as one Dagster run each.

The history: each day's NOAH pages are made from the emulator's dataset (100 items a page, a
``PageToken`` chain) and landed with the real ``RawLanding``; the Parquet store is then built from
those landings by ``rebuild --from-raw`` itself (timed), and the warehouse from the store by
``rebuild`` (timed). The floor is one ``CREATE TABLE AS SELECT * FROM read_parquet(every file)`` and a
``CHECKPOINT`` into a new database file: what any rebuild must at least do.

    python -m benchmarks.rebuild [--days 1095] [--items 1000] [--root DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import duckdb

from balances_etl.emulator.dataset import GeneratedBalances
from balances_etl.storage.parquet import parquet_root
from benchmarks.data import PAGE_SIZE, SEED

FLOOR_LIMIT = 2.0  # rebuild from Parquet / floor
FROM_RAW_LIMIT_SECONDS = 60.0  # three years of 1,000 balances a day on the 2-core machine
DAGSTER_SAMPLE_DAYS = 3  # days replayed as Dagster runs, to price one run per day


def _pages(day: dt.date, items: int) -> list[bytes]:
    """NOAH's pages for ``day``: ``items`` generated balances, ``PAGE_SIZE`` a page, chained by token."""
    rows = GeneratedBalances(SEED, day, items, "sandbox").slice(0, items)
    chunks = [rows[start:start + PAGE_SIZE] for start in range(0, len(rows), PAGE_SIZE)] or [[]]
    return [
        json.dumps({"Items": chunk, **({"PageToken": f"page-{n + 2}"} if n + 1 < len(chunks) else {})}).encode()
        for n, chunk in enumerate(chunks)
    ]


def _land_days(data_dir: str, days: list[dt.date], items: int) -> int:
    from balances_etl.noah.pages import RawPage
    from balances_etl.storage.raw import RawLanding

    for day in days:
        taken_at = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 10), tzinfo=dt.UTC)
        with RawLanding(Path(data_dir), day, taken_at, "benchmark") as landing:
            for number, body in enumerate(_pages(day, items), start=1):
                landing.add_page(RawPage.received(number, body, request_path="/v1/balances", query={},
                                                  attempts=1, elapsed_seconds=0.0))
            landing.publish({"environment": "sandbox", "is_late": False})
    return len(days)


def land_history(data_dir: Path, last_day: dt.date, days: int, items: int) -> float:
    """Land ``days`` days ending on ``last_day`` (two processes); returns seconds."""
    all_days = [last_day - dt.timedelta(days=offset) for offset in range(days)][::-1]
    workers = max(1, min(os.cpu_count() or 1, 4))
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        landed = sum(pool.map(_land_days, [str(data_dir)] * workers, [all_days[i::workers] for i in range(workers)],
                              [items] * workers))
    assert landed == days
    return time.perf_counter() - started


def floor_seconds(data_dir: Path, scratch: Path) -> float:
    """Every Parquet file of the store into one table of a new DuckDB file, checkpointed."""
    files = sorted(str(path) for path in parquet_root(data_dir).glob("**/*.parquet"))
    database = scratch / "floor.duckdb"
    database.unlink(missing_ok=True)
    started = time.perf_counter()
    con = duckdb.connect(str(database))
    con.execute("CREATE TABLE balance_snapshots AS SELECT * FROM read_parquet(?)", [files])
    con.execute("CHECKPOINT")
    con.close()
    return time.perf_counter() - started


def dagster_run_seconds(days: list[dt.date]) -> float:
    """Median seconds of one in-process Dagster run of the daily job replaying a landed day (its
    partition and warehouse load, no NOAH): what replaying history one run per day costs, at least."""
    import dagster as dg

    from balances_etl.definitions import load_definitions
    from balances_etl.domain.names import BalancesAsset, Op, Orchestration

    from balances_etl.emulator import generate_signing_keypair

    # The op opens a NOAH client even when it only replays: configure one that is never called.
    os.environ |= {"NOAH_BASE_URL": "http://127.0.0.1:9/v1", "NOAH_API_KEY": "apikey_sandbox_unused",
                   "NOAH_SIGNING_KEY": generate_signing_keypair(curve="P-384")[0].decode()}
    job = load_definitions().resolve_job_def(Orchestration.DAILY_JOB)
    replay = [dg.AssetKey.from_user_string(key) for key in (BalancesAsset.PARTITION, BalancesAsset.WAREHOUSE)]
    timings = []
    with dg.instance_for_test() as instance:
        for day in days:
            started = time.perf_counter()
            result = job.execute_in_process(
                partition_key=day.isoformat(), instance=instance, asset_selection=replay,
                run_config={"ops": {Op.OBSERVE_NOAH_DAY.value: {"config": {"allow_late": True}}},
                            "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
            )
            timings.append(time.perf_counter() - started)
            assert result.success
    return sorted(timings)[len(timings) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rebuild", description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=1095)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--root", type=Path, help="work here (kept) instead of a temporary directory")
    args = parser.parse_args(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="balances-etl-rebuild-bench-"))
    data_dir = root / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    os.environ["BALANCES_ETL_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("BALANCES_ETL_START_DATE", "2020-01-01")
    last_day = dt.date(2026, 11, 30)

    from balances_etl.pipeline.rebuild import rebuild
    from balances_etl.settings import PipelineSettings

    settings = PipelineSettings.from_env()
    print(f"landing {args.days:,} days x {args.items:,} balances ...", flush=True)
    landing = land_history(data_dir, last_day, args.days, args.items)
    from_raw = rebuild(settings, from_raw=True)
    assert len(from_raw.replayed_days) == args.days and from_raw.warehouse.rows == args.days * args.items
    floors, rebuilds = [], []
    for _ in range(3):  # interleaved, so a busy moment hits both alike
        floors.append(floor_seconds(data_dir, root))
        rebuilds.append(rebuild(settings).seconds)
    floor, from_parquet = sorted(floors)[1], sorted(rebuilds)[1]
    sample = [last_day - dt.timedelta(days=n) for n in range(DAGSTER_SAMPLE_DAYS)]
    per_run = dagster_run_seconds(sample)
    figures = [
        ("landing the raw history (setup)", f"{landing:.1f} s", ""),
        ("floor: read_parquet of every partition into a new DuckDB file", f"{floor:.2f} s", ""),
        ("rebuild from Parquet", f"{from_parquet:.2f} s", ""),
        ("rebuild from Parquet / floor", f"{from_parquet / floor:.2f}x",
         f"<= {FLOOR_LIMIT}x {'PASS' if from_parquet / floor <= FLOOR_LIMIT else 'MISS'}"),
        ("rebuild from raw landings (partitions, then the warehouse)", f"{from_raw.seconds:.1f} s",
         f"<= {FROM_RAW_LIMIT_SECONDS:.0f} s {'PASS' if from_raw.seconds <= FROM_RAW_LIMIT_SECONDS else 'MISS'}"),
        ("one Dagster run per day instead (median in-process run x days)",
         f"{per_run:.2f} s x {args.days:,} = {per_run * args.days / 60:.0f} min", ""),
        ("rebuild from raw / one Dagster run per day", f"{from_raw.seconds / (per_run * args.days):.3f}x", ""),
    ]
    width = max(len(name) for name, _, _ in figures)
    print(f"\n{args.days:,} days x {args.items:,} balances ({args.days * args.items:,} rows), "
          f"{os.cpu_count()} cores, {root}")
    for name, value, target in figures:
        print(f"  {name:<{width}}  {value:>22}  {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
