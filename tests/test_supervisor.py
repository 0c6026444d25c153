"""`balances-etl dev` under a supervisor, with real processes: SIGTERM and SIGHUP stop every Dagster
child as Ctrl-C does, and free the port; plus ChildSupervisor on small scripts, and the systemd units."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from balances_etl.orchestration.processes import ChildSupervisor, exit_status_for, group_alive

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
VENV_BIN = Path(sys.executable).parent
STARTUP_LIMIT_SECONDS = 120  # `dg dev` on a busy 2-core machine: about 10 s alone
STOP_LIMIT_SECONDS = 40  # the supervisor's 30 s grace period, then SIGKILL, with room to spare


# --- processes as /proc sees them ---------------------------------------------------------------------

Identity = tuple[int, str]  # (pid, start time in clock ticks): a reused pid is another process


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()  # state, ppid, pgrp, ..., starttime is field 22 (index 19 here)


def identity(pid: int) -> Identity | None:
    fields = _stat(pid)
    return None if fields is None else (pid, fields[19])


def running(process: Identity) -> bool:
    """Alive and the same process (a zombie is not running: it holds no port and no file)."""
    fields = _stat(process[0])
    return fields is not None and fields[19] == process[1] and fields[0] not in ("Z", "X")


def descendants(root: int) -> set[Identity]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if (ident := identity(child)) is not None:
                found.add(ident)
                todo.append(child)
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port and a new server could bind it."""
    with socket.socket() as probe:
        probe.settimeout(1)
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as every server does (TIME_WAIT)
        try:
            server.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def webserver_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def end(processes: set[Identity]) -> None:
    """Clean up after a failed test: SIGKILL exactly the processes this test started, by pid."""
    for process in processes:
        if running(process):
            try:
                os.kill(process[0], signal.SIGKILL)
            except ProcessLookupError:
                pass


# --- `balances-etl dev`, for real -----------------------------------------------------------------------


@pytest.fixture
def dev_environment(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("NOAH_", "BALANCES_ETL_", "DAGSTER_"))}
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    return env | {
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "BALANCES_ETL_DATA_DIR": str(tmp_path / "data"),
        # Yesterday only: the catch-up sensor may launch a run of it, so a run worker may be in the group too.
        "BALANCES_ETL_START_DATE": yesterday.isoformat(),
        "PYTHONUNBUFFERED": "1",
    }


def start_dev(tmp_path: Path, env: dict[str, str], port: int) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "dev.log"
    cli = subprocess.Popen([str(VENV_BIN / "balances-etl"), "dev", "--port", str(port)], cwd=tmp_path, env=env,
                           stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return cli, log


def wait_until_serving(cli: subprocess.Popen[bytes], port: int, log: Path, seen: set[Identity]) -> None:
    deadline = time.monotonic() + STARTUP_LIMIT_SECONDS
    while not webserver_answers(port):
        seen |= descendants(cli.pid)
        if cli.poll() is not None:
            pytest.fail(f"balances-etl dev exited with {cli.returncode} before serving:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"the Dagster UI did not answer on port {port} within {STARTUP_LIMIT_SECONDS} s:\n"
                        f"{log.read_text()[-3000:]}")
        time.sleep(0.5)
    seen |= descendants(cli.pid)


def stop_and_check(tmp_path: Path, dev_environment: dict[str, str], signum: int) -> None:
    port = free_port()
    cli, log = start_dev(tmp_path, dev_environment, port)
    seen: set[Identity] = set()
    try:
        wait_until_serving(cli, port, log, seen)
        time.sleep(1.0)  # let the daemon start its threads and the sensors their first ticks
        seen |= descendants(cli.pid)
        names = " | ".join(command_line(pid) for pid, _ in sorted(seen))
        assert "dagster_webserver" in names and "dagster._daemon" in names, names

        stopped_at = time.monotonic()
        cli.send_signal(signum)
        try:
            status = cli.wait(timeout=STOP_LIMIT_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"balances-etl dev still running {STOP_LIMIT_SECONDS} s after {signal.Signals(signum).name}")
        took = time.monotonic() - stopped_at
        left = {process for process in seen if running(process)}
        assert not left, f"still running after the CLI exited: {[command_line(pid) for pid, _ in left]}"
        assert port_free(port), f"port {port} still taken after {signal.Signals(signum).name}"
        assert status == 128 + signum, log.read_text()[-3000:]
        output = log.read_text()
        assert f"{signal.Signals(signum).name} received: stopping the Dagster processes" in output
        assert "Dagster services shut down." in output  # dagster dev's own clean shutdown ran, not a SIGKILL
        assert took < STOP_LIMIT_SECONDS
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        end(seen)


def test_sigterm_stops_dev_and_every_dagster_child_and_frees_the_port(tmp_path: Path, dev_environment):
    stop_and_check(tmp_path, dev_environment, signal.SIGTERM)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT], ids=["SIGHUP", "SIGINT"])
def test_sighup_and_sigint_stop_dev_the_same_way(tmp_path: Path, dev_environment, signum):
    stop_and_check(tmp_path, dev_environment, signum)


def test_dev_refuses_a_port_that_is_not_one(tmp_path: Path, dev_environment):
    result = subprocess.run([str(VENV_BIN / "balances-etl"), "dev", "--port", "70000"], cwd=tmp_path,
                            env=dev_environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not a TCP port" in result.stderr


# --- ChildSupervisor on small scripts (fast) ----------------------------------------------------------

# A parent that starts two grandchildren and, like `dagster dev`, stops them when interrupted; each
# prints its pid. STUBBORN=1: the grandchildren ignore SIGINT, so only the supervisor's SIGKILL ends them.
FAMILY = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    stubborn = os.environ.get("STUBBORN") == "1"
    grandchild = ("import signal, time\\n"
                  + ("signal.signal(signal.SIGINT, signal.SIG_IGN)\\n" if stubborn else "")
                  + "print('ready', flush=True)\\n"
                  + "time.sleep(600)")
    kids = [subprocess.Popen([sys.executable, "-c", grandchild], stdout=subprocess.PIPE) for _ in range(2)]
    for k in kids:
        k.stdout.readline()  # its handlers are in place
    print(os.getpid(), *[k.pid for k in kids], flush=True)
    if os.environ.get("EXIT_NOW") == "1":
        os._exit(3)  # crash, leaving the grandchildren behind
    try:
        time.sleep(600)
    except KeyboardInterrupt:
        for k in kids:
            k.send_signal(signal.SIGINT)
        for k in kids:
            try:
                k.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
""")


def supervise_in_subprocess(tmp_path: Path, extra_env: dict[str, str], timeout: float) -> subprocess.Popen[str]:
    """A Python process that runs FAMILY under ChildSupervisor and exits with run()'s status."""
    script = tmp_path / "family.py"
    script.write_text(FAMILY)
    runner = textwrap.dedent(f"""
        import sys
        from balances_etl.orchestration.processes import ChildSupervisor
        with ChildSupervisor(stop_timeout={timeout}) as supervisor:
            sys.exit(supervisor.run([sys.executable, {str(script)!r}]))
    """)
    return subprocess.Popen([sys.executable, "-c", runner], env=os.environ | extra_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture
def family(tmp_path: Path) -> Iterator[list[set[Identity]]]:
    started: list[set[Identity]] = []
    yield started
    for group in started:
        end(group)


def read_family(process: subprocess.Popen[str]) -> set[Identity]:
    assert process.stdout is not None
    pids = [int(p) for p in process.stdout.readline().split()]
    assert len(pids) == 3
    return {ident for pid in pids if (ident := identity(pid)) is not None}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_is_forwarded_to_the_whole_group_and_the_status_is_128_plus_it(tmp_path, family, signum):
    supervisor = supervise_in_subprocess(tmp_path, {}, timeout=20)
    members = read_family(supervisor)
    family.append(members)
    supervisor.send_signal(signum)
    assert supervisor.wait(timeout=60) == 128 + signum  # the stop timeout (20 s) plus room on a busy machine
    assert not [m for m in members if running(m)]
    assert f"{signal.Signals(signum).name} received" in supervisor.stderr.read()


def test_children_that_ignore_the_interrupt_are_killed_after_the_timeout(tmp_path, family):
    supervisor = supervise_in_subprocess(tmp_path, {"STUBBORN": "1"}, timeout=1.5)
    members = read_family(supervisor)
    family.append(members)
    started = time.monotonic()
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=20) == 143
    assert 1.4 <= time.monotonic() - started < 10
    assert not [m for m in members if running(m)]


def test_a_second_signal_kills_the_group_at_once(tmp_path, family):
    supervisor = supervise_in_subprocess(tmp_path, {"STUBBORN": "1"}, timeout=60)
    members = read_family(supervisor)
    family.append(members)
    started = time.monotonic()
    supervisor.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=20) == 143
    assert time.monotonic() - started < 10
    assert not [m for m in members if running(m)]


def test_a_child_that_dies_by_itself_leaves_no_orphans_and_its_status_is_kept(tmp_path, family):
    supervisor = supervise_in_subprocess(tmp_path, {"EXIT_NOW": "1"}, timeout=20)
    members = read_family(supervisor)
    family.append(members)
    assert supervisor.wait(timeout=20) == 3
    assert not [m for m in members if running(m)]


def test_a_signal_before_the_child_starts_starts_nothing_and_the_handlers_are_restored(tmp_path: Path):
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    marker = tmp_path / "started"
    with ChildSupervisor() as supervisor:
        os.kill(os.getpid(), signal.SIGTERM)
        assert supervisor.stopping
        status = supervisor.run([sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    assert status == exit_status_for(signal.SIGTERM) == 143
    assert not marker.exists()
    assert {signum: signal.getsignal(signum) for signum in before} == before


def test_the_child_leads_its_own_process_group(tmp_path):
    with ChildSupervisor() as supervisor:
        code = supervisor.run([sys.executable, "-c", "import os, sys; sys.exit(0 if os.getpgrp() == os.getpid() else 1)"])
    assert code == 0
    assert not group_alive(os.getpid() + 10_000_000)  # no such group


# --- the systemd units --------------------------------------------------------------------------------

UNITS = ["balances-etl-daemon.service", "balances-etl-webserver.service"]


def unit_values(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1].strip() for line in text.splitlines() if line.startswith(f"{key}=")]


@pytest.mark.parametrize("unit", UNITS)
def test_the_unit_runs_a_command_of_the_venv_as_a_dedicated_user_and_stops_cleanly(unit):
    text = (DEPLOY / unit).read_text()
    (exec_start,) = unit_values(text, "ExecStart")
    program, *arguments = exec_start.split()
    assert program.startswith("/opt/balances-etl/.venv/bin/")
    assert (VENV_BIN / Path(program).name).is_file(), f"{Path(program).name} is not installed in the venv"
    workspace = arguments[arguments.index("-w") + 1]
    assert workspace == "/opt/balances-etl/deploy/workspace.yaml" and (DEPLOY / "workspace.yaml").is_file()
    assert unit_values(text, "User") == ["balances-etl"] and unit_values(text, "Group") == ["balances-etl"]
    assert unit_values(text, "Restart") == ["on-failure"]
    assert unit_values(text, "KillSignal") == ["SIGTERM"]
    assert int(unit_values(text, "TimeoutStopSec")[0]) >= 30
    assert unit_values(text, "EnvironmentFile") == ["/etc/balances-etl/balances-etl.env"]
    assert "DAGSTER_HOME=/var/lib/balances-etl/dagster_home" in unit_values(text, "Environment")
    assert unit_values(text, "WorkingDirectory") == ["/var/lib/balances-etl"]
    if "webserver" in unit:
        assert arguments[:4] == ["-h", "127.0.0.1", "-p", "3000"]
    else:
        assert arguments[0] == "run"


def test_the_workspace_names_the_location_dg_dev_uses():
    import tomllib

    import yaml

    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    (entry,) = workspace["load_from"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    assert entry["python_module"] == {"module_name": f"{project['root_module']}.definitions",
                                      "location_name": project["code_location_name"]}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verifies_the_unit(tmp_path: Path, unit):
    """systemd's own parser, on the unit with its paths pointed at this checkout (it checks that
    ExecStart's program exists). An unknown key or a bad value is only a warning: none may be printed."""
    env_file = tmp_path / "balances-etl.env"
    env_file.write_text("NOAH_API_KEY=apikey_sandbox_x\n")
    text = (DEPLOY / unit).read_text()
    text = text.replace("/opt/balances-etl/.venv/bin/", f"{VENV_BIN}/").replace("/opt/balances-etl", str(REPO))
    text = text.replace("/etc/balances-etl/balances-etl.env", str(env_file))
    (tmp_path / unit).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit)], capture_output=True, text=True,
                            timeout=60)
    output = re.sub(r"^.*(Failed to connect|bus|D-Bus).*$\n?", "", result.stdout + result.stderr, flags=re.MULTILINE)
    assert result.returncode == 0 and output.strip() == "", result.stdout + result.stderr
