"""The instance's SQLite storages: Dagster's files, read and written through reused engines.

They override private Dagster API, so they also refuse to start, with a message saying what to do,
on any Dagster but the one they were verified against or when that API's shape has changed.
"""

from __future__ import annotations

import functools
import re
import tomllib
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.runs import SqliteRunStorage

from balances_etl.orchestration.instance_storage import (
    ENGINES_KEPT,
    VERIFIED_DAGSTER_VERSION,
    SqliteEventLogStorageReusingEngines,
    SqliteRunStorageReusingEngines,
    UnverifiedDagsterError,
    private_api_problems,
)
from balances_etl.orchestration.runner import open_instance
from balances_etl.settings import PROJECT_ROOT, temporary_environment


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


def test_connections_stay_open_between_uses_without_holding_a_lock(tmp_path: Path) -> None:
    """Each use takes an open connection from the pool (no new SQLite connection, no schema read per
    event), from any thread; between uses it holds no lock, so another writer is never kept waiting."""
    import sqlite3
    import threading

    from sqlalchemy import event

    storage = SqliteEventLogStorageReusingEngines(str(tmp_path))
    with storage.run_connection("run-a") as first:  # creates the shard's tables
        engine = first.engine
    opened: list[object] = []
    event.listen(engine, "connect", lambda dbapi_connection, _record: opened.append(dbapi_connection))

    def use() -> None:
        with storage.run_connection("run-a") as conn:
            conn.exec_driver_sql("SELECT count(*) FROM event_logs").fetchall()

    for _ in range(10):
        use()
    failures: list[BaseException] = []

    def use_elsewhere() -> None:
        try:
            use()
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            failures.append(error)

    worker = threading.Thread(target=use_elsewhere)  # a pooled connection serves any thread, one at a time
    worker.start()
    worker.join()
    assert failures == [] and opened == []

    other = sqlite3.connect(tmp_path / "run-a.db", timeout=0)  # another process's writer: no waiting allowed
    try:
        other.execute("CREATE TABLE written_beside_the_pool (x INTEGER)")
        other.commit()
    finally:
        other.close()


# --- the guard: verified against one Dagster release only ---------------------------------------


def test_the_installed_dagster_is_the_verified_one_and_the_pin_says_so() -> None:
    """Fails on a Dagster upgrade: re-verify the subclasses, then raise VERIFIED_DAGSTER_VERSION."""
    assert dg.__version__ == VERIFIED_DAGSTER_VERSION
    assert private_api_problems() == []
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    assert f"dagster=={VERIFIED_DAGSTER_VERSION}" in pyproject["project"]["dependencies"]


def test_another_dagster_release_is_refused_at_instance_open_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dg, "__version__", "1.14.0")
    home = tmp_path / "dagster_home"
    with temporary_environment({"DAGSTER_HOME": str(home)}), pytest.raises(UnverifiedDagsterError) as raised:
        open_instance()  # what `balances-etl materialize` and `balances-etl demo` call first
    config = home / "dagster.yaml"
    assert str(raised.value) == (
        f"balances-etl's SQLite run/event storage (balances_etl.orchestration.instance_storage, named in {config}) "
        f"was verified against dagster {VERIFIED_DAGSTER_VERSION} only, and dagster 1.14.0 is installed. "
        "It overrides private Dagster internals, which may change in any release without notice.\n"
        "The names and parameters it uses look unchanged, but what they do was not re-checked.\n"
        "Do one of:\n"
        f"  - install the verified release: pip install 'dagster=={VERIFIED_DAGSTER_VERSION}' "
        f"'dagster-webserver=={VERIFIED_DAGSTER_VERSION}' 'dagster-dg-cli=={VERIFIED_DAGSTER_VERSION}';\n"
        "  - or use Dagster's own SQLite storage (same files, nothing to migrate): delete the run_storage and "
        f"event_log_storage sections from {config};\n"
        "  - or re-verify the subclasses against dagster 1.14.0 (tests/test_instance_storage.py) and set "
        "VERIFIED_DAGSTER_VERSION in balances_etl/orchestration/instance_storage.py."
    )
    assert not (home / "history").exists(), "refused before writing any run or event storage"


def test_a_removed_private_method_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(SqliteEventLogStorage, "_initdb")
    with pytest.raises(UnverifiedDagsterError, match=re.escape("SqliteEventLogStorage._initdb no longer exists")) as raised:
        SqliteEventLogStorageReusingEngines(str(tmp_path / "events"))
    assert f"was verified against dagster {VERIFIED_DAGSTER_VERSION}, which is installed, but not in this shape" in str(raised.value)
    assert "delete the run_storage and event_log_storage sections" in str(raised.value)


def test_a_changed_signature_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def connect(self: SqliteRunStorage, timeout: float):  # noqa: ANN202 - a stand-in for a changed API
        raise AssertionError("must not be called")

    monkeypatch.setattr(SqliteRunStorage, "connect", connect)
    with pytest.raises(UnverifiedDagsterError, match=re.escape("SqliteRunStorage.connect takes (self, timeout), expected (self)")):
        SqliteRunStorageReusingEngines.from_local(str(tmp_path / "history"))


def test_a_private_attribute_no_longer_set_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = SqliteEventLogStorage.__init__

    @functools.wraps(original)  # same signature; only the attribute is gone afterwards
    def without_lock(self: SqliteEventLogStorage, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        del self._db_lock

    monkeypatch.setattr(SqliteEventLogStorage, "__init__", without_lock)
    with pytest.raises(UnverifiedDagsterError, match=re.escape("SqliteEventLogStorage no longer sets _db_lock")):
        SqliteEventLogStorageReusingEngines(str(tmp_path / "events"))


# --- created once; one run per day at a time ----------------------------------------------------


def test_a_new_home_creates_its_schedule_storage_under_the_lock_too(tmp_path: Path) -> None:
    from balances_etl.orchestration.instance_storage import LOCK_FILE_NAME, SqliteScheduleStorageCreatedOnce

    home = tmp_path / "dagster_home"
    with temporary_environment({"DAGSTER_HOME": str(home)}):
        instance = open_instance()
        try:
            assert isinstance(instance.schedule_storage, SqliteScheduleStorageCreatedOnce)
        finally:
            instance.dispose()
    assert (home / "schedules" / "schedules.db").exists() and (home / LOCK_FILE_NAME).exists()


ONE_RUN_PER_DAY = [{"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]


def test_the_shipped_instance_queues_runs_and_allows_one_run_per_day_at_a_time(tmp_path: Path) -> None:
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster._utils.tags import TagConcurrencyLimitsCounter

    home = tmp_path / "dagster_home"
    with temporary_environment({"DAGSTER_HOME": str(home)}):
        instance = open_instance()  # the shipped dagster.yaml
        try:
            assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
            queue = instance.get_concurrency_config().run_queue_config
            assert queue is not None and list(queue.tag_concurrency_limits) == ONE_RUN_PER_DAY
            assert instance.get_concurrency_config().pool_config.default_pool_limit == 1  # the duckdb pool

            # What the daemon's queue decides from it: a run in progress for a day (launched by anything,
            # `balances-etl materialize` in its own process included) holds queued runs of that day only.
            in_progress = instance.add_run(dg.DagsterRun(job_name="daily_balances_job", run_id="a" * 36,
                                                         status=dg.DagsterRunStatus.STARTED,
                                                         tags={"dagster/partition": "2026-11-20"}))
            counter = TagConcurrencyLimitsCounter(queue.tag_concurrency_limits, [in_progress])
            same_day = dg.DagsterRun(job_name="daily_balances_job", run_id="b" * 36, tags={"dagster/partition": "2026-11-20"})
            other_day = dg.DagsterRun(job_name="daily_balances_job", run_id="c" * 36, tags={"dagster/partition": "2026-11-19"})
            assert counter.is_blocked(same_day) and not counter.is_blocked(other_day)
        finally:
            instance.dispose()
