"""The Parquet store is readable by engines other than DuckDB: Apache Spark (local mode, the JVM's
own Parquet reader) sees exact DECIMAL(38,18) amounts and intact strings, and sums to DuckDB's digit."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from decimal import Decimal, localcontext
from pathlib import Path

import duckdb
import pytest

from balances_etl.storage.parquet import BALANCE_SNAPSHOTS, parquet_root
from tests.support_history import build_history, day

pyspark_sql = pytest.importorskip("pyspark.sql", reason="pyspark is in the dev extra")
pyspark_types = pytest.importorskip("pyspark.sql.types")


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pyspark_sql.SparkSession]:
    """Local Spark on loopback only (it binds to the machine's address otherwise), no UI."""
    assert shutil.which("java"), "a Java runtime is needed (.ci/run installs default-jre-headless)"
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    session = (
        pyspark_sql.SparkSession.builder.master("local[1]")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("spark-warehouse")))
        .getOrCreate()
    )
    yield session
    session.stop()


def test_spark_reads_the_store_with_exact_decimals_and_sums_like_duckdb(tmp_path: Path, spark) -> None:
    # NOAH's 38 characters at most: 18 fractional digits, or 20 integer digits
    fine, wide = "1234567890123456789.123456789012345678", "12345678901234567890.12345678901234567"
    data_dir = build_history(tmp_path, {
        day(0): [("Current", "BTC", "0.000000000000000001", fine), ("Current", "ETH", "1.5", "2.25")],
        day(1): [("Current", "BTC", fine, fine), ("Current", "USDC", "0.1", wide)],
        day(2): [("Current", "BTC", "0.1", "0.100000000000000001"), ("Current", "ETH", ".5", "007.50")],
    })
    store = parquet_root(data_dir, BALANCE_SNAPSHOTS)

    spark.sql(f"CREATE TABLE balance_snapshots USING PARQUET LOCATION '{store}'")  # the README's definition
    frame = spark.table("balance_snapshots")
    types = {field.name: field.dataType for field in frame.schema.fields}
    assert types["total_amount"] == pyspark_types.DecimalType(38, 18)
    assert types["available_amount"] == pyspark_types.DecimalType(38, 18)
    assert types["total_raw"] == pyspark_types.StringType()
    assert types["snapshot_date"] == pyspark_types.DateType()

    rows = frame.select("snapshot_date", "crypto_currency", "total_raw", "total", "total_amount").collect()
    assert {row.total_raw for row in rows} >= {fine, wide, "007.50", "0.100000000000000001"}
    assert all(row.total_amount == Decimal(row.total) for row in rows)  # exact, both Decimal
    assert {row.total_amount for row in rows} >= {Decimal(wide), Decimal("0.100000000000000001")}

    # Exact text both sides (Spark may lower a sum's scale, pitfalls.md): DECIMAL(38,18) in, no rounding out.
    spark_sum = frame.selectExpr("sum(total_amount) AS d", "CAST(sum(total_amount) AS STRING) AS s").collect()[0]
    duckdb_sum = duckdb.execute(
        "SELECT sum(total_amount), CAST(sum(total_amount) AS VARCHAR) FROM read_parquet(?, hive_partitioning = true)",
        [str(store / "*" / "*.parquet")],
    ).fetchall()[0]
    assert (spark_sum.d, spark_sum.s) == duckdb_sum
    with localcontext(prec=60):  # the default context rounds at 28 digits
        assert spark_sum.d == sum(Decimal(row.total_raw) for row in rows)
