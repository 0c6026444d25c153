"""Runs as fresh containers with the store on object storage (a real SeaweedFS on loopback): every
day's run starts from an empty data directory, so everything it knows comes from the store. The
real daily job restores the warehouse from the store, syncs transactions incrementally against it,
loads its day and uploads the warehouse back as one object; a store whose warehouse fell behind its
partitions is rebuilt from them; `rebuild --from-raw` replays the store's raw landings."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from decimal import Decimal

import duckdb
import pytest

from balances_etl.domain.names import View
from balances_etl.operations.history import captures
from s3server import S3Server, start_s3_server
from tests.pipeline_support import DAY, Pipeline, wired_pipeline

DAYS = [DAY + dt.timedelta(days=n) for n in range(4)]
WAREHOUSE_KEY = "warehouse.duckdb"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    yield from start_s3_server(tmp_path_factory.mktemp("s3"))


@pytest.fixture
def pipeline(tmp_path: Path, p384_keypair: tuple[bytes, bytes], s3: S3Server,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Pipeline, str]]:
    url = f"s3://{s3.create_bucket()}/balances"
    with wired_pipeline(tmp_path, p384_keypair) as installed:
        for name, value in s3.env(url).items():
            monkeypatch.setenv(name, value)
        yield installed, url


def in_a_fresh_container(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, name: str) -> Path:
    """An empty working directory for the next run (the Dagster instance, like PostgreSQL, persists)."""
    data_dir = pipeline.root / "containers" / name
    monkeypatch.setenv("BALANCES_ETL_DATA_DIR", str(data_dir))
    return data_dir


def stored_warehouse(s3: S3Server, url: str, into: Path) -> dict[str, list[tuple]]:
    """The store's warehouse object, downloaded: every table and view, rows sorted, values exact."""
    into.write_bytes(_read(s3, f"{url.removeprefix('s3://')}/{WAREHOUSE_KEY}"))
    with duckdb.connect(str(into), read_only=True) as con:
        names = [n for (n,) in con.execute(
            "SELECT table_name FROM duckdb_tables() UNION ALL SELECT view_name FROM duckdb_views() WHERE NOT internal"
        ).fetchall()]
        return {name: con.execute(f'SELECT * FROM "{name}" ORDER BY ALL').fetchall() for name in sorted(names)}


def _read(s3: S3Server, path: str) -> bytes:
    with s3.filesystem().open_input_stream(path) as source:
        return source.read()


def test_each_run_in_an_empty_directory_continues_the_history_from_the_store(
    pipeline: tuple[Pipeline, str], s3: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    installed, url = pipeline
    installed.sandbox.inject_movement("BTC_TEST", "0.00012345", DAYS[2])
    for n, day in enumerate(DAYS[:3]):
        in_a_fresh_container(installed, monkeypatch, f"run-{n}")
        outcome = installed.run(day)
        assert outcome.success, outcome.error
    warehouse = stored_warehouse(s3, url, tmp_path / "after-three.duckdb")
    assert {row[0] for row in warehouse["balance_snapshots"]} == set(DAYS[:3])
    assert len(warehouse["transaction_syncs"]) == 3
    assert set(View) <= set(warehouse)
    with duckdb.connect(str(tmp_path / "after-three.duckdb"), read_only=True) as con:
        windows = con.execute("SELECT crypto_currency, status, unexplained_total FROM v_balance_rollforward "
                              "ORDER BY ALL").fetchall()
        horizons = con.execute("SELECT horizon IS NULL FROM transaction_syncs ORDER BY snapshot_date").fetchall()
    assert [w for w in windows if w[1] != "balanced"] == [("BTC_TEST", "unexplained", Decimal("0.00012345"))]
    # Only the first sync read everything: the later ones knew the previous sync, from the store's warehouse.
    assert horizons == [(True,), (False,), (False,)]

    # A run that published its partitions but never uploaded the warehouse: the store's warehouse is
    # behind, and the next run in an empty directory rebuilds from the partitions instead.
    s3.filesystem().delete_file(f"{url.removeprefix('s3://')}/{WAREHOUSE_KEY}")
    in_a_fresh_container(installed, monkeypatch, "run-3")
    outcome = installed.run(DAYS[3])
    assert outcome.success, outcome.error
    rebuilt = stored_warehouse(s3, url, tmp_path / "after-four.duckdb")
    assert {row[0] for row in rebuilt["balance_snapshots"]} == set(DAYS)
    assert len(rebuilt["transaction_syncs"]) == 4

    # What catch-up and `status` read in an empty directory: the watched days only, from the store.
    watcher = in_a_fresh_container(installed, monkeypatch, "sensor")
    assert sorted(captures(watcher, DAYS[2:] + [DAYS[-1] + dt.timedelta(days=1)])) == DAYS[2:]
    assert sorted(p.parent.name for p in watcher.glob("parquet/balances/*/*.parquet")) == [
        f"snapshot_date={day}" for day in DAYS[2:]]

    # The whole store replayed from its raw landings in yet another empty directory: the same warehouse.
    data_dir = in_a_fresh_container(installed, monkeypatch, "rebuild")
    replayed = installed.cli("rebuild", "--from-raw", extra_env={"BALANCES_ETL_DATA_DIR": str(data_dir)})
    assert replayed.returncode == 0, replayed.stderr
    assert f"{len(DAYS)} balances days, {len(DAYS)} transactions syncs" in replayed.stdout
    assert stored_warehouse(s3, url, tmp_path / "replayed.duckdb") == rebuilt
