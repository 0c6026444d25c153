"""Loading transactions syncs into the warehouse: with the day's balances in one transaction,
idempotent, exact, and the same tables whether loaded day by day or rebuilt from Parquet."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from transactions_support import SQL_DIR, Pipeline, at, day

from balances_etl.storage.parquet import TRANSACTION_SYNCS, partition_path
from balances_etl.storage.warehouse import WarehouseLoadError, load_partition, rebuild_from_parquet


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    return Pipeline(tmp_path / "data")


def four_days(pipeline: Pipeline) -> None:
    """Deposits and payouts that settle, fail, go missing or come without an Amount, over four runs."""
    noah = pipeline.noah
    for i in range(25):
        noah.add(f"old-{i:02d}", at(i - 25), "Settled", amount=f"{i}.{i:02d}")
    noah.add("slow", at(-20), "Pending", direction="Out", amount="2", fee="0.0001")
    noah.add("pay-1", at(0, 9), "Pending", direction="Out", amount="0.25", fee="0.00002")
    pipeline.run(day(0))
    noah.set("pay-1", Status="Settled")
    noah.add("dep-1", at(1, 8), "Pending", amount=None)
    pipeline.run(day(1))
    noah.set("slow", Status="Failed")
    noah.set("dep-1", Status="Settled", Amount="3.000")
    del noah.transactions["old-24"]  # inside the horizon: reported, kept
    pipeline.run(day(2))
    noah.add("pay-2", at(3, 7), "Pending", direction="Out", amount="1", fee="0.1")
    pipeline.run(day(3))


def test_loads_record_every_observation_and_each_status_change(pipeline: Pipeline) -> None:
    four_days(pipeline)
    assert pipeline.status_history("slow") == [("Pending", day(0)), ("Failed", day(2))]
    assert pipeline.status_history("dep-1") == [("Pending", day(1)), ("Settled", day(2))]
    assert pipeline.status_history("old-24") == [("Settled", day(0))]
    assert pipeline.query(
        "SELECT status, amount, amount_raw, amount_value FROM transactions WHERE transaction_id = 'dep-1'"
    ) == [("Settled", "3", "3.000", Decimal("3"))]
    assert pipeline.query("SELECT count(*) FROM transactions") == [(29,)]
    syncs = pipeline.query("SELECT snapshot_date, transactions, horizon IS NULL FROM transaction_syncs ORDER BY 1")
    assert [(d, h) for d, _, h in syncs] == [(day(0), True), (day(1), False), (day(2), False), (day(3), False)]
    counts = pipeline.query("SELECT snapshot_date, count(*) FROM transaction_observations GROUP BY 1 ORDER BY 1")
    assert [n for _, n in counts] == [n for _, n, _ in syncs]


def test_re_running_a_day_gives_the_same_tables(pipeline: Pipeline) -> None:
    four_days(pipeline)
    before = pipeline.tables()
    pipeline.load(day(3))
    assert pipeline.tables() == before
    pipeline.sync(day(3), run_id="rerun-00001")  # the same NOAH state, fetched again
    pipeline.load(day(3))
    assert pipeline.tables() == before
    pipeline.load(day(1))  # an earlier day again, after the later ones
    assert pipeline.tables() == before


def test_rebuild_from_parquet_equals_the_daily_loads(pipeline: Pipeline) -> None:
    four_days(pipeline)
    incremental = pipeline.tables()
    result = rebuild_from_parquet(pipeline.data_dir, SQL_DIR)
    assert result.transaction_syncs == 4
    assert pipeline.tables() == incremental
    assert len(incremental["transaction_status_history"]) == 29 + 3  # first observations + pay-1, slow, dep-1


def test_a_day_without_a_sync_loads_its_balances_alone(pipeline: Pipeline) -> None:
    pipeline.noah.add("a", at(0, 8))
    pipeline.run(day(0))
    result = pipeline.load(day(1))
    assert result.transactions is None
    assert pipeline.query("SELECT snapshot_date FROM transaction_syncs") == [(day(0),)]
    assert pipeline.query("SELECT count(*) FROM balance_snapshots") == [(2,)]


def test_amounts_are_exact_decimals_from_their_canonical_strings(pipeline: Pipeline) -> None:
    widest = "1234567890123456789.123456789012345678"  # 38 characters, 18 fraction digits
    pipeline.noah.add("wide", at(0, 8), amount=f"+{widest[:-1]}", fee="0010.0100")
    pipeline.noah.add("too-fine", at(0, 9), amount="0.1234567890123456789")  # 19 fraction digits
    result = pipeline.run(day(0))
    assert result.rows == 2
    rows = dict(
        (row[0], row[1:]) for row in pipeline.query(
            "SELECT transaction_id, amount, amount_value, network_fee, network_fee_value FROM transactions"
        )
    )
    assert rows["wide"] == (widest[:-1], Decimal(widest[:-1]), "10.01", Decimal("10.01"))
    assert rows["too-fine"] == ("0.1234567890123456789", None, None, None)  # kept as text, never rounded


def test_a_failed_load_leaves_the_transactions_tables_as_they_were(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.noah.add("a", at(0, 8))
    pipeline.run(day(0))
    before = pipeline.tables()
    pipeline.noah.set("a", Status="Settled")
    pipeline.sync(day(1))
    broken = tmp_path / "broken-sql"
    shutil.copytree(SQL_DIR, broken)
    (broken / "99_broken.sql").write_text("CREATE OR REPLACE VIEW v_broken AS SELECT * FROM no_such_table;")
    with pytest.raises(WarehouseLoadError, match="99_broken.sql"):
        pipeline.load_with(day(1), broken)
    assert pipeline.tables() == before
    assert partition_path(pipeline.data_dir, day(1), TRANSACTION_SYNCS).exists()  # loads again once fixed
    load_partition(pipeline.data_dir, day(1), SQL_DIR)
    assert pipeline.status_history("a") == [("Pending", day(0)), ("Settled", day(1))]
