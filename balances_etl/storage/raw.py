"""Raw landing: every NOAH page body exactly as received, kept forever for audit and replay.

Layout: ``raw/<endpoint>/snapshot_date=D/taken_at=<UTC compact ts>-<run_id8>/page-00001.json ...
manifest.json`` (``balances``, ``transactions``). A landing is assembled in
``raw/<endpoint>/.staging-<host>-<pid>-<random>/`` while
the pages arrive and renamed into place in one step, so a landing directory either exists complete
(with its manifest) or not at all. Landings are append-only: a second landing never replaces an
earlier one.
Only the fields below are stored; request headers (credentials, signatures) never are.
With an S3 store (:mod:`balances_etl.storage.store`) each landing is also uploaded under the same
key layout, pages first and the manifest last, to keys that must not exist yet: readers take only
landings with a manifest, so a killed upload leaves nothing that passes for a landing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from balances_etl.noah import endpoints
from balances_etl.noah.pages import RawPage
from balances_etl.orchestration.processes import left_by_dead_process, owner_tag
from balances_etl.storage.files import fsync_path, make_dirs_durable, write_file_durably, write_file_starting_writeback
from balances_etl.storage.store import local_root, object_store

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
_RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,}")
_STAGING_PREFIX = ".staging-"


@dataclass(frozen=True)
class RawManifest:
    snapshot_date: date
    taken_at: datetime
    run_id: str
    pages: list[dict[str, Any]]  # per page: file, sha256, query, status, received_at, attempts, ...
    stats: dict[str, Any]


class RawIntegrityError(ValueError):
    """A landed file does not match its manifest (tampered, truncated or incomplete landing)."""


# A landing holds one endpoint's pages, in the folder of the endpoint's name under raw/.
BALANCES = endpoints.BALANCES.name


def raw_root(data_dir: Path, endpoint: str = BALANCES) -> Path:
    return local_root(data_dir) / "raw" / endpoint


def page_file_name(page_number: int) -> str:
    return f"page-{page_number:05d}.json"


def landing_name(taken_at: datetime, run_id: str) -> str:
    """``taken_at=20261120T235959.123456Z-1a2b3c4d``: fixed width, so names sort by time."""
    if taken_at.tzinfo is None:
        raise ValueError(f"taken_at must be timezone-aware, got naive {taken_at!r}")
    if not _RUN_ID_PATTERN.fullmatch(run_id):
        raise ValueError(f"run_id must be at least 8 characters of [A-Za-z0-9_-], got {run_id!r}")
    return f"taken_at={taken_at.astimezone(UTC):%Y%m%dT%H%M%S.%fZ}-{run_id[:8]}"


class RawLanding:
    """One landing being written: pages are added as they arrive, then published in one rename.

    ``add_page`` writes a body into the hidden staging directory and starts its write-back without
    waiting, so ``publish`` (fsync every file, write the manifest, rename into place) finds the
    bytes mostly on disk already. The first ``durable_pages`` (a daily sync's few dozen, whose
    publishing is on the critical path) are instead each written and fsynced on a thread of the
    landing's own while the fetch goes on (fsync waits outside the GIL; in the fetch thread a busy
    disk's 1-3 ms per fsync held up the next request), so a small landing's ``publish`` waits for
    little more than its last page, and raises what a page's write raised. Only each page's
    manifest entry is kept, not its body. As a context manager, a landing left unpublished is
    removed; a killed process leaves its staging directory, which the next landing on this host
    removes.
    """

    def __init__(
        self, data_dir: Path, snapshot_date: date, taken_at: datetime, run_id: str, endpoint: str = BALANCES,
        *, durable_pages: int = 0,
    ) -> None:
        self.snapshot_date, self.taken_at, self.run_id = snapshot_date, taken_at, run_id
        self._day_dir = raw_root(data_dir, endpoint) / f"snapshot_date={snapshot_date.isoformat()}"
        self.path = self._day_dir / landing_name(taken_at, run_id)
        if self.path.exists():
            raise FileExistsError(f"raw landing {self.path} already exists; landings are append-only")
        self._store = object_store()  # checked before anything is fetched or written
        self._key = f"raw/{endpoint}/{self._day_dir.name}/{self.path.name}"
        if self._store is not None and self._store.list(self._key):
            raise FileExistsError(f"raw landing {self._store.describe(self._key)} already exists; landings are append-only")
        remove_abandoned_stagings(data_dir, endpoint)
        self._staging = raw_root(data_dir, endpoint) / f"{_STAGING_PREFIX}{owner_tag()}-{uuid.uuid4().hex[:12]}"
        make_dirs_durable(self._staging)
        self._entries: list[dict[str, object]] = []  # the manifest's, one per page: no bodies held
        self._durable_pages = durable_pages
        # the first durable_pages pages' writes, each made durable on the writer thread
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="landing") if durable_pages else None
        self._writes: list[Future[None]] = []
        self._published = False

    def __enter__(self) -> RawLanding:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)  # no write lands after the staging directory is removed
        if not self._published:
            shutil.rmtree(self._staging, ignore_errors=True)

    def add_page(self, page: RawPage) -> None:
        """Write the next page's body (pages come numbered 1, 2, ...), checked against its sha256."""
        if page.page_number != len(self._entries) + 1:
            raise ValueError(f"page {page.page_number} added after {len(self._entries)} pages: pages come in order")
        _check_hash(page)
        path = self._staging / page_file_name(page.page_number)
        if len(self._entries) < self._durable_pages:
            self._writes.append(self._writer.submit(write_file_durably, path, page.body))
        else:
            write_file_starting_writeback(path, page.body)
        self._entries.append(_manifest_entry(page))

    def publish(self, stats: Mapping[str, object]) -> Path:
        """Make every page durable, write the manifest, upload it (S3 store), move it into place; returns its path."""
        for write in self._writes:
            write.result()  # raises what a write raised
        _fsync_all([self._staging / str(entry["file"]) for entry in self._entries[self._durable_pages:]])
        _write_landing(self._staging, self.snapshot_date, self.taken_at, self.run_id, self._entries, stats)
        if self._store is not None:
            for name in [*(str(entry["file"]) for entry in self._entries), MANIFEST_NAME]:
                self._store.put(f"{self._key}/{name}", (self._staging / name).read_bytes(), overwrite=False)
        make_dirs_durable(self._day_dir)
        os.rename(self._staging, self.path)  # fails if the landing appeared meanwhile: never overwrites one
        self._published = True
        fsync_path(self._day_dir)
        fsync_path(self._staging.parent)
        return self.path


def remove_abandoned_stagings(data_dir: Path, endpoint: str = BALANCES) -> list[Path]:
    """Delete the staging directories of landings whose process on this host is gone; returns them."""
    removed = []
    for staging in raw_root(data_dir, endpoint).glob(f"{_STAGING_PREFIX}*"):
        if left_by_dead_process(staging.name[len(_STAGING_PREFIX):].rsplit("-", 1)[0]):
            shutil.rmtree(staging, ignore_errors=True)
            removed.append(staging)
    return removed


def _manifest_entry(page: RawPage) -> dict[str, object]:
    return {
        "page_number": page.page_number,
        "file": page_file_name(page.page_number),
        "request_path": page.request_path,
        "query": dict(page.query),
        "status": page.status,
        "sha256": page.sha256,
        "bytes": len(page.body),
        "received_at": page.received_at.isoformat(),
        "attempts": page.attempts,
        "elapsed_seconds": page.elapsed_seconds,
    }


def _write_landing(
    staging: Path,
    snapshot_date: date,
    taken_at: datetime,
    run_id: str,
    entries: Sequence[Mapping[str, object]],
    stats: Mapping[str, object],
) -> None:
    """Write the manifest (last) into the unpublished staging directory, whose page files are written."""
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "snapshot_date": snapshot_date.isoformat(),
        "taken_at": taken_at.astimezone(UTC).isoformat(),
        "run_id": run_id,
        "page_count": len(entries),
        "pages": entries,
        "stats": dict(stats),
        "complete": True,
    }
    text = json.dumps(manifest, indent=2, sort_keys=True, default=_json_default)
    write_file_durably(staging / MANIFEST_NAME, text.encode())
    fsync_path(staging)


def _check_hash(page: RawPage) -> None:
    digest = hashlib.sha256(page.body).hexdigest()
    if digest != page.sha256:
        raise RawIntegrityError(f"page {page.page_number}: body sha256 {digest} differs from the client's {page.sha256}")


def _fsync_all(paths: Sequence[Path]) -> None:
    """fsync every file, one after another: their write-back started when they were written, so
    most fsyncs find nothing left to do (1,000 pages: ~0.08 s; fsyncs from a pool of threads were no
    faster and contended for the GIL with the normalize and checks running meanwhile)."""
    for path in paths:
        fsync_path(path)


def _json_default(value: object) -> str:
    """Stats may hold dates and Decimals; store them as exact text rather than failing or rounding."""
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"stats value of type {type(value).__name__} is not JSON-serialisable: {value!r}")


def latest_raw_landing(data_dir: Path, snapshot_date: date, endpoint: str = BALANCES) -> Path | None:
    """The newest complete landing of ``snapshot_date`` (by ``taken_at``), or None if there is none.
    With an S3 store, a newer landing only the store holds (another machine's) is copied here first."""
    day_dir = raw_root(data_dir, endpoint) / f"snapshot_date={snapshot_date.isoformat()}"
    complete = [d for d in day_dir.glob("taken_at=*") if (d / MANIFEST_NAME).is_file()]
    newest = max(complete, key=lambda d: d.name, default=None)
    store = object_store()
    if store is not None:
        key = f"raw/{endpoint}/{day_dir.name}"
        stored = [name for name in store.list(key) if name.startswith("taken_at=")
                  and store.exists(f"{key}/{name}/{MANIFEST_NAME}")]  # a landing without its manifest is none
        if stored and (newest is None or max(stored) > newest.name):
            newest = _copy_landing_from_store(data_dir, endpoint, f"{key}/{max(stored)}", day_dir / max(stored))
    return newest


def landed_dates(data_dir: Path, endpoint: str = BALANCES) -> list[date]:
    """Days with a landing here or (S3) in the store, oldest first; completeness is checked by
    ``latest_raw_landing`` when the day is read."""
    names = {d.name for d in raw_root(data_dir, endpoint).glob("snapshot_date=*")}
    store = object_store()
    if store is not None:
        names |= {name for name in store.list(f"raw/{endpoint}") if name.startswith("snapshot_date=")}
    return sorted(date.fromisoformat(name.removeprefix("snapshot_date=")) for name in names)


def _copy_landing_from_store(data_dir: Path, endpoint: str, key: str, target: Path) -> Path:
    """Download a landing (the manifest's pages, then the manifest) and move it into place in one rename."""
    store = object_store()
    assert store is not None
    staging = raw_root(data_dir, endpoint) / f"{_STAGING_PREFIX}{owner_tag()}-{uuid.uuid4().hex[:12]}"
    make_dirs_durable(staging)
    try:
        manifest = store.read(f"{key}/{MANIFEST_NAME}")
        for entry in json.loads(manifest)["pages"]:
            write_file_durably(staging / entry["file"], store.read(f"{key}/{entry['file']}"))
        write_file_durably(staging / MANIFEST_NAME, manifest)
        make_dirs_durable(target.parent)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_raw_manifest(landing: Path) -> RawManifest:
    """The landing's manifest (what replay needs: when it was taken, the stats passed in, the pages)."""
    path = landing / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    if manifest.get("complete") is not True:
        raise RawIntegrityError(f"{path}: landing is not marked complete")
    return RawManifest(
        snapshot_date=date.fromisoformat(manifest["snapshot_date"]),
        taken_at=datetime.fromisoformat(manifest["taken_at"]),
        run_id=manifest["run_id"],
        pages=sorted(manifest["pages"], key=lambda entry: entry["page_number"]),
        stats=manifest["stats"],
    )


def read_raw_bodies(landing: Path) -> list[bytes]:
    """Page bodies in page order, each verified against the sha256 recorded in the manifest."""
    manifest = read_raw_manifest(landing)
    bodies = []
    for entry in manifest.pages:
        path = landing / entry["file"]
        if not path.is_file():
            raise RawIntegrityError(f"{path}: listed in the manifest but missing")
        body = path.read_bytes()
        digest = hashlib.sha256(body).hexdigest()
        if digest != entry["sha256"]:
            raise RawIntegrityError(f"{path}: sha256 {digest} does not match the manifest's {entry['sha256']}")
        bodies.append(body)
    return bodies
