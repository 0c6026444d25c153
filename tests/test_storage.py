"""Storage layer on real files, real DuckDB and real (killed) processes.

Frames are built here directly with pyarrow (the normalize transform is developed separately).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, localcontext
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from balances_etl.domain.amounts import canonical_amount, fits_decimal_38_18
from balances_etl.domain.names import Table
from balances_etl.domain.balances import ARROW_SCHEMA, COLUMN_NAMES
from balances_etl.storage import (
    LoadResult,
    connect_read_only,
    RawLanding,
    latest_raw_landing,
    load_partition,
    partition_path,
    publish_partition,
    read_partition,
    read_raw_bodies,
    rebuild_from_parquet,
    warehouse_path,
)
from balances_etl.storage.files import LockTimeoutError, exclusive_lock
from balances_etl.storage.parquet import PartitionSchemaError, PartitionWriter, parquet_root
from balances_etl.storage import warehouse as warehouse_module
from balances_etl.storage.raw import RawIntegrityError, read_raw_manifest
from balances_etl.storage.warehouse import WarehouseLoadError, writer_path

DAY1 = date(2026, 11, 20)
DAY2 = date(2026, 11, 21)
DAY3 = date(2026, 11, 22)
WIDE = "12345678901234567890.12345678901234567"  # 38 characters, 20 integer digits: exact DECIMAL
TINY = "0.000000000000000001"  # 18 decimals
TOO_WIDE = "12345678901234567890123456789012345678"  # 38 digits: kept as exact text, DECIMAL is NULL
EXACT_AMOUNTS = (("1.5", "2.25"), ("0", WIDE), ("+.5", TINY + "0"), ("7", TOO_WIDE))
SPAWN = mp.get_context("spawn")


# ---------------------------------------------------------------- helpers


def make_frame(day: date, amounts: Sequence[tuple[str, str]] = (("1.5", "2.25"),), tag: str = "C") -> pd.DataFrame:
    """A valid normalized frame: one row per (available, total) pair, currencies ``<tag><i>``."""
    rows = []
    for index, (available_raw, total_raw) in enumerate(amounts):
        available, total = canonical_amount(available_raw), canonical_amount(total_raw)
        available_amount = Decimal(available) if fits_decimal_38_18(available) else None
        total_amount = Decimal(total) if fits_decimal_38_18(total) else None
        pending = None
        if available_amount is not None and total_amount is not None:
            with localcontext() as ctx:
                ctx.prec = 80
                pending = total_amount - available_amount
        rows.append(
            {
                "snapshot_date": day,
                "snapshot_at": datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1, minutes=5),
                "is_late": False,
                "account_type": "Current",
                "crypto_currency": f"{tag}{index}",
                "asset": "BTC",
                "environment": "sandbox",
                "available": available,
                "total": total,
                "available_raw": available_raw,
                "total_raw": total_raw,
                "available_amount": available_amount,
                "total_amount": total_amount,
                "pending_outflow": pending,
                "page_number": 1 + index // 100,
                "item_index": index % 100,
            }
        )
    return pa.Table.from_pylist(rows, schema=ARROW_SCHEMA).to_pandas(types_mapper=pd.ArrowDtype)


def bulk_amounts(rows: int, seed: int) -> list[tuple[str, str]]:
    return [(f"{seed}.{i:018d}", f"{seed + i}.5") for i in range(rows)]


def day_rows(con: duckdb.DuckDBPyConnection) -> dict[date, int]:
    return dict(con.execute(f"SELECT snapshot_date, count(*) FROM {Table.BALANCE_SNAPSHOTS} GROUP BY 1").fetchall())


def warehouse_contents(data_dir: Path) -> list[tuple]:
    con = connect_read_only(data_dir)
    try:
        return con.execute(f"SELECT * FROM {Table.BALANCE_SNAPSHOTS} ORDER BY snapshot_date, crypto_currency").fetchall()
    finally:
        con.close()


def writer_contents(data_dir: Path) -> tuple[list[tuple], list[str]]:
    con = duckdb.connect(str(writer_path(data_dir)), read_only=True)
    try:
        rows = con.execute(f"SELECT * FROM {Table.BALANCE_SNAPSHOTS} ORDER BY snapshot_date, crypto_currency").fetchall()
        views = con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()
        return rows, [view for (view,) in views]
    finally:
        con.close()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def sql_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "sql"
    directory.mkdir()
    (directory / "01_v_test.sql").write_text(
        "CREATE OR REPLACE VIEW v_test AS SELECT count(*) AS n FROM balance_snapshots;\n"
    )
    return directory


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# ---------------------------------------------------------------- raw landing


@dataclass
class FakePage:
    page_number: int
    body: bytes
    request_path: str = "/v1/balances"
    status: int = 200
    attempts: int = 1
    elapsed_seconds: float = 0.01
    received_at: datetime = datetime(2026, 11, 21, 0, 5, tzinfo=UTC)
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(
        default_factory=lambda: {"Api-Signature": "SECRET-SIGNATURE", "X-Api-Key": "SECRET-KEY"}
    )
    sha256: str = ""

    def __post_init__(self) -> None:
        self.sha256 = self.sha256 or hashlib.sha256(self.body).hexdigest()
        self.query = self.query or {"PageSize": "2", "PageToken": f"tok{self.page_number}"}


def land_raw_pages(
    data_dir: Path, day: date, taken_at: datetime, run_id: str, pages: list[FakePage], stats: dict[str, object]
) -> Path:
    with RawLanding(data_dir, day, taken_at, run_id) as landing:
        for page in pages:
            landing.add_page(page)
        return landing.publish(stats)


BODIES = (b'{"Items": [{"Total": "0.10", "Available": "+.5"}]}\r\n', b"\x00\xff not even utf-8 \xfe", b"")


def test_raw_landing_round_trip(data_dir: Path) -> None:
    pages = [FakePage(i + 1, body) for i, body in enumerate(BODIES)]
    taken_at = datetime(2026, 11, 21, 0, 5, 1, 123456, tzinfo=UTC)
    landing = land_raw_pages(data_dir, DAY1, taken_at, "0123456789abcdef", pages, {"items": 1, "as_of": DAY1})

    assert landing.name == "taken_at=20261121T000501.123456Z-01234567"
    assert read_raw_bodies(landing) == list(BODIES)
    assert json.loads((landing / "manifest.json").read_text())["complete"] is True
    manifest = read_raw_manifest(landing)
    assert (manifest.snapshot_date, manifest.taken_at, manifest.run_id) == (DAY1, taken_at, "0123456789abcdef")
    assert manifest.stats == {"items": 1, "as_of": "2026-11-20"}
    assert [p["query"] for p in manifest.pages] == [{"PageSize": "2", "PageToken": f"tok{i}"} for i in (1, 2, 3)]
    assert [(p["status"], p["attempts"], p["file"]) for p in manifest.pages][0] == (200, 1, "page-00001.json")
    stored = b"".join(f.read_bytes() for f in landing.iterdir())
    assert b"SECRET" not in stored and b"Api-Signature" not in stored
    assert latest_raw_landing(data_dir, DAY1) == landing

    later = land_raw_pages(data_dir, DAY1, taken_at + timedelta(hours=1), "fedcba9876543210", pages[:1], {})
    (landing.parent / "taken_at=29991231T000000.000000Z-incomple").mkdir()  # no manifest: not a landing
    assert latest_raw_landing(data_dir, DAY1) == later
    assert read_raw_bodies(landing) == list(BODIES)  # append-only: the earlier landing is kept
    assert latest_raw_landing(data_dir, DAY2) is None
    with pytest.raises(FileExistsError):
        land_raw_pages(data_dir, DAY1, taken_at, "0123456789abcdef", pages, {})
    assert not list((data_dir / "raw" / "balances").glob(".staging-*"))


def test_an_unpublished_landing_leaves_nothing_and_a_killed_ones_staging_is_removed_later(data_dir: Path) -> None:
    pages = [FakePage(i + 1, body) for i, body in enumerate(BODIES)]
    with pytest.raises(RuntimeError), RawLanding(data_dir, DAY1, datetime.now(UTC), "run-00000001") as landing:
        landing.add_page(pages[0])
        raise RuntimeError("the fetch failed half-way")
    assert not list((data_dir / "raw" / "balances").iterdir())

    # A process killed mid-landing leaves its staging directory; a live one's must survive.
    dead = subprocess.run(
        [sys.executable, "-c", KILLED_LANDING, str(data_dir)], capture_output=True, text=True, check=True
    ).stdout.strip()
    def stagings() -> list[str]:
        return [p.name for p in (data_dir / "raw" / "balances").glob(".staging-*")]

    assert len(stagings()) == 1 and dead in stagings()[0]
    alive = RawLanding(data_dir, DAY1, datetime.now(UTC), "run-00000002")  # removes the dead run's staging
    alive.add_page(pages[0])
    assert len(stagings()) == 1 and dead not in stagings()[0]
    later = land_raw_pages(data_dir, DAY2, datetime.now(UTC), "run-00000003", pages, {})
    assert len(stagings()) == 1 and dead not in stagings()[0]  # the live landing's staging stays
    assert read_raw_bodies(alive.publish({})) == [BODIES[0]] and read_raw_bodies(later) == list(BODIES)
    assert stagings() == []


# Starts a landing, writes a page, prints its staging directory name and exits without cleaning up.
KILLED_LANDING = """
import os, sys
from datetime import UTC, date, datetime
from pathlib import Path
from balances_etl.storage.raw import RawLanding
landing = RawLanding(Path(sys.argv[1]), date(2026, 11, 20), datetime.now(UTC), "run-killed01")
print(f"-{os.getpid()}-")
os._exit(0)
"""


def test_raw_tampered_page_is_detected(data_dir: Path) -> None:
    pages = [FakePage(i + 1, body) for i, body in enumerate(BODIES)]
    landing = land_raw_pages(data_dir, DAY1, datetime.now(UTC), "run-00000001", pages, {})
    (landing / "page-00002.json").write_bytes(b"tampered")
    with pytest.raises(RawIntegrityError, match="page-00002.json"):
        read_raw_bodies(landing)


def test_raw_landing_refuses_a_body_that_does_not_match_its_hash(data_dir: Path) -> None:
    pages = [FakePage(1, b"{}"), FakePage(2, b"[]", sha256="0" * 64)]
    with pytest.raises(RawIntegrityError, match="page 2"):
        land_raw_pages(data_dir, DAY1, datetime.now(UTC), "run-00000001", pages, {})
    assert latest_raw_landing(data_dir, DAY1) is None
    assert not list((data_dir / "raw" / "balances").glob(".staging-*"))


# ---------------------------------------------------------------- parquet


def test_parquet_publish_replace_read_exact(data_dir: Path) -> None:
    frame = make_frame(DAY1, EXACT_AMOUNTS)
    published = publish_partition(data_dir, DAY1, frame)

    assert published.path == partition_path(data_dir, DAY1)
    assert published.rows == 4 and published.bytes == published.path.stat().st_size
    assert published.sha256 == sha256_of(published.path)
    assert pq.read_metadata(published.path).row_group(0).column(0).compression == "ZSTD"
    back = read_partition(data_dir, DAY1)
    assert back is not None
    pd.testing.assert_frame_equal(back, frame)
    assert all(isinstance(dtype, pd.ArrowDtype) for dtype in back.dtypes)
    assert pa.array(back["total_amount"]).to_pylist()[1:] == [Decimal(WIDE), Decimal(TINY), None]
    assert back["total"].tolist()[3] == TOO_WIDE

    replacement = make_frame(DAY1, [("3", "4")], tag="R")
    publish_partition(data_dir, DAY1, replacement)
    pd.testing.assert_frame_equal(read_partition(data_dir, DAY1), replacement)
    assert read_partition(data_dir, DAY2) is None


def test_duckdb_reads_the_hive_tree_with_one_snapshot_date_column(data_dir: Path) -> None:
    publish_partition(data_dir, DAY1, make_frame(DAY1, EXACT_AMOUNTS))
    publish_partition(data_dir, DAY2, make_frame(DAY2, [("1", "2")]))
    con = duckdb.connect()
    relation = con.sql(
        f"SELECT * FROM read_parquet('{parquet_root(data_dir).resolve()}/**/*.parquet', hive_partitioning = true)"
    )
    assert relation.columns == list(COLUMN_NAMES)  # no duplicate snapshot_date from the directory name
    assert str(relation.types[0]) == "DATE"
    rows = relation.filter(f"snapshot_date = DATE '{DAY1}'").order("crypto_currency").fetchall()
    totals = [row[COLUMN_NAMES.index("total_amount")] for row in rows]
    assert totals == [Decimal("2.25"), Decimal(WIDE), Decimal(TINY), None]
    assert day_rows_from(relation) == {DAY1: 4, DAY2: 1}


def day_rows_from(relation: duckdb.DuckDBPyRelation) -> dict[date, int]:
    return dict(relation.aggregate("snapshot_date, count(*)", "snapshot_date").fetchall())


def test_publish_refuses_rows_of_another_day_and_leaves_no_file(data_dir: Path) -> None:
    with pytest.raises(PartitionSchemaError, match="other days"):
        publish_partition(data_dir, DAY1, make_frame(DAY2))
    assert read_partition(data_dir, DAY1) is None
    assert writing_files(data_dir) == []
    publish_partition(data_dir, DAY1, make_frame(DAY1))
    assert sorted(p.name for p in partition_path(data_dir, DAY1).parent.iterdir()) == [".publish.lock", "data.parquet"]
    assert writing_files(data_dir) == []


def writing_files(data_dir: Path) -> list[str]:
    return [p.name for p in parquet_root(data_dir).glob(".writing-*")]


def test_a_killed_writers_unpublished_partition_is_removed_by_the_next_writer_not_a_live_ones(data_dir: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", KILLED_PARTITION_WRITER, str(data_dir)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert len(writing_files(data_dir)) == 1 and dead in writing_files(data_dir)[0]
    with PartitionWriter(data_dir, DAY1) as live:  # removes the dead process's file
        live.write(pa.Table.from_pandas(make_frame(DAY1), schema=ARROW_SCHEMA, preserve_index=False))
        assert len(writing_files(data_dir)) == 1 and dead not in writing_files(data_dir)[0]
        publish_partition(data_dir, DAY2, make_frame(DAY2))  # another writer meanwhile
        assert len(writing_files(data_dir)) == 1  # the live writer's file stays
        live.finish().publish()
    assert writing_files(data_dir) == [] and read_partition(data_dir, DAY1).equals(make_frame(DAY1))


# Starts a partition writer, writes nothing, prints its owner tag and exits without cleaning up.
KILLED_PARTITION_WRITER = """
import os, sys
from datetime import date
from pathlib import Path
from balances_etl.storage.parquet import PartitionWriter
writer = PartitionWriter(Path(sys.argv[1]), date(2026, 11, 20))
print(f"-{os.getpid()}-")
os._exit(0)
"""


# ---------------------------------------------------------------- warehouse


def publish_and_load(data_dir: Path, sql_dir: Path, day: date, frame: pd.DataFrame) -> LoadResult:
    publish_partition(data_dir, day, frame)
    return load_partition(data_dir, day, sql_dir)


def test_load_partition_is_exact(data_dir: Path, sql_dir: Path) -> None:
    publish_partition(data_dir, DAY1, make_frame(DAY1, EXACT_AMOUNTS))
    result = load_partition(data_dir, DAY1, sql_dir, stale_after_days=3)
    assert (result.snapshot_date, result.rows, result.total_rows, result.partitions) == (DAY1, 4, 4, 1)
    assert result.views_applied == ["01_v_test.sql"] and result.ledger_rows == 0
    assert result.published_path == warehouse_path(data_dir) and result.publish_seconds >= 0

    con = connect_read_only(data_dir)
    rows = con.execute(
        f"SELECT available_amount, total_amount, pending_outflow, total FROM {Table.BALANCE_SNAPSHOTS} ORDER BY item_index"
    ).fetchall()
    assert rows == [
        (Decimal("1.5"), Decimal("2.25"), Decimal("0.75"), "2.25"),
        (Decimal("0"), Decimal(WIDE), Decimal(WIDE), WIDE),
        (Decimal("0.5"), Decimal(TINY), Decimal(TINY) - Decimal("0.5"), TINY),
        (Decimal("7"), None, None, TOO_WIDE),
    ]
    assert con.execute("SELECT n FROM v_test").fetchall() == [(4,)]
    assert con.execute("SELECT stale_after_days FROM reconciliation_settings").fetchall() == [(3,)]
    con.close()
    assert not list(data_dir.glob(".warehouse.duckdb.tmp-*"))


def test_reloading_a_day_replaces_exactly_that_day(data_dir: Path, sql_dir: Path) -> None:
    publish_and_load(data_dir, sql_dir, DAY1, make_frame(DAY1, [("1", "1"), ("2", "2"), ("3", "3")]))
    publish_and_load(data_dir, sql_dir, DAY2, make_frame(DAY2, [("5", "6")]))
    day2_before = [r for r in warehouse_contents(data_dir) if r[0] == DAY2]

    replacement = make_frame(DAY1, [("8", "9"), ("1", "1")], tag="N")
    result = publish_and_load(data_dir, sql_dir, DAY1, replacement)
    load_partition(data_dir, DAY1, sql_dir)  # re-running is harmless

    after = warehouse_contents(data_dir)
    assert [r[4] for r in after if r[0] == DAY1] == ["N0", "N1"]  # no leftovers, no duplicates
    assert [r for r in after if r[0] == DAY2] == day2_before
    assert (result.rows, result.total_rows, result.partitions) == (2, 3, 2)


def test_swallowed_error_inside_the_transaction_is_not_committed(
    data_dir: Path, sql_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_and_load(data_dir, sql_dir, DAY1, make_frame(DAY1))
    published = sha256_of(warehouse_path(data_dir))

    def ledger_that_hides_an_error(con: duckdb.DuckDBPyConnection, ledger_dir: Path) -> int:
        try:
            con.execute("SELECT * FROM no_such_table")
        except duckdb.Error:
            pass  # the transaction is now aborted; a COMMIT would quietly roll back
        return 0

    monkeypatch.setattr(warehouse_module, "replace_ledger_table", ledger_that_hides_an_error)
    publish_partition(data_dir, DAY2, make_frame(DAY2))
    with pytest.raises(WarehouseLoadError, match="replace_ledger_table hid an error"):
        load_partition(data_dir, DAY2, sql_dir)
    assert sha256_of(warehouse_path(data_dir)) == published
    assert {r[0] for r in writer_contents(data_dir)[0]} == {DAY1}


def test_failing_view_changes_nothing_and_a_fixed_rerun_succeeds(data_dir: Path, sql_dir: Path) -> None:
    publish_and_load(data_dir, sql_dir, DAY1, make_frame(DAY1))
    published, writer = sha256_of(warehouse_path(data_dir)), writer_contents(data_dir)

    bad_view = sql_dir / "02_v_bad.sql"
    bad_view.write_text("CREATE OR REPLACE VIEW v_bad AS SELECT no_such_column FROM balance_snapshots;")
    publish_partition(data_dir, DAY2, make_frame(DAY2))
    with pytest.raises(WarehouseLoadError, match="02_v_bad.sql"):
        load_partition(data_dir, DAY2, sql_dir)
    assert sha256_of(warehouse_path(data_dir)) == published
    assert writer_contents(data_dir) == writer

    bad_view.write_text("CREATE OR REPLACE VIEW v_bad AS SELECT total FROM balance_snapshots;")
    result = load_partition(data_dir, DAY2, sql_dir)
    assert result.views_applied == ["01_v_test.sql", "02_v_bad.sql"] and result.partitions == 2
    assert writer_contents(data_dir)[1] == ["v_bad", "v_test"]


def test_load_refuses_a_partition_not_written_with_the_schema(data_dir: Path, sql_dir: Path) -> None:
    publish_and_load(data_dir, sql_dir, DAY1, make_frame(DAY1))
    published = sha256_of(warehouse_path(data_dir))
    path = partition_path(data_dir, DAY2)
    path.parent.mkdir(parents=True)
    table = pa.Table.from_pandas(make_frame(DAY2), schema=ARROW_SCHEMA, preserve_index=False)
    table = table.set_column(12, "total_amount", pa.array([2.25], pa.float64()))  # floats would round on CAST
    pq.write_table(table, path)
    with pytest.raises(PartitionSchemaError, match="total_amount"):
        load_partition(data_dir, DAY2, sql_dir)
    assert sha256_of(warehouse_path(data_dir)) == published


def test_load_refuses_decimals_that_differ_from_their_exact_text(data_dir: Path, sql_dir: Path) -> None:
    frame = make_frame(DAY1, [("1", "1.5"), ("1", "2")])
    frame["total"] = pd.Series(["1.5", "2.000000000000000000001"], dtype=frame["total"].dtype)  # a rounded DECIMAL
    # Off by 1e-18: the text parses exactly, and still differs from the DECIMAL beside it.
    frame["available"] = pd.Series(["0.999999999999999999", "1"], dtype=frame["available"].dtype)
    publish_partition(data_dir, DAY1, frame)
    with pytest.raises(WarehouseLoadError, match="2 DECIMAL values differ"):
        load_partition(data_dir, DAY1, sql_dir)
    assert not warehouse_path(data_dir).exists()


def test_missing_writer_is_seeded_from_the_published_warehouse_and_rebuild_recovers(
    data_dir: Path, sql_dir: Path
) -> None:
    publish_and_load(data_dir, sql_dir, DAY1, make_frame(DAY1, EXACT_AMOUNTS))
    publish_and_load(data_dir, sql_dir, DAY2, make_frame(DAY2))
    expected = warehouse_contents(data_dir)

    writer_path(data_dir).unlink()
    result = publish_and_load(data_dir, sql_dir, DAY3, make_frame(DAY3))
    assert result.partitions == 3 and warehouse_contents(data_dir)[: len(expected)] == expected

    writer_path(data_dir).unlink()
    warehouse_path(data_dir).unlink()
    rebuilt = rebuild_from_parquet(data_dir, sql_dir)
    assert (rebuilt.rows, rebuilt.partitions, rebuilt.views_applied) == (6, 3, ["01_v_test.sql"])
    assert warehouse_contents(data_dir)[: len(expected)] == expected


def test_lock_timeout_names_the_holder(data_dir: Path, sql_dir: Path) -> None:
    publish_partition(data_dir, DAY1, make_frame(DAY1))
    with exclusive_lock(data_dir / "state" / "warehouse.lock", 1):
        with pytest.raises(LockTimeoutError, match=f"pid {os.getpid()}"):
            load_partition(data_dir, DAY1, sql_dir, lock_timeout_seconds=0.2)
    assert load_partition(data_dir, DAY1, sql_dir).rows == 1


def test_new_connections_in_the_same_process_see_the_new_snapshot(data_dir: Path, sql_dir: Path) -> None:
    publish_and_load(data_dir, sql_dir, DAY1, make_frame(DAY1))
    old = connect_read_only(data_dir)
    publish_and_load(data_dir, sql_dir, DAY2, make_frame(DAY2))
    new = connect_read_only(data_dir)
    assert day_rows(old) == {DAY1: 1}
    assert day_rows(new) == {DAY1: 1, DAY2: 1}
    old.close()
    new.close()


# ---------------------------------------------------------------- real processes

ANALYST = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
for _ in sys.stdin:
    print(con.execute("SELECT count(DISTINCT snapshot_date) FROM balance_snapshots").fetchone()[0], flush=True)
"""


def test_load_succeeds_while_an_analyst_holds_the_warehouse_open(data_dir: Path, sql_dir: Path) -> None:
    publish_and_load(data_dir, sql_dir, DAY1, make_frame(DAY1))
    analyst = subprocess.Popen(
        [sys.executable, "-c", ANALYST, str(warehouse_path(data_dir))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:

        def ask() -> str:
            analyst.stdin.write("\n")
            analyst.stdin.flush()
            return analyst.stdout.readline().strip()

        assert ask() == "1"
        with pytest.raises(duckdb.IOException, match="lock"):  # why the pipeline never writes this file
            duckdb.connect(str(warehouse_path(data_dir)))
        result = publish_and_load(data_dir, sql_dir, DAY2, make_frame(DAY2))
        assert result.partitions == 2
        assert ask() == "1"  # the open session keeps its consistent old snapshot
        new_connection = connect_read_only(data_dir)
        assert day_rows(new_connection) == {DAY1: 1, DAY2: 1}
        new_connection.close()
        new_analyst = subprocess.run(
            [sys.executable, "-c", ANALYST, str(warehouse_path(data_dir))],
            input="\n",
            capture_output=True,
            text=True,
            check=True,
        )
        assert new_analyst.stdout.strip() == "2"
    finally:
        analyst.stdin.close()
        analyst.wait(timeout=30)


def _load_when_started(data_dir: Path, day: date, sql_dir: Path, start: mp.Event) -> None:
    start.wait(60)
    load_partition(data_dir, day, sql_dir)


def test_concurrent_loads_of_different_and_same_days(data_dir: Path, sql_dir: Path) -> None:
    frames = {DAY1: make_frame(DAY1, bulk_amounts(300, 1)), DAY2: make_frame(DAY2, bulk_amounts(200, 2))}
    for day, frame in frames.items():
        publish_partition(data_dir, day, frame)
    start = SPAWN.Event()
    loaders = [
        SPAWN.Process(target=_load_when_started, args=(data_dir, day, sql_dir, start))
        for day in (DAY1, DAY2, DAY1, DAY2)
    ]
    for loader in loaders:
        loader.start()
    start.set()
    for loader in loaders:
        loader.join(60)
    assert [loader.exitcode for loader in loaders] == [0, 0, 0, 0]
    con = connect_read_only(data_dir)
    assert day_rows(con) == {DAY1: 300, DAY2: 200}
    assert con.execute(
        f"SELECT count(*) = count(DISTINCT (snapshot_date, account_type, crypto_currency)) FROM {Table.BALANCE_SNAPSHOTS}"
    ).fetchone() == (True,)
    con.close()


def kill_at_a_random_moment(target, args: tuple, rng: random.Random, *, warmed_up: int, what: str, within: float) -> None:  # noqa: ANN001
    """Run ``target(*args, done)`` in a child; once it has counted ``warmed_up`` rounds, SIGKILL it
    at a random moment within ``within`` seconds."""
    done = SPAWN.Value("i", 0, lock=False)
    child = SPAWN.Process(target=target, args=(*args, done))
    child.start()
    wait_for(lambda: done.value >= warmed_up, what)
    time.sleep(rng.uniform(0, within))
    os.kill(child.pid, signal.SIGKILL)
    child.join()


def _publish_forever(data_dir: Path, frames: list[pd.DataFrame], done: mp.Value) -> None:
    while True:
        for frame in frames:
            publish_partition(data_dir, DAY1, frame)
            done.value += 1


def test_sigkill_during_publish_partition_leaves_old_or_new_file(data_dir: Path) -> None:
    frames = [make_frame(DAY1, bulk_amounts(20_000, 1), tag="A"), make_frame(DAY1, bulk_amounts(30_000, 2), tag="B")]
    rng = random.Random(7)
    for _ in range(4):
        kill_at_a_random_moment(_publish_forever, (data_dir, frames), rng, warmed_up=1, what="a first publish", within=0.3)
        assert [p.name for p in parquet_root(data_dir).rglob("*.parquet")] == ["data.parquet"]
        back = read_partition(data_dir, DAY1)
        assert any(back.equals(frame) for frame in frames)
        counted = duckdb.sql(f"SELECT count(*) FROM read_parquet('{partition_path(data_dir, DAY1)}')").fetchall()
        assert counted in ([(20_000,)], [(30_000,)])
    publish_partition(data_dir, DAY1, frames[0])
    assert writing_files(data_dir) == []  # the killed writers' files were removed by the next one


def _load_forever(data_dir: Path, sql_dir: Path, done: mp.Value) -> None:
    while True:
        for day in (DAY1, DAY2):
            load_partition(data_dir, day, sql_dir)
            done.value += 1


def test_sigkill_during_load_leaves_a_readable_warehouse_and_rerun_completes(data_dir: Path, sql_dir: Path) -> None:
    expected = {DAY1: 30_000, DAY2: 20_000}
    for day, rows in expected.items():
        publish_partition(data_dir, day, make_frame(day, bulk_amounts(rows, day.day)))
    rng = random.Random(11)
    for _ in range(3):
        kill_at_a_random_moment(_load_forever, (data_dir, sql_dir), rng, warmed_up=2, what="both days loaded once", within=0.5)
        con = connect_read_only(data_dir)
        assert day_rows(con) == expected
        assert con.execute("SELECT n FROM v_test").fetchall() == [(50_000,)]
        con.close()
        result = load_partition(data_dir, DAY1, sql_dir)
        assert (result.rows, result.total_rows) == (30_000, 50_000)
        assert not list(data_dir.glob(".warehouse.duckdb.tmp-*"))


def test_the_pipelines_reused_duckdb_instance_reads_a_replaced_warehouse_anew(data_dir: Path, sql_dir: Path) -> None:
    """Each pipeline read attaches the published file afresh, on an instance kept from the last read."""
    publish_partition(data_dir, DAY1, make_frame(DAY1))
    load_partition(data_dir, DAY1, sql_dir)
    with warehouse_module.reading_published(data_dir) as first:
        assert day_rows(first) == {DAY1: 1}
    publish_partition(data_dir, DAY2, make_frame(DAY2))
    load_partition(data_dir, DAY2, sql_dir)  # publishes a new file in place of the one read above
    with warehouse_module.reading_published(data_dir) as second:
        assert second is first  # the same instance, not a new one
        assert day_rows(second) == {DAY1: 1, DAY2: 1}
        with warehouse_module.reading_published(data_dir) as meanwhile:  # a read at the same time: its own
            assert meanwhile is not second and day_rows(meanwhile) == {DAY1: 1, DAY2: 1}
    with pytest.raises(duckdb.Error), warehouse_module.reading_published(data_dir) as failing:
        failing.execute("SELECT * FROM no_such_table")
    with warehouse_module.reading_published(data_dir) as after_failure:
        assert day_rows(after_failure) == {DAY1: 1, DAY2: 1}
    published = warehouse_module.warehouse_path(data_dir)
    intact = published.read_bytes()
    published.write_bytes(b"not a DuckDB file" * 1000)
    with pytest.raises(duckdb.Error), warehouse_module.reading_published(data_dir):
        pass  # the attach fails: no connection is handed out
    published.write_bytes(intact)
    with warehouse_module.reading_published(data_dir) as after_a_bad_file:
        assert day_rows(after_a_bad_file) == {DAY1: 1, DAY2: 1}
