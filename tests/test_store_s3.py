"""BALANCES_ETL_STORE_URL=s3://...: the daily snapshot against a real S3 server (SeaweedFS on loopback)
keeps the on-disk guarantees: whole objects or none, raw never overwritten, a re-run replaces the
day, a killed run leaves no object under a final key, clear failures, and no secret anywhere."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pyarrow.fs as pafs
import pytest

from balances_etl.noah import NoahClient, NoahConfig
from balances_etl.pipeline.snapshot import NoahDaySource, take_day_snapshot
from balances_etl.settings import PACKAGED_SQL_DIR, SettingsError
from balances_etl.storage.raw import RawLanding
from balances_etl.storage.store import StoreError, object_store
from balances_etl.storage.warehouse import load_partition, rebuild_from_parquet
from s3server import READ_ONLY_KEY, S3Server, free_port, start_s3_server

DAY = dt.date(2026, 11, 20)
NOW = dt.datetime(2026, 11, 21, 0, 10, tzinfo=dt.UTC)
LATENESS = dt.timedelta(hours=36)
PARQUET_KEY = f"parquet/balances/snapshot_date={DAY}/data.parquet"


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    yield from start_s3_server(tmp_path_factory.mktemp("s3"))


@pytest.fixture
def store_url(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket, and this process's environment pointing the store at a prefix in it."""
    url = f"s3://{s3.create_bucket()}/etl/prod"
    for name, value in s3.env(url).items():
        monkeypatch.setenv(name, value)
    return url


def objects(s3: S3Server, url: str) -> dict[str, bytes]:
    """Every object under the store's prefix, by key relative to it."""
    root = url.removeprefix("s3://")
    fs = s3.filesystem()
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    found = {}
    for info in infos:
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as source:
                found[info.path.removeprefix(root + "/")] = source.read()
    return found


def take(sandbox, private_pem: bytes, data_dir: Path, now: dt.datetime = NOW, run_id: str = "s3run-0001"):
    config = NoahConfig.from_env({"NOAH_API_KEY": sandbox.api_key, "NOAH_BASE_URL": sandbox.base_url,
                                  "NOAH_SIGNING_KEY": private_pem.decode(), "NOAH_PAGE_SIZE": "2"})
    with NoahClient(config) as client:
        source = NoahDaySource(client, DAY, now, lateness=LATENESS, allow_late=False)
        return take_day_snapshot(source, data_dir, DAY, run_id=run_id)


def test_a_day_lands_and_publishes_whole_objects_the_warehouse_loads(s3, store_url, sandbox, p384_keypair, tmp_path):
    data_dir = tmp_path / "data"
    snapshot = take(sandbox, p384_keypair[0], data_dir)
    stored = objects(s3, store_url)
    landing = f"raw/balances/snapshot_date={DAY}/{snapshot.landing.path.name}"
    assert sorted(stored) == [PARQUET_KEY, f"{landing}/manifest.json", f"{landing}/page-00001.json",
                              f"{landing}/page-00002.json"]
    assert hashlib.sha256(stored[PARQUET_KEY]).hexdigest() == snapshot.published.sha256
    assert stored[f"{landing}/page-00001.json"] == (snapshot.landing.path / "page-00001.json").read_bytes()
    load_partition(data_dir, DAY, PACKAGED_SQL_DIR)
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM balance_snapshots").fetchone() == (3,)
    con.close()


def test_a_rerun_replaces_the_day_and_keeps_every_landing(s3, store_url, sandbox, p384_keypair, tmp_path):
    first = take(sandbox, p384_keypair[0], tmp_path / "data")
    before = objects(s3, store_url)
    second = take(sandbox, p384_keypair[0], tmp_path / "data", NOW + dt.timedelta(minutes=5), run_id="s3run-0002")
    after = objects(s3, store_url)
    assert first.published.sha256 != second.published.sha256  # snapshot_at differs
    assert hashlib.sha256(after[PARQUET_KEY]).hexdigest() == second.published.sha256
    assert {key: value for key, value in after.items() if key.startswith("raw/")} == {
        **{key: value for key, value in before.items() if key.startswith("raw/")},
        **{key: value for key, value in after.items() if second.landing.path.name in key},
    }
    assert len({key.split("/")[3] for key in after if key.startswith("raw/")}) == 2


def test_a_raw_landing_in_the_store_is_never_overwritten(s3, store_url, sandbox, p384_keypair, tmp_path):
    take(sandbox, p384_keypair[0], tmp_path / "data")
    before = objects(s3, store_url)
    with pytest.raises(FileExistsError, match="never overwritten|append-only"):
        RawLanding(tmp_path / "other-machine", DAY, NOW, "s3run-0001")  # no local copy: the store refuses
    assert objects(s3, store_url) == before


CHILD = textwrap.dedent("""
    import datetime as dt, os, signal, sys
    from balances_etl.noah import NoahClient, NoahConfig
    from balances_etl.pipeline.snapshot import NoahDaySource, take_day_snapshot
    from balances_etl.storage.store import ObjectStore
    upload = ObjectStore.put
    def put(self, key, data, *, overwrite):
        if key.endswith(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)  # killed while the object is being uploaded
        upload(self, key, data, overwrite=overwrite)
    ObjectStore.put = put
    with NoahClient(NoahConfig.from_env()) as client:
        now = dt.datetime(2026, 11, 21, 0, 10, tzinfo=dt.UTC)
        source = NoahDaySource(client, dt.date(2026, 11, 20), now, lateness=dt.timedelta(hours=36), allow_late=False)
        take_day_snapshot(source, __import__("pathlib").Path(sys.argv[1]), dt.date(2026, 11, 20), run_id="killedrun-01")
""")


@pytest.mark.parametrize("killed_at", ["data.parquet", "manifest.json"])
def test_a_killed_run_leaves_no_object_under_a_final_key(s3, store_url, sandbox, p384_keypair, tmp_path, killed_at):
    env = {**os.environ, "NOAH_API_KEY": sandbox.api_key, "NOAH_BASE_URL": sandbox.base_url,
           "NOAH_SIGNING_KEY": p384_keypair[0].decode(), "NOAH_PAGE_SIZE": "2"}
    child = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "data"), killed_at], env=env,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == -9, child.stderr
    stored = objects(s3, store_url)
    assert PARQUET_KEY not in stored
    manifests = [key for key in stored if key.endswith("manifest.json")]
    assert manifests == ([] if killed_at == "manifest.json" else manifests)
    assert not list((tmp_path / "data").rglob("*.parquet"))  # nor a local partition a reader could take


def failure(sandbox, p384_keypair, tmp_path) -> str:
    with pytest.raises(StoreError) as failed:
        take(sandbox, p384_keypair[0], tmp_path / "data")
    assert sandbox.requests == []  # refused before NOAH was called
    assert not [path for path in (tmp_path / "data").rglob("*") if path.is_file()]
    return str(failed.value)


def test_wrong_credentials_fail_at_once_naming_the_variables(s3, store_url, sandbox, p384_keypair, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-0123456789")
    message = failure(sandbox, p384_keypair, tmp_path)
    assert "AWS_ACCESS_KEY_ID" in message and "AWS_SECRET_ACCESS_KEY" in message
    assert "not-the-secret-0123456789" not in message


def test_missing_credentials_name_the_variable(s3, store_url, sandbox, p384_keypair, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    assert "AWS_ACCESS_KEY_ID is not set" in failure(sandbox, p384_keypair, tmp_path)


def test_a_missing_bucket_is_named(s3, store_url, sandbox, p384_keypair, tmp_path, monkeypatch):
    monkeypatch.setenv("BALANCES_ETL_STORE_URL", "s3://no-such-bucket-here/etl")
    message = failure(sandbox, p384_keypair, tmp_path)
    assert "bucket 'no-such-bucket-here' does not exist" in message and s3.endpoint in message


def test_an_unreachable_endpoint_is_named(s3, store_url, sandbox, p384_keypair, tmp_path, monkeypatch):
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    message = failure(sandbox, p384_keypair, tmp_path)
    assert f"cannot reach the S3 endpoint {endpoint}" in message and "AWS_ENDPOINT_URL" in message


def test_a_store_refusing_uploads_leaves_nothing_under_a_final_key(s3, store_url, sandbox, p384_keypair, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", READ_ONLY_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.read_only_secret)
    with pytest.raises(Exception) as failed:  # the snapshot fails on the landing's first upload
        take(sandbox, p384_keypair[0], tmp_path / "data")
    assert "refused" in str(failed.value) and store_url.removeprefix("s3://").split("/")[0] in str(failed.value)
    assert s3.read_only_secret not in str(failed.value)
    assert objects(s3, store_url) == {}
    assert not list((tmp_path / "data").rglob("*.parquet")) and not list((tmp_path / "data").rglob("manifest.json"))


def test_no_secret_in_objects_files_logs_or_errors(s3, store_url, sandbox, p384_keypair, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    take(sandbox, p384_keypair[0], tmp_path / "data")
    errors = []
    for name, value in [("AWS_SECRET_ACCESS_KEY", "wrong-secret-abcdef0123"), ("BALANCES_ETL_STORE_URL", "s3://nobucket9/x")]:
        with monkeypatch.context() as patch:
            patch.setenv(name, value)
            with pytest.raises(StoreError) as failed:
                object_store()
            errors.append(f"{failed.value!r} {failed.value.__cause__!r} {failed.value.__context__!r}")
    secrets = [s3.secret_key, "wrong-secret-abcdef0123"]
    haystacks = [*objects(s3, store_url).values(), caplog.text.encode(), *(e.encode() for e in errors)]
    haystacks += [path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()]
    assert [secret for secret in secrets for hay in haystacks if secret.encode() in hay] == []


def test_two_runs_of_a_day_at_once_leave_one_whole_partition_and_both_landings(s3, store_url, sandbox, p384_keypair, tmp_path):
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [pool.submit(take, sandbox, p384_keypair[0], tmp_path / "data", NOW + dt.timedelta(minutes=n),
                            f"s3race-000{n}") for n in (1, 2)]
        published = {run.result().published.sha256 for run in runs}
    stored = objects(s3, store_url)
    assert hashlib.sha256(stored[PARQUET_KEY]).hexdigest() in published
    assert stored[PARQUET_KEY] == (tmp_path / "data" / PARQUET_KEY).read_bytes()  # the working copy agrees
    assert len([key for key in stored if key.endswith("manifest.json")]) == 2


def test_a_new_machine_rebuilds_the_warehouse_from_the_store(s3, store_url, sandbox, p384_keypair, tmp_path):
    snapshot = take(sandbox, p384_keypair[0], tmp_path / "data")
    result = rebuild_from_parquet(tmp_path / "new-machine", PACKAGED_SQL_DIR)
    assert result.rows == 3
    copied = tmp_path / "new-machine" / PARQUET_KEY
    assert hashlib.sha256(copied.read_bytes()).hexdigest() == snapshot.published.sha256


KILLED_UPLOAD = textwrap.dedent("""
    import os, sys, pyarrow.fs as fs
    store = fs.S3FileSystem(access_key=sys.argv[1], secret_key=sys.argv[2], endpoint_override=sys.argv[3], region="us-east-1")
    out = store.open_output_stream(sys.argv[4])
    for part in range(40):
        out.write(os.urandom(1 << 20))
        if part == 12:
            print("parts sent", flush=True)
    out.close()
""")


def test_an_upload_killed_midway_leaves_no_object(s3, store_url):
    """What publishing relies on: pyarrow's multipart upload shows the key only once completed."""
    key = f"{store_url.removeprefix('s3://')}/{PARQUET_KEY}"
    child = subprocess.Popen([sys.executable, "-c", KILLED_UPLOAD, s3.access_key, s3.secret_key, s3.endpoint, key],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "parts sent\n"
    child.kill()
    child.wait()
    assert s3.filesystem().get_file_info(key).type == pafs.FileType.NotFound


def test_a_local_store_url_holds_raw_and_parquet_outside_the_data_dir(sandbox, p384_keypair, tmp_path, monkeypatch):
    monkeypatch.setenv("BALANCES_ETL_STORE_URL", str(tmp_path / "store"))
    snapshot = take(sandbox, p384_keypair[0], tmp_path / "data")
    assert snapshot.published.path == tmp_path / "store" / PARQUET_KEY and snapshot.published.path.is_file()
    assert snapshot.landing.path.parent.parent == tmp_path / "store" / "raw" / "balances"
    assert not (tmp_path / "data" / "raw").exists() and not (tmp_path / "data" / "parquet").exists()


def test_credentials_in_the_store_url_are_refused_without_showing_them(monkeypatch):
    monkeypatch.setenv("BALANCES_ETL_STORE_URL", "s3://AKIDEXAMPLE:hunter2secret@bucket/x")
    with pytest.raises(SettingsError, match="BALANCES_ETL_STORE_URL must be a local path or s3://") as refused:
        object_store()
    assert "hunter2secret" not in str(refused.value)
