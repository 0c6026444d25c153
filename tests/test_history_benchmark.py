"""benchmarks/history.py with transactions: a few days built like the three-year benchmark history
roll forward exactly, and each day's sync partition is what the real sync would have published
(its horizon from the syncs before it, and the sync's checks pass against them)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from balances_etl.domain.names import Check
from balances_etl.domain.transactions import SyncMetadata
from balances_etl.pipeline.transactions_sync import sync_horizon
from balances_etl.settings import DEFAULT_TRANSACTIONS_OVERLAP, packaged_sql
from balances_etl.storage.parquet import TRANSACTION_SYNCS, partition_file_metadata, partition_path
from balances_etl.storage.warehouse import connect_read_only
from balances_etl.transforms.checks import evaluate_checks
from balances_etl.transforms.transactions import TRANSACTION_CHECKS
from benchmarks.history import build_history

from balances_etl.storage.transaction_reads import known_transactions, previous_transaction_sync, published_syncs

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
DAYS, ITEMS, PER_DAY = 9, 12, 40
LAST_DAY = dt.date(2026, 3, 10)


def test_history_with_transactions_rolls_forward(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    built = build_history(data_dir, SQL_DIR, LAST_DAY, DAYS, ITEMS, transactions_per_day=PER_DAY)
    assert (built["partitions"], built["rows"], built["transaction_syncs"]) == (DAYS, DAYS * ITEMS, DAYS)

    con = connect_read_only(data_dir)
    try:
        assert con.execute("SELECT status, count(*) FROM v_balance_rollforward GROUP BY 1").fetchall() == [
            ("balanced", (DAYS - 1) * ITEMS)
        ]
        assert con.execute("SELECT status, count(*) FROM v_pending_explained GROUP BY 1").fetchall() == [
            ("balanced", DAYS * ITEMS)
        ]
        # the windows really move: flows settle, Outs are held Pending, some fail
        moved, pending_days = con.execute(
            "SELECT count(*) FILTER (WHERE settled_in_transactions + settled_out_transactions > 0), "
            "(SELECT count(*) FROM v_pending_explained WHERE pending_out_count > 0) FROM v_balance_rollforward"
        ).fetchone()
        assert moved > (DAYS - 1) * ITEMS // 2 and pending_days > 0
        statuses = dict(con.execute("SELECT status, count(*) FROM transactions GROUP BY 1").fetchall())
        assert statuses.get("Failed", 0) > 0 and statuses["Settled"] > statuses.get("Pending", 0)
        assert con.execute("SELECT count(*) FROM transactions").fetchone()[0] == DAYS * PER_DAY
    finally:
        con.close()

    for offset in range(DAYS):
        day = LAST_DAY - dt.timedelta(days=DAYS - 1 - offset)
        path = partition_path(data_dir, day, TRANSACTION_SYNCS)
        recorded = partition_file_metadata(path)[SyncMetadata.HORIZON]
        rows = pq.read_table(path)
        with published_syncs(data_dir) as syncs:  # the whole history: the reads look only before ``day``
            horizon = sync_horizon(previous_transaction_sync(syncs, day), DEFAULT_TRANSACTIONS_OVERLAP)
            oldest = pc.min(rows["created_at"]).as_py()
            since = None if horizon is None else min(horizon, oldest)
            known = known_transactions(syncs, day, since=since, horizon=horizon)
        assert recorded == ("" if horizon is None else horizon.isoformat()), day
        frame = rows.to_pandas(types_mapper=pd.ArrowDtype)
        outcomes = {o.name: o for o in evaluate_checks(TRANSACTION_CHECKS, frame, known)}
        assert not [name for name, o in outcomes.items() if o.blocking and not o.passed], day
        assert outcomes[Check.KNOWN_TRANSACTION_MISSING].passed and outcomes[Check.STATUS_TRANSITIONS_LEGAL].passed

    # The daily sync's reads (no sync loaded on or after its day) take the transactions table's
    # current status instead of aggregating the status history: the same answers as the general reads.
    next_day = LAST_DAY + dt.timedelta(days=1)
    with published_syncs(data_dir) as syncs:
        previous = previous_transaction_sync(syncs, next_day)
        [general] = syncs.execute(packaged_sql("transactions", "previous_sync"), {"day": next_day}).fetchall()
        assert tuple(general) == (previous.snapshot_date, previous.observed_at, previous.newest_created,
                                  previous.earliest_pending)
        assert previous.earliest_pending is not None  # Pending ones are there to find
        for since, horizon in ((None, None), (previous.newest_created - dt.timedelta(days=3),) * 2):
            params = {"day": next_day, "since": since, "horizon": horizon}
            general_known = syncs.sql(packaged_sql("transactions", "known_before"), params=params).to_arrow_table()
            daily_known = known_transactions(syncs, next_day, since=since, horizon=horizon)
            assert daily_known.num_rows > 0
            assert daily_known.to_pylist() == general_known.cast(daily_known.schema).to_pylist()
