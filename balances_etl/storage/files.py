"""Crash-safe file primitives: a kill at any instant leaves the old file or the new one, never half.

Everything the storage layer publishes goes through ``atomic_replace`` (write a hidden temporary
sibling, fsync, ``os.replace``, fsync the directory) and cross-process writers serialise on
``exclusive_lock``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Linux ioctl number of FICLONE (fcntl.FICLONE exists only from Python 3.12).
_FICLONE = 0x40049409


class LockTimeoutError(TimeoutError):
    """Another process kept the lock longer than the caller was willing to wait."""


def fsync_path(path: Path) -> None:
    """Flush a file's or a directory's data and metadata to disk (a directory: its entries)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs_durable(path: Path) -> None:
    """``mkdir -p`` that also fsyncs the parent of every directory it creates, so they survive a crash."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        fsync_path(directory.parent)


def write_file_durably(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` and fsync it (for files inside a not-yet-published directory)."""
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_file_starting_writeback(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` and start writing it to disk without waiting for it.

    For files written long before they must be durable: the ``fsync_path`` that follows finds
    the bytes on disk already (Linux starts write-back on ``POSIX_FADV_DONTNEED``; elsewhere the
    fsync simply does all the work).
    """
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def temp_sibling(path: Path) -> Path:
    """A unique hidden temporary name next to ``path``; it never matches ``*.parquet``/``*.duckdb`` globs."""
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")


def remove_stale_temps(path: Path) -> None:
    """Delete temporaries of ``path`` left by killed writers; call only while holding the writers' lock."""
    for leftover in path.parent.glob(f".{path.name}.tmp-*"):
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink(missing_ok=True)


@contextmanager
def atomic_replace(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; publish it atomically on success.

    On error the temporary is removed and ``path`` is untouched; a kill leaves at worst a hidden
    temporary that ``remove_stale_temps`` deletes later.
    """
    tmp = temp_sibling(path)
    try:
        yield tmp
        replace_durably(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_durably(tmp: Path, path: Path) -> None:
    """Put the written file ``tmp`` in place of ``path`` in one step, durably (file, then directory)."""
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)


def clone_file(source: Path, target: Path) -> None:
    """Copy ``source`` to the new file ``target``: a reflink clone when the filesystem can, else a copy.

    A reflink shares blocks copy-on-write, O(1) on btrfs/XFS; ext4 and tmpfs copy the bytes.
    """
    with open(source, "rb") as src, open(target, "xb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
            return
        except OSError:
            pass  # not supported here (ext4, tmpfs, cross-device): copy instead
    shutil.copyfile(source, target)  # in-kernel sendfile on Linux


@contextmanager
def exclusive_lock(path: Path, timeout_seconds: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) across processes and threads.

    The kernel releases it when the holder exits or is killed, so no stale lock survives a crash.
    Waits up to ``timeout_seconds``, then raises ``LockTimeoutError`` naming the holder's pid.
    """
    make_dirs_durable(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_seconds
        pause = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    raise LockTimeoutError(
                        f"could not lock {path} within {timeout_seconds:g}s: held by pid {holder}"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.25)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
