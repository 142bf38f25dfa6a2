"""Helpers shared by the command modules: argument types and plain-text tables."""

from __future__ import annotations

import argparse
import math
import re
from typing import Any, Callable, Sequence


def parse_amount(text: str) -> float:
    """A count such as ``4e9``, ``400M``, ``1.5G`` or ``5,288,548``."""
    m = re.fullmatch(r"\s*([0-9][0-9_,]*\.?[0-9]*(?:[eE][-+]?[0-9]+)?)\s*([kKmMgGbBtT]?)\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"not an amount: {text!r} (e.g. 4e9, 400M, 1.5G)")
    value = float(m.group(1).replace(",", "").replace("_", ""))
    value *= {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9, "t": 1e12}[m.group(2).lower()]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def positive_int(text: str) -> int:
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite: {text!r}")
    return value


def fmt_count(n: float | None, unit: float = 1e6, digits: int = 2, suffix: str = "M") -> str:
    return "-" if n is None else f"{n / unit:.{digits}f}{suffix}"


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, Callable[[Any], str]]]) -> str:
    """Rows as an aligned text table; ``columns`` are (key, header, formatter)."""
    cells = [[h for _, h, _ in columns]] + [[fmt(r.get(k)) for k, _, fmt in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
