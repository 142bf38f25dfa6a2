"""Step 1's candidates, judged by their nominal *and* their realized cost.

The paper's grid search keeps (α, β, γ) with α·β²·γ² ≈ 2 at φ = 1. But the architecture built at φ = 1 is
rounded (channels to multiples of the divisor, repeats up, resolution to pixels), so its real multiply-add
ratio to the baseline can be far from the nominal α·β²·γ²: with 1.2/1.1/1.15 on B0 it is 2.57, not 1.92.
Here every grid point is built with the real rounding and kept only when it is *honest*: its nominal
α·β²·γ² and its realized ratio are both within the tolerance of the target (the paper's constraint, and a
fair comparison), and within :data:`RATIO_TOLERANCE` of each other. A grid point that passes on its realized
cost alone is a rounding artifact, not the rule. Grid points that round to the same architecture are merged.

A baseline too coarse for the grid — most nominally feasible points realize far from nominal — gets a
warning that names the dimension whose rounding is to blame (:attr:`CandidateReport.warning`).

For a sweep (step 2) the candidates can also be required to stay honest at every φ it will train
(``sweep_phis``): the compound model realizes target^φ within ``sweep_tolerance``, and each single-dimension
model can be matched to its realized multiply-adds within ``match_tolerance`` — else the equal-cost
comparison step 2 exists for could not be made with these coefficients.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from compscale.compound import realized_cost
from compscale.errors import UserError
from compscale.models import model_spec
from compscale.scaling import CompoundScaling, ScaleFactors
from compscale.specs import ModelSpec

#: A kept candidate's realized φ = 1 cost ratio is within this fraction of its nominal α·β²·γ².
RATIO_TOLERANCE = 0.10
#: When more than this share of the nominally feasible grid points realize farther than RATIO_TOLERANCE from
#: their nominal ratio, the baseline is too coarse for the grid (a warning says so and why).
COARSE_SHARE = 0.5


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
    #: With a sweep check: per φ of the sweep, the compound model's realized ratio / target^φ − 1, and the largest
    #: |deviation| of the single-dimension models matched to it (None: not checked).
    sweep: tuple[tuple[float, float, float], ...] = ()

    def as_dict(self) -> dict:
        d = {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "nominal_ratio": self.nominal_ratio,
             "realized_ratio": self.realized_ratio, "macs": self.macs, "params": self.params,
             "aliases": [list(a) for a in self.aliases]}
        if self.sweep:
            # worst_match None: a single dimension cannot reach the cost at all
            d["sweep_check"] = [{"phi": phi, "rule_deviation": dev, "worst_match": match if math.isfinite(match)
                                 else None} for phi, dev, match in self.sweep]
        return d


@dataclass(frozen=True)
class CandidateReport:
    grid_points: int
    nominal_feasible: int  # |α·β²·γ² − target| ≤ tolerance
    realized_feasible: int  # |realized ratio − target| ≤ tolerance, before merging duplicates
    both_feasible: int  # honest grid points: both of the above, and realized within RATIO_TOLERANCE of nominal
    candidates: tuple[Candidate, ...]
    base_macs: int
    off_nominal: int = 0  # nominally feasible grid points realizing farther than RATIO_TOLERANCE from nominal
    warning: str | None = None  # the baseline is too coarse for the grid: why
    sweep_phis: tuple[float, ...] = ()  # the φ values the candidates were checked at (none: no sweep check)
    sweep_rejected: int = 0  # distinct honest architectures dropped by the sweep check

    def as_dict(self) -> dict:
        return {"grid_points": self.grid_points, "nominal_feasible": self.nominal_feasible,
                "realized_feasible": self.realized_feasible,
                "both_feasible": self.both_feasible, "off_nominal": self.off_nominal, "warning": self.warning,
                "sweep_phis": list(self.sweep_phis), "sweep_rejected": self.sweep_rejected,
                "distinct": len(self.candidates), "base_macs": self.base_macs,
                "candidates": [c.as_dict() for c in self.candidates]}


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
    sweep_phis: tuple[float, ...] = (),
    sweep_tolerance: float = 0.15,
    match_tolerance: float = 0.05,
) -> CandidateReport:
    """Every honest (α, β, γ) on the grid: nominal α·β²·γ² and the φ = 1 architecture's realized multiply-add
    ratio both ``target`` ± ``tolerance`` (and within :data:`RATIO_TOLERANCE` of each other), merged by
    architecture and sorted by realized ratio. With ``sweep_phis``, only those whose compound model realizes
    target^φ ± ``sweep_tolerance`` at each of them, with every single-dimension model matchable to it within
    ``match_tolerance``."""
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
    nominal = realized = both = 0
    off: list[tuple[float, float, float]] = []
    by_spec: dict[ModelSpec, list[tuple[float, float, float, float, int, int]]] = {}
    for a, b, g in points:
        rule = CompoundScaling(a, b, g, target=target, enforce_constraint=False)
        nominal_ok = abs(rule.flops_factor - target) <= tolerance
        spec = base_spec.scaled(rule.factors(1.0), depth_rounding)
        cost = realized_cost(spec)
        ratio = cost.macs / base_macs
        realized_ok = abs(ratio - target) <= tolerance
        close = abs(ratio / rule.flops_factor - 1) <= RATIO_TOLERANCE
        nominal += nominal_ok
        realized += realized_ok
        if nominal_ok and not close:
            off.append((a, b, g))
        if nominal_ok and realized_ok and close:
            both += 1
            by_spec.setdefault(spec, []).append((a, b, g, rule.flops_factor, cost.macs, cost.params))
    candidates = []
    for spec, members in by_spec.items():
        members.sort(key=lambda m: (abs(m[3] - target), m[:3]))
        a, b, g, nom, macs, params = members[0]
        candidates.append(Candidate(a, b, g, nom, macs / base_macs, macs, params, spec,
                                    tuple((m[0], m[1], m[2]) for m in members[1:])))
    candidates.sort(key=lambda c: (c.realized_ratio, c.alpha, c.beta, c.gamma))
    rejected = 0
    if sweep_phis:
        checked = [_sweep_check(c, base_spec, base_macs, target, sorted(set(map(float, sweep_phis))),
                                depth_rounding, match_tolerance) for c in candidates]
        kept = [c for c in checked if all(abs(dev) <= sweep_tolerance and match <= match_tolerance
                                          for _, dev, match in c.sweep)]
        rejected, candidates = len(candidates) - len(kept), kept
    warning = coarse_warning(base_spec, base_macs, off, nominal, depth_rounding) if nominal else None
    return CandidateReport(len(points), nominal, realized, both, tuple(candidates), base_macs, len(off), warning,
                           tuple(sorted(set(map(float, sweep_phis)))), rejected)


def _sweep_check(cand: Candidate, base: ModelSpec, base_macs: int, target: float, phis: list[float],
                 depth_rounding: str, match_tolerance: float) -> Candidate:
    """The candidate with its sweep check: per φ, the compound model's realized ratio against target^φ and the
    largest |deviation| of the single-dimension models matched to it (infinite when one cannot be matched)."""
    from compscale.search.dimensions import SINGLE_DIMENSIONS, match_dimension

    rule = CompoundScaling(cand.alpha, cand.beta, cand.gamma, enforce_constraint=False)
    rows = []
    for phi in phis:
        macs = realized_cost(base.scaled(rule.factors(phi), depth_rounding)).macs
        worst = 0.0
        for dim in SINGLE_DIMENSIONS:
            try:
                worst = max(worst, abs(match_dimension(base, dim, macs).deviation))
            except UserError:  # out of reach within the multiplier's limit
                worst = math.inf
            if worst > match_tolerance:
                break
        rows.append((phi, macs / base_macs / target**phi - 1, worst))
    return dataclasses.replace(cand, sweep=tuple(rows))


#: Why each dimension's rounding can be coarse (the warning's cause).
_CAUSES = {
    "depth": "stage repeats are rounded up (ceil), and in stages of few blocks one more block is a large step",
    "width": "channels are rounded to multiples of the divisor, a large step in narrow stages",
    "resolution": "the input side is whole pixels and every stride-2 feature map rounds up, large steps on small "
                  "images",
}


def coarse_warning(base: ModelSpec, base_macs: int, off: list[tuple[float, float, float]], nominal: int,
                   depth_rounding: str = "ceil") -> str | None:
    """A warning when most nominally feasible grid points realize far from their nominal α·β²·γ², naming the
    dimension whose rounding is furthest from its nominal factor (α, β², γ²) at those points."""
    if not off or len(off) <= COARSE_SHARE * nominal:
        return None
    error = {"depth": 0.0, "width": 0.0, "resolution": 0.0}
    for a, b, g in off:
        for dim, factors, nominal_factor in (("depth", ScaleFactors(depth=a), a),
                                             ("width", ScaleFactors(width=b), b * b),
                                             ("resolution", ScaleFactors(resolution_mult=g), g * g)):
            ratio = realized_cost(base.scaled(factors, depth_rounding)).macs / base_macs
            error[dim] += abs(math.log(ratio / nominal_factor))
    worst = max(error, key=lambda k: error[k])
    return (f"the baseline is too coarse for this grid: {len(off)} of {nominal} nominally feasible grid points "
            f"realize more than {RATIO_TOLERANCE:.0%} away from alpha*beta^2*gamma^2, so rounding, not the rule, "
            f"decides their cost — mostly {worst}: {_CAUSES[worst]}; use a baseline with finer steps (more blocks per "
            "stage, a smaller channel divisor, a stride-1 stem) or a coarser grid")
