"""Compound model scaling (Tan & Le, 2019, Eq. 3), as pure functions with no torch.

The paper scales a baseline network uniformly in three dimensions with one compound coefficient φ::

    depth:      d = α^φ
    width:      w = β^φ
    resolution: r = γ^φ        subject to  α · β² · γ² ≈ 2,  α, β, γ ≥ 1

so that the FLOPs grow by about (α·β²·γ²)^φ ≈ 2^φ. The multipliers are real numbers; an architecture needs
integers, and the rounding below (exactly the official TensorFlow implementation's) is why the *realized*
cost of a scaled model differs from the nominal 2^φ.

Two modes are public:

* **formula** — :class:`CompoundScaling` maps (α, β, γ, φ) to :class:`ScaleFactors`;
* **official table** — :data:`EFFICIENTNET_COEFFICIENTS` holds the released B0..B7 (and Lite) multipliers,
  which are *not* α^φ for integer φ (B1 ≈ φ 0.5, B2 ≈ φ 1, B7 ≈ φ 7).

Cardinality (ResNeXt, Xie et al. 2017) is an optional fourth dimension, c = δ^φ, with δ = 1 by default so
that nothing changes for the three-dimensional rule. The constraint becomes α·β²·γ²·δ ≈ 2 because, at a
fixed group width d, a ResNeXt bottleneck's multiply-adds grow *linearly* in the cardinality C: the 1×1
convolutions cost H·W·C_in·(d·C) and H·W·(d·C)·C_out, and the grouped 3×3 costs H·W·9·d·(d·C) (each of the
C groups sees only d input channels). So multiplying C by c multiplies the blocks' FLOPs by c, not c².
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

from compscale.errors import UserError
from compscale.monotone import boundary

#: The coefficients the paper's grid search found on EfficientNet-B0 (Section 4.2, step 1).
PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA = 1.2, 1.1, 1.15

#: Floors that keep a shrunk (φ < 0) network buildable.
MIN_CHANNELS = 8
MIN_RESOLUTION = 32
#: The largest input side accepted (tensor sizes beyond it overflow torch's 64-bit shapes, even on the meta device).
MAX_RESOLUTION = 100_000
#: The largest multiplier of any one dimension a φ may ask for (B7 is d = 3.1). Beyond it the network has
#: tens of thousands of blocks: building it, even on the meta device, would not finish.
MAX_FACTOR = 100.0

DepthRounding = Literal["ceil", "round"]


def _finite(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value}")
    return value


def round_filters(channels: int, width: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Channels of a layer after width scaling by w, rounded as the official implementation does.

    ``c·w`` is rounded to the nearest multiple of ``divisor`` (8), never below ``min_value`` (default: the
    divisor) and never more than 10 % below ``c·w`` (in that case one more divisor is added).
    """
    min_value = divisor if min_value is None else min_value
    scaled = channels * width
    new = max(min_value, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float, mode: DepthRounding = "ceil") -> int:
    """Blocks in a stage after depth scaling by d: ``ceil(d·L)`` as in the official code (``mode="ceil"``)
    or the nearest integer (``mode="round"``); at least one block either way."""
    if mode == "ceil":
        # A tiny epsilon keeps 1.1 * 10 (= 11.000000000000002) from becoming 12.
        value = math.ceil(depth * repeats - 1e-9)
    elif mode == "round":
        value = math.floor(depth * repeats + 0.5)
    else:
        raise UserError(f"depth rounding must be 'ceil' or 'round', got {mode!r}")
    return max(1, int(value))


def round_cardinality(cardinality: int, multiplier: float) -> int:
    """Groups of a ResNeXt block after cardinality scaling by c: the nearest integer, at least one."""
    return max(1, int(math.floor(cardinality * multiplier + 0.5)))


def round_resolution(resolution: int, multiplier: float) -> int:
    """Input side after resolution scaling by r: the nearest integer, at least 32 pixels (or the baseline's own
    side, when a baseline made for smaller images, e.g. 28 px Fashion-MNIST, starts below that)."""
    return max(min(MIN_RESOLUTION, resolution), int(math.floor(resolution * multiplier + 0.5)))


@dataclass(frozen=True)
class ScaleFactors:
    """The three multipliers applied to a baseline: depth d, width w, and the resolution (in pixels when
    ``resolution`` is given as an absolute side, else None to multiply the baseline's by ``resolution_mult``).
    ``cardinality`` is the optional fourth multiplier c (ResNeXt groups); families without groups ignore it.
    """

    depth: float = 1.0
    width: float = 1.0
    resolution_mult: float = 1.0
    resolution: int | None = None
    dropout: float | None = None
    cardinality: float = 1.0

    def resolve_resolution(self, base_resolution: int) -> int:
        if self.resolution is not None:
            return self.resolution
        return round_resolution(base_resolution, self.resolution_mult)


@dataclass(frozen=True)
class CompoundScaling:
    """The compound scaling rule d = α^φ, w = β^φ, r = γ^φ (paper Eq. 3), and optionally c = δ^φ.

    ``tolerance`` bounds |α·β²·γ²·δ − target|; ``enforce_constraint=False`` lets an expert explore
    coefficients off the constraint (α, β, γ, δ ≥ 1 is always required). ``delta`` scales the cardinality
    of ResNeXt blocks; it enters the constraint to the first power because at a fixed group width a
    grouped bottleneck's FLOPs are linear in the number of groups (see the module docstring).
    """

    alpha: float = PAPER_ALPHA
    beta: float = PAPER_BETA
    gamma: float = PAPER_GAMMA
    target: float = 2.0
    tolerance: float = 0.1
    enforce_constraint: bool = True
    delta: float = 1.0

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma", "delta", "target", "tolerance"):
            object.__setattr__(self, name, _finite(name, getattr(self, name)))
        for name in ("alpha", "beta", "gamma", "delta"):
            if getattr(self, name) < 1.0:
                raise UserError(f"{name} must be >= 1 (the paper's constraint), got {getattr(self, name):g}")
        if self.tolerance <= 0:
            raise UserError(f"tolerance must be > 0, got {self.tolerance:g}")
        if self.enforce_constraint and abs(self.flops_factor - self.target) > self.tolerance:
            raise UserError(
                f"{self.constraint_name} = {self.flops_factor:.4f} is not within {self.target:g} ± "
                f"{self.tolerance:g} (use a wider tolerance or turn the constraint off)"
            )

    @property
    def constraint_name(self) -> str:
        """The constrained product as text: with δ only when cardinality is scaled."""
        return "alpha*beta^2*gamma^2" + ("*delta" if self.delta != 1.0 else "")

    @property
    def flops_factor(self) -> float:
        """α·β²·γ²·δ: the nominal growth of FLOPs per unit of φ (δ = 1 unless cardinality is scaled)."""
        return self.alpha * self.beta**2 * self.gamma**2 * self.delta

    def nominal_flops_ratio(self, phi: float) -> float:
        """(α·β²·γ²)^φ: the FLOPs ratio before any rounding."""
        return self.flops_factor ** _finite("phi", phi)

    def factors(self, phi: float) -> ScaleFactors:
        """The multipliers (α^φ, β^φ, γ^φ, δ^φ) for compound coefficient φ (any real; negative shrinks)."""
        phi = _finite("phi", phi)

        def power(base: float) -> float:
            try:
                return base**phi
            except OverflowError:
                return math.inf

        d, w, r, c = power(self.alpha), power(self.beta), power(self.gamma), power(self.delta)
        if max(d, w, r, c) > MAX_FACTOR:
            raise UserError(f"phi = {phi:g} is too large: it multiplies depth by {d:.3g}, width by {w:.3g}, resolution "
                            f"by {r:.3g} (at most x{MAX_FACTOR:g} each)")
        return ScaleFactors(depth=d, width=w, resolution_mult=r, cardinality=c)


@dataclass(frozen=True)
class OfficialCoefficients:
    """A released variant's (width, depth, resolution, dropout), as in the official ``efficientnet_params``."""

    width: float
    depth: float
    resolution: int
    dropout: float

    def factors(self) -> ScaleFactors:
        return ScaleFactors(depth=self.depth, width=self.width, resolution=self.resolution, dropout=self.dropout)


#: The official table: identical in TF, timm, torchvision and Keras.
EFFICIENTNET_COEFFICIENTS: dict[str, OfficialCoefficients] = {
    "b0": OfficialCoefficients(1.0, 1.0, 224, 0.2),
    "b1": OfficialCoefficients(1.0, 1.1, 240, 0.2),
    "b2": OfficialCoefficients(1.1, 1.2, 260, 0.3),
    "b3": OfficialCoefficients(1.2, 1.4, 300, 0.3),
    "b4": OfficialCoefficients(1.4, 1.8, 380, 0.4),
    "b5": OfficialCoefficients(1.6, 2.2, 456, 0.4),
    "b6": OfficialCoefficients(1.8, 2.6, 528, 0.5),
    "b7": OfficialCoefficients(2.0, 3.1, 600, 0.5),
}

#: EfficientNet-Lite (official ``efficientnet_lite_builder``).
EFFICIENTNET_LITE_COEFFICIENTS: dict[str, OfficialCoefficients] = {
    "lite0": OfficialCoefficients(1.0, 1.0, 224, 0.2),
    "lite1": OfficialCoefficients(1.0, 1.1, 240, 0.2),
    "lite2": OfficialCoefficients(1.1, 1.2, 260, 0.3),
    "lite3": OfficialCoefficients(1.2, 1.4, 280, 0.3),
    "lite4": OfficialCoefficients(1.4, 1.8, 300, 0.3),
}


@dataclass(frozen=True)
class BudgetSolution:
    """The largest φ whose realized architecture fits a budget, and what it costs."""

    phi: float
    cost: tuple[float, ...]
    next_cost: tuple[float, ...]


def solve_phi(
    cost: Callable[[float], tuple[float, ...]],
    budget: tuple[float | None, ...],
    lo: float = -8.0,
    hi: float = 16.0,
    step: float = 1e-3,
) -> BudgetSolution:
    """Largest φ in [lo, hi] with ``cost(φ) <= budget`` in every bounded component, by bisection.

    ``cost`` is the *realized* cost of the architecture built at φ (a step function, non-decreasing in φ
    because every rounding rule is monotone). The result fits the budget; φ + ``step`` does not (unless φ is
    ``hi``). ``budget`` components that are None are unbounded.
    """
    if step <= 0:
        raise UserError(f"step must be > 0, got {step}")
    bounds = [None if b is None else _finite("budget", b) for b in budget]
    if all(b is None for b in bounds):
        raise UserError("give a budget: a target in multiply-adds, parameters, or both")
    for b in bounds:
        if b is not None and b <= 0:
            raise UserError(f"a budget must be positive, got {b:g}")

    def fits(phi: float) -> bool:
        c = cost(phi)
        return all(b is None or v <= b for v, b in zip(c, bounds))

    if not fits(lo):
        smallest = ", ".join(f"{v:,.0f}" for v in cost(lo))
        raise UserError(f"budget is below the smallest buildable model (at phi={lo:g} it costs {smallest})")
    if fits(hi):
        return BudgetSolution(hi, tuple(cost(hi)), tuple(cost(hi)))
    lo, hi = boundary(fits, lo, hi, tol=step)
    return BudgetSolution(lo, tuple(cost(lo)), tuple(cost(hi)))
