"""EfficientNet's architecture as data: the paper's Table 1 (the B0 baseline) as typed rows.

Every stage is a stack of MBConv blocks (mobile inverted bottleneck with squeeze-and-excitation). A stage's
stride and channel change apply to its first block only. Scaling (:meth:`EfficientNetSpec.scaled`) applies
the official rounding: ``round_filters`` to the stem, every stage and the head; ``ceil`` to the repeats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from compscale.errors import UserError
from compscale.scaling import MIN_RESOLUTION, ScaleFactors, round_filters, round_repeats
from compscale.specs import checks
from compscale.specs.base import Complexity, ModelSpec, bn_complexity, conv_complexity, linear_complexity

Padding = Literal["symmetric", "same"]
Activation = Literal["swish", "relu6", "relu"]


@dataclass(frozen=True)
class MBConvStage:
    """One row of Table 1: ``repeats`` MBConv blocks with kernel k, expansion ratio and output channels."""

    expand_ratio: int
    kernel: int
    stride: int
    out_channels: int
    repeats: int

    def __post_init__(self) -> None:
        checks.integer("expand_ratio", self.expand_ratio, 1, checks.MAX_EXPAND)
        if checks.integer("kernel", self.kernel, 1, checks.MAX_KERNEL) % 2 != 1:
            raise UserError(f"kernel must be odd (the padding is symmetric), got {self.kernel}")
        if not checks.is_int(self.stride) or self.stride not in (1, 2):
            raise UserError(f"stride must be 1 or 2, got {checks.echo(self.stride)}")
        checks.integer("out_channels", self.out_channels)
        checks.integer("repeats", self.repeats, 1, checks.MAX_BLOCKS)
        if self.out_channels * self.expand_ratio > checks.MAX_CHANNELS:
            raise UserError(f"out_channels x expand_ratio = {self.out_channels * self.expand_ratio:,} channels is "
                            f"too wide (at most {checks.MAX_CHANNELS:,})")


#: EfficientNet-B0 (Table 1 of the paper; official ``_DEFAULT_BLOCKS_ARGS``).
B0_STAGES: tuple[MBConvStage, ...] = (
    MBConvStage(expand_ratio=1, kernel=3, stride=1, out_channels=16, repeats=1),
    MBConvStage(expand_ratio=6, kernel=3, stride=2, out_channels=24, repeats=2),
    MBConvStage(expand_ratio=6, kernel=5, stride=2, out_channels=40, repeats=2),
    MBConvStage(expand_ratio=6, kernel=3, stride=2, out_channels=80, repeats=3),
    MBConvStage(expand_ratio=6, kernel=5, stride=1, out_channels=112, repeats=3),
    MBConvStage(expand_ratio=6, kernel=5, stride=2, out_channels=192, repeats=4),
    MBConvStage(expand_ratio=6, kernel=3, stride=1, out_channels=320, repeats=1),
)


@dataclass(frozen=True, kw_only=True)
class EfficientNetSpec(ModelSpec):
    """A concrete EfficientNet: stem conv3x3/2, the MBConv stages, conv1x1 head, pool, dropout, FC.

    ``stem_stride`` is the stem's stride (2, as released; 1 for a CIFAR-style network on 28-32 px images, whose
    first stage then sees every pixel, so that a few pixels of resolution change every feature map).
    ``divisor`` is the multiple width scaling rounds channels to (8, as released; a smaller one for narrow
    stages, where steps of 8 channels would let the rounding, not the multiplier, decide the width).

    ``se_ratio`` is the squeeze-excitation reduction relative to the *block input* channels (0 disables SE,
    as in EfficientNet-Lite). ``scale_stem_head=False`` and ``fix_first_last_depth=True`` are Lite's rules.
    BatchNorm defaults are PyTorch's (momentum 0.1, eps 1e-5); TF's are momentum 0.01, eps 1e-3.
    """

    family = "efficientnet"
    nested = {"stages": MBConvStage}

    stages: tuple[MBConvStage, ...] = B0_STAGES
    stem_channels: int = 32
    head_channels: int = 1280
    resolution: int = 224
    dropout: float = 0.2
    drop_path_rate: float = 0.2
    se_ratio: float = 0.25
    activation: Activation = "swish"
    padding: Padding = "symmetric"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    scale_stem_head: bool = True
    fix_first_last_depth: bool = False
    stem_stride: int = 2
    divisor: int = 8

    def __post_init__(self) -> None:
        stages = checks.stage_rows(self, MBConvStage, "an MBConv stage (a mapping of expand_ratio, kernel, stride, "
                                                       "out_channels, repeats)")
        checks.choice("activation", self.activation, ("swish", "relu6", "relu"))
        checks.choice("padding", self.padding, ("symmetric", "same"))
        if not checks.is_int(self.stem_stride) or self.stem_stride not in (1, 2):
            raise UserError(f"stem_stride must be 1 or 2, got {checks.echo(self.stem_stride)}")
        # A stride-1 stem sees half the side a stride-2 one needs: 16 px down to the same last feature map.
        checks.common(self, min_resolution=MIN_RESOLUTION // (2 // self.stem_stride))
        checks.integer("stem_channels", self.stem_channels)
        checks.integer("head_channels", self.head_channels)
        object.__setattr__(self, "se_ratio", checks.number("se_ratio", self.se_ratio, 0.0, 1.0))
        checks.boolean("scale_stem_head", self.scale_stem_head)
        checks.boolean("fix_first_last_depth", self.fix_first_last_depth)
        checks.integer("divisor", self.divisor, 1, 64)
        checks.expanded_width(self.stem_channels, stages)

    @property
    def total_blocks(self) -> int:
        return sum(s.repeats for s in self.stages)

    def scaled(self, factors: ScaleFactors, depth_rounding: str = "ceil") -> "EfficientNetSpec":
        """Scale this baseline: channels by w (``round_filters`` to multiples of ``divisor``), repeats by d
        (``ceil``), side by r."""
        last = len(self.stages) - 1
        stages = []
        for i, stage in enumerate(self.stages):
            fixed_depth = self.fix_first_last_depth and i in (0, last)
            stages.append(
                MBConvStage(
                    expand_ratio=stage.expand_ratio,
                    kernel=stage.kernel,
                    stride=stage.stride,
                    out_channels=round_filters(stage.out_channels, factors.width, self.divisor),
                    repeats=(stage.repeats if fixed_depth
                             else round_repeats(stage.repeats, factors.depth, depth_rounding)),
                )
            )
        scale_edge = self.scale_stem_head
        return self.replace(
            stages=tuple(stages),
            stem_channels=(round_filters(self.stem_channels, factors.width, self.divisor) if scale_edge
                           else self.stem_channels),
            head_channels=(round_filters(self.head_channels, factors.width, self.divisor) if scale_edge
                           else self.head_channels),
            resolution=factors.resolve_resolution(self.resolution),
            dropout=self.dropout if factors.dropout is None else factors.dropout,
        )

    def complexity(self) -> Complexity:
        """Exact counts from the spec (equal to profiling the built model, and ~1000x faster)."""
        h = w = self.resolution
        total = Complexity()

        def conv_bn(c_in: int, c_out: int, k: int, stride: int, groups: int = 1) -> Complexity:
            nonlocal h, w
            h, w = math.ceil(h / stride), math.ceil(w / stride)  # SAME and symmetric k//2 agree for odd k
            return conv_complexity(c_in, c_out, k, h, w, groups) + bn_complexity(c_out)

        total += conv_bn(self.in_chans, self.stem_channels, 3, self.stem_stride)
        c_in = self.stem_channels
        for stage in self.stages:
            for b in range(stage.repeats):
                mid = c_in * stage.expand_ratio
                if stage.expand_ratio != 1:
                    total += conv_bn(c_in, mid, 1, 1)
                total += conv_bn(mid, mid, stage.kernel, stage.stride if b == 0 else 1, groups=mid)
                if self.se_ratio > 0:
                    squeeze = max(1, int(c_in * self.se_ratio))
                    total += conv_complexity(mid, squeeze, 1, 1, 1, bias=True)
                    total += conv_complexity(squeeze, mid, 1, 1, 1, bias=True)
                total += conv_bn(mid, stage.out_channels, 1, 1)
                c_in = stage.out_channels
        total += conv_bn(c_in, self.head_channels, 1, 1)
        return total + linear_complexity(self.head_channels, self.num_classes)

    def stage_table(self) -> list[dict[str, Any]]:
        rows = [{"name": "stem", "op": "conv3x3", "kernel": 3, "stride": self.stem_stride, "repeats": 1,
                 "channels": self.stem_channels}]
        for i, s in enumerate(self.stages, start=1):
            rows.append(
                {
                    "name": f"stage{i}",
                    "op": f"MBConv{s.expand_ratio}",
                    "kernel": s.kernel,
                    "stride": s.stride,
                    "repeats": s.repeats,
                    "channels": s.out_channels,
                }
            )
        rows.append({"name": "head", "op": "conv1x1", "kernel": 1, "stride": 1, "repeats": 1,
                     "channels": self.head_channels})
        return rows
