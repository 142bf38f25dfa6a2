"""Bisection over a monotone cost: the one search every budget, match and bracket in compscale uses.

The realized cost of a scaled architecture is a non-decreasing *step* function of its multiplier (every
rounding rule is monotone), so "the largest φ that fits a budget" and "the multiplier whose cost is closest
to a target" are both found by bisecting on a predicate that is true up to a point and false after it.
"""

from __future__ import annotations

import math
from typing import Callable, TypeVar

T = TypeVar("T")


def boundary(fits: Callable[[float], bool], lo: float, hi: float, tol: float = 1e-3,
             max_iterations: int = 200) -> tuple[float, float]:
    """``(last, first)``: the largest x known to satisfy ``fits`` and the smallest known not to, |first-last| ≤ tol.

    ``fits`` must be true at ``lo``, false at ``hi`` and change only once in between (monotone).
    """
    for _ in range(max_iterations):
        if hi - lo <= tol:
            break
        mid = (lo + hi) / 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


def int_boundary(fits: Callable[[int], bool], lo: int, hi: int) -> tuple[int, int]:
    """The integer form of :func:`boundary`: ``fits(lo)`` true, ``fits(hi)`` false, returns adjacent (last, first)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


def closest_to_target(cost: Callable[[float], float], target: float, lo: float, hi: float, tol: float = 1e-6,
                      integer: bool = False) -> tuple[float, float]:
    """The x in [lo, hi] whose ``cost`` (non-decreasing in x) is closest to ``target``, and its cost.

    When the whole range is under the target the answer is ``hi``; when it is all over, ``lo``. Otherwise the
    last x under the target and the first x at or over it are found by bisection and the closer one wins.
    ``integer`` bisects over whole numbers. How far from the target is acceptable is the caller's to judge.
    """
    c_lo = cost(lo)
    if c_lo >= target:
        return lo, c_lo
    c_hi = cost(hi)
    if c_hi < target:
        return hi, c_hi

    def under(x: float) -> bool:
        return cost(x) < target

    if integer:
        a, b = int_boundary(under, int(lo), int(hi))
    else:
        a, b = boundary(under, lo, hi, tol)
    ca, cb = cost(a), cost(b)
    return (a, ca) if abs(ca - target) <= abs(cb - target) else (b, cb)


def grow_bracket(under: Callable[[float], bool], start: float, step: float, low: float = -math.inf,
                 high: float = math.inf) -> tuple[float, float]:
    """Walk from ``start`` in steps of ``step`` until ``under`` changes, so no huge model is built just to bound a
    search: returns (lo, hi) with ``under(lo)`` true and ``under(hi)`` false, or the end of [low, high] reached
    (both equal) when it never changes."""
    lo = hi = start
    while not under(lo) and lo > low:
        hi, lo = lo, max(low, lo - step)
    if not under(lo):
        return lo, lo
    while under(hi) and hi < high:
        lo, hi = hi, min(high, hi + step)
    if under(hi):
        return hi, hi
    return lo, hi
