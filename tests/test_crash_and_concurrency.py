"""Crashes, concurrent runs, an analyst holding the warehouse, a full disk: nothing half-written, nothing lost.

* SIGKILL of a real ``balances-etl materialize`` process at precise points (during the fetch; after
  the raw landing; with the new Parquet partition written under its temporary name and after it
  was renamed; inside the DuckDB load transaction after the insert and between two view files;
  after the commit before the checkpoint; with the analysts' copy written under its temporary name
  and after it was published) and at many random instants. The child pauses at a point by wrapping
  one library function (``pipeline_support.PAUSE_SCRIPT``), tells the test with a mark file, and is
  killed there. Afterwards every Parquet file reads with the schema, every raw landing is whole,
  the warehouse opens and the day holds exactly the old or the new version (never a mix), and a
  re-run completes with the new version exactly.
* Several runs at once, same day and different days, through ``balances-etl materialize`` (in
  process) and through Dagster's multiprocess executor (``dagster job execute`` and ``dagster asset
  materialize``): every run succeeds, every day is there exactly once.
* An analyst's read-only connection held across a run and across a backfill, while the analyst keeps
  opening fresh connections: no error, never a partial day, the held connection keeps its snapshot.
* A full disk (a small tmpfs; ENOSPC at every stage: landing, Parquet, DuckDB commit, publishing
  the analysts' copy), a read-only data directory, and a file-size limit (RLIMIT_FSIZE): a clear
  error, nothing half-published, and a re-run after space is freed completes.

After each scenario everything written is scanned for secrets (see test_secrets_everywhere.py).
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from balances_etl.emulator import Fault, FaultKind
from balances_etl.domain.names import Orchestration
from balances_etl.selftest import taken_after
from balances_etl.storage.parquet import partition_path
from pipeline_support import (
    PAUSE_STAGES,
    Child,
    Pipeline,
    assert_nothing_half_written,
    day_rows,
    no_secrets,
    parquet_day_rows,
    served_rows,
    spawn,
    spawn_paused,
    wait_for,
    wired_pipeline,
    yesterday,
)

CLI = ["-m", "balances_etl.cli"]


@pytest.fixture
def pipeline(tmp_path: Path, p384_keypair: tuple[bytes, bytes]) -> Iterator[Pipeline]:
    with wired_pipeline(tmp_path, p384_keypair) as installation:
        yield installation


def serve(pipeline: Pipeline, day: dt.date, count: int, seed: int = 7) -> list[dict[str, object]]:
    """Make the emulator serve ``count`` generated balances for ``day``, verbatim; returns them."""
    pipeline.sandbox.configure(simulated_date=day, items=None, item_count=count, seed=seed)
    items = pipeline.sandbox.expected_items()
    pipeline.sandbox.configure(items=items)
    return items  # type: ignore[return-value]


def materialize(pipeline: Pipeline, day: dt.date, *extra: str) -> Child:
    child = spawn(pipeline, [*CLI, "materialize", "--date", day.isoformat(), *extra], name=f"materialize-{day}")
    child.process.wait(timeout=300)
    return child


def assert_ok(child: Child) -> None:
    assert child.process.returncode == 0, child.stderr.read_text(errors="replace")[-3000:]


def assert_unfinished_runs_are_closed(pipeline: Pipeline) -> None:
    """No run shows as running forever, no DuckDB pool slot stays claimed."""
    unfinished = [run.run_id for run in pipeline.instance.get_runs() if not run.is_finished]
    assert unfinished == []
    info = pipeline.instance.event_log_storage.get_concurrency_info(Orchestration.DUCKDB_POOL)
    assert info.claimed_slots == [] and info.pending_steps == []


# --- SIGKILL ------------------------------------------------------------------------------------

STAGES = ("during-fetch", *PAUSE_STAGES)


@pytest.mark.parametrize(
    "stage",
    # Default suite: a kill before the run holds the DuckDB pool and one inside the load transaction.
    [pytest.param(s, marks=() if s in ("after-landing", "reconciliation-rows-stored") else pytest.mark.slow) for s in STAGES],
)
def test_sigkill_at_a_precise_point_leaves_everything_whole_and_a_rerun_completes(pipeline: Pipeline, stage: str) -> None:
    day = yesterday()
    old = serve(pipeline, day, 3)
    first = materialize(pipeline, day)
    assert_ok(first)
    new = serve(pipeline, day, 250)  # three pages of 100

    if stage == "during-fetch":
        pipeline.sandbox.add_fault(Fault(kind=FaultKind.SLOW, page=2, delay_seconds=120))
        killed = spawn(pipeline, [*CLI, "materialize", "--date", day.isoformat()], name="killed")
        wait_for(lambda: any(r.page == 2 for r in pipeline.sandbox.wire), killed, "the request for page 2")
    else:
        killed, mark = spawn_paused(pipeline, stage, "materialize", "--date", day.isoformat())
        wait_for(mark.exists, killed, f"the pause at {stage}")
    killed.kill()
    pipeline.sandbox.clear_faults()

    assert_nothing_half_written(pipeline, {day: [served_rows(old), served_rows(new)]})
    rerun = materialize(pipeline, day)
    assert_ok(rerun)
    assert sorted(day_rows(pipeline, day)) == sorted(served_rows(new))
    assert parquet_day_rows(pipeline, day) == sorted(served_rows(new))
    assert_unfinished_runs_are_closed(pipeline)
    assert no_secrets(pipeline, {**first.output(), **killed.output(), **rerun.output()}) == []


def test_a_run_whose_process_died_before_starting_it_is_failed_by_the_next_run(pipeline: Pipeline) -> None:
    """A kill between Dagster creating the run and starting it leaves it NOT_STARTED, not running."""
    from balances_etl.definitions import load_definitions

    defs = load_definitions()
    from balances_etl.orchestration.processes import this_host
    from balances_etl.orchestration.runner import HOST_TAG, PID_TAG

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = pipeline.instance.create_run_for_job(
        defs.resolve_job_def(Orchestration.DAILY_JOB), tags={HOST_TAG: this_host(), PID_TAG: str(dead.pid)}
    )
    assert orphan.status.value == "NOT_STARTED"
    day = yesterday()
    serve(pipeline, day, 3)
    assert_ok(materialize(pipeline, day))
    assert pipeline.instance.get_run_by_id(orphan.run_id).status.value == "FAILURE"
    assert_unfinished_runs_are_closed(pipeline)


@pytest.mark.slow
def test_sigkill_at_many_random_instants(pipeline: Pipeline) -> None:
    seed = int(os.environ.get("CRASH_SEED", "20261124"))
    rng = random.Random(seed)
    day = yesterday()
    current = serve(pipeline, day, 3)
    started = time.monotonic()
    assert_ok(materialize(pipeline, day))
    full_run = time.monotonic() - started  # how long one run takes here: kills land within it
    outputs: dict[str, str] = {}
    for attempt in range(16):
        new = serve(pipeline, day, rng.randint(1, 1200), seed=attempt)
        instant = rng.uniform(0.0, full_run * 1.2)
        child = spawn(pipeline, [*CLI, "materialize", "--date", day.isoformat()], name=f"random-{attempt}")
        time.sleep(instant)  # where to kill, not an assertion
        child.kill()
        outputs.update(child.output())
        print(f"CRASH_SEED={seed} kill {attempt} at {instant:.3f} s of a {full_run:.2f} s run, {len(new)} items")
        assert_nothing_half_written(pipeline, {day: [served_rows(current), served_rows(new)]})
        rerun = materialize(pipeline, day)
        assert_ok(rerun)
        assert sorted(day_rows(pipeline, day)) == sorted(served_rows(new))
        current = new
    assert_unfinished_runs_are_closed(pipeline)
    assert no_secrets(pipeline, outputs) == []


# --- several runs at once -------------------------------------------------------------------------


def run_config_file(pipeline: Pipeline, day: dt.date) -> Path:
    """Run config for the Dagster CLIs: the emulator's snapshot time for ``day`` (loopback only)."""
    path = pipeline.root / f"run-config-{day}.json"
    path.write_text(json.dumps({"ops": {"observe_noah_day": {"config": {"simulated_now": taken_after(day).isoformat()}}}}))
    return path


def dagster_job_execute(pipeline: Pipeline, day: dt.date) -> Child:
    return spawn(pipeline, ["-m", "dagster", "job", "execute", "-m", "balances_etl.definitions", "-j", "daily_balances_job",
                            "--tags", json.dumps({"dagster/partition": day.isoformat()}),
                            "--config", str(run_config_file(pipeline, day))], name=f"job-execute-{day}")


def dagster_asset_materialize(pipeline: Pipeline, day: dt.date) -> Child:
    return spawn(pipeline, ["-m", "dagster", "asset", "materialize", "-m", "balances_etl.definitions", "--select", "*",
                            "--partition", day.isoformat(), "--config", str(run_config_file(pipeline, day))],
                 name=f"asset-materialize-{day}")


def assert_every_day_exactly_once(pipeline: Pipeline, items: list[dict[str, object]], days: set[dt.date]) -> None:
    for day in days:
        rows = day_rows(pipeline, day)
        assert sorted(rows) == sorted(served_rows(items)), day  # exactly once: no duplicate, none missing
        assert parquet_day_rows(pipeline, day) == sorted(rows)
    counts = pipeline.query("SELECT snapshot_date, count(*) FROM balance_snapshots GROUP BY 1 ORDER BY 1")
    assert counts == [(day, len(items)) for day in sorted(days)]


def used_multiprocess_executor(pipeline: Pipeline) -> int:
    runs = 0
    for run in pipeline.instance.get_runs():
        messages = [entry.user_message for entry in pipeline.instance.all_logs(run.run_id)]
        runs += any("multiprocess executor" in message for message in messages)
    return runs


def test_cli_and_multiprocess_executor_runs_at_once_keep_every_day_exactly_once(pipeline: Pipeline) -> None:
    a = yesterday()
    b, c = a - dt.timedelta(days=1), a - dt.timedelta(days=2)
    items = serve(pipeline, a, 3)
    children = [
        spawn(pipeline, [*CLI, "materialize", "--date", a.isoformat()], name="cli-a"),
        dagster_job_execute(pipeline, a),  # the same day, at the same time, multiprocess executor
        dagster_asset_materialize(pipeline, b),
        spawn(pipeline, [*CLI, "materialize", "--date", c.isoformat(), "--allow-late"], name="cli-c"),
    ]
    for child in children:
        child.process.wait(timeout=600)
    for child in children:
        assert_ok(child)
    assert_every_day_exactly_once(pipeline, items, {a, b, c})
    assert used_multiprocess_executor(pipeline) == 2
    assert_unfinished_runs_are_closed(pipeline)
    assert no_secrets(pipeline, {k: v for child in children for k, v in child.output().items()}) == []


@pytest.mark.slow
def test_many_runs_at_once_same_and_different_days(pipeline: Pipeline) -> None:
    a = yesterday()
    days = [a - dt.timedelta(days=n) for n in range(4)]
    items = serve(pipeline, a, 120)
    children = [
        spawn(pipeline, [*CLI, "materialize", "--date", a.isoformat()], name="cli-a1"),
        spawn(pipeline, [*CLI, "materialize", "--date", a.isoformat()], name="cli-a2"),
        dagster_job_execute(pipeline, a),
        dagster_job_execute(pipeline, days[1]),
        dagster_asset_materialize(pipeline, days[1]),
        dagster_asset_materialize(pipeline, days[2]),
        spawn(pipeline, [*CLI, "materialize", "--date", days[3].isoformat(), "--allow-late"], name="cli-d"),
    ]
    for child in children:
        child.process.wait(timeout=900)
    for child in children:
        assert_ok(child)
    assert_every_day_exactly_once(pipeline, items, set(days))
    assert used_multiprocess_executor(pipeline) == 4
    assert_unfinished_runs_are_closed(pipeline)
    assert no_secrets(pipeline, {k: v for child in children for k, v in child.output().items()}) == []


# --- an analyst holding the warehouse -------------------------------------------------------------

ANALYST = textwrap.dedent(
    """
    import duckdb, json, select, sys
    path, per_day = sys.argv[1], int(sys.argv[2])
    query = "SELECT snapshot_date, count(*) FROM balance_snapshots GROUP BY 1 ORDER BY 1"
    held = duckdb.connect(path, read_only=True)  # the notebook that stays open all day
    first = held.execute(query).fetchall()
    print("ready", flush=True)
    problems, polls, seen = [], 0, set()
    while not select.select([sys.stdin], [], [], 0.02)[0]:
        if held.execute(query).fetchall() != first:
            problems.append("the held connection's view changed")
        fresh = duckdb.connect()  # a new connection sees the newest published file
        fresh.execute(f"ATTACH '{path}' AS w (READ_ONLY)")
        counts = fresh.execute(query.replace("balance_snapshots", "w.balance_snapshots")).fetchall()
        fresh.close()
        problems += [f"{day}: {n} rows, a partial day" for day, n in counts if n != per_day]
        seen.add(len(counts))
        polls += 1
    print(json.dumps({"problems": problems, "polls": polls, "days_seen": sorted(seen), "held_days": len(first)}))
    """
)


def hold_the_warehouse_across(pipeline: Pipeline, days: list[dt.date], per_day: int) -> dict[str, object]:
    analyst = subprocess.Popen(
        [sys.executable, "-c", ANALYST, str(pipeline.warehouse), str(per_day)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert analyst.stdout.readline().strip() == "ready"
        for day in days:
            pipeline.sandbox.configure(simulated_date=day)
            outcome = pipeline.run(day)
            assert outcome.success, outcome.error
        out, err = analyst.communicate("stop\n", timeout=120)
    finally:
        analyst.kill()
    assert analyst.returncode == 0, err
    return json.loads(out)


def test_an_analyst_holding_the_warehouse_through_a_backfill_never_blocks_it_nor_sees_a_partial_day(pipeline: Pipeline) -> None:
    first = yesterday() - dt.timedelta(days=10)
    items = serve(pipeline, first, 3)
    assert pipeline.run(first).success
    backfill = [first + dt.timedelta(days=n) for n in range(1, 5)]
    report = hold_the_warehouse_across(pipeline, backfill, len(items))
    assert report["problems"] == []
    assert report["held_days"] == 1  # the held connection kept the snapshot it opened
    assert report["polls"] > 0
    assert pipeline.query("SELECT count(DISTINCT snapshot_date) FROM balance_snapshots") == [(5,)]


@pytest.mark.slow
def test_an_analyst_holding_the_warehouse_through_a_30_day_backfill(pipeline: Pipeline) -> None:
    first = yesterday() - dt.timedelta(days=40)
    items = serve(pipeline, first, 25)
    assert pipeline.run(first).success
    backfill = [first + dt.timedelta(days=n) for n in range(1, 31)]
    report = hold_the_warehouse_across(pipeline, backfill, len(items))
    assert report["problems"] == []
    assert report["held_days"] == 1
    assert max(report["days_seen"]) == 31  # fresh connections saw the backfill land day by day
    assert pipeline.query("SELECT count(DISTINCT snapshot_date) FROM balance_snapshots") == [(31,)]


# --- a full disk, a read-only data directory, a file-size limit -----------------------------------


@pytest.fixture
def own_filesystem(tmp_path: Path, p384_keypair: tuple[bytes, bytes]) -> Iterator[tuple[Pipeline, bool]]:
    """A pipeline whose data directory is its own 16 MB tmpfs when this process may mount (root).

    Yields (pipeline, mounted); without a mount the data directory is a plain directory.
    """
    data = tmp_path / "data"
    data.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(data)], capture_output=True
    ).returncode == 0
    try:
        with wired_pipeline(tmp_path, p384_keypair) as installation:
            yield installation, mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(data)], check=False)


@pytest.fixture
def small_disk(own_filesystem: tuple[Pipeline, bool]) -> Pipeline:
    pipeline, mounted = own_filesystem
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (not root): the RLIMIT_FSIZE and unwritable-directory tests still run")
    return pipeline


def fill(directory: Path, leave_bytes: int) -> Path:
    """Fill the filesystem of ``directory`` until ``leave_bytes`` remain; returns the filler file."""
    stat = os.statvfs(directory)
    filler = directory / "filler.bin"
    remaining = max(0, stat.f_bavail * stat.f_frsize - leave_bytes)
    chunk = b"\0" * (1 << 20)
    with open(filler, "ab") as handle:
        while remaining > 0:
            remaining -= handle.write(chunk[: min(len(chunk), remaining)])
    return filler


# Where the disk fills up: the function about to write, and the Dagster step that then fails.
FULL_DISK_STAGES = {
    "raw-landing": ("balances_etl.storage.raw", "write_file_starting_writeback", "observe_noah_day"),
    "parquet-write": ("balances_etl.storage.parquet", "PartitionWriter.write", "observe_noah_day"),
    "duckdb-load": ("balances_etl.storage.warehouse", "_write", "balances__warehouse_table"),
    "publishing-the-analysts-copy": ("balances_etl.storage.warehouse", "clone_file", "balances__warehouse_table"),
}
LEFT_FREE = 64 << 10  # a write starts, then runs out of space half-way


@pytest.mark.parametrize("stage", list(FULL_DISK_STAGES))
def test_a_full_disk_fails_cleanly_and_a_rerun_after_freeing_space_completes(
    small_disk: Pipeline, stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = small_disk
    earlier, day = yesterday() - dt.timedelta(days=5), yesterday() - dt.timedelta(days=4)
    old = serve(pipeline, earlier, 3)
    assert pipeline.run(earlier).success
    earlier_parquet = partition_path(pipeline.data_dir, earlier).read_bytes()
    new = serve(pipeline, day, 1500)

    module_name, function, step = FULL_DISK_STAGES[stage]
    owner = importlib.import_module(module_name)
    *owner_path, function = function.split(".")
    for name in owner_path:  # a method: patched on its class
        owner = getattr(owner, name)
    original = getattr(owner, function)
    fillers: list[Path] = []

    def disk_fills_up_first(*args: object, **kwargs: object) -> object:
        if not fillers:
            fillers.append(fill(pipeline.data_dir, LEFT_FREE))
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, function, disk_fills_up_first)
    outcome = pipeline.run(day)
    monkeypatch.undo()
    for filler in fillers:
        filler.unlink()

    assert fillers, f"the run never reached {stage}"
    assert not outcome.success
    assert outcome.error.startswith(f"{step}: ") and "No space left on device" in outcome.error, outcome.error
    assert "Traceback" not in outcome.error
    assert not re.search(r"(\w+): \1:", outcome.error), outcome.error  # the error's class is named once
    assert_nothing_half_written(pipeline, {earlier: [served_rows(old)], day: [set(), served_rows(new)]})
    assert day_rows(pipeline, day) == []  # the warehouse never got the day, let alone half of it
    assert partition_path(pipeline.data_dir, earlier).read_bytes() == earlier_parquet
    rerun = pipeline.run(day)
    assert rerun.success, rerun.error
    assert sorted(day_rows(pipeline, day)) == sorted(served_rows(new))
    assert sorted(day_rows(pipeline, earlier)) == sorted(served_rows(old))
    assert no_secrets(pipeline, {"errors": outcome.error}) == []


def test_a_full_disk_through_the_cli_is_one_clear_message(small_disk: Pipeline) -> None:
    pipeline = small_disk
    day = yesterday()
    serve(pipeline, day, 3)
    filler = fill(pipeline.data_dir, 0)
    failed = materialize(pipeline, day)
    filler.unlink()
    assert failed.process.returncode == 1
    stderr = failed.stderr.read_text()
    assert "No space left on device" in stderr and "Traceback" not in stderr
    assert_ok(materialize(pipeline, day))
    assert no_secrets(pipeline, failed.output()) == []


def test_an_unwritable_data_directory_fails_cleanly_and_changes_nothing(own_filesystem: tuple[Pipeline, bool]) -> None:
    """Root: the data directory's filesystem remounted read-only. Otherwise: its directories chmod 0555."""
    pipeline, mounted = own_filesystem
    earlier, day = yesterday() - dt.timedelta(days=3), yesterday() - dt.timedelta(days=2)
    old = serve(pipeline, earlier, 3)
    assert pipeline.run(earlier).success
    before = {p: p.stat().st_mtime_ns for p in pipeline.data_dir.rglob("*") if p.is_file()}
    new = serve(pipeline, day, 3)
    directories = [pipeline.data_dir, *(p for p in pipeline.data_dir.rglob("*") if p.is_dir())]
    if mounted:
        subprocess.run(["mount", "-o", "remount,ro", str(pipeline.data_dir)], check=True)
    else:
        if os.geteuid() == 0:
            pytest.skip("root without mount: permission bits do not bind root")
        for directory in directories:
            directory.chmod(0o555)
    try:
        outcome = pipeline.run(day)
    finally:
        if mounted:
            subprocess.run(["mount", "-o", "remount,rw", str(pipeline.data_dir)], check=True)
        else:
            for directory in directories:
                directory.chmod(0o755)
    assert not outcome.success
    assert "Read-only file system" in outcome.error or "Permission denied" in outcome.error, outcome.error
    assert "Traceback" not in outcome.error
    assert {p: p.stat().st_mtime_ns for p in pipeline.data_dir.rglob("*") if p.is_file()} == before
    assert_nothing_half_written(pipeline, {earlier: [served_rows(old)], day: [set()]})
    assert pipeline.run(day).success
    assert sorted(day_rows(pipeline, day)) == sorted(served_rows(new))


def _limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow
def test_a_file_size_limit_fails_cleanly_and_a_rerun_completes(pipeline: Pipeline) -> None:
    """Without root: RLIMIT_FSIZE in the child makes the warehouse grow past what it may write."""
    earlier, day = yesterday() - dt.timedelta(days=1), yesterday()
    old = serve(pipeline, earlier, 3)
    assert_ok(materialize(pipeline, earlier, "--allow-late"))
    new = serve(pipeline, day, 6000)
    limit = 1_000_000  # above every Dagster file of this young installation, below the grown writer WAL
    result = subprocess.run(
        [sys.executable, *CLI, "materialize", "--date", day.isoformat()],
        cwd=pipeline.root, env={**os.environ, **pipeline.env()}, capture_output=True, text=True, timeout=300,
        preexec_fn=lambda: _limit_file_size(limit),
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "File too large" in result.stderr and "Traceback" not in result.stderr
    assert_nothing_half_written(pipeline, {earlier: [served_rows(old)], day: [set(), served_rows(new)]})
    assert day_rows(pipeline, day) == []
    assert_ok(materialize(pipeline, day))
    assert sorted(day_rows(pipeline, day)) == sorted(served_rows(new))
