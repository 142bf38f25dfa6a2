"""PolyNet (Zhang et al., 2017): the seed table's PolyNet row (331 px).

Names follow the released PyTorch port (``pretrainedmodels``' ``polynet``: ``stem``, ``stage_a``,
``reduction_a`` …, ``path0``/``path1``, ``conv2d``; poly-3 modules share ``conv`` and keep one BN per order in
``bn_blocks``), so its weights load with the identity key map. Convs are conv → BN (eps 1e-5) → ReLU.
"""

from __future__ import annotations

import torch
from torch import nn

from compscale.models.classic_layers import ConvBnAct, StagePooledClassifier, kaiming_init
from compscale.models.registry import build_model, register_model
from compscale.models.weights import register_key_map
from compscale.specs._classic import scale_channels
from compscale.specs.polynet import PolyNetSpec


class _Ctx:
    def __init__(self, width: float, eps: float) -> None:
        self.w, self.eps = width, eps

    def c(self, ch: int) -> int:
        return scale_channels(ch, self.w)

    def conv(self, cin: int, cout: int, kernel, stride: int = 1, padding=0, act: bool = True) -> ConvBnAct:
        return ConvBnAct(cin, cout, kernel, stride, padding, eps=self.eps, act=act)


class Stem(nn.Module):
    """Inception-v4's stem: three convs, then three (pool | conv) concatenations to 384 channels at 35×35."""

    def __init__(self, cin: int, k: _Ctx) -> None:
        super().__init__()
        c, conv = k.c, k.conv
        self.conv1 = nn.Sequential(conv(cin, c(32), 3, 2), conv(c(32), c(32), 3), conv(c(32), c(64), 3, padding=1))
        self.conv1_pool_branch = nn.MaxPool2d(3, 2)
        self.conv1_branch = conv(c(64), c(96), 3, 2)
        ch = c(64) + c(96)
        self.conv2_short = nn.Sequential(conv(ch, c(64), 1), conv(c(64), c(96), 3))
        self.conv2_long = nn.Sequential(conv(ch, c(64), 1), conv(c(64), c(64), (7, 1), padding=(3, 0)),
                                        conv(c(64), c(64), (1, 7), padding=(0, 3)), conv(c(64), c(96), 3))
        self.conv2_pool_branch = nn.MaxPool2d(3, 2)
        self.conv2_branch = conv(2 * c(96), 2 * c(96), 3, 2)
        self.out_channels = 4 * c(96)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = torch.cat([self.conv1_pool_branch(x), self.conv1_branch(x)], 1)
        x = torch.cat([self.conv2_short(x), self.conv2_long(x)], 1)
        return torch.cat([self.conv2_pool_branch(x), self.conv2_branch(x)], 1)


class BlockA(nn.Module):
    """Inception-ResNet-A residual function F (no shortcut): three paths → concat → linear 1×1 back to ``ch``."""

    def __init__(self, ch: int, k: _Ctx) -> None:
        super().__init__()
        c, conv = k.c, k.conv
        self.path0 = nn.Sequential(conv(ch, c(32), 1), conv(c(32), c(48), 3, padding=1),
                                   conv(c(48), c(64), 3, padding=1))
        self.path1 = nn.Sequential(conv(ch, c(32), 1), conv(c(32), c(32), 3, padding=1))
        self.path2 = conv(ch, c(32), 1)
        self.conv2d = conv(c(64) + 2 * c(32), ch, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(torch.cat([self.path0(x), self.path1(x), self.path2(x)], 1))


class _BlockBC(nn.Module):
    """Inception-ResNet-B/C residual function: 1×1→(1×k)→(k×1) | 1×1 → concat → linear 1×1."""

    def __init__(self, ch: int, k: _Ctx, widths: tuple[int, int, int, int], kern: int, order: str) -> None:
        super().__init__()
        c, conv = k.c, k.conv
        a, b, d, p1 = (c(v) for v in widths)
        kh = ((1, kern), (0, kern // 2)) if order == "1xk" else ((kern, 1), (kern // 2, 0))
        kv = ((kern, 1), (kern // 2, 0)) if order == "1xk" else ((1, kern), (0, kern // 2))
        self.path0 = nn.Sequential(conv(ch, a, 1), conv(a, b, kh[0], padding=kh[1]), conv(b, d, kv[0], padding=kv[1]))
        self.path1 = conv(ch, p1, 1)
        self.conv2d = conv(d + p1, ch, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(torch.cat([self.path0(x), self.path1(x)], 1))


def block_b(ch: int, k: _Ctx) -> _BlockBC:
    return _BlockBC(ch, k, (128, 160, 192, 192), 7, "1xk")


def block_c(ch: int, k: _Ctx) -> _BlockBC:
    return _BlockBC(ch, k, (192, 224, 256, 192), 3, "1xk")


class MultiWay(nn.Module):
    """2-way module: ReLU(x + s·F(x) + s·F'(x)) with two independent residual functions."""

    def __init__(self, scale: float, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.scale = scale
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for block in self.blocks:
            out = out + block(x) * self.scale
        return torch.relu(out)


class PolyConv2d(nn.Module):
    """A conv shared by every order of a poly-N module, with one BatchNorm per order."""

    def __init__(self, cin: int, cout: int, kernel, orders: int, eps: float, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, 1, padding, bias=False)
        self.bn_blocks = nn.ModuleList([nn.BatchNorm2d(cout, eps=eps) for _ in range(orders)])

    def forward(self, x: torch.Tensor, order: int) -> torch.Tensor:
        return torch.relu(self.bn_blocks[order](self.conv(x)))


class PolyModule(nn.Module):
    """poly-N module: ReLU(x + s·F(x) + s·F(F(x)) + …), F's convs shared across orders, the ReLU between
    orders applied to F's output before it is fed again."""

    def __init__(self, ch: int, k: _Ctx, scale: float, widths: tuple[int, int, int, int], kern: int,
                 names: tuple[str, str], orders: int = 3) -> None:
        super().__init__()
        c, eps = k.c, k.eps
        a, b, d, p1 = (c(v) for v in widths)
        self.scale, self.orders, self._names = scale, orders, names
        self.path0_1x1 = PolyConv2d(ch, a, 1, orders, eps)
        setattr(self, names[0], PolyConv2d(a, b, (1, kern), orders, eps, padding=(0, kern // 2)))
        setattr(self, names[1], PolyConv2d(b, d, (kern, 1), orders, eps, padding=(kern // 2, 0)))
        self.path1 = PolyConv2d(ch, p1, 1, orders, eps)
        self.conv2d_blocks = nn.ModuleList([k.conv(d + p1, ch, 1, act=False) for _ in range(orders)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for i in range(self.orders):
            y = self.path0_1x1(x, i)
            y = getattr(self, self._names[1])(getattr(self, self._names[0])(y, i), i)
            x = self.conv2d_blocks[i](torch.cat([y, self.path1(x, i)], 1))
            out = out + x * self.scale
            x = torch.relu(x)
        return torch.relu(out)


class ReductionA(nn.Module):
    def __init__(self, ch: int, k: _Ctx) -> None:
        super().__init__()
        c, conv = k.c, k.conv
        self.path0 = nn.Sequential(conv(ch, c(256), 1), conv(c(256), c(256), 3, padding=1), conv(c(256), c(384), 3, 2))
        self.path1 = conv(ch, c(384), 3, 2)
        self.path2 = nn.MaxPool2d(3, 2)
        self.out_channels = 2 * c(384) + ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.path0(x), self.path1(x), self.path2(x)], 1)


class ReductionB(nn.Module):
    def __init__(self, ch: int, k: _Ctx) -> None:
        super().__init__()
        c, conv = k.c, k.conv
        self.path0 = nn.Sequential(conv(ch, c(256), 1), conv(c(256), c(256), 3, padding=1), conv(c(256), c(256), 3, 2))
        self.path1 = nn.Sequential(conv(ch, c(256), 1), conv(c(256), c(256), 3, 2))
        self.path2 = nn.Sequential(conv(ch, c(256), 1), conv(c(256), c(384), 3, 2))
        self.path3 = nn.MaxPool2d(3, 2)
        self.out_channels = 2 * c(256) + c(384) + ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.path0(x), self.path1(x), self.path2(x), self.path3(x)], 1)


class PolyNet(StagePooledClassifier, nn.Module):
    """Stem → stage A (2-way) → reduction A → stage B (poly-3 / 2-way) → reduction B → stage C → pool → FC."""

    def __init__(self, spec: PolyNetSpec, features_only: bool = False) -> None:
        super().__init__()
        self.spec, self.features_only = spec, features_only
        k = _Ctx(spec.width, spec.bn_eps)
        scales = iter(spec.module_scales())
        self.stem = Stem(spec.in_chans, k)
        ch = self.stem.out_channels
        self.stage_a = nn.Sequential(*[MultiWay(next(scales), [BlockA(ch, k), BlockA(ch, k)])
                                       for _ in range(spec.repeats[0])])
        self.reduction_a = ReductionA(ch, k)
        ch = self.reduction_a.out_channels
        self.stage_b = nn.Sequential(*[
            PolyModule(ch, k, next(scales), (128, 160, 192, 192), 7, ("path0_1x7", "path0_7x1")) if i % 2 == 0
            else MultiWay(next(scales), [block_b(ch, k), block_b(ch, k)]) for i in range(spec.repeats[1])])
        self.reduction_b = ReductionB(ch, k)
        ch = self.reduction_b.out_channels
        self.stage_c = nn.Sequential(*[
            PolyModule(ch, k, next(scales), (192, 224, 256, 192), 3, ("path0_1x3", "path0_3x1")) if i % 2 == 0
            else MultiWay(next(scales), [block_c(ch, k), block_c(ch, k)]) for i in range(spec.repeats[2])])
        self.make_head(ch)
        kaiming_init(self)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stage_a(self.stem(x))
        maps = [x]
        x = self.stage_b(self.reduction_a(x))
        maps.append(x)
        maps.append(self.stage_c(self.reduction_b(x)))
        return maps


@build_model.register
def _(spec: PolyNetSpec, features_only: bool = False) -> nn.Module:
    return PolyNet(spec, features_only=features_only)


register_model("polynet", PolyNetSpec, "PolyNet (331 px)")


@register_key_map(PolyNet, "pretrainedmodels")
def _pretrainedmodels_keys(model: PolyNet) -> dict[str, str]:
    """``pretrainedmodels.polynet``: the same names (our conv-BN-ReLU keeps ``conv``/``bn``)."""
    return {k: k for k in model.state_dict()}
