"""Where raw landings and Parquet partitions are kept: ``BALANCES_ETL_STORE_URL``.

Unset: under ``BALANCES_ETL_DATA_DIR``, as always; a local path: under that folder instead. Either way
the files are written by :mod:`balances_etl.storage.files` (temporary name, fsync, ``os.replace``).

``s3://bucket/prefix``: any S3-compatible service, through pyarrow's ``S3FileSystem`` — already a
dependency (no aiobotocore stack as with s3fs, no second I/O stack as with obstore), the AWS C++
SDK's signing, retries and multipart uploads. Everything is still written and verified in the local
data folder first (the working copy the DuckDB warehouse loads), then uploaded to its final key:
an object appears only when its PutObject (or multipart completion) succeeds, so a key never holds
half an object and a killed run leaves at most a landing without its manifest, which readers skip.

Credentials come only from the AWS variables (no instance-metadata lookup that could hang); the
first use checks them with one listing, so a wrong key, a missing bucket or an unreachable endpoint
fails before NOAH is called. Messages name the variable, the bucket or the endpoint, never a secret.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from balances_etl.settings import STORE_URL, SettingsError

_ERROR_CODE = re.compile(r"AWS Error ([A-Z_]+)")
_CREDENTIAL_ERRORS = {"SIGNATURE_DOES_NOT_MATCH", "INVALID_ACCESS_KEY_ID", "ACCESS_DENIED", "UNRECOGNIZED_CLIENT",
                      "INVALID_CLIENT_TOKEN_ID", "EXPIRED_TOKEN", "MISSING_AUTHENTICATION_TOKEN"}
_UNREACHABLE_ERRORS = {"NETWORK_CONNECTION", "REQUEST_TIMEOUT"}
_CONNECT_TIMEOUT_SECONDS = 10.0
_REQUEST_TIMEOUT_SECONDS = 60.0
_CHUNK_BYTES = 8 << 20


class StoreError(RuntimeError):
    """The object store refused or could not be reached; the message names what to fix, never a secret."""


def local_root(data_dir: Path, environ: Mapping[str, str] | None = None) -> Path:
    """The folder holding ``raw/`` and ``parquet/`` on this machine: the store itself, or (S3) its working copy."""
    url = STORE_URL.read_optional(os.environ if environ is None else environ, SettingsError)
    return data_dir if url is None or url.startswith("s3://") else Path(url).resolve()


@dataclass(frozen=True)
class ObjectStore:
    """An ``s3://bucket/prefix`` store; keys are given relative to the prefix (``parquet/balances/...``)."""

    fs: pafs.S3FileSystem
    bucket: str
    prefix: str
    endpoint: str

    def path(self, relative: str) -> str:
        return "/".join(part for part in (self.bucket, self.prefix, relative) if part)

    def describe(self, relative: str = "") -> str:
        return f"s3://{self.path(relative)} at {self.endpoint}"

    def exists(self, relative: str) -> bool:
        try:
            return self.fs.get_file_info(self.path(relative)).type != pafs.FileType.NotFound
        except OSError as error:
            raise self.error(error, relative) from None

    def put(self, relative: str, data: bytes, *, overwrite: bool) -> None:
        """Upload ``data`` to the key in one request (visible only once complete), then check its size.

        ``overwrite=False`` refuses an existing key (raw landings are append-only). S3 has no
        exclusive create that pyarrow exposes, so this is a check before the write; landing keys
        hold the run's id, so two writers never race for one."""
        if not overwrite and self.exists(relative):
            raise FileExistsError(f"{self.describe(relative)} already exists; raw landings are never overwritten")
        try:
            with self.fs.open_output_stream(self.path(relative), metadata={}) as out:
                out.write(data)
            size = self.fs.get_file_info(self.path(relative)).size
        except OSError as error:
            raise self.error(error, relative) from None
        if size != len(data):
            raise StoreError(f"{self.describe(relative)} holds {size} bytes after uploading {len(data)}")

    def put_file(self, relative: str, source: Path) -> None:
        """Upload a file to the key, streamed (a warehouse can be large), replacing the object: S3
        shows the new object only once its upload completes, never half of it."""
        size = source.stat().st_size
        try:
            with self.fs.open_output_stream(self.path(relative), metadata={}) as out, open(source, "rb") as data:
                while chunk := data.read(_CHUNK_BYTES):
                    out.write(chunk)
            stored = self.fs.get_file_info(self.path(relative)).size
        except OSError as error:
            raise self.error(error, relative) from None
        if stored != size:
            raise StoreError(f"{self.describe(relative)} holds {stored} bytes after uploading {size}")

    def get_file(self, relative: str, target: Path) -> None:
        """Download the key into the new file ``target``, streamed."""
        try:
            with self.fs.open_input_stream(self.path(relative)) as source, open(target, "xb") as out:
                while chunk := source.read(_CHUNK_BYTES):
                    out.write(chunk)
        except OSError as error:
            raise self.error(error, relative) from None

    def read(self, relative: str) -> bytes:
        try:
            with self.fs.open_input_stream(self.path(relative)) as source:
                return source.read()
        except OSError as error:
            raise self.error(error, relative) from None

    def list(self, relative: str) -> list[str]:
        """Names directly under the folder ``relative`` (none when it holds nothing)."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path(relative), allow_not_found=True))
        except OSError as error:
            raise self.error(error, relative) from None
        return sorted(info.base_name for info in infos)

    def error(self, error: OSError, relative: str = "") -> StoreError:
        """Turn the SDK's error into one that names the variable, bucket or endpoint to fix."""
        code = match.group(1) if (match := _ERROR_CODE.search(str(error))) else ""
        where = self.describe(relative)
        if code in _CREDENTIAL_ERRORS:
            return StoreError(f"{where}: the store refused the credentials ({code}): check AWS_ACCESS_KEY_ID, "
                              "AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN")
        if code == "NO_SUCH_BUCKET":
            return StoreError(f"bucket {self.bucket!r} does not exist at {self.endpoint} (BALANCES_ETL_STORE_URL)")
        if code in _UNREACHABLE_ERRORS or "curlCode" in str(error):
            return StoreError(f"cannot reach the S3 endpoint {self.endpoint} ({code or 'no answer'}): check "
                              "AWS_ENDPOINT_URL and the network")
        return StoreError(f"{where}: the store refused the request ({code or type(error).__name__})")


def object_store(environ: Mapping[str, str] | None = None) -> ObjectStore | None:
    """The S3 store ``BALANCES_ETL_STORE_URL`` names, checked once per process and settings; None when local."""
    env = os.environ if environ is None else environ
    url = STORE_URL.read_optional(env, SettingsError)
    if url is None or not url.startswith("s3://"):
        return None
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
             "AWS_ENDPOINT_URL")
    return _checked_store(url, tuple(env.get(name, "").strip() for name in names))


@functools.cache
def _checked_store(url: str, aws: tuple[str, ...]) -> ObjectStore:
    access_key, secret_key, token, region, default_region, endpoint_url = aws
    for name, value in (("AWS_ACCESS_KEY_ID", access_key), ("AWS_SECRET_ACCESS_KEY", secret_key)):
        if not value:
            raise StoreError(f"{name} is not set: BALANCES_ETL_STORE_URL names an S3 store, which needs "
                             "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    parts = urlsplit(url)
    options: dict[str, object] = {}
    endpoint = "AWS S3"
    if endpoint_url:
        endpoint_parts = urlsplit(endpoint_url)
        if endpoint_parts.scheme not in ("http", "https") or not endpoint_parts.netloc or "@" in endpoint_parts.netloc:
            raise StoreError("AWS_ENDPOINT_URL must be http(s)://host[:port] (value not shown)")
        endpoint = f"{endpoint_parts.scheme}://{endpoint_parts.netloc}"
        options.update(endpoint_override=endpoint_parts.netloc, scheme=endpoint_parts.scheme)
    store = ObjectStore(
        pafs.S3FileSystem(
            access_key=access_key, secret_key=secret_key, session_token=token or None,
            region=region or default_region or "us-east-1", connect_timeout=_CONNECT_TIMEOUT_SECONDS,
            request_timeout=_REQUEST_TIMEOUT_SECONDS, **options,
        ),
        bucket=parts.netloc, prefix=parts.path.strip("/"), endpoint=endpoint,
    )
    # Before anything is fetched or written: the bucket (a HEAD), then credentials and endpoint (a listing).
    try:
        missing = store.fs.get_file_info(store.bucket).type == pafs.FileType.NotFound
    except OSError as error:
        raise store.error(error) from None
    if missing:
        raise StoreError(f"bucket {store.bucket!r} does not exist at {endpoint} (BALANCES_ETL_STORE_URL)")
    store.list("")
    return store
