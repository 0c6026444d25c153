"""NOAH Business API client for its list endpoints: configuration, signing, pagination, retries, validation."""

from balances_etl.noah.client import NoahClient, parse_retry_after, replay
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
from balances_etl.noah.endpoints import BALANCES, TRANSACTIONS, Endpoint
from balances_etl.noah.pages import Fetched, FetchStats, ItemColumns, RawPage
from balances_etl.noah.signing import RequestSigner

__all__ = [
    "BALANCES",
    "ConfigError",
    "ConfigVariable",
    "Endpoint",
    "FetchStats",
    "Fetched",
    "ItemColumns",
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
    "RequestSigner",
    "RetriesExhausted",
    "TRANSACTIONS",
    "parse_retry_after",
    "redact",
    "replay",
]
