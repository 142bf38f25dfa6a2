"""NASNet-A (Zoph et al., 2018) and PNASNet-5 (Liu et al., 2018) as data: the searched cells are code
(:mod:`compscale.models.nasnet`); the network is "N cells per stack @ penultimate filters".

NASNet-A large is 6 @ 4032: a conv3×3/2 stem (96), two reduction stem cells, then three stacks of N normal
cells separated by reduction cells; the filters F = penultimate/24 (168) double at each reduction, and the
last normal cell outputs 6·4F = 4032 channels. PNASNet-5 large is 4 @ 4320: a conv stem (96), two stem
cells, three stacks of N cells, the first cell of stacks 2 and 3 with stride 2; F = penultimate/20 (216).
Compound scaling multiplies N by d and the penultimate filters by w.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from compscale.errors import UserError
from compscale.scaling import ScaleFactors, round_repeats
from compscale.specs import checks
from compscale.specs._classic import check_common, positive_int, scale_channels
from compscale.specs.base import ModelSpec


@dataclass(frozen=True, kw_only=True)
class _CellNetSpec(ModelSpec):
    cells_per_stack: int = 6
    penultimate_filters: int = 4032
    stem_channels: int = 96
    resolution: int = 331
    bn_eps: float = 1e-3

    #: penultimate_filters must be a multiple of this (the output of the last cell over the base filters F,
    #: times what the stem cells divide F by).
    _divisor: ClassVar[int] = 24
    _f_div: ClassVar[int] = 24

    def __post_init__(self) -> None:
        check_common(self)
        positive_int("cells_per_stack", self.cells_per_stack, checks.MAX_BLOCKS)
        checks.blocks(self.family, 3 * self.cells_per_stack, 16, "cells")
        positive_int("penultimate_filters", self.penultimate_filters, checks.MAX_CHANNELS)
        positive_int("stem_channels", self.stem_channels)
        if self.penultimate_filters % self._divisor:
            raise UserError(f"penultimate_filters must be a multiple of {self._divisor},"
                            f" got {self.penultimate_filters}")

    @property
    def filters(self) -> int:
        """F: the filters of the first stack's cells."""
        return self.penultimate_filters // self._f_div

    def scaled(self, factors: ScaleFactors, depth_rounding: str = "ceil") -> "_CellNetSpec":
        d = self._divisor
        pen = self.penultimate_filters * factors.width
        return self.replace(
            cells_per_stack=round_repeats(self.cells_per_stack, factors.depth, depth_rounding),
            penultimate_filters=self.penultimate_filters if factors.width == 1.0 else max(d, int(round(pen / d)) * d),
            stem_channels=scale_channels(self.stem_channels, factors.width),
            resolution=factors.resolve_resolution(self.resolution),
            dropout=self.dropout if factors.dropout is None else factors.dropout,
        )

    def stage_table(self) -> list[dict[str, Any]]:
        f = self.filters
        return [{"name": f"stack{i + 1}", "op": "cell", "repeats": self.cells_per_stack, "channels": f * 2**i}
                for i in range(3)]


@dataclass(frozen=True, kw_only=True)
class NASNetSpec(_CellNetSpec):
    """NASNet-A: F = penultimate / 24; the stem cells work at F/4 and F/2."""

    family = "nasnet"
    _divisor = 96
    _f_div = 24


@dataclass(frozen=True, kw_only=True)
class PNASNetSpec(_CellNetSpec):
    """PNASNet-5: F = penultimate / 20; the stem cells work at F/4 and F/2."""

    family = "pnasnet"
    cells_per_stack: int = 4
    penultimate_filters: int = 4320
    _divisor = 80
    _f_div = 20
