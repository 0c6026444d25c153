"""Checks judging one normalized partition, as plain functions (Dagster only wires them).

One runner for every domain: a :class:`CheckSuite` is a domain's check table (``domain.checks``), its
row schema and how each check is judged (:class:`Spec`); the balances' suite is here, the
transactions' in ``transforms.transactions``. Every check is vectorised with pyarrow compute so it
stays well under a second on a million rows; only the <= 20 sample rows become Python values.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from balances_etl.domain.amounts import amount_problem
from balances_etl.domain.balances import COLUMNS, KEY_COLUMNS, Column
from balances_etl.domain.checks import BALANCE_PARTITION_CHECKS, CheckInfo
from balances_etl.domain.names import DOCUMENTED_CURRENCIES, Check
from balances_etl.markdown import markdown_table
from balances_etl.transforms.normalize import (
    ArrayLike,
    canonical_strings,
    fits_decimal,
    integer_digits,
    invalid_amounts,
    plain_decimal_strings,
)

SAMPLE_SIZE = 20
# Shown with every offending row so people can find it in the raw landing.
ROW_CONTEXT = ("page_number", "item_index", "account_type", "crypto_currency")
PAIR_COLUMNS = ("account_type", "crypto_currency")
# A duplicated key's sample lists at most this many page/item positions.
MAX_POSITIONS = 10
AMOUNT_FIELDS = ("available", "total")
AMOUNT_COLUMNS = tuple(f"{field}{suffix}" for field in AMOUNT_FIELDS for suffix in ("_raw", "", "_amount"))

Sample = list[dict[str, str]]
# What a judge finds: (passed, failing_rows, sample).
Verdict = tuple[bool, int, Sample]


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    blocking: bool
    description: str
    failing_rows: int
    sample: Sample

    def sample_markdown(self) -> str:
        """The sample as a small markdown table (for the Dagster UI)."""
        return markdown_table(self.sample, limit=SAMPLE_SIZE) or "No offending rows."


def _count(mask: ArrayLike) -> int:
    return pc.sum(mask).as_py() or 0


def as_text(table: pa.Table) -> Sample:
    """Rows as dicts of strings; decimals written plainly (never ``1E-8``), nulls as ``null``."""
    columns = {}
    for name in table.column_names:
        column = table[name]
        text = plain_decimal_strings(column) if pa.types.is_decimal(column.type) else pc.cast(column, pa.string())
        columns[name] = ["null" if value is None else value for value in text.to_pylist()]
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def rows_verdict(
    table: pa.Table, mask: ArrayLike, columns: tuple[str, ...], context: tuple[str, ...] = ROW_CONTEXT
) -> Verdict:
    """Verdict of a per-row check: offending rows counted, the first ones shown with their ``context``
    (where they are in the raw landing, and what they are)."""
    mask = pc.fill_null(mask, True)  # a row that cannot be judged is not a row that passed
    failing = _count(mask)
    shown = table.filter(mask).slice(0, SAMPLE_SIZE).select(list(context + columns))
    return failing == 0, failing, as_text(shown)


# A partition as judged: a pandas frame (ArrowDtypes) or the Arrow table it is made from.
Partition = pd.DataFrame | pa.Table


def _column_names(partition: Partition) -> list[str]:
    return partition.column_names if isinstance(partition, pa.Table) else [str(name) for name in partition.columns]


def _dtype(partition: Partition, name: str) -> object:
    """The column's type as a pandas dtype, for a frame or a table alike (the name appears once)."""
    if isinstance(partition, pa.Table):
        return pd.ArrowDtype(partition.schema.field(name).type)
    return partition[name].dtype


def _null_mask(partition: Partition, name: str) -> ArrayLike:
    column = partition[name]
    return pc.is_null(column) if isinstance(partition, pa.Table) else pa.array(column.isna().to_numpy())


def _schema(partition: Partition, columns: tuple[Column, ...]) -> Verdict:
    """Names, order and ArrowDtypes exactly as the domain's columns; no nulls in non-nullable columns.

    A structural mismatch fails every row; otherwise the rows holding a forbidden null fail.
    """
    actual = _column_names(partition)
    names = [column.name for column in columns]
    problems: Sample = []
    for position, column in enumerate(columns):
        expected = pd.ArrowDtype(column.arrow_type)
        if column.name not in actual:
            problem = "missing"
        elif actual.count(column.name) > 1:
            problem = f"appears {actual.count(column.name)} times"
        elif _dtype(partition, column.name) != expected:
            problem = f"dtype {_dtype(partition, column.name)}, expected {expected}"
        elif actual.index(column.name) != position:
            problem = f"at position {actual.index(column.name)}, expected {position}"
        else:
            continue
        problems.append({"column": column.name, "problem": problem})
    problems += [{"column": name, "problem": "unexpected column"} for name in actual if name not in names]
    if problems:
        return False, len(partition), problems[:SAMPLE_SIZE]
    null_counts = {c.name: _count(_null_mask(partition, c.name)) for c in columns if not c.nullable}
    with_nulls = [name for name, count in null_counts.items() if count]
    if not with_nulls:
        return True, 0, []
    failing = _count(functools.reduce(pc.or_, [_null_mask(partition, name) for name in with_nulls]))
    return False, failing, [{"column": name, "problem": f"{null_counts[name]} null value(s)"} for name in with_nulls]


def _amounts_valid(table: pa.Table, _previous: pa.Table | None) -> Verdict:
    invalid = pc.or_(invalid_amounts(table["available_raw"]), invalid_amounts(table["total_raw"]))
    passed, failing, sample = rows_verdict(table, invalid, ("available_raw", "total_raw"))
    for row in sample:
        row["problem"] = "; ".join(
            f"{field.capitalize()}: {problem}"
            for field in AMOUNT_FIELDS
            if (problem := amount_problem(row[f"{field}_raw"])) is not None
        )
    return passed, failing, sample


def keys_unique(key_columns: tuple[str, ...], table: pa.Table, _previous: pa.Table | None) -> Verdict:
    """``key_columns`` unique; each duplicated key shown once, with the page/item positions holding it.
    A single key column is first counted without Acero (whose grouping costs a daily sync ~2 ms)."""
    keys = list(key_columns)
    if len(keys) == 1 and pc.count_distinct(table[keys[0]], mode="all").as_py() == table.num_rows:
        return True, 0, []
    counts = table.select(keys).group_by(keys).aggregate([([], "count_all")])
    duplicated = counts.filter(pc.greater(counts["count_all"], 1))
    if duplicated.num_rows == 0:
        return True, 0, []
    shown = duplicated.sort_by([(k, "ascending") for k in keys]).slice(0, SAMPLE_SIZE).select(keys)
    rows = (
        table.select([*keys, "page_number", "item_index"])
        .join(shown, keys, join_type="inner")
        .sort_by([("page_number", "ascending"), ("item_index", "ascending")])
    )
    position = pc.binary_join_element_wise(
        "page ", pc.cast(rows["page_number"], pa.string()), " item ", pc.cast(rows["item_index"], pa.string()), ""
    )
    # Single-threaded grouping keeps each list in page/item order.
    grouped = (
        rows.append_column("position", position)
        .group_by(keys, use_threads=False)
        .aggregate([("position", "list")])
        .sort_by([(k, "ascending") for k in keys])
    )
    sample = as_text(grouped.select(keys))
    lengths = pc.list_value_length(grouped["position_list"]).to_pylist()
    positions = pc.list_slice(grouped["position_list"], 0, MAX_POSITIONS).to_pylist()
    for row, count, first in zip(sample, lengths, positions):
        more = f" (+{count - len(first)} more)" if count > len(first) else ""
        row.update(rows=str(count), positions=", ".join(first) + more)
    return False, _count(duplicated["count_all"]), sample


def _available_not_above_total(table: pa.Table, _previous: pa.Table | None) -> Verdict:
    available, total = table["available_amount"], table["total_amount"]
    # Canonical strings order exactly: more integer digits is larger, equal ones compare as text.
    digits_available, digits_total = integer_digits(table["available"]), integer_digits(table["total"])
    text_above = pc.or_(
        pc.greater(digits_available, digits_total),
        pc.and_(pc.equal(digits_available, digits_total), pc.greater(table["available"], table["total"])),
    )
    both_decimal = pc.and_(pc.is_valid(available), pc.is_valid(total))
    above = pc.if_else(both_decimal, pc.greater(available, total), text_above)
    return rows_verdict(table, above, ("available", "total", "pending_outflow"))


def canonical_mismatch(table: pa.Table, field: str, decimal_suffix: str = "_amount") -> ArrayLike:
    """Rows where raw -> canonical -> decimal does not give back exactly the same value."""
    raw, canonical, decimal = table[f"{field}_raw"], table[field], table[f"{field}{decimal_suffix}"]
    decimal_differs = pc.if_else(
        pc.is_valid(decimal),
        pc.not_equal(canonical_strings(plain_decimal_strings(decimal)), canonical),
        fits_decimal(canonical),
    )
    return pc.or_kleene(pc.not_equal(canonical_strings(raw), canonical), decimal_differs)


def _canonical_matches_decimal(table: pa.Table, _previous: pa.Table | None) -> Verdict:
    mismatch = pc.or_kleene(canonical_mismatch(table, "available"), canonical_mismatch(table, "total"))
    return rows_verdict(table, mismatch, AMOUNT_COLUMNS)


def _amount_too_wide(table: pa.Table, _previous: pa.Table | None) -> Verdict:
    too_wide = pc.or_(pc.invert(fits_decimal(table["available"])), pc.invert(fits_decimal(table["total"])))
    return rows_verdict(table, too_wide, AMOUNT_FIELDS)


def unknown_currency(
    shown: tuple[str, ...], context: tuple[str, ...], table: pa.Table, _previous: pa.Table | None
) -> Verdict:
    """Rows whose crypto_currency is not a documented code, each with its ``context`` and ``shown`` columns."""
    documented = pc.is_in(table["crypto_currency"], value_set=pa.array(DOCUMENTED_CURRENCIES, pa.string()))
    return rows_verdict(table, pc.invert(documented), shown, context)


def _currency_disappeared(table: pa.Table, previous: pa.Table | None) -> Verdict:
    if previous is None:
        return True, 0, []
    pairs = list(PAIR_COLUMNS)
    present = table.select(pairs).group_by(pairs).aggregate([])
    gone = (
        previous.select([*pairs, "snapshot_date", "total"])
        .join(present, pairs, join_type="left anti")
        .sort_by([(c, "ascending") for c in pairs])
        .rename_columns([*pairs, "previous_snapshot_date", "previous_total"])
    )
    return gone.num_rows == 0, gone.num_rows, as_text(gone.slice(0, SAMPLE_SIZE))


def _zero_items(table: pa.Table, _previous: pa.Table | None) -> Verdict:
    return table.num_rows > 0, 0, []


@dataclass(frozen=True)
class Spec:
    """How one check of a suite's table is judged. A ``row_wise`` judge looks at each row alone, so a
    day can be judged chunk by chunk; the others see the whole day and the ``previous`` table."""

    name: Check
    columns: tuple[str, ...]
    judge: Callable[[pa.Table, pa.Table | None], Verdict]
    previous_columns: tuple[str, ...] = ()
    row_wise: bool = False


@dataclass(frozen=True)
class CheckSuite:
    """One domain's partition checks: its check table (``domain.checks``, schema check first), its
    row schema, and a :class:`Spec` for every other check of the table."""

    checks: tuple[CheckInfo, ...]
    columns: tuple[Column, ...]
    specs: tuple[Spec, ...] = field(repr=False)

    def __post_init__(self) -> None:
        judged = [self.checks[0].name, *(spec.name for spec in self.specs)]
        if self.checks[0].name is not Check.SCHEMA or sorted(judged) != sorted(info.name for info in self.checks):
            raise ValueError(f"specs {judged} do not judge exactly the checks of the table, schema first")
        order = [info.name for info in self.checks]
        object.__setattr__(self, "specs", tuple(sorted(self.specs, key=lambda spec: order.index(spec.name))))

    def info(self, name: Check) -> CheckInfo:
        return next(info for info in self.checks if info.name == name)


BALANCE_CHECKS = CheckSuite(
    BALANCE_PARTITION_CHECKS,
    COLUMNS,
    (
        Spec(Check.AMOUNTS_VALID, ROW_CONTEXT + ("available_raw", "total_raw"), _amounts_valid, row_wise=True),
        Spec(Check.KEYS_UNIQUE, KEY_COLUMNS + ("page_number", "item_index"), partial(keys_unique, KEY_COLUMNS)),
        Spec(
            Check.AVAILABLE_NOT_ABOVE_TOTAL,
            ROW_CONTEXT + ("available", "total", "available_amount", "total_amount", "pending_outflow"),
            _available_not_above_total, row_wise=True,
        ),
        Spec(Check.CANONICAL_MATCHES_DECIMAL, ROW_CONTEXT + AMOUNT_COLUMNS, _canonical_matches_decimal, row_wise=True),
        Spec(Check.AMOUNT_TOO_WIDE, ROW_CONTEXT + AMOUNT_FIELDS, _amount_too_wide, row_wise=True),
        Spec(Check.UNKNOWN_CURRENCY, ROW_CONTEXT + ("asset",), partial(unknown_currency, ("asset",), ROW_CONTEXT),
             row_wise=True),
        Spec(
            Check.CURRENCY_DISAPPEARED, PAIR_COLUMNS, _currency_disappeared,
            previous_columns=PAIR_COLUMNS + ("snapshot_date", "total"),
        ),
        Spec(Check.ZERO_ITEMS, ("snapshot_date",), _zero_items),
    ),
)


def _usable_table(partition: Partition, columns: tuple[Column, ...]) -> pa.Table:
    """The partition's columns that have their schema name and type (once): what the checks can judge."""
    names = _column_names(partition)
    usable = [
        c.name for c in columns
        if names.count(c.name) == 1 and _dtype(partition, c.name) == pd.ArrowDtype(c.arrow_type)
    ]
    if isinstance(partition, pa.Table):
        return partition.select(usable)
    return pa.Table.from_pandas(partition[usable], preserve_index=False)


def evaluate_checks(suite: CheckSuite, partition: Partition, previous: Partition | None) -> list[CheckOutcome]:
    """Every check of ``suite`` on one partition, in the order of its table (blocking first).

    A check whose columns are missing or mistyped fails as "not evaluated" (the schema check says why).
    """
    # Arrow kernels release the GIL, so the judges share the cores (a third off on two cores).
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="checks") as pool:
        checks = PartitionChecks(suite)
        checks.add_rows(_usable_table(partition, suite.columns), pool)
        return checks.outcomes(partition, previous, pool)


def evaluate_snapshot_checks(partition: Partition, previous_frame: Partition | None) -> list[CheckOutcome]:
    """Every balances check on one day's partition, ``previous_frame`` being the day before's."""
    return evaluate_checks(BALANCE_CHECKS, partition, previous_frame)


class PartitionChecks:
    """The checks of one partition: row-wise judges fed chunk by chunk as the rows are normalized, the
    others run on the whole partition in ``outcomes``. Chunks must come in row order, each once; the
    outcomes are then exactly those of judging the whole partition at once (counts add up, samples
    are its first offending rows)."""

    def __init__(self, suite: CheckSuite) -> None:
        self._suite = suite
        self._row_verdicts: dict[str, Verdict] = {}

    def add_rows(self, rows: pa.Table, pool: Executor | None = None) -> None:
        """Judge ``rows`` (the next rows of the partition) with every row-wise check that has its columns."""
        specs = [spec for spec in self._suite.specs if spec.row_wise and not _missing(spec, rows, None)]
        for spec, (passed, failing, sample) in zip(specs, _judged(specs, rows, None, pool), strict=True):
            was_passed, was_failing, was_sample = self._row_verdicts.get(spec.name, (True, 0, []))
            self._row_verdicts[spec.name] = (
                was_passed and passed, was_failing + failing, (was_sample + sample)[:SAMPLE_SIZE]
            )

    def outcomes(
        self, partition: Partition, previous: Partition | None, pool: Executor | None = None
    ) -> list[CheckOutcome]:
        """Every check's outcome for the partition whose rows were added; ``partition`` is all of it
        and ``previous`` what the whole-partition judges compare it with (a frame is read like
        ``partition``). An Arrow table is judged as it is, a frame converted (a daily transactions
        sync's few thousand rows: ~10 ms less as a table)."""
        suite = self._suite
        schema = suite.checks[0]
        passed, failing, sample = _schema(partition, suite.columns)
        outcomes = [CheckOutcome(schema.name, passed, schema.blocking, schema.description, failing, sample)]
        current = _usable_table(partition, suite.columns)
        if isinstance(previous, pd.DataFrame):
            previous = _usable_table(previous, suite.columns)
        whole = [spec for spec in suite.specs if not spec.row_wise and not _missing(spec, current, previous)]
        verdicts = dict(zip((spec.name for spec in whole), _judged(whole, current, previous, pool), strict=True))
        verdicts.update(self._row_verdicts)
        for spec in suite.specs:
            info = suite.info(spec.name)
            if _missing(spec, current, previous):
                missing = ", ".join(_missing(spec, current, previous))
                description = f"not evaluated: column(s) missing or mistyped: {missing}. {info.description}"
                outcomes.append(CheckOutcome(spec.name, False, info.blocking, description, len(partition), []))
                continue
            passed, failing, sample = verdicts.get(spec.name, (True, 0, []))  # row-wise, no rows added: none failed
            outcomes.append(CheckOutcome(spec.name, passed, info.blocking, info.description, failing, sample))
        return outcomes


class SnapshotChecks(PartitionChecks):
    """The balances checks of one day (what ``DayPartitionBuilder`` feeds chunk by chunk)."""

    def __init__(self) -> None:
        super().__init__(BALANCE_CHECKS)


def _judged(specs: list[Spec], current: pa.Table, previous: pa.Table | None, pool: Executor | None) -> list[Verdict]:
    if pool is None:
        return [spec.judge(current, previous) for spec in specs]
    return [job.result() for job in [pool.submit(spec.judge, current, previous) for spec in specs]]


def _missing(spec: Spec, current: pa.Table, previous: pa.Table | None) -> list[str]:
    missing = [c for c in spec.columns if c not in current.column_names]
    if previous is not None:
        missing += [f"previous {c}" for c in spec.previous_columns if c not in previous.column_names]
    return missing
