"""Transports for client tests: the real one with a recorder, and one that answers from a script.

Both implement :class:`balances_etl.noah.transport.Transport`, so the client under test runs its
real code path; only where the bytes come from differs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from balances_etl.noah.transport import HttpClientTransport, HttpResponse


@dataclass(frozen=True)
class SentRequest:
    url: str
    headers: dict[str, str]
    timeout: tuple[float, float]


class RecordingTransport:
    """The real transport, recording every request (signature included) and every response."""

    def __init__(self, url: str) -> None:
        self._inner = HttpClientTransport(url)
        self.sent: list[SentRequest] = []
        self.responses: list[HttpResponse] = []

    def get(
        self,
        url: str,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
        while_waiting: Callable[[], None] | None = None,
    ) -> HttpResponse:
        self.sent.append(SentRequest(url, dict(headers), timeout))
        response = self._inner.get(url, headers, timeout, while_waiting)
        self.responses.append(response)
        return response

    def close(self) -> None:
        self._inner.close()


class ScriptedTransport:
    """Answers each request with ``answer(request)``; records what was sent."""

    def __init__(self, answer: Callable[[SentRequest], HttpResponse]) -> None:
        self._answer = answer
        self.sent: list[SentRequest] = []

    def get(
        self,
        url: str,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
        while_waiting: Callable[[], None] | None = None,
    ) -> HttpResponse:
        request = SentRequest(url, dict(headers), timeout)
        self.sent.append(request)
        if while_waiting is not None:
            while_waiting()
        return self._answer(request)

    def close(self) -> None:
        pass


def canned(answers: list[tuple[int, dict[str, str], bytes]]) -> ScriptedTransport:
    """A transport that answers with ``answers`` in order: (status, headers, body)."""

    def next_answer(_request: SentRequest) -> HttpResponse:
        status, headers, body = answers.pop(0)
        return HttpResponse(status=status, headers={k.title(): v for k, v in headers.items()}, body=body)

    return ScriptedTransport(next_answer)
