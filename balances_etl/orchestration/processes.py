"""Which process owns something left behind: this host's name and whether a pid still runs.

Used to clean up after runs that were killed (SIGKILL, OOM) without touching live ones.
"""

from __future__ import annotations

import os
import re
import socket


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
