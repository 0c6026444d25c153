"""The instance's SQLite storages: Dagster's files, read and written through reused engines."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.runs import SqliteRunStorage

from balances_etl.orchestration.instance_storage import (
    ENGINES_KEPT,
    SqliteEventLogStorageReusingEngines,
    SqliteRunStorageReusingEngines,
)
from balances_etl.orchestration.runner import open_instance
from balances_etl.settings import temporary_environment


@dg.asset
def tiny() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows": 1})


def test_a_new_home_records_runs_that_stock_dagster_storage_reads(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    with temporary_environment({"DAGSTER_HOME": str(home)}):
        instance = open_instance()
        assert isinstance(instance.run_storage, SqliteRunStorageReusingEngines)
        assert isinstance(instance.event_log_storage, SqliteEventLogStorageReusingEngines)
        runs = [dg.materialize([tiny], instance=instance).run_id for _ in range(3)]
        instance.dispose()
    # The same files through Dagster's own classes: nothing about the format changed.
    stock_runs = SqliteRunStorage.from_local(str(home / "history"))
    assert {run.run_id for run in stock_runs.get_runs()} == set(runs)
    stock_events = SqliteEventLogStorage(str(home / "history" / "runs"))
    for run_id in runs:
        kinds = [event.dagster_event.event_type_value for event in stock_events.get_logs_for_run(run_id) if event.dagster_event]
        assert "ASSET_MATERIALIZATION" in kinds and kinds[-1] == "PIPELINE_SUCCESS"


def test_engines_are_reused_and_bounded(tmp_path: Path) -> None:
    storage = SqliteEventLogStorageReusingEngines(str(tmp_path))
    with storage.run_connection("run-a") as first:
        engine = first.engine
    with storage.run_connection("run-a") as again:
        assert again.engine is engine  # statements compiled once stay compiled
    for shard in range(ENGINES_KEPT + 5):
        with storage.run_connection(f"run-{shard}"):
            pass
    assert len(storage._engines._engines) == ENGINES_KEPT  # noqa: SLF001 - the bound is the point
