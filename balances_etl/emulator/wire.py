"""What the emulator keeps about the wire: its page tokens, its request log and the exchanges it hands out.

- ``PageTokens``: the opaque ``PageToken`` values, and the key they are signed with (rotated by
  ``NoahSandbox.expire_page_tokens``).
- ``RecordedRequest``: one entry of the request log (``NoahSandbox.requests``, ``/_sandbox/requests``).
  It keeps only a SHA-256 of the ``Api-Signature``: the log is served over HTTP and a JWT is a
  credential.
- ``Exchange``: one request and its answer as they go over the wire, handed to the
  ``on_exchange`` listener of a ``NoahSandbox`` in the same process, headers verbatim.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass


class PageTokens:
    """Opaque page tokens: (page number, offset) + an HMAC under a per-key secret.

    Deterministic under one key (the same page always gets the same token, so TOKEN_CYCLE can
    hand back the very token a client already used) and unguessable from outside. A new
    ``PageTokens`` is a new key: no token of an earlier one reads. URL-safe base64 without
    padding: nothing in a token changes under URL encoding.
    """

    _PAYLOAD = struct.Struct(">II")
    _MAC_BYTES = 12

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[: self._MAC_BYTES]

    def issue(self, page_number: int, offset: int) -> str:
        payload = self._PAYLOAD.pack(page_number, offset)
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode()

    def read(self, token: str) -> tuple[int, int]:
        """(page number, offset) of a token issued under this key; ValueError otherwise."""
        try:
            raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        except ValueError:
            raw = b""
        payload, mac = raw[: self._PAYLOAD.size], raw[self._PAYLOAD.size :]
        if len(raw) != self._PAYLOAD.size + self._MAC_BYTES or not hmac.compare_digest(mac, self._mac(payload)):
            raise ValueError("PageToken is not a token this API issued")
        page_number, offset = self._PAYLOAD.unpack(payload)
        return page_number, offset


@dataclass(frozen=True)
class RecordedRequest:
    """One ``/v1`` request as the server saw and answered it (the control surface is not recorded)."""

    number: int
    method: str
    path: str
    query: dict[str, str]
    claims: dict[str, object] | None
    token_sha256: str | None
    status: int
    page_number: int | None
    fault: str | None
    error_detail: str | None


@dataclass(frozen=True)
class Exchange:
    """One ``/v1`` request and its answer, for an ``on_exchange`` listener.

    Handed over once the answer is decided and recorded, before a byte of it is written (and
    before a SLOW fault's delay), from the thread serving the connection: what a listener does
    happens before the client can send its next request on that connection.
    """

    at: float  # time.time() when the answer was decided
    method: str
    target: str  # path and query string exactly as requested
    headers: tuple[tuple[str, str], ...]  # request headers as received, Api-Signature included
    status: int
    response_headers: tuple[tuple[str, str], ...]  # as sent, but for the server's Server and Date
    body_bytes: int  # body bytes written: fewer than Content-Length when the connection drops
    delay_seconds: float  # how long the answer waits before its first byte (SLOW)
    request: RecordedRequest  # the request log's entry for this request

    def header(self, name: str) -> str | None:
        """The first request header called ``name`` (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)
