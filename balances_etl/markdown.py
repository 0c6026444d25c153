"""Small markdown tables for Dagster metadata and check samples (the UI renders them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

MAX_ROWS = 20


def markdown_table(rows: Sequence[Mapping[str, object]], limit: int = MAX_ROWS) -> str:
    """A markdown table of the first ``limit`` rows; empty string when there are none."""
    if not rows:
        return ""
    columns = list(rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows[:limit]:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    if len(rows) > limit:
        lines.append(f"\n… {len(rows) - limit} more")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, Decimal):  # exact, in plain notation: 0E-18 -> 0, 1.50 -> 1.5
        value = format(value.normalize(), "f")
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", "\\n")
