"""Step 1's candidates, judged by *realized* cost.

The paper's grid search keeps (α, β, γ) with α·β²·γ² ≈ 2 at φ = 1. But the architecture built at φ = 1 is
rounded (channels to multiples of 8, repeats up, resolution to pixels), so its real multiply-add ratio to
the baseline can be far from the nominal α·β²·γ²: with 1.2/1.1/1.15 on B0 it is 2.57, not 1.92. Here every
grid point is built with the real rounding and kept only if its realized ratio is within the tolerance of
the target; grid points that round to the same architecture are merged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from compscale.compound import realized_cost
from compscale.errors import UserError
from compscale.models import model_spec
from compscale.scaling import CompoundScaling
from compscale.specs import ModelSpec


@dataclass(frozen=True)
class Candidate:
    """One distinct φ = 1 architecture: its coefficients (the grid point nearest the nominal target among
    those that build it), costs, and the other grid points that round to the same architecture."""

    alpha: float
    beta: float
    gamma: float
    nominal_ratio: float
    realized_ratio: float
    macs: int
    params: int
    spec: ModelSpec = field(repr=False)
    aliases: tuple[tuple[float, float, float], ...] = ()

    def as_dict(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "nominal_ratio": self.nominal_ratio,
                "realized_ratio": self.realized_ratio, "macs": self.macs, "params": self.params,
                "aliases": [list(a) for a in self.aliases]}


@dataclass(frozen=True)
class CandidateReport:
    grid_points: int
    nominal_feasible: int  # |α·β²·γ² − target| ≤ tolerance
    realized_feasible: int  # |realized ratio − target| ≤ tolerance, before merging duplicates
    both_feasible: int  # nominally feasible grid points whose realized architecture is feasible too
    candidates: tuple[Candidate, ...]
    base_macs: int

    def as_dict(self) -> dict:
        return {"grid_points": self.grid_points, "nominal_feasible": self.nominal_feasible,
                "realized_feasible": self.realized_feasible,
                "both_feasible": self.both_feasible, "distinct": len(self.candidates),
                "base_macs": self.base_macs, "candidates": [c.as_dict() for c in self.candidates]}


#: The most grid points step 1 enumerates (each is a spec and its realized cost): lifted by
#: :data:`MAX_GRID_POINTS_ENV`. The default grid (step 0.05) has 2,541.
DEFAULT_MAX_GRID_POINTS = 200_000
MAX_GRID_POINTS_ENV = "COMPSCALE_MAX_GRID_POINTS"


def grid_size(lo: float, hi: float, step: float) -> int:
    """How many points :func:`grid` gives, checked and counted without making them."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi, step)):
        raise UserError(f"grid bounds and step must be numbers, got [{lo!r}, {hi!r}] step {step!r}")
    if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(step)):
        raise UserError("grid bounds and step must be finite numbers")
    if step <= 0:
        raise UserError(f"grid step must be > 0, got {step:g}")
    if lo < 1 or hi < lo:
        raise UserError(f"a coefficient range must satisfy 1 <= lo <= hi, got [{lo:g}, {hi:g}]")
    ratio = (hi - lo) / step
    return int(math.floor(ratio + 1e-9)) + 1 if math.isfinite(ratio) else 2**63  # 1/5e-324 is inf: "too many"


def max_grid_points() -> int:
    """The ceiling on grid points: :data:`MAX_GRID_POINTS_ENV` when set, else :data:`DEFAULT_MAX_GRID_POINTS`."""
    import os

    text = os.environ.get(MAX_GRID_POINTS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_GRID_POINTS
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"the environment variable {MAX_GRID_POINTS_ENV} must be a positive integer, "
                        f"got {text[:40]!r}")
    return value


def grid(lo: float, hi: float, step: float) -> list[float]:
    """lo, lo+step, ..., ≤ hi, rounded to the step's decimals so 1.15 is 1.15 and not 1.1500000000000001."""
    n = grid_size(lo, hi, step)
    if n > max_grid_points():
        raise UserError(f"the range [{lo:g}, {hi:g}] in steps of {step:g} has {n:,} points, more than "
                        f"{max_grid_points():,}: use a larger grid step (lift the ceiling with "
                        f"{MAX_GRID_POINTS_ENV}=N)")
    decimals = max(0, -math.floor(math.log10(step)) + 2)
    return [round(lo + i * step, decimals) for i in range(n)]


def enumerate_candidates(
    base: str | ModelSpec,
    target: float = 2.0,
    tolerance: float = 0.1,
    alpha: tuple[float, float] = (1.0, 2.0),
    beta: tuple[float, float] = (1.0, 1.5),
    gamma: tuple[float, float] = (1.0, 1.5),
    step: float = 0.05,
    depth_rounding: str = "ceil",
) -> CandidateReport:
    """Every (α, β, γ) on the grid whose φ = 1 architecture realizes ``target`` ± ``tolerance`` times the
    baseline's multiply-adds, merged by architecture and sorted by realized ratio."""
    if not math.isfinite(tolerance) or tolerance <= 0:
        raise UserError(f"tolerance must be > 0, got {tolerance:g}")
    if not math.isfinite(target) or target <= 1:
        raise UserError(f"the target FLOPs ratio must be > 1, got {target:g}")
    sizes = [grid_size(*axis, step) for axis in (alpha, beta, gamma)]  # counted before anything is made
    total = sizes[0] * sizes[1] * sizes[2]
    if total > max_grid_points():
        raise UserError(f"the grid has {total:,} points ({sizes[0]:,} x {sizes[1]:,} x {sizes[2]:,} for alpha, "
                        f"beta, gamma), more than {max_grid_points():,}: use a larger grid step or narrower ranges "
                        f"(lift the ceiling with {MAX_GRID_POINTS_ENV}=N)")
    base_spec = model_spec(base)
    base_macs = realized_cost(base_spec).macs
    points = [(a, b, g) for a in grid(*alpha, step) for b in grid(*beta, step) for g in grid(*gamma, step)]
    nominal = both = 0
    by_spec: dict[ModelSpec, list[tuple[float, float, float, float, int, int]]] = {}
    for a, b, g in points:
        rule = CompoundScaling(a, b, g, target=target, enforce_constraint=False)
        nominal_ok = abs(rule.flops_factor - target) <= tolerance
        spec = base_spec.scaled(rule.factors(1.0), depth_rounding)
        cost = realized_cost(spec)
        macs, params = cost.macs, cost.params
        realized_ok = abs(macs / base_macs - target) <= tolerance
        nominal += nominal_ok
        both += nominal_ok and realized_ok
        if realized_ok:
            by_spec.setdefault(spec, []).append((a, b, g, rule.flops_factor, macs, params))
    candidates = []
    for spec, members in by_spec.items():
        members.sort(key=lambda m: (abs(m[3] - target), m[:3]))
        a, b, g, nom, macs, params = members[0]
        candidates.append(Candidate(a, b, g, nom, macs / base_macs, macs, params, spec,
                                    tuple((m[0], m[1], m[2]) for m in members[1:])))
    candidates.sort(key=lambda c: (c.realized_ratio, c.alpha, c.beta, c.gamma))
    realized = sum(len(m) for m in by_spec.values())
    return CandidateReport(len(points), nominal, realized, both, tuple(candidates), base_macs)
