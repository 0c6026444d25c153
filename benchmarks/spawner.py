"""A small process that starts the measured children, so their peak RSS is their own.

Linux carries a process's resident-memory high-water mark across ``exec``: a child forked from
the benchmark process (which holds a million-row table and the emulator) would report at least
the parent's RSS as its own ``ru_maxrss``. This helper is started first, while the benchmark
process is still small, and forks every measured child from its own ~10 MB. It imports nothing
beyond the standard library.

Protocol (one JSON object per line): request ``{"argv", "env", "cwd", "stdout", "stderr"}``,
answer ``{"wall_seconds", "max_rss_bytes", "user_seconds", "system_seconds", "returncode"}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main() -> int:
    for line in sys.stdin:
        request = json.loads(line)
        with open(request["stdout"], "wb") as out, open(request["stderr"], "wb") as err:
            started = time.perf_counter()
            process = subprocess.Popen(
                request["argv"], env=request["env"], cwd=request["cwd"], stdout=out, stderr=err,
                stdin=subprocess.DEVNULL,
            )
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped already: Popen must not wait
        answer = {
            "wall_seconds": wall,
            "max_rss_bytes": usage.ru_maxrss * 1024,  # KiB on Linux
            "user_seconds": usage.ru_utime,
            "system_seconds": usage.ru_stime,
            "returncode": process.returncode,
        }
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
