"""NOAH Business API client for ``GET /v1/balances``: configuration, signing, pagination, retries."""

from balances_etl.noah.client import BalancesSource, NoahClient, ReplaySource, parse_retry_after
from balances_etl.noah.config import ConfigVariable, NoahConfig
from balances_etl.noah.errors import (
    ConfigError,
    MalformedPageError,
    NoahAuthError,
    NoahConnectionError,
    NoahError,
    NoahHTTPError,
    PageValidationError,
    PaginationError,
    RateLimitError,
    RetriesExhausted,
    redact,
)
from balances_etl.noah.pages import BalanceColumns, BalanceSnapshot, RawPage, SnapshotStats
from balances_etl.noah.signing import RequestSigner

__all__ = [
    "BalanceColumns",
    "BalanceSnapshot",
    "BalancesSource",
    "ConfigError",
    "ConfigVariable",
    "MalformedPageError",
    "NoahAuthError",
    "NoahClient",
    "NoahConfig",
    "NoahConnectionError",
    "NoahError",
    "NoahHTTPError",
    "PageValidationError",
    "PaginationError",
    "RateLimitError",
    "RawPage",
    "ReplaySource",
    "RequestSigner",
    "RetriesExhausted",
    "SnapshotStats",
    "parse_retry_after",
    "redact",
]
