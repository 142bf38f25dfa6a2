"""NASNet-A (Zoph et al., 2018) and PNASNet-5 (Liu et al., 2018): the searched cells, stacked "N @ penultimate".

Every op name follows the TF-slim reference (``comb_iter_i/left|right``, ``conv_1x1``, ``conv_prev_1x1``,
``separable_k×k``, ``bn_sep``, ``path_1``/``path_2``/``final_path_bn``), as the PyTorch ports keep them; the
padding is TF "SAME" (strided convs and pools pad right/bottom first). Where the ports differ from TF we
follow the port that holds the released weights (Cadene's, in timm): strided SAME average pools average the
zero padding, and the first cell after a reduction reads, as its "previous" input, the cell two steps back
of the reduction cell's input.
"""

from __future__ import annotations

import torch
from torch import nn

from compscale.models.classic_layers import (
    ActConvBn,
    BranchSeparables,
    FactorizedReduction,
    SamePool,
    StagePooledClassifier,
    kaiming_init,
)
from compscale.models.registry import build_model, register_model
from compscale.models.weights import register_key_map
from compscale.specs.nasnet import NASNetSpec, PNASNetSpec


class _Stem(nn.Module):
    """conv 3×3/2 (VALID) → BN, no activation (the cells start with ReLU)."""

    def __init__(self, cin: int, cout: int, eps: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 2, 0, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


# --- NASNet-A ----------------------------------------------------------------------------------------------


class NASNetReductionCell(nn.Module):
    """NASNet-A reduction cell (also both stem cells): five stride-2 combinations, four outputs concatenated.

    ``prev``: ``"1x1"`` (an ActConvBn adapter), ``"factorized"`` (the second stem cell: its previous input is
    twice as large) or ``None`` (the first stem cell, whose left input is the stem itself).
    """

    def __init__(self, in_left: int, in_right: int, c: int, eps: float, prev: str | None = "1x1",
                 stem: bool = False) -> None:
        super().__init__()
        self.prev = prev
        if prev == "1x1":
            self.conv_prev_1x1 = ActConvBn(in_left, c, eps=eps)
        elif prev == "factorized":
            self.prev_reduction = FactorizedReduction(in_left, c, eps=eps)
        self.conv_1x1 = ActConvBn(in_right, c, eps=eps)
        # In the first stem cell the "left" ops read the raw stem (in_left channels, middle width c).
        left_in, mid = (in_left, c) if prev is None else (c, None)
        self.comb_iter_0_left = BranchSeparables(c, c, 5, 2, eps=eps)
        self.comb_iter_0_right = BranchSeparables(left_in, c, 7, 2, mid=mid, eps=eps)
        self.comb_iter_1_left = SamePool("max", 3, 2)
        self.comb_iter_1_right = BranchSeparables(left_in, c, 7, 2, mid=mid, eps=eps)
        self.comb_iter_2_left = SamePool("avg", 3, 2)
        self.comb_iter_2_right = BranchSeparables(left_in, c, 5, 2, mid=mid, eps=eps)
        self.comb_iter_3_right = SamePool("avg", 3, 1)
        self.comb_iter_4_left = BranchSeparables(c, c, 3, 1, eps=eps)
        self.comb_iter_4_right = SamePool("max", 3, 2)
        self.out_channels = 4 * c

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor | None = None) -> torch.Tensor:
        right = self.conv_1x1(x)
        if self.prev is None:
            left = x
        elif self.prev == "factorized":
            left = self.prev_reduction(x_prev)
        else:
            left = self.conv_prev_1x1(x_prev)
        c0 = self.comb_iter_0_left(right) + self.comb_iter_0_right(left)
        c1 = self.comb_iter_1_left(right) + self.comb_iter_1_right(left)
        c2 = self.comb_iter_2_left(right) + self.comb_iter_2_right(left)
        c3 = self.comb_iter_3_right(c0) + c1
        c4 = self.comb_iter_4_left(c0) + self.comb_iter_4_right(right)
        return torch.cat([c1, c2, c3, c4], 1)


class NASNetNormalCell(nn.Module):
    """NASNet-A normal cell: five stride-1 combinations; the adapted left input and all five are concatenated.

    ``first=True`` (the first cell of a stack) reduces the previous input, which is twice as large, with a
    factorised reduction to ``c`` channels instead of the 1×1 adapter.
    """

    def __init__(self, in_left: int, in_right: int, c: int, eps: float, first: bool = False) -> None:
        super().__init__()
        self.first = first
        if first:
            self.prev_reduction = FactorizedReduction(in_left, c, eps=eps)
        else:
            self.conv_prev_1x1 = ActConvBn(in_left, c, eps=eps)
        self.conv_1x1 = ActConvBn(in_right, c, eps=eps)
        self.comb_iter_0_left = BranchSeparables(c, c, 5, 1, eps=eps)
        self.comb_iter_0_right = BranchSeparables(c, c, 3, 1, eps=eps)
        self.comb_iter_1_left = BranchSeparables(c, c, 5, 1, eps=eps)
        self.comb_iter_1_right = BranchSeparables(c, c, 3, 1, eps=eps)
        self.comb_iter_2_left = SamePool("avg", 3, 1)
        self.comb_iter_3_left = SamePool("avg", 3, 1)
        self.comb_iter_3_right = SamePool("avg", 3, 1)
        self.comb_iter_4_left = BranchSeparables(c, c, 3, 1, eps=eps)
        self.out_channels = 6 * c

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        left = self.prev_reduction(x_prev) if self.first else self.conv_prev_1x1(x_prev)
        right = self.conv_1x1(x)
        c0 = self.comb_iter_0_left(right) + self.comb_iter_0_right(left)
        c1 = self.comb_iter_1_left(left) + self.comb_iter_1_right(left)
        c2 = self.comb_iter_2_left(right) + left
        c3 = self.comb_iter_3_left(left) + self.comb_iter_3_right(left)
        c4 = self.comb_iter_4_left(right) + right
        return torch.cat([left, c0, c1, c2, c3, c4], 1)


class NASNet(StagePooledClassifier, nn.Module):
    """conv stem → stem cells at F/4, F/2 → [N normal] → reduction → [N normal] → reduction → [N normal]."""

    def __init__(self, spec: NASNetSpec, features_only: bool = False) -> None:
        super().__init__()
        self.spec, self.features_only = spec, features_only
        eps, f, n = spec.bn_eps, spec.filters, spec.cells_per_stack
        self.conv0 = _Stem(spec.in_chans, spec.stem_channels, eps)
        self.cell_stem_0 = NASNetReductionCell(spec.stem_channels, spec.stem_channels, f // 4, eps, prev=None)
        self.cell_stem_1 = NASNetReductionCell(spec.stem_channels, self.cell_stem_0.out_channels, f // 2, eps,
                                               prev="factorized")
        # Channels of (x_prev, x) as the cells see them; see the module docstring for the reduction quirk.
        ch_prev, ch = self.cell_stem_0.out_channels, self.cell_stem_1.out_channels
        cells: list[nn.Module] = []
        self.is_reduction: list[bool] = []
        for s in range(3):
            c = f * 2**s
            if s > 0:
                cells.append(NASNetReductionCell(ch_prev, ch, c, eps))
                self.is_reduction.append(True)
                ch = cells[-1].out_channels  # x_prev stays the cell before the reduction's input
            for i in range(n):
                cells.append(NASNetNormalCell(ch_prev, ch, c, eps, first=i == 0))
                self.is_reduction.append(False)
                ch_prev, ch = ch, cells[-1].out_channels
        self.cells = nn.ModuleList(cells)
        self.make_head(ch)
        kaiming_init(self)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x_conv0 = self.conv0(x)
        x_stem0 = self.cell_stem_0(x_conv0)
        x_prev, x = x_stem0, self.cell_stem_1(x_stem0, x_conv0)
        maps = [x_conv0, x_stem0]
        for cell, reduction in zip(self.cells, self.is_reduction):
            if reduction:
                maps.append(torch.relu(x))
                x = cell(x, x_prev)
            else:
                x_prev, x = x, cell(x, x_prev)
        maps.append(torch.relu(x))
        return maps


# --- PNASNet-5 ---------------------------------------------------------------------------------------------


class PNASCell(nn.Module):
    """The PNASNet-5 cell (one cell for normal and reduction use, stride 1 or 2):

    sep5×5(L) + max3×3(L) | sep7×7(R) + max3×3(R) | sep5×5(R) + sep3×3(R) | sep3×3(c₂) + max3×3(R) |
    sep3×3(L) + R, all five concatenated. In the first stem cell L is the raw stem and the ``max3×3(L)``
    path carries a 1×1 conv + BN to match widths; strided cells put a ReLU-1×1/2-BN on the last ``R``.
    """

    def __init__(self, in_left: int, in_right: int, c: int, eps: float, stride: int = 1,
                 prev: str | None = "1x1") -> None:
        super().__init__()
        self.prev = prev
        if prev == "1x1":
            self.conv_prev_1x1 = ActConvBn(in_left, c, eps=eps)
        elif prev == "factorized":
            self.conv_prev_1x1 = FactorizedReduction(in_left, c, eps=eps)
        self.conv_1x1 = ActConvBn(in_right, c, eps=eps)
        stem = prev is None
        left_in = in_left if stem else c
        mid = c if stem else None
        self.comb_iter_0_left = BranchSeparables(left_in, c, 5, stride, mid=mid, eps=eps)
        if stem:
            self.comb_iter_0_right = nn.Sequential()
            self.comb_iter_0_right.add_module("max_pool", SamePool("max", 3, stride))
            self.comb_iter_0_right.add_module("conv", nn.Conv2d(in_left, c, 1, bias=False))
            self.comb_iter_0_right.add_module("bn", nn.BatchNorm2d(c, eps=eps))
        else:
            self.comb_iter_0_right = SamePool("max", 3, stride)
        self.comb_iter_1_left = BranchSeparables(c, c, 7, stride, eps=eps)
        self.comb_iter_1_right = SamePool("max", 3, stride)
        self.comb_iter_2_left = BranchSeparables(c, c, 5, stride, eps=eps)
        self.comb_iter_2_right = BranchSeparables(c, c, 3, stride, eps=eps)
        self.comb_iter_3_left = BranchSeparables(c, c, 3, 1, eps=eps)
        self.comb_iter_3_right = SamePool("max", 3, stride)
        self.comb_iter_4_left = BranchSeparables(left_in, c, 3, stride, mid=mid, eps=eps)
        self.comb_iter_4_right = ActConvBn(c, c, 1, stride, eps=eps) if stride > 1 else None
        self.out_channels = 5 * c

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor | None = None) -> torch.Tensor:
        right = self.conv_1x1(x)
        left = x if self.prev is None else self.conv_prev_1x1(x_prev)
        c0 = self.comb_iter_0_left(left) + self.comb_iter_0_right(left)
        c1 = self.comb_iter_1_left(right) + self.comb_iter_1_right(right)
        c2 = self.comb_iter_2_left(right) + self.comb_iter_2_right(right)
        c3 = self.comb_iter_3_left(c2) + self.comb_iter_3_right(right)
        c4 = self.comb_iter_4_left(left) + (right if self.comb_iter_4_right is None else self.comb_iter_4_right(right))
        return torch.cat([c0, c1, c2, c3, c4], 1)


class PNASNet(StagePooledClassifier, nn.Module):
    """conv stem → stem cells (stride 2) at F/4, F/2 → three stacks of N cells, the first of stacks 2 and 3
    with stride 2; a cell whose previous input is twice as large reduces it with a factorised reduction."""

    def __init__(self, spec: PNASNetSpec, features_only: bool = False) -> None:
        super().__init__()
        self.spec, self.features_only = spec, features_only
        eps, f, n, s0 = spec.bn_eps, spec.filters, spec.cells_per_stack, spec.stem_channels
        self.conv_0 = _Stem(spec.in_chans, s0, eps)
        self.cell_stem_0 = PNASCell(s0, s0, f // 4, eps, stride=2, prev=None)
        self.cell_stem_1 = PNASCell(s0, self.cell_stem_0.out_channels, f // 2, eps, stride=2, prev="factorized")
        ch_prev, ch = self.cell_stem_0.out_channels, self.cell_stem_1.out_channels
        cells, shrunk = [], True  # shrunk: the last cell halved the grid, so x_prev is twice as large
        for s in range(3):
            for i in range(n):
                stride = 2 if (s > 0 and i == 0) else 1
                cells.append(PNASCell(ch_prev, ch, f * 2**s, eps, stride, prev="factorized" if shrunk else "1x1"))
                shrunk = stride == 2
                ch_prev, ch = ch, cells[-1].out_channels
        self.cells = nn.ModuleList(cells)
        self.make_head(ch)
        kaiming_init(self)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x_conv0 = self.conv_0(x)
        x_stem0 = self.cell_stem_0(x_conv0)
        x_prev, x = x_stem0, self.cell_stem_1(x_stem0, x_conv0)
        maps = [x_conv0, torch.relu(x_stem0)]
        n = self.spec.cells_per_stack
        for i, cell in enumerate(self.cells):
            x_prev, x = x, cell(x, x_prev)
            if (i + 1) % n == 0:
                maps.append(torch.relu(x))
        return maps


@build_model.register
def _(spec: NASNetSpec, features_only: bool = False) -> nn.Module:
    return NASNet(spec, features_only=features_only)


@build_model.register
def _(spec: PNASNetSpec, features_only: bool = False) -> nn.Module:
    return PNASNet(spec, features_only=features_only)


register_model("nasnet_a_large", NASNetSpec, "NASNet-A large (6 @ 4032, 331 px)")
register_model("pnasnet5_large", PNASNetSpec, "PNASNet-5 large (4 @ 4320, 331 px)")


@register_key_map(NASNet, "timm")
def _timm_nasnet_keys(model: NASNet) -> dict[str, str]:
    """timm ``nasnetalarge``: normal cells ``cell_0`` …, reductions ``reduction_cell_0/1``; the factorised
    reductions' layers sit directly in the cell; ``conv0`` is a ConvNormAct (``conv0.conv``/``conv0.bn``)."""
    cell_names, normal, red = [], 0, 0
    for reduction in model.is_reduction:
        cell_names.append(f"reduction_cell_{red}" if reduction else f"cell_{normal}")
        red, normal = red + reduction, normal + (not reduction)
    names = {}
    for key in model.state_dict():
        theirs = key.replace(".prev_reduction.", ".")
        if theirs.startswith("cells."):
            _, i, rest = theirs.split(".", 2)
            theirs = f"{cell_names[int(i)]}.{rest}"
        names[key] = theirs
    return names


@register_key_map(PNASNet, "timm")
def _timm_pnasnet_keys(model: PNASNet) -> dict[str, str]:
    """timm ``pnasnet5large``: cells ``cell_0`` … ``cell_11``."""
    names = {}
    for key in model.state_dict():
        names[key] = "cell_" + key[len("cells."):] if key.startswith("cells.") else key
    return names
