"""A documented environment variable: its name, default, meaning and how its text is read.

Each configuration table (the pipeline's ``BALANCES_ETL_*`` in :mod:`balances_etl.settings`, NOAH's
``NOAH_*`` in :mod:`balances_etl.noah.config`) is a list of :class:`Variable` rows; the code reads the
rows and the README is checked against them, so every default is written once.

Rules shared by every row:

- an empty or blank variable counts as unset (a blank line in ``.env`` means "use the default");
- the default is written as the text a user would set, and is parsed by the same rule;
- a refusal names the variable and says what was expected, never the value (it may be a secret).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass
from typing import Generic, NamedTuple, Protocol, TypeVar

T = TypeVar("T")

_WHOLE_NUMBER = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


class ConfigVariable(NamedTuple):
    """One documented row: what the README's configuration tables list."""

    variable: str
    default: str
    meaning: str


class InvalidValue(ValueError):
    """A parser refuses a text or value; the message ("must be ...") never contains the value."""


class ErrorType(Protocol):
    """The table's own error (``SettingsError``, ``ConfigError``): a message and the variable it names."""

    def __call__(self, message: str, *, variable: str) -> Exception: ...


@dataclass(frozen=True)
class Variable(Generic[T]):
    """One row of a configuration table.

    ``default`` is the documented default as text (``None``: no default, the variable must be set
    when read); ``parse`` turns a stripped, non-empty text into the value or raises
    :class:`InvalidValue`. ``shown_default`` replaces ``default`` in the documentation when the
    text is not meaningful to a reader (a path computed at import) or there is none.
    """

    name: str
    default: str | None
    meaning: str
    parse: Callable[[str], T]
    _: KW_ONLY
    shown_default: str | None = None

    def row(self) -> ConfigVariable:
        return ConfigVariable(self.name, self.shown_default or self.default or "(unset)", self.meaning)

    def text(self, environ: Mapping[str, str]) -> str | None:
        """The variable's text without surrounding blanks; None when unset or blank."""
        return environ.get(self.name, "").strip() or None

    def read(self, environ: Mapping[str, str], error: ErrorType) -> T:
        """The value set in ``environ``, else the default; ``error`` names the variable on refusal."""
        text = self.text(environ) or self.default
        if text is None:
            raise error(f"{self.name} is not set", variable=self.name)
        try:
            return self.parse(text)
        except InvalidValue as reason:
            raise error(f"{self.name} {reason}", variable=self.name) from None

    def read_optional(self, environ: Mapping[str, str], error: ErrorType) -> T | None:
        """Like ``read``, but None when unset and without a default (an optional feature left off)."""
        return None if self.text(environ) is None and self.default is None else self.read(environ, error)

    def default_value(self) -> T:
        """The parsed default (for a dataclass field's default or a function's keyword default)."""
        if self.default is None:
            raise ValueError(f"{self.name} has no default")
        return self.parse(self.default)

    def check(self, value: object, error: ErrorType) -> None:
        """Refuse a value given in code, not read from text, by the parser's ``check`` when it has one."""
        check: Callable[[object], None] | None = getattr(self.parse, "check", None)
        if check is None:
            return
        try:
            check(value)
        except InvalidValue as reason:
            raise error(f"{self.name} {reason}", variable=self.name) from None


@dataclass(frozen=True)
class Number:
    """Parser of a plain decimal number in ``[minimum, maximum]``: no sign, exponent, ``_`` or non-ASCII digit.

    ``unit`` words the refusal of a malformed fractional number ("a number of seconds such as 0.5").
    A number is shown when out of range: it cannot be a credential.
    """

    kind: type[int] | type[float]
    minimum: float = 0
    maximum: float = math.inf
    unit: str = ""

    def __call__(self, text: str) -> int | float:
        pattern = _WHOLE_NUMBER if self.kind is int else _DECIMAL
        if pattern.fullmatch(text) is None:
            of_unit = f" of {self.unit}" if self.unit else ""
            wanted = "a whole number" if self.kind is int else f"a number{of_unit} such as 0.5"
            raise InvalidValue(f"must be {wanted} (value not shown)")
        value = self.kind(text)
        self.check(value)
        return value

    def check(self, value: object) -> None:
        valid_type = isinstance(value, int) if self.kind is int else isinstance(value, (int, float))
        if isinstance(value, bool) or not valid_type:
            raise InvalidValue(f"must be a {self.kind.__name__}, got {type(value).__name__}")
        if not (math.isfinite(value) and self.minimum <= value <= self.maximum):  # type: ignore[arg-type]
            bounds = (
                f"at least {self.minimum:g}"
                if math.isinf(self.maximum)
                else f"between {self.minimum:g} and {self.maximum:g}"
            )
            raise InvalidValue(f"must be {bounds}, got {value:g}")  # type: ignore[str-format]
