"""Compound scaling applied to real architectures: φ → concrete spec → *realized* cost.

:mod:`compscale.scaling` gives the multipliers; here they are applied to a baseline spec with the family's
rounding rules and the result is measured (on the meta device), because the realized cost is what a
budget constrains and what the paper's "FLOPs ≈ 2^φ" only approximates.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from functools import lru_cache

import torch

from compscale.errors import UserError
from compscale.models import build_model, model_spec
from compscale.profiler import profile
from compscale.scaling import MAX_RESOLUTION, CompoundScaling, ScaleFactors, solve_phi
from compscale.specs import ModelSpec
from compscale.specs.base import Complexity
from compscale.specs.checks import echo


@dataclass(frozen=True)
class ScaledModel:
    """A baseline scaled by (α, β, γ, φ): its multipliers, concrete spec and realized cost."""

    base: ModelSpec
    scaling: CompoundScaling
    phi: float
    factors: ScaleFactors
    spec: ModelSpec
    params: int
    macs: int
    base_macs: int

    @property
    def macs_ratio(self) -> float:
        """Realized multiply-adds relative to the baseline (the paper's nominal value is 2^φ)."""
        return self.macs / self.base_macs

    def as_dict(self) -> dict:
        return {
            "family": self.base.family,
            "alpha": self.scaling.alpha,
            "beta": self.scaling.beta,
            "gamma": self.scaling.gamma,
            "phi": self.phi,
            "depth_multiplier": self.factors.depth,
            "width_multiplier": self.factors.width,
            "resolution_multiplier": self.factors.resolution_mult,
            "delta": self.scaling.delta,
            "cardinality_multiplier": self.factors.cardinality,
            "resolution": self.spec.resolution,
            "params": self.params,
            "macs": self.macs,
            "base_macs": self.base_macs,
            "macs_ratio": self.macs_ratio,
            "nominal_macs_ratio": self.scaling.nominal_flops_ratio(self.phi),
            "stages": self.spec.stage_table(),
            "spec": self.spec.as_dict(),
        }


@dataclass(frozen=True, kw_only=True)
class CostMatch:
    """A concrete architecture built to about ``target_macs`` multiply-adds, with its realized cost: what every
    "at equal FLOPs" comparison (step 2, the CAM study, the studies) holds beside each model."""

    spec: ModelSpec = field(repr=False)
    macs: int
    params: int
    target_macs: int

    @property
    def deviation(self) -> float:
        """Realized multiply-adds relative to the target, minus one (reported, never assumed zero)."""
        return self.macs / self.target_macs - 1

    def cost_dict(self) -> dict:
        return {"macs": self.macs, "params": self.params, "target_macs": self.target_macs,
                "deviation": self.deviation, "resolution": self.spec.resolution}


def _check_cardinality(spec: ModelSpec, scaling: CompoundScaling) -> None:
    """δ scales ResNeXt's groups; on a family without them it would silently do nothing."""
    if scaling.delta != 1.0 and "cardinality" not in {f.name for f in fields(spec)}:
        raise UserError(f"delta scales the cardinality (ResNeXt groups); {spec.family} models have none")


@lru_cache(maxsize=4096)
def realized_cost(spec: ModelSpec) -> Complexity:
    """Multiply-adds, params and activations of a concrete spec at its own resolution: the one cost path.

    From the spec's exact :meth:`~compscale.specs.ModelSpec.complexity` when the family has one (pure
    Python, ~1000x faster), else counted on the meta device (nothing is allocated).
    """
    try:
        return spec.complexity()
    except NotImplementedError:
        pass
    with torch.device("meta"):
        model = build_model(spec)
    p = profile(model, spec.resolution)
    return Complexity(macs=p.macs, params=p.params, activations=p.activations)


#: The size ceiling every command applies to a model before building it from user input: the largest registered
#: model (gpipe_amoebanet_b) has 557M parameters, EfficientNet-B7 at 600 px 37.7G multiply-adds; the input side
#: of a model that is built and run (the spec itself may say up to scaling.MAX_RESOLUTION, for counting).
DEFAULT_MAX_PARAMS = 2e9
DEFAULT_MAX_MACS = 2e12
DEFAULT_MAX_SIDE = 8192
#: The environment variables that lift (or lower) each ceiling, for every command and every study worker.
MAX_PARAMS_ENV, MAX_MACS_ENV, MAX_SIDE_ENV = "COMPSCALE_MAX_PARAMS", "COMPSCALE_MAX_MACS", "COMPSCALE_MAX_SIDE"


def _ceiling(given: float | None, env: str, default: float, upper: float = math.inf) -> float:
    where = "a size ceiling"
    if given is None:
        text = os.environ.get(env, "").strip()
        if not text:
            return default
        try:
            given = float(text.replace("_", "").replace(",", ""))
        except ValueError:
            given = math.nan
        where = f"the environment variable {env}"
    if isinstance(given, bool) or not isinstance(given, (int, float)) or not (math.isfinite(given) and given > 0):
        raise UserError(f"{where} must be a positive number (e.g. 5e9), got {echo(given)}")
    if given > upper:
        raise UserError(f"{where} must be at most {upper:,.0f}, got {given:,.0f}")
    return float(given)


def size_ceiling(max_params: float | None = None, max_macs: float | None = None,
                 max_side: float | None = None) -> tuple[float, float, float]:
    """(params, multiply-adds, input side) ceilings: the given values, else the environment's
    (:data:`MAX_PARAMS_ENV`, :data:`MAX_MACS_ENV`, :data:`MAX_SIDE_ENV`), else the defaults."""
    return (_ceiling(max_params, MAX_PARAMS_ENV, DEFAULT_MAX_PARAMS),
            _ceiling(max_macs, MAX_MACS_ENV, DEFAULT_MAX_MACS),
            _ceiling(max_side, MAX_SIDE_ENV, DEFAULT_MAX_SIDE, MAX_RESOLUTION))


def check_model_size(spec: ModelSpec, max_params: float | None = None, max_macs: float | None = None,
                     max_side: float | None = None, what: str | None = None) -> Complexity:
    """The realized cost of ``spec``, or one line when it exceeds a size ceiling (:func:`size_ceiling`). Called
    before a model is built from user input (a spec file, a weights file's metadata, a flag), so that a file
    asking for 10⁹ blocks, 10⁸ channels or a 100,000-pixel input is refused from the spec alone (analytic
    counts, or a meta-device count the spec's structural limits keep short), before any memory is allocated.
    ``what`` names the model in the message (default: its family)."""
    params_limit, macs_limit, side_limit = size_ceiling(max_params, max_macs, max_side)
    name = what or f"this {spec.family} model"
    if spec.resolution > side_limit:
        raise UserError(f"{name} takes {spec.resolution:,} px inputs, over the ceiling of {side_limit:,.0f} px for "
                        f"a model that is built and run (lift it with {MAX_SIDE_ENV}=N)")
    cost = realized_cost(spec)
    if cost.params > params_limit:
        raise UserError(f"{name} has {cost.params:,} parameters, over the ceiling of {params_limit:,.0f}: it is "
                        f"refused before it is built (lift it with {MAX_PARAMS_ENV}=N)")
    if cost.macs > macs_limit:
        raise UserError(f"{name} needs {cost.macs:,} multiply-adds at {spec.resolution} px, over the ceiling of "
                        f"{macs_limit:,.0f}: it is refused before it is built (lift it with {MAX_MACS_ENV}=N)")
    return cost


def scale(
    base: str | ModelSpec,
    phi: float,
    scaling: CompoundScaling | None = None,
    depth_rounding: str = "ceil",
) -> ScaledModel:
    """Scale ``base`` (a registered name or a spec) by compound coefficient φ and measure the result."""
    scaling = scaling or CompoundScaling()
    base_spec = model_spec(base)
    _check_cardinality(base_spec, scaling)
    factors = scaling.factors(phi)
    spec = base_spec.scaled(factors, depth_rounding)
    cost = realized_cost(spec)
    return ScaledModel(base_spec, scaling, float(phi), factors, spec, cost.params, cost.macs,
                       realized_cost(base_spec).macs)


def relative_budget(value: float | str | None, baseline: int, what: str) -> float | None:
    """A budget as an absolute count: a number passes through; a string ``"4x"`` (or ``"0.5x"``) is that multiple
    of ``baseline``, the baseline's realized count."""
    if not isinstance(value, str):
        return value
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*[xX]\s*", value)
    factor = float(m.group(1)) if m else math.nan
    if not (math.isfinite(factor) and factor > 0):
        raise UserError(f"{what} must be a number or a positive multiple of the baseline such as '4x', "
                        f"got {echo(value)}")
    return factor * baseline


def scale_to_budget(
    base: str | ModelSpec,
    target_macs: float | str | None = None,
    target_params: float | str | None = None,
    scaling: CompoundScaling | None = None,
    depth_rounding: str = "ceil",
    step: float = 1e-3,
) -> ScaledModel:
    """The largest φ whose *realized* architecture fits ``target_macs`` and/or ``target_params``: absolute
    counts (``1e9``), or multiples of the baseline's realized cost given as strings (``"4x"``: four times the
    baseline's multiply-adds; ``target_params="2x"``: twice its parameters)."""
    scaling = scaling or CompoundScaling()
    base_spec = model_spec(base)
    _check_cardinality(base_spec, scaling)
    if isinstance(target_macs, str) or isinstance(target_params, str):
        base_cost = realized_cost(base_spec)
        target_macs = relative_budget(target_macs, base_cost.macs, "target_macs")
        target_params = relative_budget(target_params, base_cost.params, "target_params")

    def cost(phi: float) -> tuple[float, float]:
        try:
            factors = scaling.factors(phi)
            spec = base_spec.scaled(factors, depth_rounding)
        except UserError:  # beyond MAX_FACTOR, or deeper or wider than any spec may be: over any budget
            return math.inf, math.inf
        cost = realized_cost(spec)
        return cost.macs, cost.params

    solution = solve_phi(cost, (target_macs, target_params), step=step)
    return scale(base_spec, solution.phi, scaling, depth_rounding)

