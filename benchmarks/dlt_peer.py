"""The peer: the same NOAH balances through dlt's REST client into DuckDB, as well as dlt allows.

Run as a child process by ``benchmarks.run`` (its wall time includes the interpreter and dlt's
imports, like ``balances-etl materialize``)::

    NOAH_BASE_URL=... NOAH_API_KEY=... NOAH_SIGNING_KEY_PATH=... \\
    python benchmarks/dlt_peer.py --workdir DIR

Configuration, chosen to give dlt its best case for this API:

- ``RESTClient`` with ``JSONResponseCursorPaginator(cursor_path="PageToken", cursor_param="PageToken")``,
  ``data_selector="Items"`` and ``PageSize=100`` (NOAH's page size cap);
- ``NoahSignature``: an ``AuthConfigBase`` that sets ``X-Api-Key`` and signs a fresh ES384 JWT over the
  exact method, path and query of each prepared request. dlt's retrying session re-sends the same
  prepared request on a retry, so the session re-applies the auth on every attempt (a retry never
  reuses a signature);
- explicit column hints: ``Available``/``Total`` DECIMAL(38,18) (dlt parses the strings exactly,
  never through float), the identifiers ``text``, not null;
- ``loader_file_format="parquet"``, destination DuckDB (a file in ``--workdir``);
- ``write_disposition="replace"`` (truncate-and-insert): the cheapest disposition dlt has for a
  daily snapshot (balances-etl keeps every day's partition; dlt here keeps only the latest);
- telemetry off (``RUNTIME__DLTHUB_TELEMETRY=false``); nothing is fetched from the internet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

import dlt  # noqa: E402
import jwt  # noqa: E402
from cryptography.hazmat.primitives.serialization import load_pem_private_key  # noqa: E402
from dlt.common.configuration.specs import configspec  # noqa: E402
from dlt.sources.helpers.requests import Client  # noqa: E402
from dlt.sources.helpers.rest_client import RESTClient  # noqa: E402
from dlt.sources.helpers.rest_client.auth import AuthConfigBase  # noqa: E402
from dlt.sources.helpers.rest_client.paginators import JSONResponseCursorPaginator  # noqa: E402
from requests import PreparedRequest  # noqa: E402

AUDIENCE = "https://api.noah.com"
AMOUNT = {"data_type": "decimal", "precision": 38, "scale": 18, "nullable": False}
IDENTIFIER = {"data_type": "text", "nullable": False}


@configspec
class NoahSignature(AuthConfigBase):
    """X-Api-Key plus a fresh ES384 ``Api-Signature`` JWT over this request's method, path and query."""

    api_key: str = None
    private_key: Any = None

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        url = urlsplit(request.url)
        now = int(time.time())
        claims: dict[str, object] = {"aud": AUDIENCE, "iat": now, "exp": now + 300, "method": request.method, "path": url.path}
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        if query:
            claims["queryParams"] = query
        request.headers["X-Api-Key"] = self.api_key
        request.headers["Api-Signature"] = jwt.encode(claims, self.private_key, algorithm="ES384")
        return request


def _session_signing_every_attempt(auth: NoahSignature):
    """dlt's retrying session whose every attempt is signed afresh.

    ``Client`` wraps ``Session.send`` in a tenacity retry that re-sends the same prepared request;
    we put the signing inside that retry, so each attempt gets its own signature.
    """
    session = Client(raise_for_status=False).session
    retrying_send = session.send
    plain_send = retrying_send.__wrapped__  # functools.wraps, set by tenacity's Retrying.wraps

    def signed_send(request: PreparedRequest, **kwargs: Any):
        return plain_send(auth(request), **kwargs)

    session.send = retrying_send.retry.wraps(signed_send)  # type: ignore[method-assign]
    return session


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    base_url = os.environ["NOAH_BASE_URL"]
    auth = NoahSignature(
        api_key=os.environ["NOAH_API_KEY"],
        private_key=load_pem_private_key(Path(os.environ["NOAH_SIGNING_KEY_PATH"]).read_bytes(), password=None),
    )
    client = RESTClient(
        base_url=base_url,
        headers={"Accept": "application/json"},
        auth=auth,
        paginator=JSONResponseCursorPaginator(cursor_path="PageToken", cursor_param="PageToken"),
        data_selector="Items",
        session=_session_signing_every_attempt(auth),
    )

    @dlt.resource(
        name="balances",
        write_disposition="replace",
        # hints use the names after dlt's snake_case normalisation (AccountType -> account_type)
        # (a fresh dict per column: dlt writes the column name into the hint it is given)
        columns={
            "account_type": dict(IDENTIFIER),
            "crypto_currency": dict(IDENTIFIER),
            "available": dict(AMOUNT),
            "total": dict(AMOUNT),
        },
    )
    def balances():
        yield from client.paginate("/balances", params={"PageSize": "100"})

    pipeline = dlt.pipeline(
        pipeline_name="noah_balances",
        destination=dlt.destinations.duckdb(str(args.workdir / "dlt.duckdb")),
        dataset_name="noah",
        pipelines_dir=str(args.workdir / "pipelines"),
    )
    info = pipeline.run(balances(), loader_file_format="parquet")
    info.raise_on_failed_jobs()
    with pipeline.sql_client() as sql:
        rows = sql.execute_sql("SELECT count(*) FROM balances")[0][0]
        column_types = dict(sql.execute_sql(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'balances'"
        ))
    print(json.dumps({"rows": rows, "column_types": column_types, "seconds_after_imports": time.perf_counter() - started}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
