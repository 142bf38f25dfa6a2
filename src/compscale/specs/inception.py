"""Inception-v3 (Szegedy et al., 2016), Inception-v4 (Szegedy et al., 2017) and Xception (Chollet, 2017)
as data: the number of modules of each grid size and a width multiplier on every branch.

Inception-v3: stem, 3 × Inception-A (35×35), reduction, 4 × Inception-C with factorised 7×7 (17×17),
reduction, 2 × Inception-E with expanded 3×3 (8×8). Inception-v4: stem, 4 × A, reduction A, 7 × B,
reduction B, 3 × C. Xception: entry flow, ``middle_repeats`` (8) residual blocks of three separable 3×3
convolutions at 728 channels, exit flow. Compound scaling multiplies the modules per grid by d and every
branch's channels by w.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from compscale.scaling import ScaleFactors
from compscale.specs._classic import check_common, repeat_counts, scale_repeats
from compscale.specs.base import ModelSpec


@dataclass(frozen=True, kw_only=True)
class _GridSpec(ModelSpec):
    """Shared by the Inception-style families: ``repeats`` per grid size and a channel multiplier ``width``."""

    repeats: tuple[int, ...] = ()
    width: float = 1.0
    bn_eps: float = 1e-3

    _n_grids: ClassVar[int] = 3
    _grid_names: ClassVar[tuple[str, ...]] = ()
    #: The smallest input side the valid-padded stem and reductions accept (Inception-v3 and -v4: 75 → 1×1).
    min_resolution: ClassVar[int] = 75

    def __post_init__(self) -> None:
        check_common(self)
        repeat_counts(self, "repeats", self._n_grids, weight=2)

    def scaled(self, factors: ScaleFactors, depth_rounding: str = "ceil") -> "_GridSpec":
        return self.replace(
            repeats=scale_repeats(self.repeats, factors, depth_rounding),
            width=self.width * factors.width,
            resolution=max(self.min_resolution, factors.resolve_resolution(self.resolution)),
            dropout=self.dropout if factors.dropout is None else factors.dropout,
        )

    def stage_table(self) -> list[dict[str, Any]]:
        return [{"name": n, "op": n, "repeats": r, "channels": None, "width": self.width}
                for n, r in zip(self._grid_names, self.repeats)]


@dataclass(frozen=True, kw_only=True)
class InceptionV3Spec(_GridSpec):
    family = "inception_v3"
    _grid_names = ("inception_a", "inception_c", "inception_e")

    repeats: tuple[int, ...] = (3, 4, 2)
    resolution: int = 299


@dataclass(frozen=True, kw_only=True)
class InceptionV4Spec(_GridSpec):
    family = "inception_v4"
    _grid_names = ("inception_a", "inception_b", "inception_c")

    repeats: tuple[int, ...] = (4, 7, 3)
    resolution: int = 299


@dataclass(frozen=True, kw_only=True)
class XceptionSpec(_GridSpec):
    """Xception: ``repeats`` is the middle flow's block count alone (one grid), BN eps 1e-5 (Keras port)."""

    family = "xception"
    _n_grids = 1
    _grid_names = ("middle_flow",)
    min_resolution = 32  # padded entry flow: any side the other families take

    repeats: tuple[int, ...] = (8,)
    resolution: int = 299
    bn_eps: float = 1e-5
