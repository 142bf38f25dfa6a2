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


def int_in(low: int, high: int | Callable[[], int], what: str = "") -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high`` (a callable: evaluated when parsing, e.g. from the
    cores), one line otherwise; ``what`` says why the bound is what it is."""

    def parse(text: str) -> int:
        value = integer(text)
        most = high() if callable(high) else high
        if not low <= value <= most:
            from compscale.errors import echo

            why = f" ({what})" if what else ""
            raise argparse.ArgumentTypeError(f"must be from {low} to {most:,}{why}, got {echo(value)}")
        return value

    return parse


def max_threads() -> int:
    """The most torch threads per process a flag may ask for (:func:`compscale.train.config.max_threads`)."""
    from compscale.train.config import max_threads as most

    return most()


def local_workers() -> int:
    """The most local worker processes of a study on this machine: its cores (at least 2)."""
    from compscale.train.config import cpu_count

    return max(2, cpu_count())


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


class JobProgress:
    """A study's progress on stderr: a tqdm bar over its jobs (when stderr is a terminal), one line per finished
    job, and a line per stage. A :data:`compscale.progress.Progress` callable."""

    def __init__(self, kind: str, quiet: bool = False) -> None:
        self.kind, self.quiet, self.bar = kind, quiet, None

    def __call__(self, event: Any) -> None:
        import sys

        if self.quiet:
            return
        if event.kind == "start":
            print(f"compscale {self.kind}: {event.message}", file=sys.stderr, flush=True)
            if sys.stderr.isatty():
                from tqdm import tqdm

                self.bar = tqdm(total=event.total, initial=event.done or 0, unit="job", file=sys.stderr, leave=False,
                                dynamic_ncols=True)
        elif event.kind == "trial":
            self._trial(event)
        elif event.kind in ("stage", "message"):
            self.close()
            print(f"compscale {self.kind}: {event.message}", file=sys.stderr, flush=True)

    def _trial(self, event: Any) -> None:
        import sys

        info = event.info
        if self.bar is not None and event.done is not None:
            self.bar.n = event.done
            self.bar.refresh()
        acc = "-" if info.get("accuracy") is None else f"{info['accuracy']:.4f}"
        what = " ".join(f"{k}={info[k]}" for k in ("model", "alpha", "beta", "gamma", "strategy", "phi", "seeds")
                        if info.get(k) is not None)
        count = f"[{event.done}/{event.total}] " if event.done is not None else ""
        print(f"compscale {self.kind}: {count}{what}: {info.get('state')} top1={acc}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
