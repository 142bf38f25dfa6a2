"""The statistics every comparison over seeds speaks: paired differences, a Student-t interval, a verdict.

Two models trained with the same seeds are *paired*: seed k of each sees the same data order and the same
augmentation (:func:`compscale.jobs.runner.job_seeds`), so most of what makes seed k lucky or unlucky is
shared, and the difference a_k − b_k carries less noise than either score. The comparison is the mean of
those differences with a two-sided Student-t confidence interval over the seeds (n − 1 degrees of freedom):
an interval above 0 is a win, below 0 a loss, one that contains 0 a tie. One seed gives no noise estimate
at all: there is then no won, tied or lost, only "no noise estimate".

Pure Python (no scipy): the t quantile is found by bisection on the t distribution's CDF, which is the
regularized incomplete beta function (a continued fraction, as in Numerical Recipes §6.4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

__all__ = ["PairedGap", "at_chance", "paired_gap", "t_cdf", "t_quantile"]

#: The confidence of every interval the project reports.
CONFIDENCE = 0.95
#: The four readings of a paired comparison.
WON, LOST, TIED, NO_NOISE = "won", "lost", "tied", "no noise estimate"


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t distribution with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T ≤ t) = ``p`` (Student's t, ``df`` degrees of freedom), to about 1e-12."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class PairedGap:
    """The mean of the paired differences a_k − b_k over ``n`` seeds, its two-sided Student-t interval
    [low, high] at ``confidence`` (None with one seed), and the reading: won (interval above 0), lost (below),
    tied (contains 0), or "no noise estimate" (one seed)."""

    mean: float
    low: float | None
    high: float | None
    n: int
    sd: float | None  # sample standard deviation of the differences
    confidence: float = CONFIDENCE

    @property
    def verdict(self) -> str:
        if self.low is None or self.high is None:
            return NO_NOISE
        if self.low > 0:
            return WON
        if self.high < 0:
            return LOST
        return TIED

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.high is None else (self.high - self.low) / 2

    def as_dict(self) -> dict:
        """In compscale's JSON vocabulary: ``gap`` (the mean paired difference), ``gap_low``/``gap_high`` (its
        interval, null with one seed), ``gap_sd``, ``pairs``, ``confidence`` and ``outcome`` (the reading)."""
        return {"gap": self.mean, "gap_low": self.low, "gap_high": self.high, "gap_sd": self.sd, "pairs": self.n,
                "confidence": self.confidence, "outcome": self.verdict}

    def describe(self, scale: float = 100.0, unit: str = " points") -> str:
        """E.g. ``+1.20 points, 95% interval [-0.40, +2.80] over 3 paired seeds: tied``."""
        if self.low is None:
            return f"{scale * self.mean:+.2f}{unit} with {self.n} seed (no noise estimate)"
        return (f"{scale * self.mean:+.2f}{unit}, {100 * self.confidence:.0f}% interval [{scale * self.low:+.2f}, "
                f"{scale * self.high:+.2f}] over {self.n} paired seeds: {self.verdict}")


def paired_gap(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> PairedGap:
    """The paired comparison of ``a`` and ``b`` (a[k] and b[k] come from the same seed): mean of a − b with a
    Student-t interval over the pairs (n − 1 degrees of freedom)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples must have the same length, got {len(a)} and {len(b)}")
    if not a:
        raise ValueError("no pairs to compare")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    n = len(diffs)
    mean = math.fsum(diffs) / n
    if n < 2:
        return PairedGap(mean, None, None, n, None, confidence)
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return PairedGap(mean, mean - half, mean + half, n, sd, confidence)


def at_chance(accuracy: float | None, classes: int, margin: float = 0.05) -> bool:
    """True when a top-1 accuracy is no better than guessing among ``classes``: within ``margin`` of 1/classes
    (or below it). Such a model learned nothing, and comparing it with another says nothing."""
    return accuracy is not None and classes > 0 and accuracy <= 1.0 / classes + margin
