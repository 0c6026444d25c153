"""The daily transactions sync: horizon, stop condition, checks, landing, publication and replay."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from transactions_support import OVERLAP, PAGE_SIZE, Pipeline, at, day

from balances_etl.domain.checks import TRANSACTION_SYNC_CHECKS
from balances_etl.domain.names import Check
from balances_etl.pipeline.transactions_sync import (
    LandedTransactionsSource,
    TransactionSyncFailed,
    sync_horizon,
    sync_transactions,
)
from balances_etl.storage.parquet import TRANSACTION_SYNCS, partition_file_metadata, partition_path, read_partition
from balances_etl.storage.raw import latest_raw_landing, read_raw_manifest
from balances_etl.storage.warehouse import PreviousSync
from balances_etl.transforms.transactions import page_created_before


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    return Pipeline(tmp_path / "data")


def outcome(sync, name: Check):  # noqa: ANN001, ANN201
    return next(o for o in sync.outcomes if o.name == name)


def history(pipeline: Pipeline, count: int, *, pending: set[int] = frozenset()) -> None:
    """``count`` transactions, one a day ending on day(-1), Settled unless listed in ``pending``."""
    for i in range(count):
        pipeline.noah.add(f"old-{i:04d}", at(i - count), "Pending" if i in pending else "Settled")


# --- horizon -------------------------------------------------------------------------------------

PREVIOUS = dict(snapshot_date=day(0), observed_at=at(1, 0, 11))


@pytest.mark.parametrize(
    ("newest", "pending", "expected"),
    [
        (at(0), at(-30), at(-30)),  # a transaction Pending for a month: read back to it
        (at(0), at(-1), at(-3)),  # a recent Pending one: the overlap reaches further
        (at(0), None, at(-3)),  # nothing Pending: the overlap alone
        (None, None, None),  # the previous sync saw no transaction: read everything
    ],
)
def test_horizon_is_the_earlier_of_the_oldest_pending_and_the_overlap(newest, pending, expected) -> None:  # noqa: ANN001
    previous = PreviousSync(**PREVIOUS, newest_created=newest, earliest_pending=pending)
    assert sync_horizon(previous, OVERLAP) == expected
    assert sync_horizon(None, OVERLAP) is None


HORIZON = dt.datetime(2026, 1, 1, 0, 0, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("document", "before"),
    [
        ({"Items": [{"Created": "2026-01-01T00:00:00.9999999Z"}]}, True),  # cut to the microsecond, like the rows
        ({"Items": [{"Created": "2026-01-01T00:00:00Z"}, {"Created": "2026-01-01T02:00:01+02:00"}]}, False),
        ({"Items": []}, False),
        # unreadable: the page is not judged the last, its validation fails the sync instead
        ({"Items": [{"Created": "yesterday"}]}, False),
        ({"Items": [{"ID": "t-1"}]}, False),
        ({"Items": ["2026-01-01T00:00:00Z"]}, False),
        ([], False),
    ],
)
def test_a_page_is_judged_before_the_horizon_from_its_json(document: object, before: bool) -> None:
    assert page_created_before(document, HORIZON) is before


def test_first_sync_reads_everything_and_records_no_horizon(pipeline: Pipeline) -> None:
    history(pipeline, 95)
    sync = pipeline.run(day(0))
    assert sync.horizon is None and sync.previous is None
    assert (sync.rows, sync.pages, pipeline.requests) == (95, 10, 10)
    assert not sync.stats.stopped_early
    assert pipeline.query("SELECT horizon, transactions FROM transaction_syncs") == [(None, 95)]


def test_daily_sync_stops_after_the_first_page_before_the_horizon(pipeline: Pipeline) -> None:
    history(pipeline, 95)
    pipeline.run(day(0))
    for i in range(4):
        pipeline.noah.add(f"new-{i}", at(0, 6 + i))
    sync = pipeline.run(day(1))
    # newest of the previous sync: old-0094 created on day(-1); nothing Pending
    assert sync.horizon == at(-1) - OVERLAP
    assert sync.previous is not None and sync.previous.newest_created == at(-1)
    # 4 new + 4 inside the overlap fill page 1; page 2 lies entirely before the horizon
    assert pipeline.noah.pages_down_to(sync.horizon) == 2
    assert (sync.pages, pipeline.requests, sync.rows) == (2, 2, 2 * PAGE_SIZE)
    assert sync.stats.stopped_early
    known_total = pipeline.query("SELECT count(*) FROM transactions")[0][0]
    assert known_total == 99  # nothing outside the horizon was lost


def test_an_old_pending_transaction_holds_the_horizon_back_until_it_settles(pipeline: Pipeline) -> None:
    history(pipeline, 200, pending={150})  # old-0150 created on day(-50), still Pending
    pipeline.run(day(0))
    sync = pipeline.run(day(1))
    assert sync.horizon == at(-50)
    # it is on page 5; page 6 (day(-51) and older) is the first entirely before the horizon
    assert pipeline.requests == pipeline.noah.pages_down_to(at(-50)) == 6
    pipeline.noah.set("old-0150", Status="Settled")
    sync = pipeline.run(day(2))
    assert sync.horizon == at(-50)  # it was still Pending after day(1)'s sync
    assert pipeline.status_history("old-0150") == [("Pending", day(0)), ("Settled", day(2))]
    assert pipeline.query(
        "SELECT status, status_observed_at, first_observed_at FROM transactions WHERE transaction_id = 'old-0150'"
    ) == [("Settled", sync.observed_at, at(1, 0, 11))]
    sync = pipeline.run(day(3))
    assert sync.horizon == at(-1) - OVERLAP  # settled: the overlap alone again
    assert pipeline.requests == 2


def test_status_changes_are_recorded_once_each(pipeline: Pipeline) -> None:
    pipeline.noah.add("payout", at(0, 9), "Pending", direction="Out", fee="0.0001")
    pipeline.noah.add("deposit", at(0, 10), "Pending")
    pipeline.run(day(0))
    pipeline.noah.set("payout", Status="Failed")
    pipeline.run(day(1))
    pipeline.noah.set("deposit", Status="Settled")
    pipeline.run(day(2))
    pipeline.run(day(3))
    assert pipeline.status_history("payout") == [("Pending", day(0)), ("Failed", day(1))]
    assert pipeline.status_history("deposit") == [("Pending", day(0)), ("Settled", day(2))]
    assert pipeline.query("SELECT transaction_id, status FROM transactions ORDER BY 1") == [
        ("deposit", "Settled"), ("payout", "Failed")
    ]


# --- checks --------------------------------------------------------------------------------------

def test_checks_are_the_table_in_order(pipeline: Pipeline) -> None:
    history(pipeline, 3)
    sync = pipeline.sync(day(0))
    assert [(o.name, o.blocking, o.passed) for o in sync.outcomes] == [
        (info.name, info.blocking, True) for info in TRANSACTION_SYNC_CHECKS
    ]


@pytest.mark.parametrize(("before", "after"), [("Settled", "Pending"), ("Failed", "Settled"), ("Settled", "Failed")])
def test_an_illegal_transition_names_the_transaction_and_publishes_nothing(
    pipeline: Pipeline, before: str, after: str
) -> None:
    history(pipeline, 5)
    pipeline.noah.add("flip", at(0, 8), before)
    pipeline.run(day(0))
    pipeline.noah.set("flip", Status=after)
    with pytest.raises(TransactionSyncFailed) as failed:
        pipeline.sync(day(1))
    message = str(failed.value)
    assert "status_transitions_legal (1 rows)" in message and "flip" in message and before in message
    assert "nothing was published" in message
    assert not partition_path(pipeline.data_dir, day(1), TRANSACTION_SYNCS).exists()
    assert failed.value.landing is not None and failed.value.landing.is_dir()  # raw pages kept
    illegal = outcome(failed.value.sync, Check.STATUS_TRANSITIONS_LEGAL)
    assert [(row["transaction_id"], row["status_before"], row["status"]) for row in illegal.sample] == [
        ("flip", before, after)
    ]


def test_a_known_transaction_missing_inside_the_horizon_is_reported_and_kept(pipeline: Pipeline) -> None:
    history(pipeline, 30)
    pipeline.run(day(0))
    del pipeline.noah.transactions["old-0029"]  # created day(-1): inside the horizon
    del pipeline.noah.transactions["old-0000"]  # created day(-30): outside, not expected
    sync = pipeline.run(day(1))
    missing = outcome(sync, Check.KNOWN_TRANSACTION_MISSING)
    assert (missing.passed, missing.blocking, missing.failing_rows) == (False, False, 1)
    assert missing.sample[0]["transaction_id"] == "old-0029" and missing.sample[0]["last_known_status"] == "Settled"
    assert sync.published is not None
    assert pipeline.query("SELECT count(*) FROM transactions WHERE transaction_id IN ('old-0029', 'old-0000')") == [(2,)]


def test_a_transaction_without_amount_is_kept_and_reported(pipeline: Pipeline) -> None:
    pipeline.noah.add("priced", at(0, 8), amount="0.5")
    pipeline.noah.add("unpriced", at(0, 9), amount=None, fee="0.001")
    sync = pipeline.run(day(0))
    missing = outcome(sync, Check.AMOUNT_MISSING)
    assert (missing.passed, missing.blocking, missing.failing_rows) == (False, False, 1)
    assert missing.sample[0]["transaction_id"] == "unpriced"
    assert outcome(sync, Check.AMOUNTS_VALID).passed
    assert pipeline.query(
        "SELECT transaction_id, amount, amount_raw, amount_value, network_fee FROM transactions ORDER BY 1"
    ) == [("priced", "0.5", "0.5", pytest.approx(0.5), None), ("unpriced", None, None, None, "0.001")]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [("Status", "Done", "'Done' is not one of Pending, Failed, Settled"),
     ("Amount", "1e5", "does not match the PositiveDecimal pattern"),
     ("Created", "2026-02-16 12:00:00Z", "is not an RFC 3339 date-time"),  # sorts where it was
     ("Direction", None, "required field is missing")],
)
def test_a_bad_item_fails_naming_page_item_field_and_reason(
    pipeline: Pipeline, field: str, value: object, reason: str
) -> None:
    history(pipeline, 14)
    if value is None:
        del pipeline.noah.transactions["old-0001"][field]
    else:
        pipeline.noah.set("old-0001", **{field: value})  # 13th newest: page 2, item 2
    with pytest.raises(TransactionSyncFailed) as failed:
        pipeline.sync(day(0))
    message = str(failed.value)
    assert "page 2" in message and "item 2" in message and field in message and reason in message, message
    assert not partition_path(pipeline.data_dir, day(0), TRANSACTION_SYNCS).exists()
    assert latest_raw_landing(pipeline.data_dir, day(0), "transactions") is None  # invalid pages are never landed


def test_duplicate_ids_block(pipeline: Pipeline) -> None:
    history(pipeline, 3)
    real = pipeline.noah.answer

    def twice(request):  # noqa: ANN001, ANN202
        response = real(request)
        body = json.loads(response.body)
        body["Items"].append(body["Items"][0])
        return type(response)(200, response.headers, json.dumps(body).encode())

    pipeline.noah.answer = twice  # type: ignore[method-assign]
    with pytest.raises(TransactionSyncFailed, match="transaction_ids_unique"):
        pipeline.sync(day(0))
    assert read_partition(pipeline.data_dir, day(0), TRANSACTION_SYNCS) is None


# --- landing, publication, replay ---------------------------------------------------------------

def test_pages_land_as_received_and_the_partition_records_the_sync(pipeline: Pipeline) -> None:
    history(pipeline, 25)
    pipeline.run(day(0))
    sync = pipeline.sync(day(1))
    manifest = read_raw_manifest(sync.landing)
    assert manifest.stats["horizon"] == sync.horizon.isoformat() and manifest.stats["stopped_early"]
    assert [p["query"]["SortDirection"] for p in manifest.pages] == ["DESC"] * sync.pages
    for number, request in enumerate(pipeline.transport.sent, start=1):
        assert (sync.landing / f"page-{number:05d}.json").read_bytes() == pipeline.noah.answer(request).body
    metadata = partition_file_metadata(sync.published.path)
    assert metadata == {
        "balances_etl.transactions.observed_at": sync.observed_at.isoformat(),
        "balances_etl.transactions.horizon": sync.horizon.isoformat(),
    }


def test_re_running_the_day_replaces_its_partition(pipeline: Pipeline) -> None:
    pipeline.noah.add("a", at(0, 8))
    pipeline.sync(day(0), run_id="firstrun-01")
    pipeline.noah.add("b", at(0, 9))
    pipeline.sync(day(0), run_id="secondrun-1")
    frame = read_partition(pipeline.data_dir, day(0), TRANSACTION_SYNCS)
    assert sorted(frame["transaction_id"]) == ["a", "b"]


def test_replay_from_the_landing_rebuilds_the_same_partition(pipeline: Pipeline) -> None:
    history(pipeline, 40, pending={30})
    pipeline.run(day(0))
    live = pipeline.sync(day(1))
    assert live.stats.stopped_early and live.pages == 2
    replayed = sync_transactions(LandedTransactionsSource(pipeline.data_dir, day(1)), pipeline.data_dir, day(1),
                                 run_id="replay-0001")
    assert replayed.landing is None
    assert (replayed.horizon, replayed.observed_at, replayed.stats.stopped_early) == (
        live.horizon, live.observed_at, True
    )
    assert replayed.table.equals(live.table)
    assert replayed.published.sha256 == live.published.sha256


def test_replay_without_a_landing_fails_clearly(pipeline: Pipeline) -> None:
    with pytest.raises(TransactionSyncFailed, match="No transactions raw landing for 2026-03-02"):
        LandedTransactionsSource(pipeline.data_dir, day(1))


def test_observed_at_must_be_timezone_aware(pipeline: Pipeline) -> None:
    from balances_etl.pipeline.transactions_sync import NoahTransactionsSource

    with pytest.raises(ValueError, match="timezone-aware"):
        NoahTransactionsSource(pipeline.client(), dt.datetime(2026, 3, 2))
