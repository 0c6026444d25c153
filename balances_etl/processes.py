"""Which process owns something left behind: this host's name and whether a pid still runs.

Used to clean up after runs that were killed (SIGKILL, OOM) without touching live ones.
"""

from __future__ import annotations

import os
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
