"""Property tests (hypothesis) for every parser the pipeline trusts with money data.

* Amounts: for any string, ``amounts.amount_problem`` and the vectorised
  ``transforms.normalize.invalid_amounts``/``validate_amounts`` accept exactly what NOAH's published
  ``PositiveDecimal`` pattern accepts with ASCII digits and 1-38 characters (an independent
  reference below). For any valid amount the canonical string equals the value (Decimal under a
  100-digit context), is canonical and idempotent, and survives Parquet and DuckDB unchanged; the
  DECIMAL(38,18) column is exactly the value or NULL, never another number.
* Pagination: random token graphs (chains, cycles, self-loops, back to the first page, ends
  written as absent, "" or null, awkward token text) served to the real ``NoahClient``. The pages
  are served by a scripted transport handed to the client (``tests/transports.py``) rather than by
  the emulator: it exercises all of the client's pagination code (query building and encoding,
  a fresh ES384 signature per request, response decoding, ``PageAssembler``'s token-chain and
  cycle rules) and lets the test define arbitrary graphs the emulator cannot express, at hundreds
  of examples per second. The server also checks each request's JWT ``queryParams`` against the
  query actually sent. The emulator's own pagination over real HTTP is covered by the fault matrix.
  Every graph ends with all items exactly once, in order (and the landed bodies replay to the
  same columns), or with a token-cycle error.
* Pages: any bytes and any page-shaped JSON are either accepted with exactly their items or refused
  with a ``NoahError`` naming the item and field; nothing else escapes.
* ``Retry-After``: any text gives None or a wait >= 0; delta-seconds and HTTP dates are read exactly.
* Ledger CSV: random files (valid and broken dates, codes, amounts, optional columns in any order,
  blank lines, quoting) are parsed exactly as an independent model says, or rejected with the
  line and column the model names.
"""

from __future__ import annotations

import csv
import datetime as dt
import email.utils
import io
import json
import re
import tempfile
from dataclasses import dataclass
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import duckdb
import jwt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from transports import ScriptedTransport, SentRequest

from balances_etl.domain.amounts import AMOUNT_MAX_LENGTH, amount_problem, canonical_amount, fits_decimal_38_18
from balances_etl.noah import (
    BALANCES,
    MalformedPageError,
    NoahClient,
    NoahConfig,
    NoahError,
    PageValidationError,
    PaginationError,
    replay,
    parse_retry_after,
)
from balances_etl.noah.signing import load_private_key
from balances_etl.noah.transport import HttpResponse
from balances_etl.storage.ledger import LedgerFileError, read_ledger_dir
from balances_etl.storage.parquet import partition_path, publish_partition
from balances_etl.storage.warehouse import connect_read_only, load_partition
from balances_etl.transforms.normalize import (
    ITEMS_SCHEMA,
    AmountValidationError,
    canonical_strings,
    canonicalize_amounts,
    fits_decimal,
    invalid_amounts,
    normalize_snapshot,
    validate_amounts,
)

# NOAH's published PositiveDecimal pattern, verbatim, with \d restricted to ASCII digits.
NOAH_PATTERN = re.compile(r"^[+]?([.]\d+|\d+[.]?\d*)$", re.ASCII)
CANONICAL = re.compile(r"(0|[1-9][0-9]*)(\.[0-9]*[1-9])?")


def noah_accepts(value: str) -> bool:
    return 1 <= len(value) <= 38 and NOAH_PATTERN.fullmatch(value) is not None


def exact_value(value: str) -> Decimal:
    with localcontext(prec=100):
        return Decimal(value) + 0  # + 0 applies the context; 100 digits hold any 38-character amount


def model_canonical(value: str) -> str:
    with localcontext(prec=100):
        return format(Decimal(value).normalize(), "f")


def model_fits(canonical: str) -> bool:
    integer, _, fraction = canonical.partition(".")
    return len(integer) <= 20 and len(fraction) <= 18


# --- strategies ---------------------------------------------------------------------------------

NEAR_MISS_ALPHABET = "0123456789" * 3 + ".+-eE _,\n\t\u00a0\u0661\u0663\u06f5\uff11\u2070x"
valid_shaped = st.from_regex(r"[+]?([.][0-9]{1,40}|[0-9]{1,40}[.]?[0-9]{0,40})", fullmatch=True)
valid_amounts = st.one_of(
    valid_shaped,
    st.integers(0, 10**38 - 1).map(str),
    # DECIMAL(38,18)'s edges: up to 20 integer and 18 fraction digits, some just past them.
    st.tuples(st.integers(0, 10**21 - 1), st.integers(0, 10**19 - 1), st.integers(1, 19)).map(
        lambda t: f"{t[0]}.{str(t[1]).zfill(t[2])[: t[2]]}"
    ),
).filter(lambda s: len(s) <= 38)
any_amount_text = st.one_of(
    st.text(),
    st.text(alphabet=NEAR_MISS_ALPHABET, max_size=45),
    valid_shaped,
    valid_amounts,
    st.integers(35, 41).flatmap(lambda n: st.text(alphabet="0123456789.", min_size=n, max_size=n)),
)


# --- amounts ------------------------------------------------------------------------------------


@settings(max_examples=800, deadline=None)  # a loaded 2-core machine can stall one example past the 200 ms default
@given(any_amount_text)
def test_amount_validators_accept_exactly_noahs_pattern(value: str) -> None:
    accepted = noah_accepts(value)
    assert (amount_problem(value) is None) == accepted
    assert invalid_amounts(pa.array([value], pa.string()))[0].as_py() is (not accepted)
    if accepted:
        validate_amounts(pa.array([value], pa.string()), "Available")
    else:
        with pytest.raises(AmountValidationError) as error:
            validate_amounts(pa.array([value], pa.string()), "Available")
        assert error.value.row == 0 and error.value.reason == amount_problem(value)


@given(st.lists(st.one_of(st.none(), any_amount_text), max_size=30))
def test_vectorised_validation_judges_every_row_like_the_reference(values: list[str | None]) -> None:
    mask = invalid_amounts(pa.array(values, pa.string())).to_pylist()
    assert mask == [value is None or not noah_accepts(value) for value in values]
    bad = [i for i, value in enumerate(values) if value is None or not noah_accepts(value)]
    if bad:
        with pytest.raises(AmountValidationError) as error:
            validate_amounts(pa.array(values, pa.string()), "Total")
        assert (error.value.row, error.value.offending_rows) == (bad[0], len(bad))


@given(st.one_of(st.integers(), st.floats(), st.none(), st.binary(), st.lists(st.text())))
def test_non_strings_are_never_amounts(value: object) -> None:
    assert amount_problem(value) is not None


@settings(max_examples=500)
@given(valid_amounts)
@example("." + "0" * 36 + "1")  # 38 characters; its canonical "0.00…1" has 39, one more than NOAH allows
def test_canonical_amount_is_the_same_number_canonical_and_idempotent(value: str) -> None:
    canonical = canonical_amount(value)
    assert exact_value(canonical) == exact_value(value)
    assert canonical == model_canonical(value)
    assert CANONICAL.fullmatch(canonical)
    if len(canonical) <= AMOUNT_MAX_LENGTH:  # else it is no NOAH amount, so not an input of canonical_amount
        assert canonical_amount(canonical) == canonical
    assert fits_decimal_38_18(canonical) == model_fits(canonical)


@given(st.lists(valid_amounts, min_size=1, max_size=30))
def test_vectorised_canonical_strings_and_decimals_are_exact_or_null(values: list[str]) -> None:
    array = pa.array(values, pa.string())
    assert canonical_strings(array).to_pylist() == [canonical_amount(v) for v in values]
    canonical, decimals = canonicalize_amounts(array, "Available")
    assert fits_decimal(canonical).to_pylist() == [model_fits(model_canonical(v)) for v in values]
    for value, amount in zip(values, decimals.to_pylist(), strict=True):
        if model_fits(model_canonical(value)):
            assert amount == exact_value(value)
        else:
            assert amount is None  # too wide: NULL, never rounded


EMPTY_SQL_DIR = Path(tempfile.mkdtemp(prefix="no-views-"))  # the round trip needs the table, not the views


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(valid_amounts, valid_amounts), min_size=1, max_size=12))
def test_amounts_round_trip_through_parquet_and_duckdb_unchanged(pairs: list[tuple[str, str]]) -> None:
    day = dt.date(2026, 3, 1)
    items = pa.table(
        {
            "account_type": ["Current"] * len(pairs),
            "crypto_currency": [f"C{i}" for i in range(len(pairs))],
            "available_raw": [a for a, _ in pairs],
            "total_raw": [t for _, t in pairs],
            "page_number": pa.array([1] * len(pairs), pa.int32()),
            "item_index": pa.array(range(len(pairs)), pa.int32()),
        },
        schema=ITEMS_SCHEMA,
    )
    taken_at = dt.datetime(2026, 3, 2, 0, 10, tzinfo=dt.UTC)
    frame = normalize_snapshot(items, snapshot_date=day, snapshot_at=taken_at, is_late=False, environment="sandbox")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        publish_partition(data_dir, day, frame)
        load_partition(data_dir, day, EMPTY_SQL_DIR)
        parquet = pq.read_table(partition_path(data_dir, day)).to_pydict()
        con = connect_read_only(data_dir)
        try:
            rows = con.execute(
                "SELECT available_raw, available, available_amount, total_raw, total, total_amount, "
                "CAST(available_amount AS VARCHAR), CAST(total_amount AS VARCHAR) "
                "FROM balance_snapshots ORDER BY item_index"
            ).fetchall()
        finally:
            con.close()
    for index, (available, total) in enumerate(pairs):
        for raw, (got_raw, got_canonical, got_amount, as_text), column in (
            (available, (rows[index][0], rows[index][1], rows[index][2], rows[index][6]), "available"),
            (total, (rows[index][3], rows[index][4], rows[index][5], rows[index][7]), "total"),
        ):
            canonical = model_canonical(raw)
            assert (got_raw, got_canonical) == (raw, canonical)
            assert (parquet[f"{column}_raw"][index], parquet[column][index]) == (raw, canonical)
            if model_fits(canonical):
                assert got_amount == exact_value(raw) and parquet[f"{column}_amount"][index] == exact_value(raw)
                assert exact_value(as_text) == exact_value(raw)  # DuckDB's own text of the DECIMAL
            else:
                assert got_amount is None and parquet[f"{column}_amount"][index] is None


# --- pagination over random token graphs ---------------------------------------------------------

END_MARKERS = ("absent", "empty", "null")
token_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=24)


@dataclass(frozen=True)
class TokenGraph:
    """Page i is reached with tokens[i] (page 0 also without one) and says ``next[i]``: a page or an end."""

    tokens: list[str]
    sizes: list[int]
    next: list[int | str]

    def items(self, page: int) -> list[dict[str, str]]:
        return [
            {"AccountType": "Current", "CryptoCurrency": f"P{page}_{j}", "Available": f"{page}.{j}", "Total": f"{page}{j}"}
            for j in range(self.sizes[page])
        ]

    def body(self, page: int) -> bytes:
        document: dict[str, Any] = {"Items": self.items(page)}
        following = self.next[page]
        if following == "empty":
            document["PageToken"] = ""
        elif following == "null":
            document["PageToken"] = None
        elif isinstance(following, int):
            document["PageToken"] = self.tokens[following]
        return json.dumps(document, ensure_ascii=False).encode()

    def walk(self) -> tuple[list[int], bool]:
        """The pages a correct client reads, and whether the chain revisits a page (a cycle)."""
        path = [0]
        while isinstance(self.next[path[-1]], int):
            following = self.next[path[-1]]
            if following in path:
                return path, True
            path.append(following)
        return path, False


@st.composite
def token_graphs(draw: st.DrawFn) -> TokenGraph:
    pages = draw(st.integers(1, 7))
    tokens = draw(st.lists(token_text, min_size=pages, max_size=pages, unique=True))
    sizes = draw(st.lists(st.integers(0, 3), min_size=pages, max_size=pages))
    shape = draw(st.sampled_from(["random", "chain"]))
    if shape == "chain":  # a plain chain, ended by one of the three end markers
        ends = draw(st.sampled_from(END_MARKERS))
        following: list[int | str] = [*range(1, pages), ends]
    else:
        following = [draw(st.one_of(st.integers(0, pages - 1), st.sampled_from(END_MARKERS))) for _ in range(pages)]
    return TokenGraph(tokens, sizes, following)


class GraphServer:
    """Serves a TokenGraph as NOAH would, and checks every request is signed for exactly what is sent."""

    def __init__(self, graph: TokenGraph, public_key: Any) -> None:
        self.graph = graph
        self.public_key = public_key
        self.served: list[int] = []

    def answer(self, request: SentRequest) -> HttpResponse:
        url = urlsplit(request.url)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        claims = jwt.decode(request.headers["Api-Signature"], self.public_key, algorithms=["ES384"],
                            audience="https://api.noah.com")
        assert claims["queryParams"] == query and claims["path"] == url.path
        page = 0 if "PageToken" not in query else self.graph.tokens.index(query["PageToken"])
        self.served.append(page)
        return HttpResponse(status=200, headers={"Content-Type": "application/json"}, body=self.graph.body(page))


@pytest.fixture(scope="module")
def signing_key(p384_keypair: tuple[bytes, bytes]) -> Any:
    return load_private_key(p384_keypair[0])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(graph=token_graphs())
def test_pagination_reads_every_item_exactly_once_or_reports_the_cycle(graph: TokenGraph, signing_key: Any) -> None:
    server = GraphServer(graph, signing_key.public_key())
    config = NoahConfig(api_key="apikey_sandbox_properties", signing_key=signing_key, base_url="http://127.0.0.1:9/v1",
                        page_size=3, max_attempts=1)
    path, cycles = graph.walk()
    client = NoahClient(config, transport=ScriptedTransport(server.answer), sleep=lambda _: None)
    if cycles:
        with pytest.raises(PaginationError, match="token cycle"):
            client.fetch(BALANCES)
        assert len(server.served) <= len(path) + 2  # it stops at the repeat, it does not loop
        return
    snapshot = client.fetch(BALANCES)
    expected = [item for page in path for item in graph.items(page)]
    columns = snapshot.columns
    fields = ("account_type", "crypto_currency", "available_raw", "total_raw")
    assert list(zip(*(columns.column(name) for name in fields), strict=True)) == [(i["AccountType"], i["CryptoCurrency"], i["Available"], i["Total"]) for i in expected]
    assert columns.column("page_number") == [n for n, page in enumerate(path, start=1) for _ in range(graph.sizes[page])]
    assert server.served == path and snapshot.stats.pages == len(path)
    # What was landed replays to the very same columns.
    replayed = replay(BALANCES, [page.body for page in snapshot.pages])
    assert replayed.columns == columns


# --- pages: any body -----------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
item_values = st.one_of(json_scalars, valid_amounts, any_amount_text)
items = st.one_of(
    st.fixed_dictionaries(
        {"AccountType": st.sampled_from(["Current", ""]), "CryptoCurrency": st.sampled_from(["BTC_TEST", "ETH", ""]),
         "Available": item_values, "Total": item_values},
        optional={"Extra": json_scalars},
    ),
    st.dictionaries(st.sampled_from(["AccountType", "CryptoCurrency", "Available", "Total"]), item_values),
    json_scalars,
)
pages = st.one_of(
    st.fixed_dictionaries({"Items": st.lists(items, max_size=4)}, optional={"PageToken": st.sampled_from([None, ""])}),
    st.dictionaries(st.sampled_from(["Items", "PageToken", "Other"]), st.one_of(json_scalars, st.lists(items, max_size=2))),
    st.lists(items, max_size=2),
    json_scalars,
)


def model_item_problem(item: object) -> str | None:
    """Which field (or "") makes an item invalid, None when it is valid."""
    if not isinstance(item, dict):
        return ""
    for name in ("AccountType", "CryptoCurrency", "Available", "Total"):
        if not isinstance(item.get(name), str):
            return name
    for name in ("AccountType", "CryptoCurrency"):
        if not item[name]:
            return name
    for name in ("Available", "Total"):
        if not noah_accepts(item[name]):
            return name
    return None


@settings(max_examples=400)
@given(pages)
def test_a_page_is_accepted_exactly_or_refused_naming_item_and_field(document: object) -> None:
    bodies = [json.dumps(document).encode()]
    if not isinstance(document, dict) or not isinstance(document.get("Items"), list):
        with pytest.raises(PageValidationError) as error:
            replay(BALANCES, bodies)
        assert error.value.item_index is None and error.value.field == (None if not isinstance(document, dict) else "Items")
        return
    token = document.get("PageToken")
    if token is not None and not isinstance(token, str):
        with pytest.raises(PageValidationError) as error:
            replay(BALANCES, bodies)
        assert error.value.field == "PageToken"
        return
    problems = [(index, model_item_problem(item)) for index, item in enumerate(document["Items"])]
    problems = [(index, field) for index, field in problems if field is not None]
    if problems:
        with pytest.raises(PageValidationError) as error:
            replay(BALANCES, bodies)
        index, field = problems[0]
        assert (error.value.item_index, error.value.field) == (index, field or None)
        return
    if token:  # a single landed page that still points further: an incomplete landing
        with pytest.raises(PaginationError):
            replay(BALANCES, bodies)
        return
    columns = replay(BALANCES, bodies).columns
    assert columns.column("available_raw") == [item["Available"] for item in document["Items"]]
    assert columns.column("total_raw") == [item["Total"] for item in document["Items"]]
    assert columns.column("crypto_currency") == [item["CryptoCurrency"] for item in document["Items"]]


@settings(max_examples=400)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_any_bytes_are_a_page_or_a_noah_error_never_a_crash(body: bytes) -> None:
    try:
        replay(BALANCES, [body])
    except (MalformedPageError, PageValidationError, PaginationError) as error:
        assert isinstance(error, NoahError) and str(error)


# --- Retry-After ---------------------------------------------------------------------------------

NOW = dt.datetime(2026, 11, 21, 0, 10, tzinfo=dt.UTC)


@given(st.text(max_size=40))
def test_retry_after_never_negative_never_a_crash(value: str) -> None:
    wait = parse_retry_after(value, NOW)
    assert wait is None or wait >= 0


@given(st.integers(0, 10**7))
def test_retry_after_seconds_are_read_exactly(seconds: int) -> None:
    assert parse_retry_after(str(seconds), NOW) == seconds


@given(st.integers(-10**6, 10**6))
def test_retry_after_http_dates_are_read_exactly(offset: int) -> None:
    header = email.utils.format_datetime(NOW + dt.timedelta(seconds=offset), usegmt=True)
    assert parse_retry_after(header, NOW) == max(0, offset)


# --- ledger CSV ----------------------------------------------------------------------------------

REQUIRED = ["as_of_date", "account_type", "crypto_currency", "expected_total"]
OPTIONAL = ["expected_available", "tolerance"]
dates = st.one_of(
    st.dates(dt.date(1990, 1, 1), dt.date(2100, 12, 31)).map(dt.date.isoformat),
    st.sampled_from(["2026-02-30", "2026-13-01", "2026-1-01", "20260101", "2026/01/01", " 2026-01-01", ""]),
    st.text(alphabet="0123456789-/ x", max_size=11),
)
codes = st.one_of(st.sampled_from(["Current", "BTC_TEST", "ETH", "a,b", 'q"q']), st.sampled_from(["", " BTC", "ETH ", "\tX"]))
ledger_amounts = st.one_of(valid_amounts, st.sampled_from(["", "1e3", " 1", "-1", "NaN", "1_0", "0x1"]),
                           st.text(alphabet=NEAR_MISS_ALPHABET.replace("\n", ""), max_size=6))


@st.composite
def ledgers(draw: st.DrawFn) -> tuple[list[str], list[dict[str, str]], list[bool]]:
    header = draw(st.permutations(REQUIRED + draw(st.lists(st.sampled_from(OPTIONAL), unique=True))))
    rows = []
    for _ in range(draw(st.integers(0, 6))):
        row = {"as_of_date": draw(dates), "account_type": draw(codes), "crypto_currency": draw(codes),
               "expected_total": draw(ledger_amounts)}
        row["expected_available"] = draw(st.one_of(st.just(""), ledger_amounts))
        row["tolerance"] = draw(st.one_of(st.just(""), ledger_amounts))
        rows.append({name: row[name] for name in header})
    blank_before = draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows)))
    return list(header), rows, blank_before


class ModelError(Exception):
    def __init__(self, line: int, column: str | None) -> None:
        super().__init__(line, column)
        self.line, self.column = line, column


def model_amount(fields: dict[str, str], line: int, column: str) -> str:
    value = fields[column]
    if not noah_accepts(value) or not model_fits(model_canonical(value)):
        raise ModelError(line, column)
    return model_canonical(value)


def model_ledger(rows: list[dict[str, str]], lines: list[int]) -> list[tuple[object, ...]]:
    """What the ledger loader must make of these rows, as an independent model of its rules."""
    parsed = []
    for fields, line in zip(rows, lines, strict=True):
        text = fields["as_of_date"]
        try:
            if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
                raise ValueError
            day = dt.date.fromisoformat(text)
        except ValueError:
            raise ModelError(line, "as_of_date") from None
        for column in ("account_type", "crypto_currency"):
            if not fields[column] or fields[column] != fields[column].strip():
                raise ModelError(line, column)
        total = model_amount(fields, line, "expected_total")
        available = model_amount(fields, line, "expected_available") if fields.get("expected_available") else None
        tolerance = model_amount(fields, line, "tolerance") if fields.get("tolerance") else "0"
        if available is not None and Decimal(available) > Decimal(total):
            raise ModelError(line, "expected_available")
        parsed.append((day, fields["account_type"], fields["crypto_currency"], total, available, tolerance, line))
    seen = set()
    for row in parsed:  # duplicates are judged once every row of the file has parsed
        if row[:3] in seen:
            raise ModelError(row[6], None)
        seen.add(row[:3])
    return parsed


@settings(max_examples=300, deadline=None)
@given(ledgers())
def test_ledger_rows_are_parsed_exactly_or_rejected_with_line_and_column(
    ledger: tuple[list[str], list[dict[str, str]], list[bool]],
) -> None:
    header, rows, blank_before = ledger
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    line, lines = 1, []
    for row, blank in zip(rows, blank_before, strict=True):
        if blank:
            text.write("\n")
            line += 1
        writer.writerow([row[name] for name in header])
        line += 1
        lines.append(line)
    try:
        expected: list[tuple[object, ...]] | ModelError = model_ledger(rows, lines)
    except ModelError as error:
        expected = error
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "ledger.csv").write_text(text.getvalue(), encoding="utf-8")
        if isinstance(expected, ModelError):
            with pytest.raises(LedgerFileError) as error:
                read_ledger_dir(Path(tmp))
            assert (error.value.line, error.value.column) == (expected.line, expected.column)
            assert f"line {expected.line}" in str(error.value)
            return
        parsed = read_ledger_dir(Path(tmp))
    assert [(r.as_of_date, r.account_type, r.crypto_currency, r.expected_total, r.expected_available, r.tolerance,
             r.source_line) for r in parsed] == expected


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(valid_amounts, valid_amounts), min_size=1, max_size=8))
def test_ledger_amounts_reach_duckdb_exactly(pairs: list[tuple[str, str]]) -> None:
    fitting = [(t, a) for t, a in pairs if model_fits(model_canonical(t)) and model_fits(model_canonical(a))]
    assume(fitting)
    from balances_etl.storage.ledger import replace_ledger_table

    lines = ["as_of_date,account_type,crypto_currency,expected_total,tolerance"]
    lines += [f"2026-03-01,Current,C{i},{total},{tolerance}" for i, (total, tolerance) in enumerate(fitting)]
    with tempfile.TemporaryDirectory() as tmp, duckdb.connect() as con:
        (Path(tmp) / "l.csv").write_text("\n".join(lines) + "\n")
        replace_ledger_table(con, Path(tmp))
        got = con.execute(
            "SELECT expected_total, expected_total_amount, tolerance, tolerance_amount FROM ledger_expected_balances "
            "ORDER BY source_line"
        ).fetchall()
    assert got == [(model_canonical(t), exact_value(t), model_canonical(a), exact_value(a)) for t, a in fitting]


def test_the_reference_pattern_is_noahs_published_one() -> None:
    # The model above must not drift from what the project documents as NOAH's rule.
    from balances_etl.domain.amounts import AMOUNT_PATTERN

    assert AMOUNT_PATTERN == NOAH_PATTERN.pattern.replace(r"\d", "[0-9]")


# reconciliation: the history checks' stored rows equal their definition after every load


KEYS = [("Current", "BTC_TEST"), ("Current", "USDC_TEST"), ("Savings", "BTC_TEST")]
# Totals with two spellings of one number ("2" and "2.0" are one run of equal totals) and a
# too-wide one; availables sometimes above the total.
# Keys and days are present two times in three, so keys have consecutive snapshots to roll forward.
balance = st.tuples(st.sampled_from(["0.5", "1", "3"]), st.sampled_from(["1", "2", "2.0", "1", "2", "1" * 21]))
key_day = st.one_of(st.none(), balance, balance)
snapshot_day = st.lists(key_day, min_size=len(KEYS), max_size=len(KEYS))
histories = st.lists(st.one_of(st.none(), snapshot_day, snapshot_day), min_size=1, max_size=9)
# Transactions seen by the syncs: a currency, a direction, an Amount (sometimes missing or too wide),
# a NetworkFee, and what each day's sync saw (not seen, or a status: any sequence, so a
# transaction can be first seen Settled, settle after Pending, even come back). The amounts are the
# same few numbers as the balances', so windows balance, break and pair up as timing often.
MAX_DAYS = 10
transactions_seen = st.lists(
    st.tuples(
        st.sampled_from(["BTC_TEST", "USDC_TEST"]),
        st.sampled_from(["In", "Out"]),
        # missing, too wide, and big enough that two of them cannot be summed in DECIMAL(38,18)
        st.sampled_from(["1", "0.5", "1", "0.5", "1", "0.5", None, "1" * 21, "99999999999999999999.5"]),
        st.sampled_from([None, None, None, "0.5", "0." + "0" * 18 + "1"]),
        st.lists(st.sampled_from([None, None, "Pending", "Settled", "Settled", "Failed"]), min_size=MAX_DAYS, max_size=MAX_DAYS),
    ),
    max_size=5,
)
synced_days = st.lists(st.sampled_from([True, True, True, False]), min_size=MAX_DAYS, max_size=MAX_DAYS)


def warehouse_of(
    history: list, stale_after_days: int, ledger_dir: Path, synced: list[bool] | None = None, seen: list | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse: the snapshot table (days with None are never snapshotted), ledger, the
    transactions tables (a sync on each day ``synced`` says, seeing ``seen``), views."""
    from support_history import Observation, day, snapshot_instant, transaction_warehouse

    balances = {
        day(n): [(*key, *amounts) for key, amounts in zip(KEYS, balances, strict=True) if amounts]
        for n, balances in enumerate(history) if balances is not None
    }
    syncs = {day(n): snapshot_instant(day(n)) for n, on in enumerate(synced or []) if on}
    observations = [
        Observation(d, at, f"tx-{i}", snapshot_instant(day(0)) - dt.timedelta(days=1), status, direction, currency, amount, fee)
        for i, (currency, direction, amount, fee, statuses) in enumerate(seen or [])
        for d, at in syncs.items()
        if (status := statuses[(d - day(0)).days]) is not None
    ]
    return transaction_warehouse(balances, observations, syncs, ledger_dir=ledger_dir, stale_after_days=stale_after_days)


ALL_SYNCED = [True] * MAX_DAYS
SAVINGS_DAY = ("3", "7.25")
BIG = "99999999999999999999.5"


def seen_on(first: int, status: str) -> list[str | None]:
    return [None] * first + [status] * (MAX_DAYS - first)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(histories, st.integers(0, 2), synced_days, transactions_seen)
# Timing pairs: BTC's In of 1 and USDC's Out of 0.5 settle between day 1's balance fetch and its sync
# (in the balances only on day 2); USDC's pending outflow on day 1 is that Out: a pending timing too.
@example(
    history=[[("1", "1"), ("1", "1"), SAVINGS_DAY], [("1", "1"), ("0.5", "1"), SAVINGS_DAY],
             [("2", "2"), ("0.5", "0.5"), SAVINGS_DAY], [("2", "2"), ("0.5", "0.5"), SAVINGS_DAY]],
    stale_after_days=2, synced=ALL_SYNCED,
    seen=[("BTC_TEST", "In", "1", None, seen_on(1, "Settled")), ("USDC_TEST", "Out", "0.5", None, seen_on(1, "Settled"))],
)
# Sums past 10^20 (two In and two Out of BIG on day 1), and a timing pair next to a real break.
@example(
    history=[[("1", "1"), ("1", "1"), SAVINGS_DAY], [("1", "1"), ("1", "1"), SAVINGS_DAY],
             [("1", "1"), ("1", "2"), SAVINGS_DAY], [("1", "1"), ("1", "1"), SAVINGS_DAY]],
    stale_after_days=2, synced=ALL_SYNCED,
    seen=[("BTC_TEST", d, BIG, None, seen_on(1, "Settled")) for d in ("In", "In", "Out", "Out")]
    + [("USDC_TEST", "In", "1", None, seen_on(1, "Settled")), ("USDC_TEST", "Out", "0.5", None, seen_on(3, "Settled"))],
)
# Fees: BTC's Out of 0.5 with a fee of 0.5 balances day 1's window only if the fee is counted; USDC's
# Out with a fee too wide for DECIMAL(38,18) makes its window not computable.
@example(
    history=[[("1", "2"), ("1", "1"), SAVINGS_DAY], [("1", "1"), ("1", "1"), SAVINGS_DAY], [("1", "1"), ("1", "1"), SAVINGS_DAY]],
    stale_after_days=0, synced=ALL_SYNCED,
    seen=[("BTC_TEST", "Out", "0.5", "0.5", seen_on(1, "Settled")),
          ("USDC_TEST", "Out", "0.5", "0." + "0" * 18 + "1", [None, "Pending", "Settled"] + [None] * 7)],
)
def test_day_scoped_breaks_equal_the_definitions_rows_on_the_day_and_the_snapshot_date_before(
    tmp_path: Path, history: list, stale_after_days: int, synced: list[bool], seen: list
) -> None:
    from support_history import day

    from balances_etl.pipeline.reconciliation import load_query

    con = warehouse_of(history, stale_after_days, ledger_dir_of(tmp_path), synced, seen)
    defined = con.execute(load_query("history_breaks_since"), [dt.date.min]).fetchall()  # once: windows over all history
    snapshot_dates = sorted({row[0] for row in con.execute("SELECT DISTINCT snapshot_date FROM balance_snapshots").fetchall()})
    for n in range(len(history) + 1):  # every day, snapshotted or not, and the day after the last
        dates = {day(n), *[d for d in snapshot_dates if d < day(n)][-1:]}
        expected = [row for row in defined if row[1] in dates]
        assert sorted(con.execute(load_query("history_breaks_on_dates"), [day(n)]).fetchall()) == sorted(expected)
    con.close()


def ledger_dir_of(tmp_path: Path) -> Path:
    from support_history import day

    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir(exist_ok=True)
    (ledger_dir / "expected.csv").write_text(
        "as_of_date,account_type,crypto_currency,expected_total\n"
        f"{day(1)},Current,BTC_TEST,2\n{day(2)},Savings,BTC_TEST,1\n"
    )
    return ledger_dir


# A load: a day (its balances, when it has a snapshot, and its sync, when it has one), or a day's
# balances loaded again with other values (a replay that drops or changes keys).
loads = st.lists(st.tuples(st.integers(0, MAX_DAYS - 1), st.one_of(st.none(), st.none(), snapshot_day)), min_size=1, max_size=7)
IN_ORDER = [(n, None) for n in range(5)]
STORED_TABLES = ("rollforward_windows", "history_breaks")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(histories, st.integers(0, 2), synced_days, transactions_seen, loads)
# the daily case: one day after the other, every refresh on the fast path
@example(
    history=[[("1", "1"), ("1", "1"), SAVINGS_DAY], [("1", "1"), ("0.5", "1"), SAVINGS_DAY],
             [("2", "2"), ("0.5", "0.5"), SAVINGS_DAY], [("2", "2"), ("1", "1"), SAVINGS_DAY], [("2", "2"), ("0.5", "0.5"), SAVINGS_DAY]],
    stale_after_days=1, synced=ALL_SYNCED,
    seen=[("BTC_TEST", "In", "1", None, seen_on(1, "Settled")), ("USDC_TEST", "Out", "0.5", None, seen_on(2, "Settled"))],
    loads=IN_ORDER,
)
# a transaction seen Settled, then Pending, then Settled again counts once, when first seen Settled,
# even in windows far from that day
@example(
    history=[[("1", "1"), ("1", "1"), SAVINGS_DAY]] * 5, stale_after_days=2, synced=ALL_SYNCED,
    seen=[("BTC_TEST", "In", "1", None, [None, "Settled", "Pending", "Settled"] + ["Settled"] * 6)],
    loads=IN_ORDER,
)
def test_the_rows_each_load_stores_equal_their_definition_after_every_load(
    tmp_path: Path, history: list, stale_after_days: int, synced: list[bool], seen: list, loads: list
) -> None:
    """The roll-forward windows and history breaks each load stores (only the dates it can change)
    equal their definition over all history, whatever the order of the loads, replays included."""
    from support_history import SQL_DIR, day

    from balances_etl.storage import reconciliation_rows

    ledger_dir = ledger_dir_of(tmp_path)
    state: dict[int, list | None] = {}
    stored: dict[str, list[tuple]] = {table: [] for table in STORED_TABLES}
    before = warehouse_of([], stale_after_days, ledger_dir)
    for n, replayed in loads:
        if n >= len(history):
            continue
        affected_before = reconciliation_rows.earliest_affected(before, [day(n)])
        before.close()
        state[n] = replayed if replayed is not None and n in state else history[n]
        after = warehouse_of(  # every stored row computed from scratch over all history
            [state.get(m) for m in range(MAX_DAYS)], stale_after_days, ledger_dir,
            [on and m in state for m, on in enumerate(synced)], seen,
        )
        expected = {table: sorted(after.execute(f"SELECT * FROM {table}").fetchall(), key=repr) for table in STORED_TABLES}
        for table, rows in stored.items():  # what the loads so far stored
            after.execute(f"DELETE FROM {table}")
            if rows:
                after.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
        views = sorted(SQL_DIR.glob("*.sql"))
        refreshed = reconciliation_rows.refresh(
            after, [day(n)], affected_before, reconciliation_rows.fingerprint_of(after, views)
        )
        stored = {table: sorted(after.execute(f"SELECT * FROM {table}").fetchall(), key=repr) for table in STORED_TABLES}
        assert stored == expected, (n, refreshed)
        if loads == IN_ORDER and n > 0:
            assert refreshed.how is reconciliation_rows.Refresh.DAY
        before = after
    before.close()
