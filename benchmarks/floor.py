"""The floors: the least work that could possibly do each job, measured beside the real code.

- Extraction floor: a bare ``requests`` session that signs each request (ES384 JWT with PyJWT,
  the same claims NOAH requires), fetches the page, parses the JSON and follows ``PageToken``
  (for transactions: newest first, down to where an incremental sync stops).
  No validation, no retries, no error handling, no columns, nothing kept.
- Normalize floor: ``pyarrow.compute`` doing only the PositiveDecimal pattern match and the
  string -> DECIMAL(38,18) cast of the two amount columns.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from urllib.parse import quote, urlencode, urlsplit

import jwt
import pyarrow as pa
import pyarrow.compute as pc
import requests

from balances_etl.domain.amounts import AMOUNT_PATTERN
from balances_etl.domain.balances import AMOUNT_DECIMAL

AUDIENCE = "https://api.noah.com"


def fetch_all_floor(
    base_url: str, api_key: str, private_key: object, page_size: int = 100, *, path: str = "/balances",
    query: dict[str, str] | None = None, stop_after: Callable[[list[dict]], bool] | None = None,
) -> tuple[int, int]:
    """Every page of ``GET path`` (``query`` sent and signed with each page), or up to the first
    whose items ``stop_after`` accepts, as an incremental sync stops; returns (pages, items)."""
    url = base_url + path
    signed_path = urlsplit(url).path
    pages = items = 0
    token = None
    with requests.Session() as session:
        while True:
            params = {"PageSize": str(page_size), **(query or {})}
            if token:
                params["PageToken"] = token
            now = int(time.time())
            claims = {"aud": AUDIENCE, "iat": now, "exp": now + 300, "method": "GET", "path": signed_path,
                      "queryParams": params}
            signature = jwt.encode(claims, private_key, algorithm="ES384")
            response = session.get(
                f"{url}?{urlencode(params, quote_via=quote, safe='')}",
                headers={"X-Api-Key": api_key, "Api-Signature": signature},
            )
            document = json.loads(response.content)
            pages += 1
            items += len(document["Items"])
            token = document.get("PageToken")
            if not token or (stop_after is not None and stop_after(document["Items"])):
                return pages, items


def normalize_floor(items: pa.Table) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Pattern match and DECIMAL(38,18) cast of both amount columns; nothing else."""
    out = []
    for column in ("available_raw", "total_raw"):
        values = items[column]
        if not pc.all(pc.match_substring_regex(values, AMOUNT_PATTERN)).as_py():
            raise ValueError(f"{column}: a value does not match the pattern")
        out.append(pc.cast(values, AMOUNT_DECIMAL))
    return out[0], out[1]
