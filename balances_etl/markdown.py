"""The one markdown table helper: Dagster metadata, check samples, the demo and the selftest report."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from decimal import Decimal

MAX_ROWS = 20


def markdown_table(
    rows: Sequence[Mapping[str, object]], limit: int = MAX_ROWS, *, right_aligned: Collection[str] = ()
) -> str:
    """A markdown table of the first ``limit`` rows, columns in order of first appearance; empty
    string when there are none."""
    if not rows:
        return ""
    columns = list(dict.fromkeys(key for row in rows[:limit] for key in row))
    lines = [_row(columns), "|" + "|".join("---:" if c in right_aligned else "---" for c in columns) + "|"]
    lines += [_row([_cell(row.get(c)) for c in columns]) for row in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"\n… {len(rows) - limit} more")
    return "\n".join(lines)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _cell(value: object) -> str:
    """Exact decimals in plain notation (0E-18 -> 0, 1.50 -> 1.5); raw values may hold pipes or
    line breaks that would break the table, so those are escaped."""
    if isinstance(value, Decimal):
        value = format(value.normalize(), "f")
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "\\n").replace("\r", "\\r")
