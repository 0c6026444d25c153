"""normalize_snapshot: exact amounts in, exact amounts out, or a loud failure naming the row."""

from __future__ import annotations

import datetime
import decimal
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from balances_etl.domain.amounts import amount_problem, canonical_amount, fits_decimal_38_18
from balances_etl.domain.balances import AMOUNT_DECIMAL, ARROW_SCHEMA, COLUMN_NAMES
from balances_etl.transforms.normalize import (
    ITEMS_SCHEMA,
    AmountValidationError,
    canonicalize_amounts,
    normalize_snapshot,
    plain_decimal_strings,
    validate_amounts,
)

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "shared/noah/amount-vectors.json").read_text())
VALID = [v for v in VECTORS if v["valid"]]
INVALID = [v for v in VECTORS if not v["valid"]]
SNAPSHOT_DATE = datetime.date(2026, 3, 14)
SNAPSHOT_AT = datetime.datetime(2026, 3, 15, 0, 5, 1, 123456, tzinfo=datetime.UTC)


def make_items(*rows: tuple[str, str] | tuple[str, str, str], page: int = 1) -> pa.Table:
    """Items of one page from (available, total[, crypto_currency]) tuples."""
    return pa.table(
        {
            "account_type": ["Current"] * len(rows),
            "crypto_currency": [r[2] if len(r) > 2 else "BTC_TEST" for r in rows],
            "available_raw": [r[0] for r in rows],
            "total_raw": [r[1] for r in rows],
            "page_number": [page] * len(rows),
            "item_index": list(range(len(rows))),
        },
        schema=ITEMS_SCHEMA,
    )


def normalize(items: pa.Table, **overrides: object) -> pd.DataFrame:
    kwargs = {"snapshot_date": SNAPSHOT_DATE, "snapshot_at": SNAPSHOT_AT, "is_late": False, "environment": "sandbox"}
    return normalize_snapshot(items, **(kwargs | overrides))


def as_decimals(series: pd.Series) -> list[decimal.Decimal | None]:
    return pa.array(series).to_pylist()


def exact(text: str) -> decimal.Decimal:
    with decimal.localcontext(prec=100):
        return decimal.Decimal(text)


@pytest.mark.parametrize("vector", VALID, ids=[v["note"] for v in VALID])
def test_valid_vector_keeps_its_exact_value(vector: dict) -> None:
    frame = normalize(make_items((vector["input"], vector["input"])))
    row = frame.iloc[0]
    assert row["available"] == row["total"] == vector["canonical"] == canonical_amount(vector["input"])
    assert row["available_raw"] == row["total_raw"] == vector["input"]
    assert fits_decimal_38_18(vector["canonical"]) is vector["fits_decimal_38_18"]
    (available,), (total,) = as_decimals(frame["available_amount"]), as_decimals(frame["total_amount"])
    if vector["fits_decimal_38_18"]:
        with decimal.localcontext(prec=100):
            assert available == total == exact(vector["canonical"])
            assert as_decimals(frame["pending_outflow"]) == [0]
    else:
        assert available is None and total is None
        assert as_decimals(frame["pending_outflow"]) == [None]


@pytest.mark.parametrize("field", ["Available", "Total"])
@pytest.mark.parametrize("vector", INVALID, ids=[v["note"] for v in INVALID])
def test_invalid_vector_fails_naming_field_page_and_item(vector: dict, field: str) -> None:
    assert amount_problem(vector["input"]) is not None
    rows = [("1", "2")] * 5
    rows[3] = (vector["input"], "2") if field == "Available" else ("1", vector["input"])
    with pytest.raises(AmountValidationError) as caught:
        normalize(make_items(*rows, page=7))
    error = caught.value
    assert (error.field, error.page_number, error.item_index, error.row) == (field, 7, 3, 3)
    assert error.offending_rows == 1
    assert f"{field} amount invalid at page 7, item 3" in str(error)
    assert error.reason == amount_problem(vector["input"])


@pytest.mark.parametrize(
    "value",
    ["\u0661\u0662\u0663", "1.5\n", " 1", "1e3", "1_000", "", "1" * 39, "1.5 ", "\n1.5", "NaN", "-0", None],
)
def test_adversarial_amounts_are_rejected(value: str | None) -> None:
    with pytest.raises(AmountValidationError, match="Total amount invalid at page 1, item 0"):
        normalize(make_items(("1", "1"), page=1).set_column(3, "total_raw", pa.array([value], pa.string())))


def test_error_reports_first_offending_row_and_count() -> None:
    items = make_items(("1", "1"), ("1e3", "1"), ("2", "2"), ("x", "1"), page=4)
    with pytest.raises(AmountValidationError) as caught:
        normalize(items)
    assert (caught.value.item_index, caught.value.offending_rows, caught.value.value_excerpt) == (1, 2, "1e3")
    assert "2 row(s) with an invalid Available amount" in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "canonical", "amount"),
    [
        ("+.5", "0.5", "0.5"),
        ("10.", "10", "10"),
        ("0010.0100", "10.01", "10.01"),
        ("0.000", "0", "0"),
        ("1.123456789012345678", "1.123456789012345678", "1.123456789012345678"),
        ("1234567890123456789.123456789012345678", "1234567890123456789.123456789012345678", "1234567890123456789.123456789012345678"),
        ("123456789012345678901.5", "123456789012345678901.5", None),
        ("1.1234567890123456785", "1.1234567890123456785", None),
        ("100", "100", "100"),
        ("100.00", "100", "100"),
    ],
)
def test_adversarial_valid_amounts(raw: str, canonical: str, amount: str | None) -> None:
    frame = normalize(make_items((raw, raw)))
    assert frame["available"].tolist() == [canonical]
    assert as_decimals(frame["available_amount"]) == [None if amount is None else exact(amount)]


def test_nineteen_fraction_digits_are_null_never_rounded() -> None:
    value = "1.1234567890123456785"
    frame = normalize(make_items((value, value)))
    assert as_decimals(frame["available_amount"]) == [None]
    assert frame["available"].tolist() == [value]
    # The safety net under the fits test: pyarrow's cast raises instead of rounding.
    with pytest.raises(pa.ArrowInvalid, match="data loss"):
        pa.array([value]).cast(AMOUNT_DECIMAL)


@pytest.mark.parametrize(
    ("available", "total", "pending"),
    [
        ("0.000000000000000002", "10.000000000000000001", "9.999999999999999999"),
        ("5", "3", "-2"),
        ("0.00000001", "0", "-0.00000001"),
        ("0", "99999999999999999999.99999999999999999", "99999999999999999999.99999999999999999"),
        ("99999999999999999999.99999999999999999", "0", "-99999999999999999999.99999999999999999"),
        ("99999999999999999999.99999999999999999", ".00000000000000001", "-99999999999999999999.99999999999999998"),
        ("1", "123456789012345678901", None),
        ("0.0000000000000000001", "1", None),
    ],
)
def test_pending_outflow_is_exact_and_may_be_negative(available: str, total: str, pending: str | None) -> None:
    frame = normalize(make_items((available, total)))
    assert as_decimals(frame["pending_outflow"]) == [None if pending is None else exact(pending)]


@pytest.mark.parametrize(
    ("code", "asset"),
    [
        ("BTC", "BTC"),
        ("BTC_TEST", "BTC"),
        ("ETH", "ETH"),
        ("ETH_TEST_SEPOLIA", "ETH"),
        ("USDC", "USDC"),
        ("USDC_TEST", "USDC"),
        ("SOL_TEST", "SOL"),
        ("TOK000123_TEST", "TOK000123"),
        ("POL", "POL"),
    ],
)
def test_asset_is_the_code_before_the_first_underscore(code: str, asset: str) -> None:
    assert normalize(make_items(("1", "1", code)))["asset"].tolist() == [asset]


def test_broadcast_and_passthrough_columns() -> None:
    paris = datetime.timezone(datetime.timedelta(hours=1))
    frame = normalize(
        make_items(("1", "2"), ("3", "4"), page=9),
        snapshot_at=SNAPSHOT_AT.astimezone(paris),
        is_late=True,
        environment="production",
    )
    assert frame["snapshot_date"].tolist() == [SNAPSHOT_DATE] * 2
    assert [t.to_pydatetime() for t in frame["snapshot_at"]] == [SNAPSHOT_AT] * 2
    assert str(frame["snapshot_at"].iloc[0].tz) == "UTC"
    assert frame["is_late"].tolist() == [True, True]
    assert frame["environment"].tolist() == ["production"] * 2
    assert frame["page_number"].tolist() == [9, 9] and frame["item_index"].tolist() == [0, 1]


def test_naive_snapshot_at_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        normalize(make_items(("1", "1")), snapshot_at=datetime.datetime(2026, 3, 15))


def _assert_exact_schema(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == list(COLUMN_NAMES)
    assert [frame[f.name].dtype for f in ARROW_SCHEMA] == [pd.ArrowDtype(f.type) for f in ARROW_SCHEMA]
    assert not any(pa.types.is_floating(dtype.pyarrow_dtype) for dtype in frame.dtypes)


def test_output_dtypes_match_schema_and_never_float() -> None:
    _assert_exact_schema(normalize(make_items(*[(v["input"], v["input"]) for v in VALID])))
    _assert_exact_schema(normalize(make_items()))


def test_round_trips_through_arrow_and_parquet_value_for_value(tmp_path: Path) -> None:
    frame = normalize(make_items(*[(v["input"], v["input"], "ETH") for v in VALID]))
    table = pa.Table.from_pandas(frame, schema=ARROW_SCHEMA, preserve_index=False)
    assert table.schema == ARROW_SCHEMA
    path = tmp_path / "snapshot.parquet"
    pq.write_table(table, path)
    read = pq.read_table(path)
    assert read.schema.remove_metadata() == ARROW_SCHEMA
    assert read.equals(table)
    pd.testing.assert_frame_equal(read.to_pandas(types_mapper=pd.ArrowDtype), frame)
    assert read["available_amount"].to_pylist() == [
        exact(v["canonical"]) if v["fits_decimal_38_18"] else None for v in VALID
    ]


def test_several_chunks_normalize_like_one() -> None:
    first, second = make_items(("1", "2"), page=1), make_items(("0.00000001", "3"), page=2)
    chunked = pa.concat_tables([first, second])
    assert chunked["available_raw"].num_chunks == 2
    pd.testing.assert_frame_equal(normalize(chunked), normalize(chunked.combine_chunks()))


def test_canonicalize_amounts_for_other_loaders() -> None:
    canonical, amounts = canonicalize_amounts(pa.array(["+.50", "0010.0100", "1" * 21]))
    assert canonical.to_pylist() == ["0.5", "10.01", "1" * 21]
    assert amounts.type == AMOUNT_DECIMAL
    assert amounts.to_pylist() == [exact("0.5"), exact("10.01"), None]
    with pytest.raises(AmountValidationError, match=r"ledger amount invalid at row 1: '1e3'"):
        validate_amounts(pa.array(["1", "1e3"]), "ledger")


def test_plain_decimal_strings_never_use_exponents() -> None:
    # pyarrow itself writes 0E-18 and 1.0000000000E-8 for these.
    values = ["0", "0.00000001", "0.000000000000000001", "-0.0000001", "0.000001", "12.5"]
    decimals = pa.array([exact(v) for v in values] + [None], AMOUNT_DECIMAL)
    assert pa.array(["0E-18"]).to_pylist() == decimals.cast(pa.string()).to_pylist()[:1]
    assert plain_decimal_strings(decimals).to_pylist() == [
        "0.000000000000000000",
        "0.000000010000000000",
        "0.000000000000000001",
        "-0.000000100000000000",
        "0.000001000000000000",
        "12.500000000000000000",
        None,
    ]
