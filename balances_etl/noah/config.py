"""NOAH client configuration from ``NOAH_*`` environment variables, validated before any request.

Every problem raises :class:`ConfigError` naming the variable; secret values (API key, PEM, URL)
are never echoed. Out-of-range numbers are shown, since a number cannot be a credential.
An empty variable counts as unset (a blank line in ``.env`` means "use the default").
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives.asymmetric import ec

from balances_etl.config_table import ConfigVariable, Number, Variable
from balances_etl.noah.errors import ConfigError
from balances_etl.noah.signing import algorithm_for, load_private_key

API_KEY_VARIABLE = "NOAH_API_KEY"
SIGNING_KEY_PATH_VARIABLE = "NOAH_SIGNING_KEY_PATH"
SIGNING_KEY_VARIABLE = "NOAH_SIGNING_KEY"
BASE_URL_VARIABLE = "NOAH_BASE_URL"

SANDBOX_BASE_URL = "https://api.sandbox.noah.com/v1"
SANDBOX_HOST = "api.sandbox.noah.com"
PRODUCTION_HOST = "api.noah.com"
SANDBOX_KEY_PREFIX = "apikey_sandbox_"
PRODUCTION_KEY_PREFIX = "apikey_prod_"
_MAX_PEM_BYTES = 64 * 1024  # a P-384 PEM is ~300 bytes; refuse to slurp a wrong, huge file
_PRINTABLE_ASCII_NO_SPACE = re.compile(r"[\x21-\x7e]+")  # a header value requests will not reject

# The configuration table (balances_etl.config_table): each default and meaning is written here only.
_API_KEY = Variable(API_KEY_VARIABLE, None,
                    f"NOAH API key, sent as X-Api-Key. {PRODUCTION_KEY_PREFIX}... keys must also sign.",
                    str, shown_default="(required)")
_SIGNING_KEY_PATH = Variable(SIGNING_KEY_PATH_VARIABLE, None,
                             "Path to the request-signing EC private key PEM "
                             "(P-384 => ES384, P-256 => ES256; SEC1 or PKCS#8).", str)
_SIGNING_KEY = Variable(SIGNING_KEY_VARIABLE, None,
                        "The same PEM as text (\\n escapes allowed); set at most one of this and "
                        f"{SIGNING_KEY_PATH_VARIABLE}. Neither: requests are unsigned "
                        "(sandbox keys without a signing key only).", str)
_BASE_URL = Variable(BASE_URL_VARIABLE, SANDBOX_BASE_URL,
                     f"NOAH API base URL ending in /v1; production is https://{PRODUCTION_HOST}/v1. "
                     "Plain http only for loopback (the emulator).", str)


def _whole(minimum: int, maximum: int) -> Number:
    return Number(int, minimum, maximum)


def _seconds(minimum: float, maximum: float) -> Number:
    return Number(float, minimum, maximum, unit="seconds")


# NoahConfig field -> its variable (the field is the variable's name without NOAH_, lowercased).
_TUNABLES: dict[str, Variable[int | float]] = {
    "page_size": Variable("NOAH_PAGE_SIZE", "100",
                          "Items requested per page (PageSize). NOAH documents no maximum for balances; "
                          "its other lists cap at 100.", _whole(1, 100)),
    "max_pages": Variable("NOAH_MAX_PAGES", "10000",
                          "Most pages one snapshot may take; more fails the run instead of paginating forever.",
                          _whole(1, 1_000_000)),
    "connect_timeout_seconds": Variable("NOAH_CONNECT_TIMEOUT_SECONDS", "10",
                                        "Seconds to wait for a TCP/TLS connection to NOAH.",
                                        _seconds(0.001, 300)),
    "read_timeout_seconds": Variable("NOAH_READ_TIMEOUT_SECONDS", "60",
                                     "Seconds to wait for NOAH between bytes of a response.",
                                     _seconds(0.001, 3600)),
    "max_attempts": Variable("NOAH_MAX_ATTEMPTS", "6",
                             "Attempts per page (the first try included) on 429, 5xx, connection errors and "
                             "broken 200 bodies.", _whole(1, 100)),
    "retry_after_cap_seconds": Variable("NOAH_RETRY_AFTER_CAP_SECONDS", "300",
                                        "Longest Retry-After the client honours; a 429 asking for more fails at once.",
                                        _seconds(0, 86_400)),
    "retry_budget_seconds": Variable("NOAH_RETRY_BUDGET_SECONDS", "900",
                                     "Total seconds one snapshot may spend waiting between retries.",
                                     _seconds(0, 86_400)),
    "backoff_base_seconds": Variable("NOAH_BACKOFF_BASE_SECONDS", "0.5",
                                     "First retry's backoff ceiling; doubles per retry, with full jitter.",
                                     _seconds(0, 300)),
    "backoff_max_seconds": Variable("NOAH_BACKOFF_MAX_SECONDS", "30",
                                    "Largest backoff ceiling between two attempts.",
                                    _seconds(0, 3600)),
}
_VARIABLES = (_API_KEY, _SIGNING_KEY_PATH, _SIGNING_KEY, _BASE_URL, *_TUNABLES.values())


@dataclass(frozen=True)
class NoahConfig:
    """Validated settings for :class:`~balances_etl.noah.client.NoahClient`.

    Validation runs in ``__post_init__`` so a config built in code (or via ``dataclasses.replace``)
    is checked exactly like one read by :meth:`from_env`. ``repr`` omits the secrets; ``str`` is a
    masked one-line summary for logs.
    """

    api_key: str = field(repr=False)
    signing_key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False)
    base_url: str = SANDBOX_BASE_URL
    page_size: int = _TUNABLES["page_size"].default_value()  # type: ignore[assignment]
    max_pages: int = _TUNABLES["max_pages"].default_value()  # type: ignore[assignment]
    connect_timeout_seconds: float = _TUNABLES["connect_timeout_seconds"].default_value()
    read_timeout_seconds: float = _TUNABLES["read_timeout_seconds"].default_value()
    max_attempts: int = _TUNABLES["max_attempts"].default_value()  # type: ignore[assignment]
    retry_after_cap_seconds: float = _TUNABLES["retry_after_cap_seconds"].default_value()
    retry_budget_seconds: float = _TUNABLES["retry_budget_seconds"].default_value()
    backoff_base_seconds: float = _TUNABLES["backoff_base_seconds"].default_value()
    backoff_max_seconds: float = _TUNABLES["backoff_max_seconds"].default_value()

    def __post_init__(self) -> None:
        if not isinstance(self.api_key, str) or _PRINTABLE_ASCII_NO_SPACE.fullmatch(self.api_key) is None:
            raise ConfigError(
                f"{API_KEY_VARIABLE} must be non-empty printable ASCII without spaces (value not shown)",
                variable=API_KEY_VARIABLE,
            )
        object.__setattr__(self, "base_url", _normalised_base_url(self.base_url))
        for name, tunable in _TUNABLES.items():
            tunable.check(getattr(self, name), ConfigError)
        if self.backoff_max_seconds < self.backoff_base_seconds:
            raise ConfigError(
                f"NOAH_BACKOFF_MAX_SECONDS ({self.backoff_max_seconds:g}) is below "
                f"NOAH_BACKOFF_BASE_SECONDS ({self.backoff_base_seconds:g})",
                variable="NOAH_BACKOFF_MAX_SECONDS",
            )
        if self.signing_key is not None:
            try:
                algorithm_for(self.signing_key)
            except ValueError as problem:
                raise ConfigError(f"the signing key {problem}", variable=SIGNING_KEY_VARIABLE) from None
        self._check_environment()

    def _check_environment(self) -> None:
        host = urlsplit(self.base_url).hostname
        if self.api_key.startswith(PRODUCTION_KEY_PREFIX) and host == SANDBOX_HOST:
            raise ConfigError(
                f"{API_KEY_VARIABLE} is a production key ({PRODUCTION_KEY_PREFIX}...) but {BASE_URL_VARIABLE} "
                f"points at the sandbox host {SANDBOX_HOST}",
                variable=BASE_URL_VARIABLE,
            )
        if self.api_key.startswith(SANDBOX_KEY_PREFIX) and host == PRODUCTION_HOST:
            raise ConfigError(
                f"{API_KEY_VARIABLE} is a sandbox key ({SANDBOX_KEY_PREFIX}...) but {BASE_URL_VARIABLE} "
                f"points at the production host {PRODUCTION_HOST}",
                variable=BASE_URL_VARIABLE,
            )
        if self.environment == "production" and self.signing_key is None:
            raise ConfigError(
                f"production requires signed requests: set {SIGNING_KEY_PATH_VARIABLE} or {SIGNING_KEY_VARIABLE}",
                variable=SIGNING_KEY_PATH_VARIABLE,
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NoahConfig:
        """Read and validate ``NOAH_*`` variables from ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        api_key = _API_KEY.read(env, ConfigError)
        tunables = {name: tunable.read(env, ConfigError) for name, tunable in _TUNABLES.items()}
        return cls(
            api_key=api_key,
            signing_key=_signing_key_from(_SIGNING_KEY_PATH.text(env), _SIGNING_KEY.text(env)),
            base_url=_BASE_URL.read(env, ConfigError),
            **tunables,  # type: ignore[arg-type]
        )

    @classmethod
    def documented_variables(cls) -> tuple[ConfigVariable, ...]:
        """Every variable ``from_env`` reads, with its default and meaning."""
        return tuple(variable.row() for variable in _VARIABLES)

    @property
    def environment(self) -> str:
        """``production`` for an ``apikey_prod_`` key or the production host, else ``sandbox``."""
        if self.api_key.startswith(PRODUCTION_KEY_PREFIX) or urlsplit(self.base_url).hostname == PRODUCTION_HOST:
            return "production"
        return "sandbox"

    @property
    def is_loopback(self) -> bool:
        """True when pointed at this machine: the embedded emulator, never a real NOAH."""
        return _is_loopback(urlsplit(self.base_url).hostname or "")

    @property
    def signing_algorithm(self) -> str | None:
        return algorithm_for(self.signing_key) if self.signing_key is not None else None

    @property
    def masked_api_key(self) -> str:
        """The documented environment prefix only: enough to tell keys apart in logs, useless to an attacker."""
        for prefix in (PRODUCTION_KEY_PREFIX, SANDBOX_KEY_PREFIX):
            if self.api_key.startswith(prefix):
                return f"{prefix}***"
        return "***"

    def __str__(self) -> str:
        tunables = ", ".join(f"{name}={getattr(self, name):g}" for name in _TUNABLES)
        return (
            f"NoahConfig({self.environment} {self.base_url}, api_key={self.masked_api_key}, "
            f"signing={self.signing_algorithm or 'off'}, {tunables})"
        )


def _signing_key_from(path_text: str | None, pem_text: str | None) -> ec.EllipticCurvePrivateKey | None:
    if path_text is not None and pem_text is not None:
        raise ConfigError(
            f"both {SIGNING_KEY_PATH_VARIABLE} and {SIGNING_KEY_VARIABLE} are set; set only one",
            variable=SIGNING_KEY_VARIABLE,
        )
    if path_text is not None:
        path = Path(path_text).expanduser()
        where = f"{SIGNING_KEY_PATH_VARIABLE} ({path})"
        try:
            with path.open("rb") as file:
                pem = file.read(_MAX_PEM_BYTES + 1)
        except OSError as problem:
            reason = problem.strerror or type(problem).__name__
            raise ConfigError(f"{where} cannot be read: {reason}", variable=SIGNING_KEY_PATH_VARIABLE) from None
        if len(pem) > _MAX_PEM_BYTES:
            raise ConfigError(
                f"{where} is larger than {_MAX_PEM_BYTES} bytes, not a PEM key", variable=SIGNING_KEY_PATH_VARIABLE
            )
        return _parse_key(pem, where, SIGNING_KEY_PATH_VARIABLE)
    if pem_text is not None:
        # .env files and secret stores often carry a PEM on one line with literal "\n".
        if "\n" not in pem_text:
            pem_text = pem_text.replace("\\n", "\n")
        return _parse_key(pem_text.encode("utf-8"), SIGNING_KEY_VARIABLE, SIGNING_KEY_VARIABLE)
    return None


def _parse_key(pem: bytes, where: str, variable: str) -> ec.EllipticCurvePrivateKey:
    try:
        return load_private_key(pem)
    except ValueError as problem:
        raise ConfigError(f"{where} {problem}", variable=variable) from None


def _normalised_base_url(url: object) -> str:
    """``scheme://host[:port]/.../v1`` without a trailing slash; ConfigError (value not shown) otherwise."""

    def refuse(reason: str) -> ConfigError:
        return ConfigError(f"{BASE_URL_VARIABLE} {reason}", variable=BASE_URL_VARIABLE)

    if not isinstance(url, str):
        raise refuse("must be a string")
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 -- raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        raise refuse("is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise refuse("must start with https://")
    if not parts.hostname:
        raise refuse("has no host")
    if parts.username is not None or parts.password is not None:
        raise refuse("must not contain credentials")
    if parts.query or parts.fragment:
        raise refuse("must not have a query or fragment")
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        raise refuse("must end with /v1 (for example https://api.sandbox.noah.com/v1)")
    if scheme == "http" and not _is_loopback(parts.hostname):
        raise refuse("must use https (plain http is only allowed for loopback hosts)")
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
