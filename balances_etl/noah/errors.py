"""Typed NOAH client errors whose messages are safe to log.

Messages never contain the API key, the signing key or a JWT: text that comes from the server is
sanitised and passed through :func:`redact` before it is embedded, because a buggy or malicious
server could echo a credential back.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from balances_etl.noah.pages import FetchStats

REDACTED = "[REDACTED]"
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
AUTH_STATUSES = frozenset({401, 403})
# Shorter "secrets" would redact ordinary words; a real API key or JWT is far longer.
_MIN_SECRET_LENGTH = 8


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every occurrence of each secret replaced by ``[REDACTED]``."""
    for secret in secrets:
        if secret and len(secret) >= _MIN_SECRET_LENGTH:
            text = text.replace(secret, REDACTED)
    return text


def printable(text: str) -> str:
    """``text`` with control and other non-printable characters escaped, so one line stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def snippet(body: bytes | str, secrets: Iterable[str | None] = (), limit: int = 200) -> str:
    """The first ``limit`` characters of a server-supplied body, printable and redacted.

    Redaction runs on a window longer than ``limit`` by the longest secret, before cutting, so a
    secret straddling the cut is still removed whole.
    """
    secrets = tuple(s for s in secrets if s)
    window = limit + max((len(s) for s in secrets), default=0) + 1  # +1: tells "exactly limit" from "cut"
    text = body[:window].decode("utf-8", errors="replace") if isinstance(body, bytes) else body[:window]
    text = printable(redact(text, secrets))
    return text if len(text) <= limit else text[:limit] + "..."


def _restore(cls: type[NoahError], args: tuple[Any, ...], state: dict[str, Any]) -> NoahError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class NoahError(Exception):
    """Base of every NOAH client failure. ``page_number`` is 1-based, None when not page-specific.

    ``stats`` is the partial :class:`FetchStats` of the fetch that failed (set by
    ``fetch_snapshot``), so a failed run can still report attempts, waits and error instances.
    """

    def __init__(self, message: str, *, page_number: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.page_number = page_number
        self.stats: FetchStats | None = None

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take keyword arguments; rebuild from state so errors survive pickling.
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class ConfigError(NoahError):
    """Invalid NOAH configuration; the message names the variable, never its (possibly secret) value."""

    def __init__(self, message: str, *, variable: str) -> None:
        super().__init__(message)
        self.variable = variable


class NoahHTTPError(NoahError):
    """NOAH answered with a non-200 status; fields come from its ``Error`` body when it sent one."""

    def __init__(
        self,
        status: int,
        error_type: str | None,
        detail: str | None,
        action: str | None,
        instance: str | None,
        page_number: int | None,
        *,
        body_snippet: str | None = None,
    ) -> None:
        self.status = status
        self.error_type = error_type
        self.detail = detail
        self.action = action
        self.instance = instance
        self.body_snippet = body_snippet
        self.page_number = page_number  # _describe needs it before the base initialiser runs
        super().__init__(self._describe(), page_number=page_number)

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_STATUSES

    def _describe(self) -> str:
        try:
            phrase = " " + HTTPStatus(self.status).phrase
        except ValueError:
            phrase = ""
        where = f" on page {self.page_number}" if self.page_number is not None else ""
        head = f"NOAH returned HTTP {self.status}{phrase}{where}"
        labelled = [(label, value) for label, value in
                    (("Type", self.error_type), ("Action", self.action), ("Instance", self.instance))
                    if value is not None]
        extras = ", ".join(f"{label} {value!r}" for label, value in labelled)
        if self.detail is not None:
            return f"{head}: Detail {self.detail!r}" + (f" ({extras})" if extras else "")
        if extras:
            return f"{head}: {extras}"
        if self.body_snippet:
            return f"{head}; body is not a NOAH error, first bytes: {self.body_snippet!r}"
        return f"{head} with an empty body"


class NoahAuthError(NoahHTTPError):
    """401/403: bad or wrong-environment API key, bad or expired signature. Never retried."""


class RateLimitError(NoahHTTPError):
    """429. Raised at once when NOAH asks to wait longer than ``cap_seconds``; otherwise retried."""

    def __init__(self, *args: Any, retry_after_seconds: float | None, cap_seconds: float, **kwargs: Any) -> None:
        self.retry_after_seconds = retry_after_seconds
        self.cap_seconds = cap_seconds
        super().__init__(*args, **kwargs)

    @property
    def exceeds_cap(self) -> bool:
        return self.retry_after_seconds is not None and self.retry_after_seconds > self.cap_seconds

    def _describe(self) -> str:
        base = super()._describe()
        if self.retry_after_seconds is None:
            return base
        if self.exceeds_cap:
            return (
                f"{base}; Retry-After asks for {self.retry_after_seconds:g} s, more than the cap of "
                f"{self.cap_seconds:g} s (NOAH_RETRY_AFTER_CAP_SECONDS), so the client gives up instead of waiting"
            )
        return f"{base}; Retry-After {self.retry_after_seconds:g} s"


class NoahConnectionError(NoahError):
    """The request failed below HTTP: refused, reset, timed out, or dropped mid-body.

    ``reason`` is our own description; the library's message is not used because it embeds the
    URL (with the full page token).
    """

    def __init__(self, reason: str, *, page_number: int | None) -> None:
        self.reason = reason
        super().__init__(f"NOAH request for page {page_number} failed: {reason}", page_number=page_number)


class MalformedPageError(NoahError):
    """A 200 whose body is not complete JSON (truncated, HTML from a proxy, bad encoding).

    Retried like a transient fault; raised once the attempts or the retry budget run out.
    """

    def __init__(self, reason: str, *, page_number: int | None, body_prefix: str, attempts: int = 1) -> None:
        self.reason = reason
        self.body_prefix = body_prefix
        self.attempts = attempts
        tries = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts > 1 else ""
        super().__init__(
            f"NOAH page {page_number} is not valid JSON{tries} ({reason}); first bytes: {body_prefix!r}",
            page_number=page_number,
        )


class RetriesExhausted(NoahError):
    """A page kept failing transiently until the attempts or the retry budget ran out.

    ``last_error`` is the final attempt's failure (a :class:`NoahHTTPError` or
    :class:`NoahConnectionError`); ``status`` and ``instance`` repeat its details when it had them.
    """

    def __init__(self, last_error: NoahError, *, attempts: int, waited_seconds: float, why: str) -> None:
        self.last_error = last_error
        self.attempts = attempts
        self.waited_seconds = waited_seconds
        super().__init__(
            f"NOAH page {last_error.page_number}: gave up after {attempts} attempt{'s' if attempts != 1 else ''} "
            f"({why}; {waited_seconds:.3f} s spent waiting in this snapshot); last error: {last_error}",
            page_number=last_error.page_number,
        )

    @property
    def status(self) -> int | None:
        return getattr(self.last_error, "status", None)

    @property
    def instance(self) -> str | None:
        return getattr(self.last_error, "instance", None)


class PaginationError(NoahError):
    """The page-token chain is wrong: a token cycle, more pages than allowed, or an incomplete replay."""


class PageValidationError(NoahError):
    """A page does not match ``GetBalancesResponse``. Bad data, not a transient fault: never retried.

    ``item_index`` is 0-based and None for page-level problems; ``field`` is the JSON field name.
    """

    def __init__(self, reason: str, *, page_number: int | None, item_index: int | None, field: str | None) -> None:
        self.reason = reason
        self.item_index = item_index
        self.field = field
        where = f"NOAH page {page_number}"
        if item_index is not None:
            where += f" item {item_index}"
        if field is not None:
            where += f" field {field}"
        super().__init__(f"{where}: {reason}", page_number=page_number)
