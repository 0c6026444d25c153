"""Scanning for secrets: the API key, the private signing key and any JWT, wherever the pipeline wrote.

Nothing the pipeline writes (data directory, Dagster home with its sqlite run and event storage
and compute logs, Dagster events and metadata, captured output and logs, error messages) may
contain one of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

JWT_PATTERN = re.compile(rb"eyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.")
_MIN_NEEDLE = 16  # shorter fragments of a PEM (its last line) could match by chance


@dataclass(frozen=True)
class SecretHit:
    secret: str  # which secret, never the secret itself
    where: str

    def __str__(self) -> str:
        return f"{self.secret} in {self.where}"


def private_key_needles(private_pem: bytes) -> dict[bytes, str]:
    """The private key as it could leak: the PEM, each base64 line, the body joined, the scalar."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    text = private_pem.decode()
    lines = [line for line in text.splitlines() if line and not line.startswith("-----")]
    needles = {text.strip().encode(): "private key PEM", "".join(lines).encode(): "private key (base64 body)"}
    for number, line in enumerate(lines, start=1):
        if len(line) >= _MIN_NEEDLE:
            needles[line.encode()] = f"private key (PEM line {number})"
    scalar = load_pem_private_key(private_pem, password=None).private_numbers().private_value  # type: ignore[union-attr]
    needles[str(scalar).encode()] = "private key (scalar, decimal)"
    needles[f"{scalar:x}".encode()] = "private key (scalar, hex)"
    return needles


def token_needles(tokens: Iterable[str]) -> dict[bytes, str]:
    """Each JWT, its signature segment and a window inside it: a partial leak is still a leak."""
    needles: dict[bytes, str] = {}
    for token in tokens:
        signature = token.rsplit(".", 1)[-1]
        needles[token.encode()] = "a JWT sent as Api-Signature"
        if len(signature) >= _MIN_NEEDLE:
            needles[signature.encode()] = "a JWT's signature segment"
            needles[signature[8:40].encode()] = "part of a JWT's signature"
    return needles


class SecretScanner:
    """Searches what the pipeline wrote for the API key, the private key and JWTs.

    Files are scanned when new or changed since the last scan (sqlite databases and their WALs,
    compute logs, Parquet, DuckDB, raw pages, manifests: every byte, no decoding needed since
    all of them store text as UTF-8); Dagster runs are also read back through the instance
    (every event with its metadata, the run's config and tags), so compression or encoding in
    storage cannot hide anything.
    """

    def __init__(self, roots: Sequence[Path], api_key: str, private_pem: bytes) -> None:
        self.roots = [Path(root) for root in roots]
        self.static: dict[bytes, str] = {api_key.encode(): "API key", **private_key_needles(private_pem)}
        self._seen: dict[Path, tuple[int, int]] = {}
        self.scanned: list[Path] = []  # the files the last scan read: what it covered, for the judge

    def scan(
        self,
        *,
        tokens: Iterable[str] = (),
        texts: Mapping[str, str | None] | None = None,
        instance: dg.DagsterInstance | None = None,
        run_ids: Iterable[str] = (),
        changed_only: bool = True,
    ) -> list[SecretHit]:
        needles = {**self.static, **token_needles(tokens)}
        hits: list[SecretHit] = []
        for where, text in (texts or {}).items():
            if text:
                hits += _search(text.encode("utf-8", "replace"), needles, where)
        self.scanned = self._files(changed_only)
        for path in self.scanned:
            try:
                data = path.read_bytes()
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                continue
            hits += _search(data, needles, str(path))
        if instance is not None:
            for run_id in run_ids:
                hits += _search(_run_text(instance, run_id).encode("utf-8", "replace"), needles, f"Dagster run {run_id}")
        return hits

    def _files(self, changed_only: bool) -> list[Path]:
        files = []
        for root in self.roots:
            if not root.exists():
                continue
            for path in root.rglob("*"):
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                if not path.is_file():
                    continue
                signature = (stat.st_mtime_ns, stat.st_size)
                if changed_only and self._seen.get(path) == signature:
                    continue
                self._seen[path] = signature
                files.append(path)
        return files


def _search(data: bytes, needles: Mapping[bytes, str], where: str) -> list[SecretHit]:
    hits = [SecretHit(label, where) for needle, label in needles.items() if needle in data]
    if JWT_PATTERN.search(data):
        hits.append(SecretHit("JWT-shaped text (eyJ...eyJ...)", where))
    return list(dict.fromkeys(hits))


def _run_text(instance: dg.DagsterInstance, run_id: str) -> str:
    """Everything Dagster keeps about a run: its record (config, tags) and every event with metadata."""
    parts = []
    run = instance.get_run_by_id(run_id)
    if run is not None:
        parts.append(dg.serialize_value(run))
    for entry in instance.all_logs(run_id):
        parts.append(dg.serialize_value(entry))
    return "\n".join(parts)
