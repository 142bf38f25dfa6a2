"""ResNet and ResNeXt as data: bottleneck stages with depth L, planes p, cardinality C and base width.

A bottleneck block is 1×1 (reduce) → 3×3 (transform, the stride lives here: "ResNet V1.5" as torchvision
and timm build it) → 1×1 (expand to ``planes × expansion``), plus the identity or a 1×1 projection shortcut.
Its inner width follows the ResNeXt paper (Xie et al., 2017, Table 1 and the torchvision/timm code)::

    d = ⌊p · base_width / 64⌋      (the width of one of the C paths, the "group width")
    bottleneck width = d · C

so ResNet-50 is (C, base_width) = (1, 64) and ResNeXt-50 32×4d is (32, 4). ``aggregation`` chooses how the
aggregated transformation F(x) = Σ_{i=1..C} T_i(x) is built: ``"grouped"`` (one grouped 3×3 convolution,
the fast form every library uses) or ``"paths"`` (C explicit parallel paths; the same function).

Compound scaling (:meth:`ResNetSpec.scaled`) multiplies every stage's repeats by d (``round_repeats``), the
planes and the stem by w (``round_filters``, so d = ⌊p·base_width/64⌋ grows with w as well), the input side
by r, and, as an optional fourth dimension, the cardinality C by c (``round_cardinality``) at a fixed group
width, which multiplies the blocks' multiply-adds by c.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from compscale.errors import UserError
from compscale.scaling import MIN_RESOLUTION, ScaleFactors, round_cardinality, round_filters, round_repeats
from compscale.specs import checks
from compscale.specs.base import ModelSpec

Aggregation = Literal["grouped", "paths"]
AGGREGATIONS = ("grouped", "paths")
#: ``imagenet``: conv7×7/2 + max-pool/2 (stride 4); ``cifar``: one conv3×3/1 and no pool (stride 1), the stem
#: of the ResNeXt paper's CIFAR networks (its Section 5.3), for 32-pixel inputs.
StemType = Literal["imagenet", "cifar"]
STEM_TYPES = ("imagenet", "cifar")

#: The planes (bottleneck "p") of the four stages of every ImageNet ResNet, and their strides.
RESNET_PLANES = (64, 128, 256, 512)
RESNET_STRIDES = (1, 2, 2, 2)


@dataclass(frozen=True)
class ResNetStage:
    """One stage (``layer1``..``layer4``): ``repeats`` bottleneck blocks with ``planes``; the first block
    carries the stride and the projection shortcut."""

    repeats: int
    planes: int
    stride: int

    def __post_init__(self) -> None:
        _positive_int("stage repeats", self.repeats, checks.MAX_BLOCKS)
        _positive_int("stage planes", self.planes)
        if not checks.is_int(self.stride) or self.stride not in (1, 2):
            raise UserError(f"stage stride must be 1 or 2, got {checks.echo(self.stride)}")


def resnet_stages(layers: tuple[int, ...] | list[int]) -> tuple[ResNetStage, ...]:
    """The four ImageNet stages with the given repeats, e.g. (3, 4, 6, 3) for ResNet-50."""
    layers = checks.sequence("layers", layers)
    if len(layers) != len(RESNET_PLANES):
        raise UserError(f"give {len(RESNET_PLANES)} stage depths (e.g. 3,4,6,3), got {len(layers)}")
    return tuple(ResNetStage(r, p, s) for r, p, s in zip(layers, RESNET_PLANES, RESNET_STRIDES))


def _positive_int(name: str, value: Any, hi: int = checks.MAX_CHANNELS) -> None:
    if not checks.is_int(value) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {checks.echo(value)}")
    if value > hi:
        raise UserError(f"{name} must be a positive integer of at most {hi:,}, got {value:,}")


@dataclass(frozen=True, kw_only=True)
class ResNetSpec(ModelSpec):
    """A concrete ResNet / ResNeXt: stem conv7×7/2 + max-pool/2 (or, ``stem_type="cifar"``, one conv3×3/1),
    bottleneck stages, pool, dropout, FC.

    BatchNorm defaults are PyTorch's (momentum 0.1, eps 1e-5), as in timm and torchvision. ``zero_init_last``
    starts each block's last BN at γ = 0 (timm's default; Goyal et al. 2017), so a new block is the identity.
    """

    family = "resnet"
    nested = {"stages": ResNetStage}

    stages: tuple[ResNetStage, ...] = resnet_stages((3, 4, 6, 3))
    cardinality: int = 1
    base_width: int = 64
    expansion: int = 4
    stem_channels: int = 64
    aggregation: Aggregation = "grouped"
    stem_type: StemType = "imagenet"
    resolution: int = 224
    dropout: float = 0.0
    drop_path_rate: float = 0.0
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    zero_init_last: bool = True

    def __post_init__(self) -> None:
        stages = checks.sequence("stages", self.stages)
        if not stages:
            raise UserError("a ResNet needs at least one stage")
        if stages is not self.stages:
            object.__setattr__(self, "stages", stages)
        for name in ("cardinality", "base_width", "expansion", "stem_channels"):
            _positive_int(name, getattr(self, name), checks.MAX_EXPAND if name == "expansion" else checks.MAX_CHANNELS)
        checks.resolution(self.resolution, MIN_RESOLUTION)
        checks.choice("aggregation", self.aggregation, AGGREGATIONS)
        checks.choice("stem_type", self.stem_type, STEM_TYPES)
        checks.common(self, check_resolution=False)
        checks.boolean("zero_init_last", self.zero_init_last)
        for i, stage in enumerate(stages):
            if not isinstance(stage, ResNetStage):
                raise UserError(f"stages[{i}] must be a ResNet stage (repeats, planes, stride), "
                                f"got {checks.echo(stage)}")
            if self.group_width(stage) < 1:
                raise UserError(
                    f"planes {stage.planes} with base_width {self.base_width} give a group width of 0 "
                    "(floor(planes * base_width / 64) must be >= 1)"
                )
            widest = max(self.bottleneck_width(stage), self.out_channels(stage))
            if widest > checks.MAX_CHANNELS:
                raise UserError(f"stages[{i}] has {widest:,} channels (planes x base_width / 64 x cardinality, "
                                f"planes x expansion): at most {checks.MAX_CHANNELS:,}")
        checks.blocks(self.family, sum(s.repeats for s in stages))

    # --- the ResNeXt width rule ------------------------------------------------------------------------
    def group_width(self, stage: ResNetStage) -> int:
        """d = ⌊p · base_width / 64⌋: the width of one path of the aggregated transformation."""
        return int(math.floor(stage.planes * self.base_width / 64))

    def bottleneck_width(self, stage: ResNetStage) -> int:
        """d · C: the channels of the 3×3 (grouped) convolution."""
        return self.group_width(stage) * self.cardinality

    def out_channels(self, stage: ResNetStage) -> int:
        return stage.planes * self.expansion

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(s.repeats for s in self.stages)

    @property
    def total_blocks(self) -> int:
        return sum(self.layers)

    @property
    def num_features(self) -> int:
        return self.out_channels(self.stages[-1])

    # --- compound scaling ------------------------------------------------------------------------------
    def scaled(self, factors: ScaleFactors, depth_rounding: str = "ceil") -> "ResNetSpec":
        """Scale this baseline: repeats by d (``round_repeats``), planes and stem by w (``round_filters``),
        the side by r, and the cardinality by c (``round_cardinality``; group width d kept)."""
        stages = tuple(
            ResNetStage(
                repeats=round_repeats(s.repeats, factors.depth, depth_rounding),
                planes=round_filters(s.planes, factors.width),
                stride=s.stride,
            )
            for s in self.stages
        )
        return self.replace(
            stages=stages,
            stem_channels=round_filters(self.stem_channels, factors.width),
            cardinality=round_cardinality(self.cardinality, factors.cardinality),
            resolution=factors.resolve_resolution(self.resolution),
            dropout=self.dropout if factors.dropout is None else factors.dropout,
        )

    def stage_table(self) -> list[dict[str, Any]]:
        if self.stem_type == "cifar":
            rows = [{"name": "stem", "op": "conv3x3", "kernel": 3, "stride": 1, "repeats": 1,
                     "channels": self.stem_channels}]
        else:
            rows = [{"name": "stem", "op": "conv7x7+maxpool", "kernel": 7, "stride": 4, "repeats": 1,
                     "channels": self.stem_channels}]
        for i, s in enumerate(self.stages, start=1):
            d = self.group_width(s)
            op = "bottleneck" if self.cardinality == 1 else f"bottleneck {self.cardinality}x{d}d"
            rows.append({"name": f"stage{i}", "op": op, "kernel": 3, "stride": s.stride, "repeats": s.repeats,
                         "channels": self.out_channels(s), "cardinality": self.cardinality, "group_width": d,
                         "bottleneck_width": d * self.cardinality})
        return rows


def resnet_spec(
    layers: tuple[int, ...] | list[int],
    cardinality: int = 1,
    base_width: int = 64,
    **changes: Any,
) -> ResNetSpec:
    """Any (layers, C, width) ResNet/ResNeXt, e.g. ``resnet_spec((3, 4, 23, 3), 64, 4)`` = ResNeXt-101 64×4d."""
    return ResNetSpec(stages=resnet_stages(layers), cardinality=cardinality, base_width=base_width, **changes)
