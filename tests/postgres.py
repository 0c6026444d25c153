"""A real PostgreSQL server for the tests: one per test session, a fresh database per test.

``postgres_server`` (session) runs ``initdb`` and ``pg_ctl`` into a new temporary directory: the
server listens on 127.0.0.1 on a free port, its Unix socket stays in that directory, it asks for a
password over TCP (scram-sha-256) and it runs without fsync (a test server: speed, not durability).
As root, PostgreSQL refuses to run, so the server runs as the unprivileged ``nobody`` user (through
``runuser``), which then owns the directory. ``postgres_url`` (per test) creates an empty database
on it and gives its URL, password included. Missing PostgreSQL binaries fail the tests that need
them, with how to install them: CI (``.ci/run``) installs them, so a skip would hide a gap.

Import the fixtures into a test module: ``from postgres import postgres_server, postgres_url``.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# util-linux's, in /usr/sbin: a non-login root shell's PATH may not hold it.
_RUNUSER = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin{os.pathsep}/sbin") or "runuser"

SERVER_USER = "nobody"  # who runs the server when the tests run as root
SUPERUSER = "balances_etl"
MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl) were found neither under /usr/lib/postgresql/*/bin "
    "nor on PATH. The PostgreSQL tests need a real server: install it (Debian/Ubuntu: "
    "`apt-get install -y postgresql`; .ci/run does this before `make test`)."
)


def postgres_bin_dir() -> Path | None:
    """The newest PostgreSQL server's bin directory (Debian's layout first, then PATH)."""
    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.parent.name
        return tuple(int(part) for part in name.split(".") if part.isdigit())

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).resolve().parent if on_path else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PostgresServer:
    bin_dir: Path
    root: Path
    port: int
    password: str
    as_user: str | None  # run the binaries as this user (we are root), else as ourselves

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    def command(self, tool: str, *args: str) -> list[str]:
        argv = [str(self.bin_dir / tool), *args]
        return [_RUNUSER, "-u", self.as_user, "--", *argv] if self.as_user else argv

    def run(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.command(tool, *args), capture_output=True, text=True, timeout=timeout,
                                cwd=self.root, env={**os.environ, "PGPASSWORD": self.password})
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n{tail}")
        return result

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL Dagster's storage takes (driver psycopg2, which dagster-postgres installs)."""
        return f"postgresql+psycopg2://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """An empty database; its URL (with the password)."""
        import psycopg2

        connection = psycopg2.connect(self.url().replace("+psycopg2", ""))  # libpq's own URL form
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.url(name)

    def dump(self, database: str) -> str:
        """Everything in ``database`` as SQL text (pg_dump over the socket: schema and rows)."""
        return self.run("pg_dump", "-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER, database).stdout


def _start(bin_dir: Path) -> PostgresServer:
    as_user = SERVER_USER if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="balances-etl-postgres-"))
    password = secrets.token_hex(16)
    (root / "socket").mkdir()
    (root / "pwfile").write_text(password + "\n")
    if as_user:
        user = pwd.getpwnam(as_user)
        for path in (root, root / "socket", root / "pwfile"):
            os.chown(path, user.pw_uid, user.pw_gid)
    server = PostgresServer(bin_dir, root, _free_port(), password, as_user)
    server.run("initdb", "-D", str(server.data_dir), "-U", SUPERUSER, "--pwfile", str(root / "pwfile"),
               "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync",
               "--no-instructions")
    (root / "pwfile").unlink()
    for attempt in range(3):
        options = (f"-h 127.0.0.1 -p {server.port} -k {server.socket_dir} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=200")
        try:
            server.run("pg_ctl", "-D", str(server.data_dir), "-l", str(root / "server.log"), "-o", options, "-w",
                       "-t", "60", "start")
            return server
        except RuntimeError:  # the free port was taken meanwhile: another one
            if attempt == 2:
                raise
            server.port = _free_port()
            time.sleep(0.2)
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin_dir()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        pytest.fail(MISSING, pytrace=False)
    server = _start(bin_dir)
    try:
        yield server
    finally:
        subprocess.run(server.command("pg_ctl", "-D", str(server.data_dir), "-m", "immediate", "-w", "stop"),
                       capture_output=True, timeout=60, cwd=server.root)
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A new, empty database on the session's server: its URL, password included."""
    return postgres_server.create_database(f"test_{secrets.token_hex(6)}")
