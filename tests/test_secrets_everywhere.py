"""No credential in anything the project writes: files, Dagster storage, events and metadata, output.

The secrets are the API key, the private signing key (the PEM, each of its base64 lines, the body
joined, the private scalar in decimal and hex) and every JWT the emulator received as
``Api-Signature`` (``RecordingSandbox`` keeps them: the whole token, its signature segment and a
window of it), plus anything shaped like a JWT (``eyJ...\\.eyJ...\\.``). The scan reads every byte
of the data directory and the Dagster home (sqlite run, event and schedule storage with their WAL
files, compute logs), every event of every Dagster run back through the instance (metadata
included) and the captured stdout/stderr of each process.

The fault matrix and the crash and concurrency tests scan after every scenario too; this module
adds the runs most likely to leak (``--verbose`` with Dagster's DEBUG log and stack traces, a NOAH
that echoes the key back, the multiprocess executor's compute logs) and proves the scanner finds a
secret wherever one is planted, so "zero hits" means something.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from balances_etl.emulator import Fault, FaultKind
from balances_etl.selftest import taken_after
from pipeline_support import Child, Pipeline, no_secrets, spawn, wired_pipeline, yesterday

CLI = ["-m", "balances_etl.cli"]


@pytest.fixture
def pipeline(tmp_path: Path, p384_keypair: tuple[bytes, bytes]) -> Iterator[Pipeline]:
    with wired_pipeline(tmp_path, p384_keypair) as installation:
        yield installation


def run_cli(pipeline: Pipeline, *args: str) -> Child:
    child = spawn(pipeline, [*CLI, *args], name=args[0])
    child.process.wait(timeout=300)
    return child


def test_verbose_cli_runs_that_fail_in_every_way_leave_no_secret_anywhere(pipeline: Pipeline) -> None:
    day = yesterday()
    sandbox = pipeline.sandbox
    sandbox.configure(simulated_date=day, item_count=250)
    outputs: dict[str, str] = {}
    scenarios = [
        ("success", [], 0),
        # A NOAH (or a proxy) that echoes the credential back in its error body.
        ("echoed key", [Fault(kind=FaultKind.STATUS, status=401, error_type="Unauthorized",
                              detail=f"Invalid API key {sandbox.api_key}", times=None)], 1),
        ("persistent 503", [Fault(kind=FaultKind.STATUS, page=2, status=503, times=None)], 1),
        ("bad item", [Fault(kind=FaultKind.WRONG_TYPE, page=3, field="Total", value=1.5)], 1),
        ("token cycle", [Fault(kind=FaultKind.TOKEN_CYCLE, page=2, times=None)], 1),
        ("html 502 then success", [Fault(kind=FaultKind.NON_JSON_ERROR, page=1, times=2)], 0),
    ]
    for name, faults, exit_code in scenarios:
        sandbox.clear_faults()
        for fault in faults:
            sandbox.add_fault(fault)
        child = run_cli(pipeline, "materialize", "--date", day.isoformat(), "--verbose")
        assert child.process.returncode == exit_code, (name, child.stderr.read_text()[-2000:])
        outputs.update({f"{name}: {k}": v for k, v in child.output().items()})
    assert "[REDACTED]" in outputs[next(k for k in outputs if k.startswith("echoed key: stderr"))]
    assert len(sandbox.signatures) >= 20  # the exact tokens searched for are many, all different
    assert len(set(sandbox.signatures)) == len(sandbox.signatures)
    assert no_secrets(pipeline, outputs) == []


def test_multiprocess_executor_compute_logs_and_events_hold_no_secret(pipeline: Pipeline) -> None:
    day = yesterday() - dt.timedelta(days=1)
    pipeline.sandbox.configure(simulated_date=day, item_count=3)
    pipeline.sandbox.add_fault(Fault(kind=FaultKind.STATUS, status=403, error_type="Forbidden",
                                     detail=f"key {pipeline.sandbox.api_key} is disabled", times=None))
    config = pipeline.root / "run-config.json"
    config.write_text(json.dumps({"ops": {"observe_noah_day": {"config": {"simulated_now": taken_after(day).isoformat()}}}}))
    child = spawn(pipeline, ["-m", "dagster", "job", "execute", "-m", "balances_etl.definitions", "-j", "daily_balances_job",
                             "--tags", json.dumps({"dagster/partition": day.isoformat()}), "--config", str(config)])
    child.process.wait(timeout=300)
    assert child.process.returncode != 0
    compute_logs = [p for p in pipeline.dagster_home.glob("storage/*/compute_logs/*") if p.stat().st_size]
    assert compute_logs, "the multiprocess executor captured no compute log to scan"
    events = [e for run in pipeline.instance.get_runs() for e in pipeline.instance.all_logs(run.run_id)]
    assert any("HTTP 403 Forbidden" in dg.serialize_value(e) for e in events)  # the failure is recorded, with its cause
    assert no_secrets(pipeline, child.output()) == []


# --- the scanner finds what is planted ------------------------------------------------------------


@pytest.fixture
def ran_once(pipeline: Pipeline) -> Pipeline:
    day = yesterday()
    pipeline.sandbox.configure(simulated_date=day)
    assert pipeline.run(day).success
    assert no_secrets(pipeline) == []
    return pipeline


def test_the_scan_finds_the_api_key_in_a_data_file(ran_once: Pipeline) -> None:
    (ran_once.data_dir / "raw" / "notes.txt").write_text(f"debug: {ran_once.sandbox.api_key}\n")
    hits = no_secrets(ran_once)
    assert [(h.secret, Path(h.where).name) for h in hits] == [("API key", "notes.txt")]


def test_the_scan_finds_a_private_key_line_inside_a_sqlite_database(ran_once: Pipeline) -> None:
    line = ran_once.private_pem.decode().splitlines()[2]
    with sqlite3.connect(ran_once.dagster_home / "extra.db") as con:
        con.execute("CREATE TABLE t (v TEXT)")
        con.execute("INSERT INTO t VALUES (?)", [f"x{line}y"])
    hits = no_secrets(ran_once)
    assert {h.secret for h in hits} == {"private key (PEM line 2)"}


def test_the_scan_finds_a_jwt_and_part_of_one_in_dagster_events(ran_once: Pipeline) -> None:
    token = ran_once.sandbox.signatures[-1]
    run = ran_once.instance.get_runs()[0]
    ran_once.instance.report_engine_event(f"signature segment {token.rsplit('.', 1)[1][10:60]}", run)
    ran_once.instance.report_engine_event(f"sent {token}", run)
    hits = no_secrets(ran_once)
    where = {h.where for h in hits}
    assert f"Dagster run {run.run_id}" in where
    assert {"a JWT sent as Api-Signature", "part of a JWT's signature", "JWT-shaped text (eyJ...eyJ...)"} <= {h.secret for h in hits}


def test_the_scan_finds_any_jwt_shaped_text_and_the_key_scalar_in_output(ran_once: Pipeline) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    foreign = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"  # not one of ours: still a leak
    scalar = load_pem_private_key(ran_once.private_pem, password=None).private_numbers().private_value
    hits = no_secrets(ran_once, {"stderr": f"token={foreign}", "stdout": f"d={scalar:x}"})
    assert [(h.secret, h.where) for h in hits] == [
        ("JWT-shaped text (eyJ...eyJ...)", "stderr"), ("private key (scalar, hex)", "stdout")
    ]
