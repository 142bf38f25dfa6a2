"""Single-dimension scaling at equal realized cost: the paper's Figure 3 / Figure 4 comparison.

To test "compound scaling beats scaling one dimension" honestly, each single-dimension model must cost the
same multiply-adds as the compound model it is compared with — the *realized* cost, after rounding. For a
target cost this finds the depth-only (d), width-only (w) or resolution-only (r) multiplier whose built
architecture comes closest to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from compscale.compound import CostMatch, realized_cost
from compscale.errors import UserError
from compscale.models import model_spec
from compscale.monotone import closest_to_target
from compscale.scaling import ScaleFactors
from compscale.specs import ModelSpec

Dimension = Literal["depth", "width", "resolution", "compound"]
SINGLE_DIMENSIONS: tuple[str, ...] = ("depth", "width", "resolution")


@dataclass(frozen=True, kw_only=True)
class DimensionMatch(CostMatch):
    """A baseline scaled along one dimension by ``multiplier`` to about ``target_macs``."""

    dimension: str
    multiplier: float

    def as_dict(self) -> dict:
        return {"dimension": self.dimension, "multiplier": self.multiplier, **self.cost_dict(),
                "stages": self.spec.stage_table()}


def factors_for(dimension: str, multiplier: float) -> ScaleFactors:
    if dimension == "depth":
        return ScaleFactors(depth=multiplier)
    if dimension == "width":
        return ScaleFactors(width=multiplier)
    if dimension == "resolution":
        return ScaleFactors(resolution_mult=multiplier)
    raise UserError(f"unknown scaling dimension {dimension!r}; use depth, width or resolution")


def match_dimension(
    base: str | ModelSpec, dimension: str, target_macs: float, max_multiplier: float = 64.0, tol: float = 1e-9
) -> DimensionMatch:
    """The multiplier ≥ 1 of one dimension whose realized multiply-adds are closest to ``target_macs``.

    Realized cost is a non-decreasing step function of the multiplier, so bisection finds the last
    multiplier under the target and the first one over it; the closer of the two wins.
    """
    base_spec = model_spec(base)

    def spec_at(m: float) -> ModelSpec:
        return base_spec.scaled(factors_for(dimension, m))

    if realized_cost(spec_at(max_multiplier)).macs < target_macs:
        raise UserError(f"{dimension} scaling cannot reach {target_macs:,.0f} multiply-adds within x{max_multiplier:g}")
    m, _ = closest_to_target(lambda x: realized_cost(spec_at(x)).macs, target_macs, 1.0, max_multiplier, tol)
    spec = spec_at(m)
    cost = realized_cost(spec)
    return DimensionMatch(dimension=dimension, multiplier=m, spec=spec, macs=cost.macs, params=cost.params,
                          target_macs=int(target_macs))
