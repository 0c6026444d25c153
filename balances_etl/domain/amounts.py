"""NOAH's `PositiveDecimal` rules, in one place.

NOAH publishes amounts as strings: 1-38 characters matching ``^[+]?([.]\\d+|\\d+[.]?\\d*)$``.
We accept ASCII digits only (Python's and pandas' ``\\d`` also match other scripts' digits) and
match the whole string (``re.match`` with ``$`` would let ``'1.5\\n'`` through).
"""

from __future__ import annotations

import re

AMOUNT_MAX_LENGTH = 38
# The published pattern with \d narrowed to ASCII; anchored by fullmatch / RE2 semantics.
AMOUNT_PATTERN = r"^[+]?([.][0-9]+|[0-9]+[.]?[0-9]*)$"
# DECIMAL(38,18): at most 20 integer digits and 18 fractional digits once canonical.
DECIMAL_PRECISION = 38
DECIMAL_SCALE = 18
DECIMAL_INTEGER_DIGITS = DECIMAL_PRECISION - DECIMAL_SCALE

_AMOUNT_RE = re.compile(r"[+]?(?:[.][0-9]+|[0-9]+[.]?[0-9]*)")


def amount_pattern() -> re.Pattern[str]:
    """The compiled pattern (ASCII digits, no length limit): match it with ``fullmatch``."""
    return _AMOUNT_RE


def amount_problem(value: object) -> str | None:
    """Why ``value`` is not a valid NOAH amount, or None when it is."""
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if not value:
        return "empty string"
    if len(value) > AMOUNT_MAX_LENGTH:
        return f"{len(value)} characters, more than {AMOUNT_MAX_LENGTH}"
    if _AMOUNT_RE.fullmatch(value) is None:
        return f"{value[:40]!r} does not match the PositiveDecimal pattern {AMOUNT_PATTERN}"
    return None


def canonical_amount(value: str) -> str:
    """The canonical spelling of a valid amount: ``+.50`` -> ``0.5``, ``0010.0100`` -> ``10.01``.

    Scalar twin of the vectorised canonicalisation in ``transforms.normalize``; used for
    ledger files and tests. Raises ValueError for an invalid amount.
    """
    problem = amount_problem(value)
    if problem is not None:
        raise ValueError(problem)
    unsigned = value.removeprefix("+")
    integer, _, fraction = unsigned.partition(".")
    integer = integer.lstrip("0") or "0"
    fraction = fraction.rstrip("0")
    return f"{integer}.{fraction}" if fraction else integer


def fits_decimal_38_18(canonical: str) -> bool:
    """Whether a canonical amount is exactly representable as DECIMAL(38,18)."""
    integer, _, fraction = canonical.partition(".")
    return len(integer) <= DECIMAL_INTEGER_DIGITS and len(fraction) <= DECIMAL_SCALE
