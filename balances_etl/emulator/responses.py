"""HTTP responses the emulator sends, built before a byte is written so they can be recorded first."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

JSON = "application/json"
HTML = "text/html; charset=utf-8"


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()
    # DROP_CONNECTION: announce the whole body, write only this many bytes, then close the socket.
    send_bytes: int | None = None
    # SLOW: wait this long before answering.
    delay_seconds: float = 0.0
    # The Detail of a NOAH Error body, for the request log.
    error_detail: str | None = None

    @property
    def wire_headers(self) -> tuple[tuple[str, str], ...]:
        """The headers the emulator sends, in order (the HTTP server adds ``Server`` and ``Date``)."""
        return (("Content-Type", self.content_type), ("Content-Length", str(len(self.body))), *self.headers)

    def sent_body(self, method: str) -> bytes:
        """The body bytes written: none for HEAD, only the first ``send_bytes`` when the connection drops."""
        return b"" if method == "HEAD" else self.body[: self.send_bytes]


def encode_json(payload: object) -> bytes:
    """Compact, key-order-preserving JSON: the same payload always gives the same bytes."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(status: int, payload: object) -> Response:
    return Response(status, encode_json(payload))


def error_response(
    status: int, error_type: str, detail: str, action: str, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    """A NOAH ``Error`` body; ``Instance`` is unique per occurrence, as support asks for it."""
    payload = {"Type": error_type, "Instance": str(uuid.uuid4()), "Action": action, "Detail": detail}
    return Response(status, encode_json(payload), headers=headers, error_detail=detail)


def html_response(status: int, title: str) -> Response:
    """What a proxy or load balancer in front of the API answers with."""
    page = f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center></body></html>\n"
    return Response(status, page.encode(), content_type=HTML)
