"""The world of a simulated season (``operations.season``): NOAH's outages drawn at random, what
each one implies for a day whatever the catch-up code does, the emulator living through them, and a
local webhook that receives the alerts."""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from balances_etl.emulator import Fault, FaultKind, NoahSandbox
from balances_etl.operations.catchup import Backoff
from balances_etl.operations.days import Policy

RUN_MINUTES = 2  # how long a simulated run is queued/running, whatever it did in real time
SHORTEST_OUTAGE = dt.timedelta(minutes=5)
LONGEST_OUTAGE = dt.timedelta(days=3)
MEAN_GAP = dt.timedelta(days=2)  # mean time NOAH answers between two outages
ITEM_COUNT = 3


class OutageKind(StrEnum):
    HTTP_503 = "HTTP 503 on every request"
    PROXY_502 = "a proxy's HTML 502"
    DROPPED = "connection dropped mid-answer"
    NO_ANSWER = "no answer (read timeout)"
    REFUSED = "connection refused (NOAH down)"


@dataclass(frozen=True)
class Outage:
    start: dt.datetime
    end: dt.datetime
    kind: OutageKind

    def covers(self, moment: dt.datetime) -> bool:
        return self.start <= moment < self.end


def random_outages(rng: random.Random, start: dt.datetime, end: dt.datetime) -> list[Outage]:
    """Outages between ``start`` and ``end``: exponential gaps (mean ``MEAN_GAP``), durations
    log-uniform from ``SHORTEST_OUTAGE`` to ``LONGEST_OUTAGE``, a kind each, whole minutes."""
    outages, moment = [], start
    low, high = math.log(SHORTEST_OUTAGE / dt.timedelta(minutes=1)), math.log(LONGEST_OUTAGE / dt.timedelta(minutes=1))
    while True:
        moment += dt.timedelta(minutes=round(rng.expovariate(1 / (MEAN_GAP / dt.timedelta(minutes=1)))))
        length = dt.timedelta(minutes=round(math.exp(rng.uniform(low, high))))
        if moment >= end:
            return outages
        kind = rng.choice(list(OutageKind))
        outages.append(Outage(moment, moment + length, kind))
        moment += length


class Expectation(StrEnum):
    ON_TIME = "on time"  # NOAH answers when the schedule runs the day
    CAPTURED = "captured"  # NOAH answers long enough inside the window for catch-up's next attempt
    LOST = "lost"  # NOAH never answers at a sensor tick between the schedule and the window's close
    EITHER = "either"  # NOAH answers only briefly, or too close to the close to be sure of a retry


def expected_outcome(day: dt.date, outages: Sequence[Outage], policy: Policy, backoff: Backoff,
                     interval: dt.timedelta) -> Expectation:
    """What must happen to ``day``, from the outages alone (not from the catch-up code).

    After any failure catch-up tries again within ``backoff.cap`` of the failed run's end, at the
    next tick: so NOAH answering for ``RUN_MINUTES + backoff.cap + interval`` without a break, ending
    before the window closes, guarantees a capture. Runs start only on ticks (the schedule's 00:10
    is one), so a day NOAH never answers at a tick inside its window is certainly lost.
    """
    scheduled, closes = policy.scheduled_at(day), policy.window_closes(day)

    def down(moment: dt.datetime) -> bool:
        return any(outage.covers(moment) for outage in outages)

    if not down(scheduled):
        return Expectation.ON_TIME
    margin = dt.timedelta(minutes=RUN_MINUTES) + backoff.cap + interval
    edges = sorted({scheduled, *(o.end for o in outages if scheduled < o.end < closes)})
    for up_from in edges:
        if down(up_from):
            continue
        next_down = min((o.start for o in outages if o.start > up_from), default=closes)
        if up_from + margin < min(next_down, closes):
            return Expectation.CAPTURED
    ticks = [scheduled + interval * n for n in range(math.ceil((closes - scheduled) / interval))]
    return Expectation.LOST if all(down(moment) for moment in ticks) else Expectation.EITHER


class WebhookReceiver:
    """A local incoming webhook: every POSTed ``{"text": ...}``, in order of arrival."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        received = self.texts
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    received.append(json.loads(body)["text"])
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="webhook-receiver")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/balances"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Noah:
    """The emulator, and the outage it is going through right now."""

    def __init__(self, public_pem: bytes) -> None:
        self.sandbox = NoahSandbox(public_key_pem=public_pem, port=_free_port(), item_count=ITEM_COUNT)
        self.sandbox.start()
        self.base_url = self.sandbox.base_url  # the same port across a REFUSED outage's stop and start
        self.kind: OutageKind | None = None

    def enter(self, kind: OutageKind | None) -> None:
        if kind == self.kind:
            return
        if self.kind is OutageKind.REFUSED:
            self.sandbox.start()
        self.sandbox.clear_faults()
        self.kind = kind
        if kind is OutageKind.REFUSED:
            self.sandbox.stop()
        elif kind is not None:
            self.sandbox.add_fault({
                OutageKind.HTTP_503: Fault(FaultKind.STATUS, status=503, error_type="ServiceUnavailable",
                                           detail="NOAH is down for maintenance", times=None),
                OutageKind.PROXY_502: Fault(FaultKind.NON_JSON_ERROR, status=502, times=None),
                OutageKind.DROPPED: Fault(FaultKind.DROP_CONNECTION, times=None),
                OutageKind.NO_ANSWER: Fault(FaultKind.SLOW, delay_seconds=1.0, times=None),
            }[kind])

    def close(self) -> None:
        self.sandbox.stop()
