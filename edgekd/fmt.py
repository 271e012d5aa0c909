"""How figures read in every report (terminal, markdown, HTML, compare, inspect): one spelling each."""

from __future__ import annotations

from typing import Any

MISSING = "—"


def pct(x: Any, digits: int = 2) -> str:
    """A fraction in [0, 1] as a percentage; anything that is not a number reads as missing."""
    number = isinstance(x, int | float) and not isinstance(x, bool)
    return f"{100 * x:.{digits}f}%" if number else MISSING


def kb(n: float | None) -> str:
    return MISSING if n is None else f"{n / 1024:.1f} KB"


def num(v: float | None, fmt: str) -> str:
    return MISSING if v is None else format(v, fmt)
