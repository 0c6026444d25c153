"""The one markdown table helper: Dagster metadata, check samples, the demo and the selftest report."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from decimal import Decimal
from pathlib import Path

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


SEASON_MARKER = "<!-- season -->"  # docs/reliability.md: the season simulation's section starts here


def write_section(path: Path, marker: str, section: str) -> None:
    """Write ``section`` after ``marker`` in the document at ``path``, replacing whatever followed the
    marker and keeping what precedes it: two generators (the selftest and the season simulation)
    share one document without erasing each other's part."""
    kept = path.read_text().split(marker, 1)[0].rstrip() + "\n\n" if path.exists() else ""
    path.write_text(f"{kept}{marker}\n{section.strip()}\n")


def section_after(document: str, marker: str) -> str:
    """The marker and what follows it in ``document`` (empty when the marker is absent): what a
    generator rewriting the part before the marker must keep."""
    head, found, tail = document.partition(marker)
    return f"{found}{tail}" if found else ""
