"""The emulator, also keeping what its own log leaves out on purpose: answer times and the exact JWTs.

The emulator's request log stores only a hash of each ``Api-Signature`` (it is a credential);
the secret scans need the tokens themselves to search for them, and the matrix judges retries by
when the emulator answered. Both come from the emulator's public ``on_exchange`` hook.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from balances_etl.emulator import Exchange, NoahSandbox, RecordedRequest
from balances_etl.emulator.server import BALANCES_PATH


@dataclass(frozen=True)
class WireRecord:
    """One ``/v1`` request: when it was answered (server clock), its exact Api-Signature, the log entry."""

    at: float
    signature: str | None
    request: RecordedRequest

    @property
    def page(self) -> int | None:
        return self.request.page_number


class WireRecorder:
    """An ``on_exchange`` listener: the wire log, every signature, and token expiry after a given page
    of a given endpoint."""

    def __init__(self, expire_page_tokens: Callable[[], None]) -> None:
        self.expire_page_tokens = expire_page_tokens
        self.lock = threading.Lock()
        self.records: list[WireRecord] = []
        self.signatures: list[str] = []
        self.expire_after: tuple[str, int] | None = None  # (path, page)

    def __call__(self, exchange: Exchange) -> None:
        signature = exchange.header("Api-Signature")
        record = WireRecord(exchange.at, signature, exchange.request)
        with self.lock:
            if self.expire_after == (record.request.path, record.page) and record.request.status == 200:
                # Called before the answer is written: the client's next request already meets it.
                self.expire_page_tokens()
                self.expire_after = None
            self.records.append(record)
            if signature:
                self.signatures.append(signature)


class RecordingSandbox(NoahSandbox):
    """The NOAH emulator plus a wire log (``wire``, ``signatures``), for the scans and the matrix.

    Only the emulator's public API is used: its ``on_exchange`` hook and ``expire_page_tokens``.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.recorder = WireRecorder(self.expire_page_tokens)
        super().__init__(*args, on_exchange=self.recorder, **kwargs)  # type: ignore[arg-type,misc]

    def expire_tokens_after_page(self, page: int | None, path: str = BALANCES_PATH) -> None:
        """Once page ``page`` of ``path`` has been answered, forget every token issued so far (None: never).

        As after a NOAH deploy that rotated its token key: the next request's PageToken is then
        one "this API" never issued, and the emulator answers it with its real 400.
        """
        with self.recorder.lock:
            self.recorder.expire_after = None if page is None else (path, page)

    @property
    def wire(self) -> list[WireRecord]:
        with self.recorder.lock:
            return list(self.recorder.records)

    @property
    def signatures(self) -> list[str]:
        """Every Api-Signature ever received (not cleared by ``reset_wire``)."""
        with self.recorder.lock:
            return list(self.recorder.signatures)

    def reset_wire(self) -> None:
        with self.recorder.lock:
            self.recorder.records.clear()
