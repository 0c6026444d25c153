"""`balances-etl rebuild`: the warehouse is a cache. Days built by the real daily job (balances and
transactions, against the emulator) and then the warehouse rebuilt from the Parquet store, and the
store itself from the raw landings, give the same warehouse table for table and view for view, and
the same Parquet rows; a landing that cannot be replayed fails naming it and changes nothing."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from balances_etl.storage.parquet import TRANSACTION_SYNCS, parquet_root, partition_path
from balances_etl.storage.raw import latest_raw_landing, page_file_name
from tests.pipeline_support import DAY, Pipeline, wired_pipeline

DAYS = [DAY + dt.timedelta(days=n) for n in range(4)]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, p384_keypair: tuple[bytes, bytes]) -> Iterator[Pipeline]:
    with wired_pipeline(tmp_path_factory.mktemp("rebuild"), p384_keypair) as installed:
        installed.sandbox.inject_movement("BTC_TEST", "0.00012345", DAYS[2])
        for day in DAYS:
            outcome = installed.run(day)
            assert outcome.success, outcome.error
        yield installed


def warehouse_contents(pipeline: Pipeline) -> dict[str, list[tuple]]:
    """Every table and view of the published warehouse, rows sorted, values exact (Decimal, not float)."""
    con = duckdb.connect(str(pipeline.warehouse), read_only=True)
    try:
        names = [row[0] for row in con.execute(
            "SELECT table_name FROM duckdb_tables() UNION ALL SELECT view_name FROM duckdb_views() WHERE NOT internal"
        ).fetchall()]
        return {name: con.execute(f'SELECT * FROM "{name}" ORDER BY ALL').fetchall() for name in sorted(names)}
    finally:
        con.close()


def store_rows(pipeline: Pipeline) -> dict[str, list[dict]]:
    """Every Parquet partition's rows, by path (both datasets)."""
    files = sorted(pipeline.data_dir.glob("**/*.parquet"))
    return {str(path.relative_to(pipeline.data_dir)): pq.read_table(path).to_pylist() for path in files}


def test_the_warehouse_rebuilt_from_parquet_is_the_one_the_daily_loads_built(pipeline: Pipeline):
    built = warehouse_contents(pipeline)
    assert built["balance_snapshots"] and built["transactions"] and built["v_balance_rollforward"]

    rebuilt = pipeline.cli("rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"from {len(DAYS)} partitions, {len(DAYS)} transactions syncs" in rebuilt.stdout
    assert warehouse_contents(pipeline) == built


def test_the_store_rebuilt_from_raw_landings_gives_the_same_partitions_and_warehouse(pipeline: Pipeline):
    built, partitions = warehouse_contents(pipeline), store_rows(pipeline)
    for root in (parquet_root(pipeline.data_dir), parquet_root(pipeline.data_dir, TRANSACTION_SYNCS)):
        shutil.rmtree(root)
    for database in pipeline.data_dir.glob("*.duckdb*"):
        database.unlink()

    rebuilt = pipeline.cli("rebuild", "--from-raw")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"replayed from raw landings: {len(DAYS)} balances days, {len(DAYS)} transactions syncs;" in rebuilt.stdout
    assert store_rows(pipeline) == partitions
    assert warehouse_contents(pipeline) == built


def test_a_range_is_replayed_alone_and_only_with_from_raw(pipeline: Pipeline):
    built = warehouse_contents(pipeline)
    partition_path(pipeline.data_dir, DAYS[1]).unlink()
    day = DAYS[1].isoformat()
    refused = pipeline.cli("rebuild", "--start", day, "--end", day)
    assert refused.returncode == 2 and "--from-raw" in refused.stderr

    rebuilt = pipeline.cli("rebuild", "--from-raw", "--start", day, "--end", day)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "replayed from raw landings: 1 balances days, 1 transactions syncs;" in rebuilt.stdout
    assert warehouse_contents(pipeline) == built


def test_a_tampered_landing_fails_naming_the_day_and_the_page_and_changes_nothing(pipeline: Pipeline):
    built, partitions = warehouse_contents(pipeline), store_rows(pipeline)
    page = latest_raw_landing(pipeline.data_dir, DAYS[-1]) / page_file_name(1)
    original = page.read_bytes()
    page.write_bytes(original.replace(b'"Total"', b'"Tota1"', 1))
    try:
        failed = pipeline.cli("rebuild", "--from-raw", "--start", DAYS[-1].isoformat())
    finally:
        page.write_bytes(original)
    assert failed.returncode == 1
    assert DAYS[-1].isoformat() in failed.stderr and str(page) in failed.stderr and "sha256" in failed.stderr
    assert "the warehouse is as it was" in failed.stderr
    assert store_rows(pipeline) == partitions and warehouse_contents(pipeline) == built
