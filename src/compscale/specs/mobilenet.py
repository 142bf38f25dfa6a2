"""MobileNetV1 and MobileNetV2 as data: the two baselines the EfficientNet paper's Table 3 scales.

A stage is ``repeats`` blocks of one type; its stride and channel change apply to its first block only.

* ``"separable"`` (MobileNetV1, Howard et al. 2017): k×k depthwise → BN → act → 1×1 pointwise → BN → act, no
  skip. It ends with an activation, so it is not an MBConv.
* ``"inverted"`` (MobileNetV2, Sandler et al. 2018): 1×1 expand → BN → act (only when the expansion ratio is
  not 1) → k×k depthwise → BN → act → 1×1 linear projection → BN, plus the identity skip when the stride is 1
  and the channels do not change. With ratio 1 this is MobileNetV2's first block (timm's ``ds``).

The network is stem conv3×3/2 → stages → (optional) conv1×1 head → pool → dropout → FC, with ReLU6.
Scaling (:meth:`MobileNetSpec.scaled`) follows timm's ``_gen_mobilenet_v1/_v2`` and the official TF-slim
code: ``round_filters`` (divisor 8) on the stem and every stage, ``ceil`` on the repeats, and a head of
``max(head, round_filters(head, w))`` (the MobileNetV2 paper does not thin the last layer below its base
width). ``scale_stem_head=False`` with ``fix_first_last_depth=True`` is timm's ``fix_stem_head`` (the
``mobilenetv2_110d`` / ``_120d`` rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from compscale.errors import UserError
from compscale.scaling import ScaleFactors, round_filters, round_repeats
from compscale.specs import checks
from compscale.specs.base import Complexity, ModelSpec, bn_complexity, conv_complexity, linear_complexity

Block = Literal["separable", "inverted"]
BLOCKS = ("separable", "inverted")
ACTIVATIONS = ("relu6", "relu", "swish")


@dataclass(frozen=True)
class MobileNetStage:
    """``repeats`` blocks of type ``block`` with kernel k and ``out_channels``; the first carries ``stride``.
    ``expand_ratio`` is the inverted residual's expansion t (1 for a separable block)."""

    block: Block
    out_channels: int
    repeats: int
    stride: int
    kernel: int = 3
    expand_ratio: int = 1

    def __post_init__(self) -> None:
        checks.choice("block", self.block, BLOCKS)
        checks.integer("out_channels", self.out_channels)
        checks.integer("repeats", self.repeats, 1, checks.MAX_BLOCKS)
        if not checks.is_int(self.stride) or self.stride not in (1, 2):
            raise UserError(f"stride must be 1 or 2, got {checks.echo(self.stride)}")
        if checks.integer("kernel", self.kernel, 1, checks.MAX_KERNEL) % 2 != 1:
            raise UserError(f"kernel must be odd (the padding is symmetric), got {self.kernel}")
        checks.integer("expand_ratio", self.expand_ratio, 1, checks.MAX_EXPAND)
        if self.block == "separable" and self.expand_ratio != 1:
            raise UserError(f"a separable stage has no expansion, got expand_ratio {self.expand_ratio}")
        if self.out_channels * self.expand_ratio > checks.MAX_CHANNELS:
            raise UserError(f"out_channels x expand_ratio = {self.out_channels * self.expand_ratio:,} channels is "
                            f"too wide (at most {checks.MAX_CHANNELS:,})")


#: MobileNetV1 (Table 1 of Howard et al.; timm's ``dsa_*`` arch def): 13 separable blocks after the stem.
V1_STAGES: tuple[MobileNetStage, ...] = (
    MobileNetStage("separable", 64, 1, 1),
    MobileNetStage("separable", 128, 2, 2),
    MobileNetStage("separable", 256, 2, 2),
    MobileNetStage("separable", 512, 6, 2),
    MobileNetStage("separable", 1024, 2, 2),
)

#: MobileNetV2 (Table 2 of Sandler et al.; timm's ``ds``/``ir_*`` arch def): 17 blocks after the stem.
V2_STAGES: tuple[MobileNetStage, ...] = (
    MobileNetStage("inverted", 16, 1, 1, expand_ratio=1),
    MobileNetStage("inverted", 24, 2, 2, expand_ratio=6),
    MobileNetStage("inverted", 32, 3, 2, expand_ratio=6),
    MobileNetStage("inverted", 64, 4, 2, expand_ratio=6),
    MobileNetStage("inverted", 96, 3, 1, expand_ratio=6),
    MobileNetStage("inverted", 160, 3, 2, expand_ratio=6),
    MobileNetStage("inverted", 320, 1, 1, expand_ratio=6),
)


@dataclass(frozen=True, kw_only=True)
class MobileNetSpec(ModelSpec):
    """A concrete MobileNetV1/V2: stem conv3×3/2, the stages, an optional conv1×1 head (``head_channels=0``:
    none, the pooled features are the last stage's, as in MobileNetV1), pool, dropout, FC.

    BatchNorm defaults are PyTorch's (momentum 0.1, eps 1e-5), as timm builds these models.
    """

    family = "mobilenet"
    nested = {"stages": MobileNetStage}

    stages: tuple[MobileNetStage, ...] = V2_STAGES
    stem_channels: int = 32
    head_channels: int = 1280
    resolution: int = 224
    dropout: float = 0.2
    drop_path_rate: float = 0.0
    activation: str = "relu6"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    scale_stem_head: bool = True
    fix_first_last_depth: bool = False

    def __post_init__(self) -> None:
        stages = checks.stage_rows(self, MobileNetStage, "a MobileNet stage (a mapping of block, out_channels, "
                                                          "repeats, stride, kernel, expand_ratio)")
        checks.choice("activation", self.activation, ACTIVATIONS)
        checks.common(self)
        checks.integer("stem_channels", self.stem_channels)
        checks.integer("head_channels", self.head_channels, 0)  # 0: no head conv (MobileNetV1)
        checks.boolean("scale_stem_head", self.scale_stem_head)
        checks.boolean("fix_first_last_depth", self.fix_first_last_depth)
        checks.expanded_width(self.stem_channels, stages)

    @property
    def total_blocks(self) -> int:
        return sum(s.repeats for s in self.stages)

    @property
    def num_features(self) -> int:
        """The pooled features' width: the head's, or the last stage's when there is no head conv."""
        return self.head_channels or self.stages[-1].out_channels

    def scaled(self, factors: ScaleFactors, depth_rounding: str = "ceil") -> "MobileNetSpec":
        """Scale this baseline: channels by w (``round_filters``), repeats by d (``ceil``), side by r; the head
        becomes ``max(head, round_filters(head, w))``."""
        last = len(self.stages) - 1
        stages = tuple(
            MobileNetStage(
                block=s.block,
                out_channels=round_filters(s.out_channels, factors.width),
                repeats=(s.repeats if self.fix_first_last_depth and i in (0, last)
                         else round_repeats(s.repeats, factors.depth, depth_rounding)),
                stride=s.stride,
                kernel=s.kernel,
                expand_ratio=s.expand_ratio,
            )
            for i, s in enumerate(self.stages)
        )
        stem, head = self.stem_channels, self.head_channels
        if self.scale_stem_head:
            stem = round_filters(stem, factors.width)
            head = max(head, round_filters(head, factors.width)) if head else 0
        return self.replace(
            stages=stages,
            stem_channels=stem,
            head_channels=head,
            resolution=factors.resolve_resolution(self.resolution),
            dropout=self.dropout if factors.dropout is None else factors.dropout,
        )

    def complexity(self) -> Complexity:
        """Exact counts from the spec (equal to profiling the built model)."""
        h = w = self.resolution
        total = Complexity()

        def conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> Complexity:
            nonlocal h, w
            h, w = math.ceil(h / stride), math.ceil(w / stride)  # odd k, padding k // 2
            return conv_complexity(c_in, c_out, k, h, w, groups) + bn_complexity(c_out)

        total += conv_bn(self.in_chans, self.stem_channels, 3, 2)
        c_in = self.stem_channels
        for stage in self.stages:
            for b in range(stage.repeats):
                stride = stage.stride if b == 0 else 1
                mid = c_in * stage.expand_ratio
                if stage.expand_ratio != 1:
                    total += conv_bn(c_in, mid, 1)
                total += conv_bn(mid, mid, stage.kernel, stride, groups=mid)
                total += conv_bn(mid, stage.out_channels, 1)
                c_in = stage.out_channels
        if self.head_channels:
            total += conv_bn(c_in, self.head_channels, 1)
        return total + linear_complexity(self.num_features, self.num_classes)

    def stage_table(self) -> list[dict[str, Any]]:
        rows = [{"name": "stem", "op": "conv3x3", "kernel": 3, "stride": 2, "repeats": 1,
                 "channels": self.stem_channels}]
        for i, s in enumerate(self.stages, start=1):
            op = "dw-separable" if s.block == "separable" else f"MBConv{s.expand_ratio}"
            rows.append({"name": f"stage{i}", "op": op, "kernel": s.kernel, "stride": s.stride, "repeats": s.repeats,
                         "channels": s.out_channels})
        if self.head_channels:
            rows.append({"name": "head", "op": "conv1x1", "kernel": 1, "stride": 1, "repeats": 1,
                         "channels": self.head_channels})
        return rows


def mobilenet_v1_spec(width: float = 1.0, head_conv: bool = False, **changes: Any) -> MobileNetSpec:
    """MobileNetV1 with width multiplier ``width`` (timm's ``mobilenetv1_<100·width>``); ``head_conv=True`` adds
    a conv1×1 head of max(1024, round_filters(1024, w)) channels (timm's ``mobilenetv1_100h``)."""
    base = MobileNetSpec(stages=V1_STAGES, head_channels=1024 if head_conv else 0, **changes)
    return base.scaled(ScaleFactors(width=width))


def mobilenet_v2_spec(width: float = 1.0, depth: float = 1.0, fix_stem_head: bool = False,
                      **changes: Any) -> MobileNetSpec:
    """MobileNetV2 with width multiplier ``width`` and depth multiplier ``depth`` (timm's ``mobilenetv2_*``);
    ``fix_stem_head`` keeps the stem, the head and the first and last stage's depth (``mobilenetv2_110d``)."""
    base = MobileNetSpec(stages=V2_STAGES, scale_stem_head=not fix_stem_head, fix_first_last_depth=fix_stem_head,
                         **changes)
    return base.scaled(ScaleFactors(depth=depth, width=width))
