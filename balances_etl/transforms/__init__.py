"""Vectorised transforms of NOAH balance items: normalization and the snapshot checks."""

from balances_etl.transforms.checks import CheckOutcome, evaluate_snapshot_checks
from balances_etl.transforms.normalize import (
    AmountValidationError,
    canonicalize_amounts,
    normalize_snapshot,
    validate_amounts,
)

__all__ = [
    "AmountValidationError",
    "CheckOutcome",
    "canonicalize_amounts",
    "evaluate_snapshot_checks",
    "normalize_snapshot",
    "validate_amounts",
]
