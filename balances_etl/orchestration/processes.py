"""Processes: which one owns something left behind, and supervising the children of `balances-etl dev`.

``this_host``/``owner_tag``/``left_by_dead_process`` clean up after runs that were killed (SIGKILL,
OOM) without touching live ones. ``ChildSupervisor`` runs `dg dev` in its own process group and stops
that whole group on SIGINT, SIGTERM or SIGHUP, so a supervisor stopping the command never leaves a
webserver holding the port.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def this_host() -> str:
    return socket.gethostname()


def process_alive(pid: int) -> bool:
    """True while a process with this pid exists on this host (a pid of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_tag() -> str:
    """``<host>-<pid>`` of this process, safe in a file name: names what a run leaves behind."""
    return f"{re.sub(r'[^A-Za-z0-9.]', '_', this_host())}-{os.getpid()}"


def left_by_dead_process(tag: str) -> bool:
    """Whether ``tag`` (an :func:`owner_tag`) names a process of this host that is gone."""
    host, _, pid = tag.rpartition("-")
    return host == owner_tag().rpartition("-")[0] and pid.isdigit() and not process_alive(int(pid))


# --- supervising long-running children (`balances-etl dev`) ------------------------------------------

# What a supervisor (systemd, a container runtime, a closing terminal, Ctrl-C) sends to stop us.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# How long the children get to shut down after the interrupt before their whole group is killed.
# `dagster dev` stops its webserver and daemon in a few seconds; a hung one must not hold port 3000.
DEFAULT_STOP_TIMEOUT_SECONDS = 30.0
_POLL_SECONDS = 0.2


def exit_status_for(signum: int) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number (130, 143, 129)."""
    return 128 + int(signum)


def group_members(pgid: int) -> list[int] | None:
    """The live processes of process group ``pgid`` (zombies left out); None where /proc cannot tell."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state, ppid, pgrp, ...
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def group_alive(pgid: int) -> bool:
    """True while any process of the process group ``pgid`` is alive.

    A zombie does not count: it holds no port and no file, and an orphan's zombie lingers where the
    init process does not reap (some containers' PID 1). Without /proc, any member counts.
    """
    members = group_members(pgid)
    if members is not None:
        return bool(members)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _to_stderr(text: str) -> None:
    """Straight to fd 2: called from a signal handler, which may interrupt a print on sys.stderr."""
    try:
        os.write(2, f"{text}\n".encode())
    except OSError:
        pass


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class ChildSupervisor:
    """Run one command as a child in its own process group and take its whole group down with us.

    ``with ChildSupervisor() as supervisor: ... return supervisor.run(command, env=env)``. From
    ``__enter__`` on, SIGINT, SIGTERM and SIGHUP no longer end this process: the first one is
    forwarded to the child's group as SIGINT (what Ctrl-C in a terminal sends to a foreground group,
    and what Dagster's processes shut down cleanly on), the group gets ``stop_timeout`` seconds to
    exit, then every process still in it is killed (SIGKILL); a second signal kills it at once.
    :meth:`run` returns the conventional status 128 + the signal's number (143 for SIGTERM, 129 for
    SIGHUP, 130 for SIGINT), or the child's own exit status when it ended by itself (its group is
    cleaned up the same way, so a crashed `dg dev` leaves no webserver behind).

    Because the child leads its own group, it and everything it starts (`dagster dev`'s webserver,
    daemon, code servers and run workers, none of which leave the group) can be signalled together,
    and nothing in the group sees a signal meant for this process alone.
    """

    def __init__(self, stop_timeout: float = DEFAULT_STOP_TIMEOUT_SECONDS,
                 announce: Callable[[str], None] | None = None) -> None:
        self.stop_timeout = stop_timeout
        self.received: list[int] = []
        self._announce = announce or _to_stderr
        self._pgid: int | None = None
        self._stop_deadline: float | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> ChildSupervisor:
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pgid is not None and group_alive(self._pgid):  # an exception in run(): never leave children
            self._stop_group(self._pgid)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    @property
    def stopping(self) -> bool:
        return bool(self.received)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.received.append(signum)
        if len(self.received) == 1:
            self._stop_deadline = time.monotonic() + self.stop_timeout
            if self._pgid is not None:
                self._announce(f"{signal.Signals(signum).name} received: stopping the Dagster processes "
                               f"(at most {self.stop_timeout:g} s)")
                _signal_group(self._pgid, signal.SIGINT)
        elif self._pgid is not None:
            self._announce(f"{signal.Signals(signum).name} received again: killing the Dagster processes")
            _signal_group(self._pgid, signal.SIGKILL)

    def run(self, command: Sequence[str], *, env: Mapping[str, str] | None = None) -> int:
        """Start ``command`` in a new process group; return when it and every process of its group are gone."""
        if self.stopping:  # a signal arrived before anything was started
            return exit_status_for(self.received[0])
        # stdin from /dev/null: outside the terminal's foreground group a read would stop the child (SIGTTIN)
        child = subprocess.Popen(list(command), env=env, process_group=0, stdin=subprocess.DEVNULL)
        self._pgid = child.pid
        if self.stopping:  # arrived between Popen and now: the handler did not know the group yet
            _signal_group(child.pid, signal.SIGINT)
        code = self._wait_child(child)
        self._stop_group(child.pid)
        return exit_status_for(self.received[0]) if self.stopping else code

    def _wait_child(self, child: subprocess.Popen[bytes]) -> int:
        while True:
            try:
                return child.wait(timeout=_POLL_SECONDS)
            except subprocess.TimeoutExpired:
                if self._stop_deadline is not None and time.monotonic() >= self._stop_deadline:
                    self._announce(f"the Dagster processes did not stop within {self.stop_timeout:g} s: killing them")
                    _signal_group(child.pid, signal.SIGKILL)
                    return child.wait()

    def _stop_group(self, pgid: int) -> None:
        """Whatever the child left in its group: interrupt, wait (the rest of) the timeout, kill."""
        if not group_alive(pgid):
            return
        if self._stop_deadline is None:  # the child ended by itself: its group gets the whole timeout
            self._stop_deadline = time.monotonic() + self.stop_timeout
        _signal_group(pgid, signal.SIGINT)
        while group_alive(pgid) and time.monotonic() < self._stop_deadline:
            time.sleep(_POLL_SECONDS / 4)
        if group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
            kill_deadline = time.monotonic() + 5.0
            while group_alive(pgid) and time.monotonic() < kill_deadline:
                time.sleep(_POLL_SECONDS / 4)
