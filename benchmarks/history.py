"""Years of daily history, built fast with the pipeline's own code (no HTTP, no Dagster).

Each day's frame comes from the emulator's dataset for that day through the real
``normalize_snapshot``; it is published with the real ``publish_partition``; then the warehouse
is built once with the real ``rebuild_from_parquet``. The result is exactly what that many daily
runs would have left behind, minus the raw landings (which the daily run never reads).

With ``transactions_per_day`` (> 0) every day also gets the transactions sync partition the daily
run publishes, and the balances come from the same ledger (:class:`HistoryLedger`), so the history
rolls forward: every ``v_balance_rollforward`` window and every ``v_pending_explained`` row is
``balanced``. Each sync's rows are NOAH's listing (newest first, 100 a page) read down to the horizon
the previous sync leaves (``sync_horizon``: the earliest Created still Pending, or the previous
newest Created minus the 3-day overlap, and the first page lying entirely before it), normalized
by the real ``normalize_transactions`` and written by the real ``PartitionWriter`` with the footer
``sync_transactions`` writes. No checks and no raw landing (the daily run's, not the warehouse's).

    .venv/bin/python -m benchmarks.history --days 1094 --items 1000 --transactions-per-day 1000 --out DIR
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from benchmarks.data import PAGE_SIZE, SEED, items_table

ENVIRONMENT = "sandbox"
SNAPSHOT_TIME = dt.time(0, 10)  # the daily run takes day D's snapshot at D+1 00:10 UTC
SYNC_AFTER = dt.timedelta(seconds=30)  # ... and its transactions sync right after
# How long a transaction stays Pending (days after the day it was created, 0: settled the same day)
SETTLE_DAYS_P = (0.75, 0.15, 0.07, 0.03)
FAILED_SHARE = 0.05  # of those Pending at least one day end: Failed instead of Settled
_DAY_MS = 86_400_000


def snapshot_instant(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day + dt.timedelta(days=1), SNAPSHOT_TIME, tzinfo=dt.UTC)


def sync_instant(day: dt.date) -> dt.datetime:
    return snapshot_instant(day) + SYNC_AFTER


# --- the ledger ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryLedger:
    """Every transaction of the history (Created order) and the balances they leave, per day.

    The emulator's items 0..items-1 (all account type Current) open at their generated Total on the
    first day; every item but the dormant one (``DORMANT_INDEX``, which never moves) transacts:
    ``per_day`` transactions a day, each on a random item, In or Out (half each), created at a
    random millisecond of its day, Pending at the end of 0-3 days (``SETTLE_DAYS_P``) then Settled
    (or Failed, ``FAILED_SHARE`` of the Pending ones). An Out has a NetworkFee of 1 % of its Amount
    (none when that rounds to 0). Amounts are whole multiples of the item's own quantum (and of
    10^-8 of a coin at least), up to 0.4 % of its opening Total. The balance at the end of day D:
    Total = opening + settled In - settled Out - fees; Available = Total - the Amount + NetworkFee
    of the Out transactions Pending at the end of D. All exact integers (units of 10^-scale).
    """

    first_day: dt.date
    days: int
    items: int
    per_day: int
    codes: tuple[str, ...]
    scales: tuple[int, ...]
    unit: tuple[int, ...]  # per item: amounts are multiples of this many 10^-scale units
    opening: tuple[int, ...]  # per item, units of 10^-scale
    created_day: np.ndarray  # per transaction: day index
    created_ms: np.ndarray  # epoch milliseconds, ascending
    resolved_day: np.ndarray  # day index at whose end it is Settled/Failed (created_day + 0..3)
    failed: np.ndarray
    columns: pa.Table  # per transaction: the NOAH item fields that never change
    totals: np.ndarray  # [day, item] Total - opening, in units of ``unit``
    pending: np.ndarray  # [day, item] pending Out (Amount + NetworkFee), in units of ``unit``

    def balances_items(self, d: int) -> pa.Table:
        """Day ``d``'s raw balance items, as the NOAH client hands them to normalize."""
        totals, pendings = self.totals[d].tolist(), self.pending[d].tolist()
        from balances_etl.emulator.dataset import _fixed

        total_raw, available_raw = [], []
        for i in range(self.items):
            total = self.opening[i] + totals[i] * self.unit[i]
            total_raw.append(_fixed(total, self.scales[i]))
            available_raw.append(_fixed(total - pendings[i] * self.unit[i], self.scales[i]))
        index = np.arange(self.items, dtype=np.int32)
        from balances_etl.noah.endpoints import BALANCES

        return pa.table(
            {
                "account_type": ["Current"] * self.items,
                "crypto_currency": list(self.codes),
                "available_raw": available_raw,
                "total_raw": total_raw,
                "page_number": 1 + index // PAGE_SIZE,
                "item_index": index % PAGE_SIZE,
            },
            schema=BALANCES.items.arrow_schema,
        )

    def instant(self, index: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(int(self.created_ms[index]) / 1000, dt.UTC)

    def previous_sync(self, d: int):
        """What the warehouse knows after day ``d - 1``'s sync (``PreviousSync``); None on day 0."""
        from balances_etl.storage.warehouse import PreviousSync

        if d == 0:
            return None
        day = self.first_day + dt.timedelta(days=d - 1)
        listed = d * self.per_day  # every transaction created up to the end of day d - 1
        start = max(0, (d - 1 - len(SETTLE_DAYS_P)) * self.per_day)  # nothing older can still be Pending
        still_pending = np.flatnonzero(self.resolved_day[start:listed] > d - 1)
        return PreviousSync(
            snapshot_date=day,
            observed_at=sync_instant(day),
            newest_created=self.instant(listed - 1) if listed else None,
            earliest_pending=self.instant(start + int(still_pending[0])) if len(still_pending) else None,
        )

    def sync_items(self, d: int) -> tuple[pa.Table, dt.datetime | None]:
        """Day ``d``'s sync: the listing at the end of the day (newest first, ``PAGE_SIZE`` a page,
        each with its status then) read down to the first page lying entirely before the horizon."""
        from balances_etl.noah.endpoints import TRANSACTIONS
        from balances_etl.pipeline.transactions_sync import sync_horizon
        from balances_etl.settings import DEFAULT_TRANSACTIONS_OVERLAP

        horizon = sync_horizon(self.previous_sync(d), DEFAULT_TRANSACTIONS_OVERLAP)
        listed = (d + 1) * self.per_day
        rows = listed
        if horizon is not None:
            horizon_ms = int(horizon.timestamp() * 1000)  # whole milliseconds: Created has no more
            page_newest = self.created_ms[listed - 1::-PAGE_SIZE]
            before = np.flatnonzero(page_newest < horizon_ms)
            if len(before):
                rows = min(listed, PAGE_SIZE * (int(before[0]) + 1))
        order = np.arange(listed - 1, listed - 1 - rows, -1)
        resolved, failed = self.resolved_day[order], self.failed[order]
        status = np.where(resolved > d, "Pending", np.where(failed, "Failed", "Settled"))
        position = np.arange(rows, dtype=np.int32)
        columns = self.columns.take(pa.array(order))
        table = pa.table(
            {
                "transaction_id": columns["transaction_id"],
                "network": columns["network"],
                "created_raw": columns["created_raw"],
                "status": pa.array(status, pa.string()),
                "direction": columns["direction"],
                "crypto_currency": columns["crypto_currency"],
                "amount_raw": columns["amount_raw"],
                "network_fee_raw": columns["network_fee_raw"],
                "public_id": columns["public_id"],
                "external_id": columns["external_id"],
                "customer_id": pa.nulls(rows, pa.string()),
                "page_number": 1 + position // PAGE_SIZE,
                "item_index": position % PAGE_SIZE,
            },
            schema=TRANSACTIONS.items.arrow_schema,
        )
        return table, horizon


@functools.lru_cache(maxsize=2)
def history_ledger(first_day: dt.date, days: int, items: int, per_day: int, seed: int = SEED) -> HistoryLedger:
    from balances_etl.emulator.dataset import DORMANT_INDEX, _digest, _fixed, item_day
    from balances_etl.emulator.ledger import _NETWORKS

    generated = [item_day(seed, i, items, ENVIRONMENT, first_day) for i in range(items)]
    codes = tuple(g.code for g in generated)
    scales = tuple(g.scale for g in generated)
    # the generated Total keeps 2..scale fraction digits significant (dataset._units): so do the amounts
    quantum = [10 ** (g.scale - (2 + (_digest(f"{seed}:{g.code}") >> 64) % (g.scale - 1))) for g in generated]
    unit = tuple(max(q, 10 ** max(0, s - 8)) for q, s in zip(quantum, scales, strict=True))
    opening = tuple(g.total for g in generated)

    rng = np.random.default_rng([seed, first_day.toordinal(), days, items, per_day])
    n = days * per_day
    created_day = np.repeat(np.arange(days, dtype=np.int64), per_day)
    created_ms = (
        (first_day - dt.date(1970, 1, 1)).days * _DAY_MS
        + created_day * _DAY_MS
        + np.sort(rng.integers(0, _DAY_MS, size=(days, per_day)), axis=1).ravel()
    )
    movers = np.array([i for i in range(items) if i != DORMANT_INDEX] or [0], dtype=np.int64)
    key = movers[rng.integers(0, len(movers), n)] if items > 0 else np.zeros(n, np.int64)
    out = rng.random(n) < 0.5
    settle_days = rng.choice(len(SETTLE_DAYS_P), size=n, p=SETTLE_DAYS_P)
    resolved_day = created_day + settle_days
    failed = (settle_days > 0) & (rng.random(n) < FAILED_SHARE)
    opening_units = np.array([o // u for o, u in zip(opening, unit, strict=True)], dtype=np.int64)
    cap = np.maximum(opening_units[key] // 250, 1)
    amount = rng.integers(1, cap + 1)
    fee = np.where(out, amount // 100, 0)
    outflow = amount + fee

    totals = np.zeros((days + len(SETTLE_DAYS_P), items), dtype=np.int64)
    settled = ~failed
    np.add.at(totals, (resolved_day[settled], key[settled]), np.where(out, -outflow, amount)[settled])
    totals = np.cumsum(totals, axis=0)[:days]
    pending = np.zeros((days + len(SETTLE_DAYS_P), items), dtype=np.int64)
    held = out & (settle_days > 0)
    np.add.at(pending, (created_day[held], key[held]), outflow[held])
    np.add.at(pending, (resolved_day[held], key[held]), -outflow[held])
    pending = np.cumsum(pending, axis=0)[:days]
    available = opening_units[None, :] + totals - pending
    if items and available.min() < 0:
        raise RuntimeError("the generated ledger drives a balance negative; change the seed or the amounts")

    ids = [str(uuid.UUID(bytes=rng.bytes(16))) for _ in range(n)]
    keys, amounts, fees = key.tolist(), amount.tolist(), fee.tolist()
    amount_raw = [_fixed(a * unit[k], scales[k]) for k, a in zip(keys, amounts, strict=True)]
    fee_raw = [_fixed(f * unit[k], scales[k]) if f else None for k, f in zip(keys, fees, strict=True)]
    code_array = pa.array(codes, pa.string())
    network_array = pa.array([_NETWORKS[s][1] for s in scales], pa.string())
    created_raw = np.char.add(np.datetime_as_string(created_ms.astype("datetime64[ms]"), unit="ms"), "Z")
    external = rng.random(n) < 1 / 3
    columns = pa.table(
        {
            "transaction_id": pa.array(ids, pa.string()),
            "network": network_array.take(pa.array(key)),
            "created_raw": pa.array(created_raw.tolist(), pa.string()),
            "direction": pa.array(np.where(out, "Out", "In"), pa.string()),
            "crypto_currency": code_array.take(pa.array(key)),
            "amount_raw": pa.array(amount_raw, pa.string()),
            "network_fee_raw": pa.array(fee_raw, pa.string()),
            "public_id": pa.array([f"pub-{i[:8]}{i[9:13]}" for i in ids], pa.string()),
            "external_id": pa.array([f"ext-{i[24:32]}" if e else None for i, e in zip(ids, external.tolist(), strict=True)],
                                    pa.string()),
        }
    )
    return HistoryLedger(first_day, days, items, per_day, codes, scales, unit, opening, created_day, created_ms,
                         resolved_day, failed, columns, totals, pending)


# --- publishing ---------------------------------------------------------------------------------


def publish_days(data_dir: str, days: list[dt.date], items_per_day: int) -> int:
    from balances_etl.storage.parquet import publish_partition
    from balances_etl.transforms.normalize import normalize_snapshot

    for day in days:
        frame = normalize_snapshot(
            items_table(day, items_per_day), snapshot_date=day, snapshot_at=snapshot_instant(day), is_late=False,
            environment=ENVIRONMENT,
        )
        publish_partition(Path(data_dir), day, frame)
    return len(days)


def publish_ledger_days(data_dir: str, day_indexes: list[int], first_day: dt.date, days: int, items_per_day: int,
                        transactions_per_day: int) -> tuple[int, int]:
    """Publish the balance partition and the transactions sync partition of each day of ``day_indexes``;
    returns (days, sync rows)."""
    from balances_etl.domain.transactions import SyncMetadata
    from balances_etl.storage.parquet import TRANSACTION_SYNCS, PartitionWriter, publish_partition
    from balances_etl.transforms.normalize import normalize_snapshot
    from balances_etl.transforms.transactions import normalize_transactions

    ledger = history_ledger(first_day, days, items_per_day, transactions_per_day)
    sync_rows = 0
    for d in day_indexes:
        day = first_day + dt.timedelta(days=d)
        frame = normalize_snapshot(
            ledger.balances_items(d), snapshot_date=day, snapshot_at=snapshot_instant(day), is_late=False,
            environment=ENVIRONMENT,
        )
        publish_partition(Path(data_dir), day, frame)
        # what sync_transactions publishes for the day
        items, horizon = ledger.sync_items(d)
        observed_at = sync_instant(day)
        rows = normalize_transactions(items, snapshot_date=day, observed_at=observed_at)
        metadata = {SyncMetadata.OBSERVED_AT: observed_at.isoformat(),
                    SyncMetadata.HORIZON: "" if horizon is None else horizon.isoformat()}
        with PartitionWriter(Path(data_dir), day, TRANSACTION_SYNCS, metadata) as writer:
            writer.write(rows)
            writer.finish().publish()
        sync_rows += rows.num_rows
    return len(day_indexes), sync_rows


def build_history(data_dir: Path, sql_dir: Path, last_day: dt.date, days: int, items_per_day: int,
                  transactions_per_day: int = 0) -> dict[str, float]:
    """Publish ``days`` partitions ending on ``last_day`` and rebuild the warehouse from them; with
    ``transactions_per_day``, each day's transactions sync too, the balances following its ledger."""
    all_days = [last_day - dt.timedelta(days=offset) for offset in range(days)][::-1]
    workers = max(1, min(os.cpu_count() or 1, 4))
    started = time.perf_counter()
    sync_rows = 0
    with ProcessPoolExecutor(workers) as pool:
        if transactions_per_day > 0:
            first_day = all_days[0]
            chunks = [list(range(days))[i::workers] for i in range(workers)]
            done = list(pool.map(publish_ledger_days, [str(data_dir)] * workers, chunks, [first_day] * workers,
                                 [days] * workers, [items_per_day] * workers, [transactions_per_day] * workers))
            published, sync_rows = sum(d for d, _ in done), sum(r for _, r in done)
        else:
            chunks = [all_days[i::workers] for i in range(workers)]
            published = sum(pool.map(publish_days, [str(data_dir)] * workers, chunks, [items_per_day] * workers))
    partitions_seconds = time.perf_counter() - started

    from balances_etl.storage.warehouse import rebuild_from_parquet

    started = time.perf_counter()
    result = rebuild_from_parquet(data_dir, sql_dir)
    rebuild_seconds = time.perf_counter() - started
    if result.partitions != published or result.rows != published * items_per_day:
        raise RuntimeError(f"history rebuild holds {result.partitions} days / {result.rows} rows, expected {published}")
    expected_syncs = published if transactions_per_day > 0 else 0
    if result.transaction_syncs != expected_syncs:
        raise RuntimeError(f"history rebuild loaded {result.transaction_syncs} syncs, expected {expected_syncs}")
    return {
        "partitions": published,
        "rows": result.rows,
        "transaction_syncs": result.transaction_syncs,
        "sync_rows": sync_rows,
        "partitions_seconds": partitions_seconds,
        "rebuild_seconds": rebuild_seconds,
        "warehouse_bytes": result.published_path.stat().st_size,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.history", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=1094)
    parser.add_argument("--items", type=int, default=1000, help="balances a day")
    parser.add_argument("--transactions-per-day", type=int, default=0,
                        help="also publish each day's transactions sync, the balances following their ledger")
    parser.add_argument("--last-day", type=dt.date.fromisoformat,
                        default=dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2))
    parser.add_argument("--out", type=Path, required=True, help="the data directory to fill (BALANCES_ETL_DATA_DIR)")
    args = parser.parse_args(argv)
    from benchmarks.common import REPO

    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    built = build_history(args.out, REPO / "sql", args.last_day, args.days, args.items, args.transactions_per_day)
    built["total_seconds"] = time.perf_counter() - started
    print(json.dumps(built, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
