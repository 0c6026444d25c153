"""Years of daily history, built fast with the pipeline's own code (no HTTP, no Dagster).

Each day's frame comes from the emulator's dataset for that day through the real
``normalize_snapshot``; it is published with the real ``publish_partition``; then the warehouse
is built once with the real ``rebuild_from_parquet``. The result is exactly what that many daily
runs would have left behind, minus the raw landings (which the daily run never reads).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks.data import items_table


def publish_days(data_dir: str, days: list[dt.date], items_per_day: int) -> int:
    from balances_etl.storage.parquet import publish_partition
    from balances_etl.transforms.normalize import normalize_snapshot

    for day in days:
        taken_at = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 10), tzinfo=dt.UTC)
        frame = normalize_snapshot(
            items_table(day, items_per_day), snapshot_date=day, snapshot_at=taken_at, is_late=False, environment="sandbox"
        )
        publish_partition(Path(data_dir), day, frame)
    return len(days)


def build_history(data_dir: Path, sql_dir: Path, last_day: dt.date, days: int, items_per_day: int) -> dict[str, float]:
    """Publish ``days`` partitions ending on ``last_day`` and rebuild the warehouse from them."""
    all_days = [last_day - dt.timedelta(days=offset) for offset in range(days)][::-1]
    workers = max(1, min(os.cpu_count() or 1, 4))
    chunks = [all_days[i::workers] for i in range(workers)]
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        published = sum(pool.map(publish_days, [str(data_dir)] * workers, chunks, [items_per_day] * workers))
    partitions_seconds = time.perf_counter() - started

    from balances_etl.storage.warehouse import rebuild_from_parquet

    started = time.perf_counter()
    result = rebuild_from_parquet(data_dir, sql_dir)
    rebuild_seconds = time.perf_counter() - started
    if result.partitions != published or result.rows != published * items_per_day:
        raise RuntimeError(f"history rebuild holds {result.partitions} days / {result.rows} rows, expected {published}")
    return {
        "partitions": published,
        "rows": result.rows,
        "partitions_seconds": partitions_seconds,
        "rebuild_seconds": rebuild_seconds,
        "warehouse_bytes": result.published_path.stat().st_size,
    }
