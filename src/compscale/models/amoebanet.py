"""AmoebaNet-A, AmoebaNet-C and GPipe's AmoebaNet-B (Real et al., 2019; Huang et al., 2019).

No public PyTorch implementation holds released weights, so this follows the TF reference
(``tensorflow/tpu`` ``models/official/amoeba_net``: ``network_utils.BaseCell``, ``model_builder``) op for op:

* a cell first adapts its inputs: the previous-previous output by a factorised reduction when it is twice as
  large, or a ReLU-1×1-BN when its width differs; the current one always by ReLU-1×1-BN (state 0; the other
  is state 1);
* each of five combinations applies one op to each of two states and adds them; ops on the two inputs carry
  the cell's stride. ``separable_k×k_2`` = (ReLU, separable k×k, BN) × 2; conv ops (``3x3``, ``1x7_7x1``) are
  bottlenecked (ReLU-1×1 to F/4-BN, the conv, BN, ReLU-1×1 back-BN); ``none``/``1x1`` become a strided
  ReLU-1×1-BN when they must change the shape; pools are TF SAME (the mean over real pixels only);
* the unused states are concatenated, after a factorised reduction when their shape differs from the last one.

Drop-path and the auxiliary head (training-only) are left out: they do not change the parameters of the
inference network except the auxiliary head, which the paper's counts exclude.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from compscale.models.blocks import Conv2dSame
from compscale.models.classic_layers import (
    ActConvBn,
    BranchSeparables,
    FactorizedReduction,
    SamePool,
    StagePooledClassifier,
    kaiming_init,
    same_conv,
)
from compscale.models.registry import build_model, register_model
from compscale.specs.amoebanet import AmoebaNetSpec, CellGenotype


class _ConvBn(nn.Module):
    def __init__(self, cin: int, cout: int, eps: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class BottleneckConv(nn.Module):
    """TF ``3x3`` / ``1x7_7x1`` / ``1x3_3x1`` ops: ReLU-1×1 (reduced)-BN → ReLU → conv(s) → BN → ReLU-1×1-BN."""

    def __init__(self, op: str, cin: int, c: int, stride: int, eps: float) -> None:
        super().__init__()
        r = int(3 * c / 8) if op == "1x3_3x1" else int(c / 4)
        r = max(r, 1)
        self.pre = ActConvBn(cin, r, eps=eps)
        self.act = nn.ReLU()
        if op == "3x3":
            self.conv = same_conv(r, r, 3, stride)
        else:
            k = 7 if op == "1x7_7x1" else 3
            # 1×k with stride (1, s), BN, ReLU, k×1 with stride (s, 1), each with TF SAME padding.
            self.conv = nn.Sequential(
                Conv2dSame(r, r, (1, k), (1, stride), 0, bias=False), nn.BatchNorm2d(r, eps=eps),
                nn.ReLU(), Conv2dSame(r, r, (k, 1), (stride, 1), 0, bias=False))
        self.bn = nn.BatchNorm2d(r, eps=eps)
        self.post = ActConvBn(r, c, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.bn(self.conv(self.act(self.pre(x)))))


def make_op(op: str, cin: int, c: int, stride: int, eps: float) -> nn.Module:
    """One of the ops of the TF reference, taking ``cin`` channels to ``c``."""
    if "separable" in op:
        kernel = int(op.split("x")[0][-1])
        dilation = 2 if op.startswith("dil_2_") else 1
        return BranchSeparables(cin, c, kernel, stride, mid=c, eps=eps, dilation=dilation)
    if op in ("3x3", "1x7_7x1", "1x3_3x1"):
        return BottleneckConv(op, cin, c, stride, eps)
    if op in ("none", "1x1"):
        if stride > 1 or op == "1x1" or cin != c:
            return ActConvBn(cin, c, 1, stride, eps=eps)
        return nn.Identity()
    if "pool" in op:
        kind, size = op.split("_")[0], int(op.split("_")[-1].split("x")[0])
        pool = SamePool(kind, size, stride, count_pad=False)
        return pool if cin == c else nn.Sequential(pool, _ConvBn(cin, c, eps))
    raise ValueError(f"unknown AmoebaNet op {op!r}")


class AmoebaCell(nn.Module):
    """One normal (stride 1) or reduction (stride 2) cell of a genotype.

    ``in_prev=None``: the first stem cell, with no previous input (state 1 is then the raw input itself).
    ``prev_larger``: the previous-previous output has twice the side of the current input.
    """

    def __init__(self, genotype: CellGenotype, in_x: int, in_prev: int | None, prev_larger: bool, c: int,
                 stride: int, eps: float) -> None:
        super().__init__()
        self.genotype, self.stride = genotype, stride
        self.has_prev = in_prev is not None
        if in_prev is None:
            self.prev_adapter, prev_ch = nn.Identity(), in_x
        elif prev_larger:
            self.prev_adapter, prev_ch = FactorizedReduction(in_prev, c, eps=eps), c
        elif in_prev != c:
            self.prev_adapter, prev_ch = ActConvBn(in_prev, c, eps=eps), c
        else:
            self.prev_adapter, prev_ch = nn.Identity(), c
        self.conv_1x1 = ActConvBn(in_x, c, eps=eps)
        chans, half = [c, prev_ch], [False, False]  # half: the state is at the reduced resolution
        ops = []
        idx = genotype.hiddenstate_indices
        for i in range(5):
            for side in range(2):
                state = idx[2 * i + side]
                original = state < 2
                s = stride if original else 1
                ops.append(make_op(genotype.operations[2 * i + side], chans[state], c, s, eps))
            left = idx[2 * i]
            chans.append(c)
            half.append(half[left] or (stride > 1 and left < 2))
        self.ops = nn.ModuleList(ops)
        reductions = {}
        for state, used in enumerate(genotype.used_hiddenstates):
            if not used and (half[state] != half[-1] or chans[state] != c):
                if half[state] != half[-1]:
                    reductions[str(state)] = FactorizedReduction(chans[state], c, eps=eps, relu=False)
                else:
                    reductions[str(state)] = _ConvBn(chans[state], c, eps)
        self.reductions = nn.ModuleDict(reductions)
        self.out_channels = c * sum(1 for u in genotype.used_hiddenstates if not u)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor | None) -> torch.Tensor:
        prev = self.prev_adapter(x if x_prev is None else x_prev)
        states = [self.conv_1x1(x), prev]
        idx = self.genotype.hiddenstate_indices
        for i in range(5):
            states.append(self.ops[2 * i](states[idx[2 * i]]) + self.ops[2 * i + 1](states[idx[2 * i + 1]]))
        out = []
        for state, used in enumerate(self.genotype.used_hiddenstates):
            if not used:
                h = states[state]
                out.append(self.reductions[str(state)](h) if str(state) in self.reductions else h)
        return torch.cat(out, 1)


class AmoebaNet(StagePooledClassifier, nn.Module):
    """conv3×3/2 stem (BN, no ReLU) → two reduction stem cells (F/4, F/2) → 3·N normal cells with reduction
    cells before cells N and 2N (filters doubling) → ReLU → pool → dropout → FC."""

    classifier_attr = "classifier"

    def __init__(self, spec: AmoebaNetSpec, features_only: bool = False) -> None:
        super().__init__()
        self.spec, self.features_only = spec, features_only
        normal, reduction = spec.cells
        eps, f, n = spec.bn_eps, spec.filters, spec.cells_per_stack
        self.stem_conv = nn.Conv2d(spec.in_chans, spec.stem_channels, 3, 2, 0, bias=False)
        self.stem_bn = nn.BatchNorm2d(spec.stem_channels, eps=eps)
        cells: list[nn.Module] = []
        ch_prev, ch, prev_larger = None, spec.stem_channels, False
        scale = 0.25
        for _ in range(2):  # the stem cells
            cells.append(AmoebaCell(reduction, ch, ch_prev, prev_larger, int(f * scale), 2, eps))
            ch_prev, ch, prev_larger, scale = ch, cells[-1].out_channels, True, scale * 2
        self.reduction_at = {n, 2 * n}  # calc_reduction_layers(3N, 2)
        scale = 1.0
        for i in range(3 * n):
            if i in self.reduction_at:
                scale *= 2
                cells.append(AmoebaCell(reduction, ch, ch_prev, prev_larger, int(f * scale), 2, eps))
                ch_prev, ch, prev_larger = ch, cells[-1].out_channels, True
            cells.append(AmoebaCell(normal, ch, ch_prev, prev_larger, int(f * scale), 1, eps))
            ch_prev, ch, prev_larger = ch, cells[-1].out_channels, False
        self.cells = nn.ModuleList(cells)
        self.make_head(ch)
        kaiming_init(self)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem_bn(self.stem_conv(x))
        x_prev, maps = None, []
        for cell in self.cells:
            out = cell(x, x_prev)
            if out.shape[-1] != x.shape[-1]:
                maps.append(x)
            x_prev, x = x, out
        maps.append(torch.relu(x))
        return maps


@build_model.register
def _(spec: AmoebaNetSpec, features_only: bool = False) -> nn.Module:
    return AmoebaNet(spec, features_only=features_only)


register_model("amoebanet_a", partial(AmoebaNetSpec, genotype="a", cells_per_stack=6, filters=190),
               "AmoebaNet-A (N=6, F=190, 331 px; TF tensorflow/tpu genotype)")
register_model("amoebanet_c", partial(AmoebaNetSpec, genotype="c", cells_per_stack=6, filters=228),
               "AmoebaNet-C (N=6, F=228, 331 px)")
register_model("gpipe_amoebanet_b",
               partial(AmoebaNetSpec, genotype="b", cells_per_stack=6, filters=512, resolution=480),
               "GPipe's AmoebaNet-B (18, 512) at 480 px")
