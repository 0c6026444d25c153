"""NOAH's list endpoints over HTTP (:class:`NoahClient`) and from landed pages (:func:`replay`).

One mechanism for every endpoint (``endpoints.BALANCES``, ``endpoints.TRANSACTIONS``): a fresh
signature per attempt, ``PageToken`` pagination with cycle and page-cap protection, retries, NOAH
error bodies and page validation against the endpoint's item schema.

Retry policy, per page:

* retried: 429 (waiting ``Retry-After`` when given, seconds or HTTP date, at least
  ``RETRY_AFTER_MINIMUM_SECONDS``), 500/502/503/504, connection failures and timeouts (including a
  connection dropped mid-body), and a 200 whose body is not complete JSON. That last one is a
  deliberate choice: truncated or non-JSON 200s come from proxies and dropped connections, not
  from NOAH's data, so another attempt usually succeeds; when it never does we raise
  :class:`MalformedPageError` with the first bytes.
* never retried: other 4xx (a bad key or signature will not improve), 3xx (redirects are not
  followed, so ``X-Api-Key`` is never sent to another host) and pages that parse but fail
  validation (bad data, not a transient fault).
* waits use exponential backoff with full jitter, bounded by ``max_attempts`` per page and by
  ``retry_budget_seconds`` across the snapshot; a 429 asking for more than
  ``retry_after_cap_seconds`` fails at once instead of sleeping.
"""

from __future__ import annotations

import email.utils
import functools
import importlib.metadata
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import NoReturn
from urllib.parse import quote, urlencode, urlsplit

import pyarrow as pa

from balances_etl.noah.config import NoahConfig
from balances_etl.noah.errors import (
    AUTH_STATUSES,
    MalformedPageError,
    NoahAuthError,
    NoahConnectionError,
    NoahError,
    NoahHTTPError,
    PaginationError,
    RateLimitError,
    RetriesExhausted,
    snippet,
)
from balances_etl.noah.endpoints import Endpoint
from balances_etl.noah.pages import FetchStats, Fetched, PageAssembler, RawPage, decode_body
from balances_etl.noah.signing import RequestSigner
from balances_etl.noah.transport import HttpClientTransport, HttpResponse, Transport, TransportError

logger = logging.getLogger("balances_etl.noah")

RETRY_AFTER_MINIMUM_SECONDS = 0.05  # "Retry-After: 0" or a past date must not become a hot loop
_RETRY_AFTER_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_ERROR_FIELD_LIMIT = 300


def _user_agent() -> str:
    try:
        version = importlib.metadata.version("balances-etl")
    except importlib.metadata.PackageNotFoundError:
        version = "0+unknown"
    return f"balances-etl/{version}"


USER_AGENT = _user_agent()


# Takes each valid page as received and its items (the endpoint's ``items.arrow_schema``).
PageConsumer = Callable[[RawPage, pa.RecordBatch], None]
# Given a page's decoded JSON, not yet validated, whether the fetch has read far enough (the next
# page is not requested); False when it cannot tell: the page's validation then fails the fetch.
StopCondition = Callable[[object], bool]


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), never negative.

    None when absent or unparseable: the caller then falls back to its own backoff.
    """
    if value is None:
        return None
    value = value.strip()
    if _RETRY_AFTER_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with unknown origin; treat as UTC
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


class NoahClient:
    """Fetches every page of a NOAH list endpoint, signed and retried.

    ``transport`` defaults to one ``http.client`` connection (:mod:`balances_etl.noah.transport`);
    tests pass one that answers from a script or records what was sent. ``sleep`` and ``clock`` are
    injectable so tests can record waits without spending them.
    """

    def __init__(
        self,
        config: NoahConfig,
        *,
        transport: Transport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._owns_transport = transport is None
        self._transport = HttpClientTransport(config.base_url) if transport is None else transport
        self._sleep = sleep
        self._clock = clock
        self._signer = RequestSigner(config.signing_key) if config.signing_key is not None else None
        self._timeout = (config.connect_timeout_seconds, config.read_timeout_seconds)

    def __repr__(self) -> str:
        return f"NoahClient({self.config})"

    def close(self) -> None:
        """Close the transport if this client created it (an injected one belongs to the caller)."""
        if self._owns_transport:
            self._transport.close()

    def __enter__(self) -> NoahClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def fetch(
        self, endpoint: Endpoint, on_page: PageConsumer | None = None, stop_after: StopCondition | None = None
    ) -> Fetched:
        """Every page of ``endpoint``, validated; see the module docstring for what is retried.

        Pipelined one page deep: once a page's envelope and next token are checked, the next page
        is requested, and this page is decoded strictly (repeated keys), its items validated and
        the page handed to ``on_page`` with its items while NOAH prepares the next. Pages reach
        ``on_page`` in order, each once, and only when valid; the returned :class:`Fetched` then
        holds the stats alone (``on_page`` took the pages and items). With ``stop_after``, each page's
        decoded JSON is judged before the next is requested (so no page past the stop is ever
        requested), and the fetch ends after the first page for which it returns True
        (``stats.stopped_early``).
        On failure the raised :class:`NoahError` carries the partial ``stats``.
        """
        assembler = PageAssembler(endpoint.items, max_pages=self.config.max_pages, keep=on_page is None)
        url = self.config.base_url + endpoint.path
        started = self._clock()
        token: str | None = None
        page_number = 0
        unfinished: Callable[[], pa.RecordBatch] | None = None  # the previous page's items, still to be taken in
        try:
            while True:
                page_number += 1
                query = {"PageSize": str(self.config.page_size), **endpoint.query}
                if token is not None:
                    query["PageToken"] = token
                page, document, secrets = self._fetch_page(url, page_number, query, assembler.stats, unfinished)
                token = assembler.next_token(page_number, document, secrets)
                unfinished = functools.partial(_take_in, assembler, page, secrets, on_page)
                if token is None or (stop_after is not None and stop_after(document)):
                    assembler.stats.stopped_early = token is not None
                    unfinished()
                    break
        except NoahError as error:
            error.stats = assembler.stats
            logger.info("NOAH %s (%s) failed on page %d after %d attempts: %s", endpoint.name,
                        self.config.environment, error.page_number or page_number, assembler.stats.attempts, error)
            raise
        stats = assembler.stats
        logger.info(
            "NOAH %s (%s): %d items on %d pages%s, %d attempts (%d retries, %.3f s waiting), %.3f s",
            endpoint.name, self.config.environment, stats.items, stats.pages,
            " (stopped early)" if stats.stopped_early else "", stats.attempts, stats.retries,
            stats.total_wait_seconds, self._clock() - started,
        )
        return assembler.fetched()

    def _fetch_page(
        self, url: str, page_number: int, query: dict[str, str], stats: FetchStats,
        meanwhile: Callable[[], object] | None,
    ) -> tuple[RawPage, object, tuple[str, ...]]:
        """One page, retried; returns the page, its decoded JSON and the secrets to redact from it.

        ``meanwhile`` runs exactly once: while the first attempt's request is in flight, or right
        after that attempt when the request could not be sent. What it raises wins.
        """
        pending = [meanwhile] if meanwhile is not None else []

        def run_pending() -> None:
            if pending:
                pending.pop()()

        attempt = 0
        while True:
            attempt += 1
            stats.attempts += 1
            signature = self._signer.sign("GET", urlsplit(url).path, query) if self._signer is not None else None
            secrets = (self.config.api_key,) if signature is None else (self.config.api_key, signature)
            try:
                outcome = self._attempt(url, page_number, attempt, query, signature, secrets, stats, run_pending)
            finally:
                run_pending()
            if not isinstance(outcome, NoahError):
                return (*outcome, secrets)
            wait = self._wait_before_retry(outcome, attempt, stats)
            stats.retries += 1
            stats.total_wait_seconds += wait
            logger.debug("NOAH page %d attempt %d failed: %s; retrying in %.3f s", page_number, attempt, outcome, wait)
            self._sleep(wait)

    def _attempt(
        self,
        url: str,
        page_number: int,
        attempt: int,
        query: dict[str, str],
        signature: str | None,
        secrets: tuple[str, ...],
        stats: FetchStats,
        while_waiting: Callable[[], object],
    ) -> tuple[RawPage, object] | NoahError:
        """One request. Returns the page, or the retryable failure; raises failures that must not be retried."""
        headers = {"X-Api-Key": self.config.api_key, "Accept": "application/json", "User-Agent": USER_AGENT}
        if signature is not None:
            headers["Api-Signature"] = signature
        # Encode the query ourselves so the wire carries exactly the signed queryParams.
        path = urlsplit(url).path
        url = f"{url}?{urlencode(query, quote_via=quote, safe='')}"
        ours = [0.0]  # seconds spent in while_waiting: not part of the request's time

        def timed_while_waiting() -> None:
            begun = self._clock()
            try:
                while_waiting()
            finally:
                ours[0] += self._clock() - begun

        started = self._clock()
        try:
            response = self._transport.get(url, headers, self._timeout, timed_while_waiting)
        except TransportError as error:
            logger.debug("NOAH page %d attempt %d: %s", page_number, attempt, error.reason)
            return NoahConnectionError(error.reason, page_number=page_number)
        elapsed = self._clock() - started - ours[0]
        body = response.body
        logger.debug("NOAH page %d attempt %d: HTTP %d, %d bytes in %.3f s",
                     page_number, attempt, response.status, len(body), elapsed)
        if response.status != 200:
            error = self._http_error(response, page_number, secrets)
            if error.instance is not None:
                stats.instances.append(error.instance)
            if not error.retryable:
                raise error
            return error
        try:
            # Lenient here (the next token is all that is read now); _take_in decodes strictly.
            document = decode_body(body, page_number, secrets, reject_duplicate_keys=False)
        except MalformedPageError as malformed:
            return malformed
        page = RawPage.received(
            page_number, body, request_path=path, query=dict(query), attempts=attempt, elapsed_seconds=elapsed
        )
        return page, document

    def _http_error(self, response: HttpResponse, page_number: int, secrets: tuple[str, ...]) -> NoahHTTPError:
        status = response.status
        fields = _error_fields(response.body)

        def clean(name: str) -> str | None:
            value = fields.get(name)
            return snippet(value, secrets, limit=_ERROR_FIELD_LIMIT) if isinstance(value, str) else None

        args = (status, clean("Type"), clean("Detail"), clean("Action"), clean("Instance"), page_number)
        body_snippet = None if any(a is not None for a in args[1:5]) else snippet(response.body, secrets)
        if status == 429:
            return RateLimitError(
                *args,
                body_snippet=body_snippet,
                retry_after_seconds=parse_retry_after(response.headers.get("Retry-After"), datetime.now(UTC)),
                cap_seconds=self.config.retry_after_cap_seconds,
            )
        error_class = NoahAuthError if status in AUTH_STATUSES else NoahHTTPError
        return error_class(*args, body_snippet=body_snippet)

    def _wait_before_retry(self, failure: NoahError, attempt: int, stats: FetchStats) -> float:
        """Seconds to wait before the next attempt, or raise when the client must give up."""
        config = self.config
        if isinstance(failure, RateLimitError) and failure.exceeds_cap:
            raise failure
        if attempt >= config.max_attempts:
            self._give_up(failure, attempt, stats, f"{config.max_attempts} attempts allowed (NOAH_MAX_ATTEMPTS)")
        if isinstance(failure, RateLimitError) and failure.retry_after_seconds is not None:
            wait = max(RETRY_AFTER_MINIMUM_SECONDS, failure.retry_after_seconds)
        else:
            ceiling = min(config.backoff_max_seconds, config.backoff_base_seconds * 2 ** (attempt - 1))
            wait = random.uniform(0, ceiling)  # full jitter spreads retries from many clients
        if stats.total_wait_seconds + wait > config.retry_budget_seconds:
            self._give_up(
                failure, attempt, stats,
                f"waiting {wait:.3f} s more would exceed the retry budget of "
                f"{config.retry_budget_seconds:g} s (NOAH_RETRY_BUDGET_SECONDS)",
            )
        return wait

    @staticmethod
    def _give_up(failure: NoahError, attempt: int, stats: FetchStats, why: str) -> NoReturn:
        if isinstance(failure, MalformedPageError):
            raise MalformedPageError(
                failure.reason, page_number=failure.page_number, body_prefix=failure.body_prefix, attempts=attempt
            )
        raise RetriesExhausted(failure, attempts=attempt, waited_seconds=stats.total_wait_seconds, why=why)


def _take_in(
    assembler: PageAssembler,
    page: RawPage,
    secrets: tuple[str, ...],
    on_page: PageConsumer | None,
) -> pa.RecordBatch:
    """The second half of taking a page: decoded again, strictly (a repeated JSON key fails the
    run here, while the next page is in flight), its items validated and kept, the page handed on."""
    items = assembler.add(page, decode_body(page.body, page.page_number, secrets), secrets)
    if on_page is not None:
        on_page(page, items)
    return items


def _error_fields(body: bytes) -> dict[str, object]:
    """The NOAH ``Error`` object in a body, or {} when the body is not one."""
    try:
        document = decode_body(body, page_number=0)
    except NoahError:
        return {}
    return document if isinstance(document, dict) else {}


def replay(endpoint: Endpoint, bodies: Sequence[bytes], *, stopped_early: bool = False) -> Fetched:
    """A fetch of ``endpoint`` again, from landed raw page bodies, validated exactly like the live one.

    The bodies must form a complete token chain: every page but the last has a next token, and the
    last has none unless the fetch ``stopped_early`` (an incremental sync's horizon), so a landing
    that lost its last page is refused rather than replayed as a smaller fetch. Replayed pages carry
    ``status`` 200, ``attempts`` 0, an empty ``request_path``/``query`` (not landed with the body)
    and ``received_at`` = replay time.
    """
    if not bodies:
        raise PaginationError("no page bodies to replay: a fetch has at least one page")
    assembler = PageAssembler(endpoint.items, max_pages=None)
    last = len(bodies)
    for page_number, body in enumerate(bodies, start=1):
        page = RawPage.received(page_number, body, request_path="", query={}, attempts=0, elapsed_seconds=0.0)
        token = assembler.accept(page, decode_body(body, page_number))
        if token is None and page_number < last:
            raise PaginationError(
                f"page {page_number} ends pagination but {last - page_number} more bodies follow",
                page_number=page_number,
            )
        if token is not None and page_number == last and not stopped_early:
            raise PaginationError(
                f"the last body (page {page_number}) still has a next page token: the landed pages are incomplete",
                page_number=page_number,
            )
    assembler.stats.stopped_early = stopped_early
    return assembler.fetched()
