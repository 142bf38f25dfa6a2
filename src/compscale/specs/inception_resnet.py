"""Inception-ResNet-v2 as data (Szegedy et al., 2016, "Inception-v4, Inception-ResNet and the Impact of
Residual Connections on Learning"), in the TF-slim layout that Keras and timm reproduce.

The network is a stem, then three residual stages, each a stack of one Inception-ResNet block type whose
residual branch is scaled down before the addition (the paper's Section 3.3: "scaling of the residuals")::

    stem (conv3×3/2 → conv3×3 → conv3×3 → maxpool → 1×1 → conv3×3 → maxpool) → Mixed_5b (35×35, 320 ch)
    10 × block A (Block35, scale 0.17) → reduction A (Mixed_6a, 17×17, 1088 ch)
    20 × block B (Block17, scale 0.10) → reduction B (Mixed_7a, 8×8, 2080 ch)
     9 × block C (Block8,  scale 0.20) + 1 × block C (scale 1.0, no ReLU) → conv1×1 → 1536 → pool → FC

Each module is described by the output widths of its branches, one tuple per branch in order: e.g.
block A is ``((32,), (32, 32), (32, 48, 64))`` = branch 0 a 1×1; branch 1 a 1×1 then a 3×3; branch 2 a
1×1 then two 3×3. The kernels are fixed by the architecture; the widths are what width scaling multiplies.
The trunk widths (320, 1088, 2080) are not free: they are the sums of the concatenated branches (the
reductions pass the trunk through a max-pool branch), and every residual block projects back to its trunk.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from compscale.errors import UserError
from compscale.scaling import ScaleFactors, round_filters, round_repeats
from compscale.specs import checks
from compscale.specs.base import ModelSpec

Branches = tuple[tuple[int, ...], ...]

#: The smallest input side the valid-padded stem and the two stride-2 reductions accept (299 → 8×8 at the end).
MIN_INCEPTION_RESOLUTION = 75
#: With the CIFAR-style stem (every conv padded, only the first strided, no max-pools) the map halves once,
#: then the two valid 3×3/2 reductions shrink it: 32 → 16 → 7 → 3; 13 → 7 → 3 → 1 is the least that works.
MIN_CIFAR_STEM_RESOLUTION = 13
STEM_TYPES = ("imagenet", "cifar")

#: The number of convolutions in each branch of each module (the kernels are fixed by the architecture).
BRANCH_SHAPES: dict[str, tuple[int, ...]] = {
    "mixed_5b": (1, 2, 3, 1),  # 1×1 | 1×1, 5×5 | 1×1, 3×3, 3×3 | avgpool, 1×1
    "block_a": (1, 2, 3),  # 1×1 | 1×1, 3×3 | 1×1, 3×3, 3×3
    "mixed_6a": (1, 3),  # 3×3/2 | 1×1, 3×3, 3×3/2 | (maxpool)
    "block_b": (1, 3),  # 1×1 | 1×1, 1×7, 7×1
    "mixed_7a": (2, 2, 3),  # 1×1, 3×3/2 | 1×1, 3×3/2 | 1×1, 3×3, 3×3/2 | (maxpool)
    "block_c": (1, 3),  # 1×1 | 1×1, 1×3, 3×1
}


def _tuples(value: Any) -> Any:
    """JSON gives lists; the spec keeps tuples so it stays hashable and compares equal after a round trip."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True, kw_only=True)
class InceptionResNetV2Spec(ModelSpec):
    """A concrete Inception-ResNet-v2. ``repeats`` are the blocks A, B, C (the final, unscaled block C is
    always added); ``scales`` their residual scales; BatchNorm eps 1e-3 as in TF-slim (timm, Keras).

    ``dropout`` 0.2 is TF-slim's ``dropout_keep_prob=0.8`` before the classifier. ``stem_type="cifar"``
    keeps the five stem widths but pads every stem conv, keeps only the first one's stride 2 and drops the
    two max-pools (stem stride 2 instead of 8), so that 32-pixel inputs reach blocks A at 16×16, B at 7×7 and
    C at 3×3.
    """

    family = "inception_resnet_v2"

    stem: tuple[int, ...] = (32, 32, 64, 80, 192)
    mixed_5b: Branches = ((96,), (48, 64), (64, 96, 96), (64,))
    block_a: Branches = ((32,), (32, 32), (32, 48, 64))
    mixed_6a: Branches = ((384,), (256, 256, 384))
    block_b: Branches = ((192,), (128, 160, 192))
    mixed_7a: Branches = ((256, 384), (256, 288), (256, 288, 320))
    block_c: Branches = ((192,), (192, 224, 256))
    head_channels: int = 1536
    repeats: tuple[int, int, int] = (10, 20, 9)
    scales: tuple[float, float, float] = (0.17, 0.10, 0.20)
    final_scale: float = 1.0
    resolution: int = 299
    dropout: float = 0.2
    bn_eps: float = 1e-3
    bn_momentum: float = 0.1
    stem_type: str = "imagenet"

    @property
    def min_resolution(self) -> int:
        """The smallest input side this stem and the two valid stride-2 reductions accept."""
        return MIN_CIFAR_STEM_RESOLUTION if self.stem_type == "cifar" else MIN_INCEPTION_RESOLUTION

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, f.name, _tuples(value))
        checks.choice("stem_type", self.stem_type, STEM_TYPES)
        if not checks.is_int(self.resolution) or self.resolution < self.min_resolution:
            what = "stem" if self.stem_type == "cifar" else "valid-padded stem"
            raise UserError(
                f"Inception-ResNet-v2 needs an input side >= {self.min_resolution} "
                f"({what} and two stride-2 reductions), got {checks.echo(self.resolution)}"
            )
        checks.resolution(self.resolution, self.min_resolution)
        if not isinstance(self.stem, tuple) or len(self.stem) != 5:
            raise UserError(f"the stem has 5 convolutions, got {checks.echo(self.stem)}")
        for name, shape in BRANCH_SHAPES.items():
            value = getattr(self, name)
            if (not isinstance(value, tuple) or not all(isinstance(b, tuple) for b in value)
                    or tuple(len(b) for b in value) != shape):
                raise UserError(f"{name} must have branches of {shape} convolutions, got {checks.echo(value)}")
        widths = [*self.stem, self.head_channels] + [w for n in BRANCH_SHAPES for b in getattr(self, n) for w in b]
        if any(not checks.is_int(w) or w < 1 for w in widths):
            bad = next(w for w in widths if not checks.is_int(w) or w < 1)
            raise UserError(f"every channel width must be a positive integer, got {checks.echo(bad)}")
        if max(widths) > checks.MAX_CHANNELS or self.channels_c > checks.MAX_CHANNELS:
            raise UserError(f"channel widths must total at most {checks.MAX_CHANNELS:,} per layer, got "
                            f"{max(max(widths), self.channels_c):,}")
        if (not isinstance(self.repeats, tuple) or len(self.repeats) != 3
                or any(not checks.is_int(r) or r < 0 for r in self.repeats)):
            raise UserError(f"repeats must be three non-negative integers (blocks A, B, C), "
                            f"got {checks.echo(self.repeats)}")
        checks.blocks(self.family, sum(self.repeats) + 1)
        if not isinstance(self.scales, tuple) or len(self.scales) != 3:
            raise UserError(f"scales must be three numbers (blocks A, B, C), got {checks.echo(self.scales)}")
        object.__setattr__(self, "scales", tuple(checks.number(f"scales[{i}]", v, -1e3, 1e3)
                                                 for i, v in enumerate(self.scales)))
        object.__setattr__(self, "final_scale", checks.number("final_scale", self.final_scale, -1e3, 1e3))
        checks.common(self, check_resolution=False)

    # --- trunk widths follow from the concatenations ---------------------------------------------------
    @property
    def channels_a(self) -> int:
        """Trunk width at 35×35: Mixed_5b's concatenation (320)."""
        return sum(b[-1] for b in self.mixed_5b)

    @property
    def channels_b(self) -> int:
        """Trunk width at 17×17: Mixed_6a's two conv branches plus the max-pooled trunk (1088)."""
        return sum(b[-1] for b in self.mixed_6a) + self.channels_a

    @property
    def channels_c(self) -> int:
        """Trunk width at 8×8: Mixed_7a's three conv branches plus the max-pooled trunk (2080)."""
        return sum(b[-1] for b in self.mixed_7a) + self.channels_b

    @property
    def total_blocks(self) -> int:
        return sum(self.repeats) + 1

    def scaled(self, factors: ScaleFactors, depth_rounding: str = "ceil") -> "InceptionResNetV2Spec":
        """Scale this baseline: every branch width, the stem and the head by w (``round_filters``), the
        repeats of blocks A, B, C by d (``round_repeats``), the side by r (never below the stem's minimum: 75
        pixels, or 13 with the CIFAR stem)."""

        def widen(branches: Branches) -> Branches:
            return tuple(tuple(round_filters(c, factors.width) for c in b) for b in branches)

        return self.replace(
            stem=tuple(round_filters(c, factors.width) for c in self.stem),
            **{name: widen(getattr(self, name)) for name in BRANCH_SHAPES},
            head_channels=round_filters(self.head_channels, factors.width),
            repeats=tuple(round_repeats(r, factors.depth, depth_rounding) for r in self.repeats),
            resolution=max(self.min_resolution, factors.resolve_resolution(self.resolution)),
            dropout=self.dropout if factors.dropout is None else factors.dropout,
        )

    def stage_table(self) -> list[dict[str, Any]]:
        a, b, c = self.repeats
        sa, sb, sc = self.scales
        ca, cb, cc = self.channels_a, self.channels_b, self.channels_c
        rows = [
            ("stem", "conv3x3 stem", 3, 2 if self.stem_type == "cifar" else 8, 1, self.stem[-1]),
            ("mixed_5b", "Mixed_5b", 5, 1, 1, ca),
            ("block_a", f"Block35 x{sa:g}", 3, 1, a, ca),
            ("mixed_6a", "Reduction-A", 3, 2, 1, cb),
            ("block_b", f"Block17 x{sb:g}", 7, 1, b, cb),
            ("mixed_7a", "Reduction-B", 3, 2, 1, cc),
            ("block_c", f"Block8 x{sc:g}", 3, 1, c, cc),
            ("block_c_final", f"Block8 x{self.final_scale:g} no ReLU", 3, 1, 1, cc),
            ("head", "conv1x1", 1, 1, 1, self.head_channels),
        ]
        keys = ("name", "op", "kernel", "stride", "repeats", "channels")
        return [dict(zip(keys, row)) for row in rows]
