"""AmoebaNet (Real et al., 2019) as data: the evolved normal and reduction cells and "N @ F".

A cell is five pairwise combinations: each picks two hidden states (0 = previous cell's output, 1 = the
one before, then the combinations made so far), applies one op to each and adds them; the unused states are
concatenated. The genotypes are those of the ``tensorflow/tpu`` reference (``models/official/amoeba_net/
model_specs.py``): AmoebaNet-A = ``amoeba_net_a`` (``evol_net_g``), -B = ``amoeba_net_b`` (``evol_net_h``),
-C = ``amoeba_net_c`` (``evol_net_a``). The ImageNet network (``model_builder.py``): conv3×3/2 stem (32),
two reduction stem cells at F/4 and F/2, then 3·N normal cells with reduction cells after the first and
second thirds; filters double at each reduction. N and F (``cells_per_stack``, ``filters``):

* AmoebaNet-A (paper, Table 2): N = 6, F = 190 at 331 px → 86.7M params, 23.1B multiply-adds.
* AmoebaNet-C (paper, appendix): N = 6, F = 228 at 331 px → 155.3M params, 41.1B multiply-adds.
* GPipe (Huang et al., 2019): AmoebaNet-B (18, 512), i.e. 18 normal cells (N = 6), F = 512, 480 px → 557M.

Compound scaling multiplies N by d and F by w.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from compscale.errors import UserError
from compscale.scaling import ScaleFactors, round_repeats
from compscale.specs import checks
from compscale.specs._classic import check_common, positive_int, scale_channels
from compscale.specs.base import ModelSpec

Genotype = Literal["a", "b", "c"]


@dataclass(frozen=True)
class CellGenotype:
    """Ten ops (left, right of each of the five combinations), the hidden state each reads, and which of the
    seven states (two inputs + five combinations) are consumed inside the cell (the others are concatenated)."""

    operations: tuple[str, ...]
    hiddenstate_indices: tuple[int, ...]
    used_hiddenstates: tuple[int, ...]


#: The evolved cells, from tensorflow/tpu models/official/amoeba_net/model_specs.py.
GENOTYPES: dict[str, tuple[CellGenotype, CellGenotype]] = {
    "a": (
        CellGenotype(
            ("avg_pool_3x3", "max_pool_3x3", "separable_3x3_2", "none", "none", "avg_pool_3x3",
             "separable_3x3_2", "separable_5x5_2", "avg_pool_3x3", "separable_3x3_2"),
            (0, 0, 1, 1, 0, 1, 0, 2, 5, 0),
            (1, 0, 1, 0, 0, 1, 0),
        ),
        CellGenotype(
            ("separable_3x3_2", "avg_pool_3x3", "max_pool_3x3", "separable_7x7_2", "max_pool_3x3",
             "max_pool_3x3", "separable_3x3_2", "1x7_7x1", "avg_pool_3x3", "separable_7x7_2"),
            (1, 0, 0, 2, 1, 0, 4, 0, 1, 0),
            (1, 1, 0, 0, 0, 0, 0),
        ),
    ),
    "b": (
        CellGenotype(
            ("1x1", "max_pool_3x3", "none", "separable_3x3_2", "1x1", "separable_3x3_2", "1x1", "none",
             "avg_pool_3x3", "1x1"),
            (1, 1, 1, 0, 1, 0, 2, 2, 1, 5),
            (0, 1, 1, 0, 0, 1, 0),
        ),
        CellGenotype(
            ("max_pool_2x2", "max_pool_3x3", "none", "3x3", "dil_2_separable_5x5_2", "max_pool_3x3", "none",
             "separable_3x3_2", "avg_pool_3x3", "1x1"),
            (0, 0, 2, 1, 2, 2, 3, 1, 4, 3),
            (1, 1, 1, 1, 1, 0, 0),
        ),
    ),
    "c": (
        CellGenotype(
            ("avg_pool_3x3", "separable_3x3_2", "none", "separable_3x3_2", "avg_pool_3x3", "separable_3x3_2",
             "none", "separable_3x3_2", "avg_pool_3x3", "separable_3x3_2"),
            (0, 0, 0, 0, 2, 1, 0, 1, 3, 0),
            (1, 0, 0, 1, 0, 0, 0),
        ),
        CellGenotype(
            ("max_pool_3x3", "max_pool_3x3", "separable_7x7_2", "separable_3x3_2", "separable_7x7_2",
             "max_pool_3x3", "separable_5x5_2", "separable_5x5_2", "max_pool_3x3", "separable_3x3_2"),
            (0, 0, 2, 0, 0, 1, 4, 4, 1, 1),
            (0, 1, 0, 0, 0, 0, 0),
        ),
    ),
}


@dataclass(frozen=True, kw_only=True)
class AmoebaNetSpec(ModelSpec):
    family = "amoebanet"

    genotype: Genotype = "a"
    cells_per_stack: int = 6
    filters: int = 190
    stem_channels: int = 32
    resolution: int = 331
    dropout: float = 0.5
    bn_eps: float = 1e-3

    def __post_init__(self) -> None:
        check_common(self)
        checks.choice("AmoebaNet genotype", self.genotype, tuple(GENOTYPES))
        positive_int("cells_per_stack", self.cells_per_stack, checks.MAX_BLOCKS)
        checks.blocks(self.family, 3 * self.cells_per_stack, 16, "cells")
        # The last stack's cells concatenate up to 6 states of 4·F channels.
        positive_int("filters", self.filters, checks.MAX_CHANNELS // 24)
        positive_int("stem_channels", self.stem_channels)
        if self.filters < 4:
            raise UserError(f"filters must be at least 4 (the stem cells use F/4), got {self.filters}")

    @property
    def cells(self) -> tuple[CellGenotype, CellGenotype]:
        """(normal, reduction) genotypes."""
        return GENOTYPES[self.genotype]

    def scaled(self, factors: ScaleFactors, depth_rounding: str = "ceil") -> "AmoebaNetSpec":
        return self.replace(
            cells_per_stack=round_repeats(self.cells_per_stack, factors.depth, depth_rounding),
            filters=max(4, scale_channels(self.filters, factors.width)),
            stem_channels=scale_channels(self.stem_channels, factors.width),
            resolution=factors.resolve_resolution(self.resolution),
            dropout=self.dropout if factors.dropout is None else factors.dropout,
        )

    def stage_table(self) -> list[dict[str, Any]]:
        return [{"name": f"stack{i + 1}", "op": f"AmoebaNet-{self.genotype.upper()} cell",
                 "repeats": self.cells_per_stack, "channels": self.filters * 2**i} for i in range(3)]
