"""DenseNet-BC (Huang et al., 2017) as data: growth rate k, the layers of each dense block, bottleneck size.

Every dense layer is BN-ReLU-conv1×1 (``bn_size``·k channels) → BN-ReLU-conv3×3 (k channels), its output
concatenated to its input; a transition (BN-ReLU-conv1×1 halving the channels, avg-pool/2) follows every block
but the last. DenseNet-169 is k = 32, blocks 6-12-32-32; DenseNet-264 is k = 32, blocks 6-12-64-48.
Compound scaling multiplies the blocks' layers by d and k by w.
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
class DenseNetSpec(ModelSpec):
    """A concrete DenseNet-BC: stem conv7×7/2 (2k channels) + max-pool/2, dense blocks, BN-ReLU, pool, FC."""

    family = "densenet"

    growth_rate: int = 32
    blocks: tuple[int, ...] = (6, 12, 32, 32)
    bn_size: int = 4
    resolution: int = 224

    def __post_init__(self) -> None:
        check_common(self)
        positive_int("growth_rate", self.growth_rate, checks.MAX_CHANNELS // 1024)
        positive_int("bn_size", self.bn_size, checks.MAX_EXPAND)
        if isinstance(self.blocks, tuple) and not self.blocks:
            raise UserError("a DenseNet needs at least one dense block")
        repeat_counts(self, "blocks", what=" (dense layers per block)")
        widest = (2 + sum(self.blocks)) * self.growth_rate
        if max(widest, self.bn_size * self.growth_rate) > checks.MAX_CHANNELS:
            raise UserError(f"the dense blocks concatenate up to {widest:,} channels: at most "
                            f"{checks.MAX_CHANNELS:,}")

    def scaled(self, factors: ScaleFactors, depth_rounding: str = "ceil") -> "DenseNetSpec":
        """Layers per block × d, growth rate k × w, side × r."""
        return self.replace(
            blocks=scale_repeats(self.blocks, factors, depth_rounding),
            growth_rate=scale_channels(self.growth_rate, factors.width),
            resolution=factors.resolve_resolution(self.resolution),
            dropout=self.dropout if factors.dropout is None else factors.dropout,
        )

    def stage_table(self) -> list[dict[str, Any]]:
        rows = [{"name": "stem", "op": "conv7x7", "repeats": 1, "channels": 2 * self.growth_rate}]
        ch = 2 * self.growth_rate
        for i, r in enumerate(self.blocks, start=1):
            ch += r * self.growth_rate
            rows.append({"name": f"denseblock{i}", "op": "dense layer", "repeats": r, "channels": ch})
            if i < len(self.blocks):
                ch //= 2
        return rows
