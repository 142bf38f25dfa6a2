"""The studies' report fragments: JSON, markdown tables and the number formats they share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from compscale.io import atomic_write_text
from compscale.vocabulary import normalize


def write_study(out: Path, kind: str, payload: dict[str, Any], plot: Callable[[dict[str, Any], Path], None],
                section: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """A study's three outputs in ``out``: ``KIND.json``, ``KIND.png`` and ``section.md`` (for the report)."""
    write_json(out / f"{kind}.json", payload)
    plot(payload, out / f"{kind}.png")
    atomic_write_text(out / "section.md", section(payload))
    return payload


def write_json(path: Path, payload: dict[str, Any]) -> None:
    # In the one vocabulary of compscale's JSON (what `compscale study ... --json` prints).
    atomic_write_text(path, json.dumps(normalize(payload), indent=2, default=str) + "\n")


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, Callable[[Any], str]]]) -> str:
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"
    body = ["| " + " | ".join(fmt(r.get(k)) for k, _, fmt in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def fmt_m(n: Any) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M"


def fmt_k(n: Any) -> str:
    return "-" if n is None else f"{n / 1e3:.1f}k"


def fmt_dev(x: Any) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


def fmt_band(b: Any) -> str:
    return "-" if not b else f"{100 * b['mean']:.2f} ± {100 * b['std']:.2f}"
