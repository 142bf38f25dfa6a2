"""SENet-154 (Hu et al., 2018) as data: a ResNeXt-style network whose bottlenecks end in squeeze-and-excitation.

The SENet-154 bottleneck (the ILSVRC 2017 winner) is 1×1 (2p) → grouped 3×3 (4p, C = 64 groups, stride here)
→ 1×1 (4p) → SE (reduction 16), with the identity or a 3×3/2 projection shortcut; the stem is three 3×3
convolutions (64, 64, 128). Stages have 3, 8, 36, 3 blocks with p = 64, 128, 256, 512. Compound scaling
multiplies the blocks per stage by d and p by w.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compscale.errors import UserError
from compscale.scaling import ScaleFactors
from compscale.specs import checks
from compscale.specs._classic import check_common, positive_int, repeat_counts, scale_channels, scale_repeats
from compscale.specs.base import ModelSpec


@dataclass(frozen=True, kw_only=True)
class SENetSpec(ModelSpec):
    family = "senet"

    layers: tuple[int, ...] = (3, 8, 36, 3)
    planes: tuple[int, ...] = (64, 128, 256, 512)
    groups: int = 64
    reduction: int = 16
    stem_channels: int = 128
    resolution: int = 224
    dropout: float = 0.2

    def __post_init__(self) -> None:
        check_common(self)
        if (not isinstance(self.layers, tuple) or not isinstance(self.planes, tuple)
                or len(self.layers) != len(self.planes) or not self.layers):
            raise UserError("give one block count per stage (layers and planes of equal length), got "
                            f"layers {checks.echo(self.layers)}, planes {checks.echo(self.planes)}")
        repeat_counts(self, "layers", weight=2)
        for i, p in enumerate(self.planes):
            positive_int(f"planes[{i}]", p, checks.MAX_CHANNELS // 4)
        for name in ("groups", "reduction", "stem_channels"):
            positive_int(name, getattr(self, name))
        for p in self.planes:
            if (2 * p) % self.groups or (4 * p) % self.groups:
                raise UserError(f"planes {p}: 2p and 4p must be divisible by groups={self.groups}")
            if 4 * p < self.reduction:
                raise UserError(f"planes {p}: 4p must be at least the SE reduction {self.reduction}")

    def scaled(self, factors: ScaleFactors, depth_rounding: str = "ceil") -> "SENetSpec":
        """Blocks × d; planes × w rounded to a multiple of groups/2 so the grouped 3×3 stays valid."""
        unit = max(1, self.groups // 2)
        planes = tuple(max(unit, int(round(p * factors.width / unit)) * unit) for p in self.planes)
        return self.replace(
            layers=scale_repeats(self.layers, factors, depth_rounding),
            planes=planes if factors.width != 1.0 else self.planes,
            stem_channels=scale_channels(self.stem_channels, factors.width),
            resolution=factors.resolve_resolution(self.resolution),
            dropout=self.dropout if factors.dropout is None else factors.dropout,
        )

    def stage_table(self) -> list[dict[str, Any]]:
        return [{"name": f"layer{i}", "op": "SE-ResNeXt bottleneck", "repeats": r, "channels": 4 * p}
                for i, (r, p) in enumerate(zip(self.layers, self.planes), start=1)]
