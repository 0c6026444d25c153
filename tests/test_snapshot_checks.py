"""Snapshot checks: a good partition passes everything; each fault fails the right check, with its rows."""

from __future__ import annotations

import datetime
import decimal

import pandas as pd
import pyarrow as pa
import pytest

from balances_etl.domain.checks import BALANCE_PARTITION_CHECKS
from balances_etl.domain.names import Check
from balances_etl.domain.balances import ARROW_SCHEMA, COLUMN_NAMES
from balances_etl.transforms.checks import CheckOutcome, evaluate_snapshot_checks
from balances_etl.transforms.normalize import ITEMS_SCHEMA, normalize_snapshot

WIDE = "123456789012345678901.5"  # valid, 21 integer digits: no DECIMAL(38,18)


def snapshot(*pages: list[tuple[str, str, str]]) -> pd.DataFrame:
    """A normalized frame from pages of (crypto_currency, available, total)."""
    rows = [(p, i, *item) for p, items in enumerate(pages, start=1) for i, item in enumerate(items)]
    items = pa.table(
        {
            "account_type": ["Current"] * len(rows),
            "crypto_currency": [r[2] for r in rows],
            "available_raw": [r[3] for r in rows],
            "total_raw": [r[4] for r in rows],
            "page_number": [r[0] for r in rows],
            "item_index": [r[1] for r in rows],
        },
        schema=ITEMS_SCHEMA,
    )
    return normalize_snapshot(
        items,
        snapshot_date=datetime.date(2026, 3, 14),
        snapshot_at=datetime.datetime(2026, 3, 15, 0, 5, tzinfo=datetime.UTC),
        is_late=False,
        environment="production",
    )


GOOD_PAGES = (
    [("BTC", "0.00000001", "0.5"), ("ETH", "1.123456789012345678", "2")],
    [("USDC", "10", "10.000001")],
)


def with_column(frame: pd.DataFrame, name: str, values: list) -> pd.DataFrame:
    """The frame with one column replaced (keeping its schema type), as a corrupted writer would leave it."""
    changed = frame.copy()
    changed[name] = pd.Series(pa.array(values, ARROW_SCHEMA.field(name).type), dtype=frame[name].dtype)
    return changed


def outcome(frame: pd.DataFrame, name: str, previous: pd.DataFrame | None = None) -> CheckOutcome:
    (found,) = [o for o in evaluate_snapshot_checks(frame, previous) if o.name == name]
    return found


def test_good_snapshot_passes_every_check_in_order() -> None:
    frame = snapshot(*GOOD_PAGES)
    outcomes = evaluate_snapshot_checks(frame, previous_frame=frame)
    assert [(o.name, o.blocking) for o in outcomes] == [(c.name, c.blocking) for c in BALANCE_PARTITION_CHECKS]
    assert [o.blocking for o in outcomes] == [True] * 5 + [False] * 4
    assert all(o.passed and o.failing_rows == 0 and o.sample == [] for o in outcomes), outcomes
    assert all(o.description and "\n" not in o.description for o in outcomes)
    assert outcomes[0].sample_markdown() == "No offending rows."


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda f: f.drop(columns=["asset"]), {"column": "asset", "problem": "missing"}),
        (lambda f: f.assign(extra=1), {"column": "extra", "problem": "unexpected column"}),
        (lambda f: f[list(reversed(COLUMN_NAMES))], {"column": "snapshot_date", "problem": "at position 15, expected 0"}),
        (
            lambda f: f.assign(total_amount=f["total_amount"].astype("float64")),
            {"column": "total_amount", "problem": "dtype float64, expected decimal128(38, 18)[pyarrow]"},
        ),
        (
            lambda f: f.assign(available=f["available"].astype("str")),
            {"column": "available", "problem": "dtype str, expected string[pyarrow]"},
        ),
    ],
)
def test_schema_mismatch_fails_every_row(change, problem: dict[str, str]) -> None:
    frame = change(snapshot(*GOOD_PAGES))
    found = outcome(frame, Check.SCHEMA)
    assert (found.passed, found.blocking, found.failing_rows) == (False, True, 3)
    assert problem in found.sample


def test_checks_needing_a_broken_column_fail_as_not_evaluated() -> None:
    frame = snapshot(*GOOD_PAGES).drop(columns=["total_amount"])
    by_name = {o.name: o for o in evaluate_snapshot_checks(frame, None)}
    for name in (Check.AVAILABLE_NOT_ABOVE_TOTAL, Check.CANONICAL_MATCHES_DECIMAL):
        assert not by_name[name].passed
        assert by_name[name].description.startswith("not evaluated: column(s) missing or mistyped: total_amount")
    assert by_name[Check.KEYS_UNIQUE].passed and by_name[Check.AMOUNTS_VALID].passed


def test_nulls_in_non_nullable_columns_fail_schema() -> None:
    frame = with_column(snapshot(*GOOD_PAGES), "account_type", ["Current", None, None])
    frame = with_column(frame, "available_raw", ["0.00000001", None, "10"])
    found = outcome(frame, Check.SCHEMA)
    assert (found.passed, found.failing_rows) == (False, 2)
    assert found.sample == [
        {"column": "account_type", "problem": "2 null value(s)"},
        {"column": "available_raw", "problem": "1 null value(s)"},
    ]


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f,
        lambda f: f.drop(columns=["asset"]),
        lambda f: f.assign(extra=1),
        lambda f: f[list(reversed(COLUMN_NAMES))],
        lambda f: with_column(with_column(f, "account_type", ["Current", None, None]), "total_raw", [None, "2", "x"]),
    ],
)
def test_an_arrow_table_is_judged_exactly_like_its_frame(change) -> None:
    """A transactions sync hands its checks the Arrow table it built, never a pandas frame."""
    frame = change(snapshot(*GOOD_PAGES))
    table = pa.Table.from_pandas(frame, preserve_index=False)
    previous = snapshot(GOOD_PAGES[0])
    assert evaluate_snapshot_checks(table, previous) == evaluate_snapshot_checks(frame, previous)


def test_nulls_where_nullable_pass_schema() -> None:
    frame = snapshot([("BTC", WIDE, WIDE)])
    assert frame["available_amount"].isna().all()
    assert outcome(frame, Check.SCHEMA).passed


def test_invalid_raw_amounts_are_listed_with_position_and_reason() -> None:
    frame = with_column(snapshot(*GOOD_PAGES), "available_raw", ["0.00000001", "1e3", "1|0\n"])
    frame = with_column(frame, "total_raw", ["0.5", "2", "-1"])
    found = outcome(frame, Check.AMOUNTS_VALID)
    assert (found.passed, found.blocking, found.failing_rows) == (False, True, 2)
    first, second = found.sample
    assert (first["page_number"], first["item_index"], first["crypto_currency"]) == ("1", "1", "ETH")
    assert first["available_raw"] == "1e3" and first["problem"].startswith("Available: '1e3' does not match")
    assert (second["page_number"], second["item_index"]) == ("2", "0")
    assert "Available:" in second["problem"] and "Total: '-1'" in second["problem"]
    markdown = found.sample_markdown()
    assert markdown.splitlines()[0].startswith("| page_number | item_index |")
    assert r"1\|0\n" in markdown and len(markdown.splitlines()) == 4


def test_duplicate_key_across_pages_shows_every_position() -> None:
    frame = snapshot(
        [("BTC", "1", "1"), ("ETH", "1", "1")],
        [("USDC", "1", "1"), ("BTC", "2", "2"), ("ETH", "3", "3")],
        [("BTC", "3", "3")],
    )
    found = outcome(frame, Check.KEYS_UNIQUE)
    assert (found.passed, found.blocking, found.failing_rows) == (False, True, 5)
    assert found.sample == [
        {
            "snapshot_date": "2026-03-14",
            "account_type": "Current",
            "crypto_currency": "BTC",
            "rows": "3",
            "positions": "page 1 item 0, page 2 item 1, page 3 item 0",
        },
        {
            "snapshot_date": "2026-03-14",
            "account_type": "Current",
            "crypto_currency": "ETH",
            "rows": "2",
            "positions": "page 1 item 1, page 2 item 2",
        },
    ]


def test_duplicate_positions_are_in_page_order_and_capped() -> None:
    frame = snapshot(*[[("BTC", "1", "1")] for _ in range(12)]).iloc[::-1].reset_index(drop=True)
    found = outcome(frame, Check.KEYS_UNIQUE)
    assert (found.failing_rows, found.sample[0]["rows"]) == (12, "12")
    expected = ", ".join(f"page {p} item 0" for p in range(1, 11)) + " (+2 more)"
    assert found.sample[0]["positions"] == expected


def test_same_currency_in_another_account_type_is_not_a_duplicate() -> None:
    frame = with_column(snapshot([("BTC", "1", "1"), ("BTC", "1", "1")]), "account_type", ["Current", "Savings"])
    assert outcome(frame, Check.KEYS_UNIQUE).passed


@pytest.mark.parametrize(
    ("available", "total", "above"),
    [
        ("2", "1.999999999999999999", True),
        ("1", "1", False),
        ("0.00000001", "0", True),
        (WIDE, "123456789012345678901.49", True),
        (WIDE, WIDE, False),
        (WIDE, "99999999999999999999", True),  # fewer integer digits, lexicographically larger
        ("99", WIDE, False),
        ("0.0000000000000000001", "0.0000000000000000002", False),
        ("0.0000000000000000002", "0.0000000000000000001", True),
        ("1", "0.0000000000000000001", True),
    ],
)
def test_available_above_total_is_caught_for_every_width(available: str, total: str, above: bool) -> None:
    frame = snapshot([("BTC", "1", "1"), ("ETH", available, total)])
    found = outcome(frame, Check.AVAILABLE_NOT_ABOVE_TOTAL)
    assert (found.passed, found.failing_rows) == (not above, int(above))
    if above:
        assert found.sample[0]["page_number"] == "1" and found.sample[0]["item_index"] == "1"
        assert (found.sample[0]["available"], found.sample[0]["total"]) == (available, total)


def test_negative_pending_outflow_is_shown_plainly() -> None:
    found = outcome(snapshot([("BTC", "0.00000003", "0.00000001")]), Check.AVAILABLE_NOT_ABOVE_TOTAL)
    assert found.sample[0]["pending_outflow"] == "-0.000000020000000000"


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("available_amount", [decimal.Decimal("0.00000002"), decimal.Decimal("1.123456789012345678"), 10]),
        ("available_amount", [decimal.Decimal("0.00000001"), None, 10]),
        ("total", ["0.50", "2", "10.000001"]),
        ("total", ["0.5", "2", "10.000002"]),
        ("available", ["1E-8", "1.123456789012345678", "10"]),
    ],
)
def test_canonical_decimal_mismatch_is_blocking(column: str, values: list) -> None:
    frame = with_column(snapshot(*GOOD_PAGES), column, values)
    found = outcome(frame, Check.CANONICAL_MATCHES_DECIMAL)
    assert (found.passed, found.blocking, found.failing_rows) == (False, True, 1)
    assert set(found.sample[0]) >= {"page_number", "item_index", "available_raw", "available", "available_amount"}


def test_decimal_for_a_too_wide_value_is_a_mismatch() -> None:
    frame = snapshot([("BTC", "1", "1.5")])
    # What a rounding cast would have produced for a 19-digit fraction.
    frame = with_column(frame, "available", ["1.0000000000000000001"])
    frame = with_column(frame, "available_raw", ["1.0000000000000000001"])
    found = outcome(frame, Check.CANONICAL_MATCHES_DECIMAL)
    assert (found.passed, found.failing_rows) == (False, 1)
    assert found.sample[0]["available_amount"] == "1.000000000000000000"


def test_tiny_and_wide_amounts_pass_the_canonical_check() -> None:
    frame = snapshot(
        [("BTC", "0.000000000000000001", "+.000000010"), ("ETH", "0", WIDE), ("USDC", "0.0000000000000000001", "1")]
    )
    assert outcome(frame, Check.CANONICAL_MATCHES_DECIMAL).passed


def test_too_wide_amount_is_a_warning_listing_the_rows() -> None:
    frame = snapshot([("BTC", "1", "2"), ("ETH", "0.0000000000000000001", WIDE)], [("USDC", "1", "1")])
    found = outcome(frame, Check.AMOUNT_TOO_WIDE)
    assert (found.passed, found.blocking, found.failing_rows) == (False, False, 1)
    assert found.sample == [
        {
            "page_number": "1",
            "item_index": "1",
            "account_type": "Current",
            "crypto_currency": "ETH",
            "available": "0.0000000000000000001",
            "total": WIDE,
        }
    ]
    assert all(o.passed for o in evaluate_snapshot_checks(frame, None) if o.blocking)


def test_unknown_currency_is_a_warning() -> None:
    frame = snapshot([("BTC_TEST", "1", "1"), ("SOL_TEST", "1", "1"), ("DOGE", "1", "1")])
    found = outcome(frame, Check.UNKNOWN_CURRENCY)
    assert (found.passed, found.blocking, found.failing_rows) == (False, False, 2)
    assert [(r["crypto_currency"], r["asset"]) for r in found.sample] == [("SOL_TEST", "SOL"), ("DOGE", "DOGE")]


def test_disappeared_currency_is_a_warning() -> None:
    previous = snapshot([("BTC", "1", "1"), ("ETH", "0.5", "0.75")], [("USDC", "3", "3")])
    current = snapshot([("BTC", "1", "1"), ("USDC", "3", "3"), ("SOL", "1", "1")])
    found = outcome(current, Check.CURRENCY_DISAPPEARED, previous)
    assert (found.passed, found.blocking, found.failing_rows) == (False, False, 1)
    assert found.sample == [
        {
            "account_type": "Current",
            "crypto_currency": "ETH",
            "previous_snapshot_date": "2026-03-14",
            "previous_total": "0.75",
        }
    ]
    assert outcome(previous, Check.CURRENCY_DISAPPEARED, current).failing_rows == 1  # SOL
    assert outcome(current, Check.CURRENCY_DISAPPEARED, None).passed


def test_zero_items_is_a_warning_and_nothing_else_fails() -> None:
    frame = snapshot()
    outcomes = {o.name: o for o in evaluate_snapshot_checks(frame, snapshot(*GOOD_PAGES))}
    assert (outcomes[Check.ZERO_ITEMS].passed, outcomes[Check.ZERO_ITEMS].blocking) == (False, False)
    assert not outcomes[Check.CURRENCY_DISAPPEARED].passed
    assert all(o.passed for name, o in outcomes.items() if name not in (Check.ZERO_ITEMS, Check.CURRENCY_DISAPPEARED))


def test_sample_is_capped_at_twenty_rows() -> None:
    frame = snapshot([(f"TOK{i:03d}_TEST", "1", "1") for i in range(25)])
    found = outcome(frame, Check.UNKNOWN_CURRENCY)
    assert (found.failing_rows, len(found.sample)) == (25, 20)
    assert all(isinstance(v, str) for row in found.sample for v in row.values())
