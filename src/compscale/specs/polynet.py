"""PolyNet (Zhang et al., 2017) as data: an Inception-ResNet-v2-like trunk built of "PolyInception" modules.

Stage A (35×35, 384 ch): ``repeats[0]`` 2-way modules I + F + F' (two independent Inception-ResNet-A
blocks). Stage B (17×17, 1152 ch) and C (8×8, 2048 ch): alternating poly-3 modules I + F + F² + F³ (one
block whose convolutions are shared across the three orders, each order with its own BatchNorm) and 2-way
modules. Residual scales fall linearly from ``scale_start`` (1.0) to ``scale_end`` (0.7) over all modules,
as in the released model. Compound scaling multiplies the modules per stage by d and every branch by w.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from compscale.scaling import ScaleFactors
from compscale.specs import checks
from compscale.specs._classic import check_common, repeat_counts, scale_repeats
from compscale.specs.base import ModelSpec


@dataclass(frozen=True, kw_only=True)
class PolyNetSpec(ModelSpec):
    family = "polynet"
    #: The smallest input side its valid-padded (Inception-ResNet-v2) stem and reductions accept.
    min_resolution: ClassVar[int] = 75

    repeats: tuple[int, ...] = (10, 20, 10)
    width: float = 1.0
    scale_start: float = 1.0
    scale_end: float = 0.7
    resolution: int = 331
    dropout: float = 0.2
    bn_eps: float = 1e-5

    def __post_init__(self) -> None:
        check_common(self)
        repeat_counts(self, "repeats", 3, " (stages A, B, C)", weight=4)
        for name in ("scale_start", "scale_end"):
            object.__setattr__(self, name, checks.number(name, getattr(self, name), -1e3, 1e3))

    def module_scales(self) -> list[float]:
        """The residual scale of every module, falling linearly over the whole network (1.0 → 0.7)."""
        n = sum(self.repeats)
        step = (self.scale_start - self.scale_end) / max(1, n - 1)
        return [self.scale_start - i * step for i in range(n)]

    def scaled(self, factors: ScaleFactors, depth_rounding: str = "ceil") -> "PolyNetSpec":
        return self.replace(
            repeats=scale_repeats(self.repeats, factors, depth_rounding),
            width=self.width * factors.width,
            resolution=max(self.min_resolution, factors.resolve_resolution(self.resolution)),
            dropout=self.dropout if factors.dropout is None else factors.dropout,
        )

    def stage_table(self) -> list[dict[str, Any]]:
        return [{"name": f"stage_{s}", "op": op, "repeats": r, "channels": c}
                for s, op, r, c in zip("abc", ("2-way", "poly-3 / 2-way", "poly-3 / 2-way"), self.repeats,
                                       (384, 1152, 2048))]
