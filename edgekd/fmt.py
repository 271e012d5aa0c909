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


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured markdown table that also reads well in a terminal."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    fmt = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    lines = [fmt.format(*headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt.format(*r) for r in cells]
    return "\n".join(lines)
