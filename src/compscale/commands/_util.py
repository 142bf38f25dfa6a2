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


def parse_budget(text: str) -> float | str:
    """A budget: an amount (:func:`parse_amount`: ``1G``, ``10M``) or a multiple of the baseline's realized
    cost, ``4x`` (kept as the string ``"4x"``, which :func:`compscale.scale_to_budget` takes)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*[xX]\s*", str(text))
    if m:
        value = float(m.group(1))
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"must be a positive multiple of the baseline: {text!r}")
        return f"{value:g}x"
    try:
        return parse_amount(text)
    except argparse.ArgumentTypeError as err:
        if not str(err).startswith("not an amount"):
            raise
        raise argparse.ArgumentTypeError(f"not an amount: {text!r} (e.g. 1G, 10M, or 4x the baseline)") from None


def duration_ms(text: str) -> float:
    """A duration as milliseconds: ``10ms``, ``0.01s``, ``2.5ms``, ``500us`` (a unit is required)."""
    from compscale.deploy.latency import parse_duration
    from compscale.errors import UserError

    try:
        return parse_duration(str(text), "a duration")
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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


def max_batch() -> int:
    """The largest batch a flag may ask for (:data:`compscale.train.config.MAX_BATCH`)."""
    from compscale.train.config import MAX_BATCH

    return MAX_BATCH


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


def print_json(value: Any, indent: int | None = None) -> None:
    """What ``--json`` prints: ``value`` with its keys in the one vocabulary (:func:`compscale.vocabulary.normalize`),
    on stdout."""
    import json

    from compscale.vocabulary import normalize

    print(json.dumps(normalize(value), indent=indent, default=str))


def progress_bar(total: int | None, desc: str = "", unit: str = "it", initial: int = 0):
    """A tqdm bar on stderr as the training command draws its bars: with an ETA, taken off the terminal when it
    is closed (``leave=False``), redrawn at most twice a second."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True,
                mininterval=0.5)


class BarProgress:
    """A :data:`compscale.progress.Progress` for counted work: one bar per phase (an event's ``message`` names
    the phase, ``done``/``total`` count it); events without a total are ignored. Close it when the work ends."""

    def __init__(self, unit: str = "it", kinds: tuple[str, ...] = ("stage", "eval", "repeat")) -> None:
        self.unit, self.kinds, self.bar, self.phase = unit, kinds, None, None

    def __call__(self, event: Any) -> None:
        if event.kind not in self.kinds or event.total is None:
            return
        phase = (event.kind, event.total)
        if self.bar is None or phase != self.phase or (event.done or 0) < self.bar.n:  # a new phase
            self.close()
            self.bar, self.phase = progress_bar(event.total, unit=self.unit), phase
        self.bar.set_description_str(event.message, refresh=False)
        self.bar.update((event.done or 0) - self.bar.n)  # redrawn at most twice a second ...
        if event.done == event.total:
            self.bar.refresh()  # ... and once at the end

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, Callable[[Any], str]]]) -> str:
    """Rows as an aligned text table; ``columns`` are (key, header, formatter)."""
    cells = [[h for _, h, _ in columns]] + [[fmt(r.get(k)) for k, _, fmt in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class JobProgress:
    """A study's progress on stderr: a tqdm bar over its jobs (when stderr is a terminal), one line per finished
    job with an ETA, and a line per stage. A :data:`compscale.progress.Progress` callable.

    The ETA weighs the work by its cost, not by a count of jobs: the runner reports each study's total work and
    the work finished so far (``work``, ``work_done``: multiply-adds × seeds × images × epochs), the rate is the
    work finished since this study started here over the time it took: the ETA of this study (a command of several
    studies, like the demo, shows each one's in turn). It waits until as many jobs have ended as there are local
    workers: when the first of two parallel jobs ends the other is about as far along, and counting only the
    finished one halved the rate (the demo's step 2 said 20 min for 10)."""

    def __init__(self, kind: str, quiet: bool = False) -> None:
        self.kind, self.quiet, self.bar = kind, quiet, None
        self.workers, self.ended = 1, 0  # this study's local workers; jobs ended since it started here
        self.started: tuple[float, float] | None = None  # (when this study started here, its work done then)

    def __call__(self, event: Any) -> None:
        import sys

        if self.quiet:
            return
        if event.kind == "start":
            import time

            self.started = (time.monotonic(), float(event.info.get("work_done") or 0.0))
            self.workers, self.ended = int(event.info.get("workers") or 1), 0
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

    def eta(self, info: Any) -> str:
        """``, ETA 4m10s`` from the cost-weighted rate of this study's finished work ("" before there is one)."""
        import time

        work, done = info.get("work"), info.get("work_done")
        if self.started is None or work is None or done is None or self.ended < self.workers:
            return ""
        since, done_then = self.started
        elapsed = time.monotonic() - since
        if done <= done_then or elapsed <= 0:
            return ""
        left = max(0.0, float(work) - float(done)) / ((float(done) - done_then) / elapsed)
        minutes, seconds = divmod(int(round(left)), 60)
        return f", ETA {minutes}m{seconds:02d}s"

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
        self.ended += 1
        last = event.done is not None and event.done == event.total  # pruned jobs never reach `work`: no ETA then
        eta = "" if last else self.eta(info)
        print(f"compscale {self.kind}: {count}{what}: {info.get('state')} top1={acc}{eta}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
