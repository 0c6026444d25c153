"""The NOAH sandbox emulator: a real HTTP/1.1 server that answers ``GET /v1/balances`` and
``GET /v1/transactions`` as NOAH does, both from one simulated ledger (see ``ledger``).

It checks the API key and the ES256/ES384 ``Api-Signature`` JWT, paginates with opaque tokens,
serves deterministic data (what the account holds: ``config``; the data: ``dataset``, ``ledger``),
injects faults on demand (see ``faults``) and records every ``/v1`` request (see ``wire``).
``/_sandbox/...`` is a local control surface (see ``control``).
An in-process ``on_exchange`` listener sees every ``/v1`` exchange as it goes over the wire.

Accepted sockets get TCP_NODELAY: without it a keep-alive client waits ~40 ms per request for
Nagle's algorithm and the delayed ACK.
"""

from __future__ import annotations

import copy
import datetime
from decimal import Decimal, InvalidOperation
import hashlib
import logging
import re
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from email.message import Message
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from balances_etl.emulator.auth import API_KEY_PREFIXES, AuthError, SignatureVerifier, check_api_key
from balances_etl.emulator.control import CONTROL_PREFIX, handle_control
from balances_etl.emulator.config import SandboxConfig
from balances_etl.emulator.dataset import ENVIRONMENTS, BalanceSource, Dormancy, Environment, unknown_currency_code
from balances_etl.emulator.faults import Fault, FaultBook, FaultKind, FaultTarget, Page, respond
from balances_etl.emulator.responses import Response, error_response
from balances_etl.emulator.wire import Exchange, PageTokens, RecordedRequest

_log = logging.getLogger(__name__)

BALANCES_PATH = "/v1/balances"
TRANSACTIONS_PATH = "/v1/transactions"
SORT_DIRECTIONS = ("ASC", "DESC")
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_RECORDED_REQUESTS = 100_000  # a long-running CLI sandbox must not grow without bound
_STOP_JOIN_SECONDS = 2.0
_DIGITS = re.compile(r"[0-9]+")


class _Unset(Enum):
    UNSET = "UNSET"


UNSET = _Unset.UNSET


def _page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if _DIGITS.fullmatch(raw) is None or int(raw) < 1:
        raise ValueError("PageSize must be an integer >= 1")
    return min(int(raw), MAX_PAGE_SIZE)


@dataclass
class _Answering:
    """What is learnt about one request while answering it, for the request log."""

    number: int
    method: str
    path: str
    query: dict[str, str]
    signature: str | None
    repeated_parameters: list[str]
    claims: dict[str, object] | None = None
    page_number: int | None = None
    fault: FaultKind | None = None

    def record(self, response: Response) -> RecordedRequest:
        token_sha256 = None if self.signature is None else hashlib.sha256(self.signature.encode("latin-1")).hexdigest()
        return RecordedRequest(
            number=self.number,
            method=self.method,
            path=self.path,
            query=self.query,
            claims=self.claims,
            token_sha256=token_sha256,
            status=response.status,
            page_number=self.page_number,
            fault=self.fault,
            error_detail=response.error_detail,
        )


class NoahSandbox:
    """An embedded NOAH API; ``with NoahSandbox(...) as sb:`` or ``sb.start()`` / ``sb.stop()``."""

    def __init__(
        self,
        api_key: str | None = None,
        public_key_pem: bytes | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 7,
        simulated_date: datetime.date | None = None,
        item_count: int = 3,
        environment: Environment = "sandbox",
        on_exchange: Callable[[Exchange], None] | None = None,
    ) -> None:
        """``api_key`` defaults to ``apikey_sandbox_emulator`` (``apikey_prod_emulator`` in production).

        Without ``public_key_pem`` unsigned calls are accepted, like a sandbox key created without a
        signing key; with it every call must carry a valid ``Api-Signature``. ``on_exchange`` (also
        settable later as ``sandbox.on_exchange``) is called with every ``/v1`` ``Exchange``; an
        exception it raises is logged, never sent to the client.
        """
        if environment not in ENVIRONMENTS:
            raise ValueError(f"environment must be one of {ENVIRONMENTS}")
        prefix = API_KEY_PREFIXES[environment]
        self.api_key = f"{prefix}emulator" if api_key is None else api_key
        if not self.api_key.startswith(prefix):
            raise ValueError(f"a {environment} API key starts with {prefix!r}")
        self.environment: Environment = environment
        self._verifier = SignatureVerifier(public_key_pem) if public_key_pem is not None else None
        self._address = (host, port)
        self._lock = threading.Lock()
        self._config = SandboxConfig(seed, simulated_date, item_count)
        self._faults = FaultBook()
        self._tokens = PageTokens()
        self.on_exchange = on_exchange
        self._records: deque[RecordedRequest] = deque(maxlen=MAX_RECORDED_REQUESTS)
        self._request_count = 0
        self._http: _HttpServer | None = None
        self._serve_thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> NoahSandbox:
        if self._http is not None:
            raise RuntimeError("the sandbox is already running")
        self._http = _HttpServer(self._address, self)
        self._serve_thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, name="noah-sandbox", daemon=True
        )
        self._serve_thread.start()
        _log.debug("NOAH sandbox listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop accepting, close keep-alive connections, end SLOW waits, join every thread."""
        http, thread = self._http, self._serve_thread
        if http is None or thread is None:
            return
        http.stopping.set()
        http.shutdown()
        http.close_connections()
        http.server_close()
        thread.join(_STOP_JOIN_SECONDS)
        self._http = self._serve_thread = None

    def __enter__(self) -> NoahSandbox:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._http is None:
            raise RuntimeError("the sandbox is not running")
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def signed(self) -> bool:
        """Whether calls must carry an Api-Signature."""
        return self._verifier is not None

    # data

    @property
    def config(self) -> SandboxConfig:
        return self._config

    def configure(
        self,
        *,
        simulated_date: datetime.date | None | Literal[_Unset.UNSET] = UNSET,
        seed: int | Literal[_Unset.UNSET] = UNSET,
        item_count: int | Literal[_Unset.UNSET] = UNSET,
        items: list[object] | None | Literal[_Unset.UNSET] = UNSET,
        ledger_days: int | Literal[_Unset.UNSET] = UNSET,
        transacting_items: int | Literal[_Unset.UNSET] = UNSET,
        dormancy: Dormancy | Literal[_Unset.UNSET] = UNSET,
        transaction_items: list[object] | None | Literal[_Unset.UNSET] = UNSET,
    ) -> None:
        """Change any subset; ``items`` (balances) and ``transaction_items`` are served verbatim, None
        returns to generated data."""
        changes: dict[str, object] = {
            name: value
            for name, value in (("simulated_date", simulated_date), ("seed", seed), ("item_count", item_count),
                                ("ledger_days", ledger_days), ("transacting_items", transacting_items),
                                ("dormancy", dormancy))
            if value is not UNSET
        }
        for name, verbatim in (("items", items), ("transaction_items", transaction_items)):
            if verbatim is UNSET:
                continue
            if verbatim is not None and not isinstance(verbatim, list | tuple):
                raise TypeError(f"{name} must be a list of JSON values or None")
            changes[name] = None if verbatim is None else tuple(copy.deepcopy(verbatim))
        with self._lock:
            self._config = replace(self._config, **changes)  # type: ignore[arg-type]

    def inject_movement(self, currency: str, amount: str, on_date: datetime.date) -> None:
        """Move ``currency``'s Total and Available by the signed ``amount`` from ``on_date`` on, with no
        transaction: the one kind of change the roll-forward cannot explain."""
        try:
            value = Decimal(amount)
        except InvalidOperation:
            raise ValueError(f"amount must be a decimal string, got {amount!r}") from None
        if not value.is_finite() or value == 0:
            raise ValueError("amount must be a finite, non-zero decimal")
        with self._lock:
            self._config = replace(self._config, movements=(*self._config.movements, (currency, value, on_date)))

    def expected_items(self) -> list[object]:
        """Exactly the items the current configuration serves, in order, without faults."""
        source = self._config.source(self.environment)
        return copy.deepcopy(source.slice(0, len(source)))

    # faults

    def add_fault(self, fault: Fault) -> None:
        self._faults.add(fault)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        """The faults still armed; ``times`` is how many firings are left."""
        return self._faults.armed()

    # pagination

    def expire_page_tokens(self) -> None:
        """Invalidate every PageToken issued so far, as a NOAH deploy rotating its token key would.

        A request carrying one of them is then answered with NOAH's 400 InvalidMessage
        ("PageToken is not a token this API issued"); tokens issued afterwards work.
        """
        with self._lock:
            self._tokens = PageTokens()

    # request log

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._records)

    def reset_requests(self) -> None:
        """Forget recorded requests and start numbering them at 1 again."""
        with self._lock:
            self._records.clear()
            self._request_count = 0

    # request handling (called from connection threads)

    def _answer_api(self, method: str, target: str, headers: Message) -> Response:
        """Answer a ``/v1`` request and record it before a byte of the answer is written."""
        url = urlsplit(target)
        pairs = parse_qsl(url.query, keep_blank_values=True)
        with self._lock:
            self._request_count += 1
            number = self._request_count
        counts = Counter(name for name, _ in pairs)
        exchange = _Answering(
            number,
            method,
            url.path,
            query=dict(pairs),
            signature=headers.get("Api-Signature"),
            repeated_parameters=sorted(name for name, count in counts.items() if count > 1),
        )
        if (method, url.path) == ("GET", BALANCES_PATH):
            response = self._answer_list(exchange, headers, BALANCES_PATH, self._balances)
        elif (method, url.path) == ("GET", TRANSACTIONS_PATH):
            response = self._answer_list(exchange, headers, TRANSACTIONS_PATH, self._transactions)
        else:
            action = f"{method} {url.path}"
            response = error_response(404, "ResourceNotFound", f"No resource at {action}", action)
        record = exchange.record(response)
        with self._lock:
            self._records.append(record)
        _log.debug("%s %s -> %s (fault %s)", method, target, response.status, exchange.fault)
        listener = self.on_exchange
        if listener is not None:
            try:
                listener(Exchange(
                    time.time(), method, target, tuple(headers.items()), response.status, response.wire_headers,
                    len(response.sent_body(method)), response.delay_seconds, record,
                ))
            except Exception:
                _log.exception("the on_exchange listener failed on %s %s", method, target)
        return response

    def _balances(self, query: dict[str, str]) -> BalanceSource:
        return self._config.source(self.environment)

    def _transactions(self, query: dict[str, str]) -> BalanceSource:
        direction = query.get("SortDirection", "DESC")
        if direction not in SORT_DIRECTIONS:
            raise ValueError(f"SortDirection must be one of {list(SORT_DIRECTIONS)}")
        return _Listing(self._config.transactions(self.environment), newest_first=direction == "DESC")

    def _answer_list(
        self, exchange: _Answering, headers: Message, path: str, items_for: Callable[[dict[str, str]], BalanceSource]
    ) -> Response:
        """One page of a NOAH list endpoint: auth, signature, paging, faults; the same for every endpoint."""
        action = f"GET {path}"
        tokens = self._tokens  # one key for the whole answer, even if they expire meanwhile
        try:
            check_api_key(headers.get("X-Api-Key"), self.api_key, self.environment)
            if self._verifier is not None:
                exchange.claims = self._verifier.verify(
                    exchange.signature, exchange.method, exchange.path, exchange.query, time.time()
                )
        except AuthError as error:
            return error_response(401, "Unauthorized", str(error), action)
        try:
            if exchange.repeated_parameters:
                raise ValueError(f"query parameters given more than once: {exchange.repeated_parameters}")
            page_size = _page_size(exchange.query.get("PageSize"))
            token = exchange.query.get("PageToken")
            page_number, offset = (1, 0) if token is None else tokens.read(token)
            source = items_for(exchange.query)
        except ValueError as error:
            return error_response(400, "InvalidMessage", str(error), action)
        exchange.page_number = page_number

        items = source.slice(offset, offset + page_size)
        end = offset + len(items)
        next_token = tokens.issue(page_number + 1, end) if end < len(source) else None
        fault = self._faults.take(
            FaultTarget(path.removeprefix("/v1/"), exchange.number, page_number, next_token is None, len(items))
        )
        exchange.fault = fault.kind if fault else None
        page = Page(
            page_number=page_number,
            items=items,
            next_token=next_token,
            account_head=source.slice(0, 1),
            token_for_page=lambda number: tokens.issue(number, (number - 1) * page_size),
            unknown_currency=unknown_currency_code(self.environment),
            action=action,
        )
        return respond(page, fault)


@dataclass(frozen=True)
class _Listing:
    """A transactions listing (oldest first) in the order asked for, served page by page (copies: the
    listing is cached). Newest first slices from the end: reversing a million items per page would
    cost more than the page."""

    items: tuple[object, ...]
    newest_first: bool

    def __len__(self) -> int:
        return len(self.items)

    def slice(self, start: int, stop: int) -> list[object]:
        if self.newest_first:
            count = len(self.items)
            chosen = self.items[max(count - stop, 0):max(count - max(start, 0), 0)][::-1]
        else:
            chosen = self.items[max(start, 0):stop]
        return [copy.copy(item) for item in chosen]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def version_string(self) -> str:
        return "noah-sandbox-emulator"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        _log.debug("%s " + format, self.client_address[0], *args)

    def _dispatch(self) -> None:
        sandbox = self.server.sandbox
        try:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if urlsplit(self.path).path.startswith(CONTROL_PREFIX):
                response = handle_control(sandbox, self.command, self.path, body)
            else:
                response = sandbox._answer_api(self.command, self.path, self.headers)
        except Exception:
            _log.exception("the NOAH sandbox failed on %s %s", self.command, self.path)
            response = error_response(500, "Unexpected", "The emulator failed; see its log", self.command)
            self.close_connection = True
        self._send(response)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def _send(self, response: Response) -> None:
        if response.delay_seconds and self.server.stopping.wait(response.delay_seconds):
            self.close_connection = True
            return
        self.send_response(response.status)
        for name, value in response.wire_headers:
            self.send_header(name, value)
        self.end_headers()
        body = response.sent_body(self.command)
        if body:
            self.wfile.write(body)
        if response.send_bytes is not None:
            self.close_connection = True


class _HttpServer(ThreadingHTTPServer):
    """Tracks its connections so ``stop`` can close idle keep-alive sockets and join their threads."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], sandbox: NoahSandbox) -> None:
        self.sandbox = sandbox
        self.stopping = threading.Event()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, object]:
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="noah-sandbox-connection",
            daemon=True,
        )
        with self._connections_lock:
            self._connections[request] = thread
        thread.start()

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self._connections_lock:
            self._connections.pop(request, None)
        super().shutdown_request(request)

    def open_connections(self) -> list[socket.socket]:
        with self._connections_lock:
            return list(self._connections)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = dict(self._connections)
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its own thread
        for thread in connections.values():
            thread.join(_STOP_JOIN_SECONDS)

    def handle_error(self, request: object, client_address: object) -> None:
        _log.debug("connection from %s ended with an error", client_address, exc_info=True)
