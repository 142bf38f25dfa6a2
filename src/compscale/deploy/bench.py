"""Timing done so that two paths can be compared: warm-up, interleaved repetitions, medians.

Timings on a shared machine drift (batch-1 latency varies ±20 % between processes here). Measuring every
candidate once per round, round after round, exposes all of them to the same drift, and the median of the
rounds ignores the outliers; the ratio of two medians from the same run is the figure to report.

What is timed is built elsewhere: :mod:`compscale.deploy.paths` (``compscale bench``) and
:func:`compscale.optimize`. Layer: imports only :mod:`compscale.deploy.records` from the deploy package.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from compscale.deploy.records import Record
from compscale.errors import UserError
from compscale.progress import Progress, report

__all__ = ["BLOCK_SECONDS", "Timing", "measure", "set_threads"]

#: Target duration of one timed block of calls when ``measure(inner="auto")``.
BLOCK_SECONDS = 0.08


@dataclass
class Timing(Record):
    """Seconds per call of one candidate: every repetition, and their median."""

    name: str
    batch: int
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def latency_ms(self) -> float:
        return self.median * 1e3

    @property
    def images_per_s(self) -> float:
        return self.batch / self.median

    @property
    def spread(self) -> float:
        """(max − min) / median of the repetitions: how noisy the machine was."""
        return (max(self.times) - min(self.times)) / self.median

    def as_dict(self) -> dict[str, Any]:
        d = super().as_dict()
        d.update(median_s=self.median, latency_ms=self.latency_ms, images_per_s=self.images_per_s, spread=self.spread)
        return d


def set_threads(threads: int | None) -> int:
    """Fix PyTorch's intra-op thread count (``None`` keeps it); returns the count in force."""
    if threads is not None:
        if int(threads) != threads or threads < 1:
            raise UserError(f"threads must be a positive integer, got {threads!r}")
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def measure(candidates: Mapping[str, Callable[[], Any]], batch: int, warmup: int = 2, repeats: int = 10,
            min_seconds: float = 0.0, settle: int = 0, progress: Progress | None = None, inner: int | str = 1,
            prune: float | None = None) -> dict[str, Timing]:
    """Time each zero-argument callable: ``warmup`` calls each, then rounds in which every candidate runs
    once (interleaved, the order rotated each round), for ``repeats`` rounds and at least ``min_seconds`` in all.

    ``settle`` untimed calls precede each timed one. Use it when candidates use different runtimes: ONNX
    Runtime's and PyTorch's OpenMP worker threads keep spinning for a while after a call, and on a small
    machine the next candidate's first call pays for the other runtime's spinning (measured here: batch-1
    eager calls 10-100x slower right after an ONNX Runtime call). ``inner`` timed calls in a row make one
    repetition, their median: for millisecond calls, where one call's time is mostly its neighbours' noise
    and the first calls after another runtime still share the cores with that runtime's spinning threads.
    ``inner="auto"`` sizes each candidate's block from its last warm-up call (:func:`_warm_up`). With
    ``prune``, a candidate more than ``prune`` times slower than the fastest in the first round is not timed
    again (:func:`_still_in_race`). ``progress`` gets a ``"message"`` event after each round (done/total)."""
    _check_arguments(repeats, warmup, inner)
    with torch.inference_mode():
        blocks = {name: _warm_up(fn, warmup, settle, inner) for name, fn in candidates.items()}
        timings = {name: Timing(name, batch) for name in candidates}
        start, rounds, active = time.perf_counter(), 0, list(candidates)
        while rounds < repeats or time.perf_counter() - start < min_seconds:
            if prune is not None and rounds == 1:
                active = _still_in_race(timings, active, prune)
                if len(active) == 1:
                    break  # one candidate left: nothing to compare it with
            for name in _rotated(active, rounds):
                timings[name].times.append(_time_block(candidates[name], *blocks[name]))
            rounds += 1
            report(progress, "message", "timing round", done=rounds, total=repeats)
    return timings


def _check_arguments(repeats: int, warmup: int, inner: int | str) -> None:
    if repeats < 1 or warmup < 0 or not (inner == "auto" or (isinstance(inner, int) and inner >= 1)):
        raise UserError("repeats must be >= 1, warmup >= 0 and inner a positive integer or 'auto'")


def _seconds(fn: Callable[[], Any]) -> float:
    """Wall-clock seconds of one call of ``fn``."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _warm_up(fn: Callable[[], Any], warmup: int, settle: int, inner: int | str) -> tuple[int, int]:
    """Call ``fn`` ``warmup`` times; its block: (untimed settling calls, timed calls) per repetition.

    ``inner="auto"`` sizes the block to about :data:`BLOCK_SECONDS` (1 to 20 calls) from the last warm-up call
    (at least one), with at least 3 settling calls for a block of more than one call (measured for B0 at
    batch 1: one call each gave 8-15 ms with 30-300 % spread for paths that run in 4.2-4.6 ms with 40 % spread
    in blocks of 20)."""
    auto = inner == "auto"
    last = 0.0
    for _ in range(max(warmup, 1 if auto else 0)):
        last = _seconds(fn)
    if not auto:
        return settle, int(inner)
    n = max(1, min(20, int(BLOCK_SECONDS / max(last, 1e-6))))
    return (max(settle, 3) if n > 1 else settle), n


def _still_in_race(timings: Mapping[str, Timing], active: list[str], prune: float) -> list[str]:
    """The candidates at most ``prune`` times slower than the fastest in the first round. Choosing the fastest
    needs no precise figure for a path already out of the race, and at batch 32 eager B0 alone would cost
    most of the timing budget."""
    fastest = min(timings[n].times[0] for n in active)
    return [n for n in active if timings[n].times[0] <= prune * fastest]


def _rotated(names: list[str], rounds: int) -> list[str]:
    """``names`` rotated by the round number: no candidate always follows the same neighbour."""
    shift = rounds % len(names)
    return names[shift:] + names[:shift]


def _time_block(fn: Callable[[], Any], n_settle: int, n_inner: int) -> float:
    """One repetition: ``n_settle`` untimed calls, then the median of ``n_inner`` timed ones."""
    for _ in range(n_settle):
        fn()
    return statistics.median(_seconds(fn) for _ in range(n_inner))
