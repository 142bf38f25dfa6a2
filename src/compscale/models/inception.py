"""Inception-v3 (Szegedy et al., 2016) and Inception-v4 (Szegedy et al., 2017), the seed table's rows at 299 px.

Module and branch names follow the TF-slim reference (``Conv2d_1a_3x3``, ``Mixed_5b``, ``branch3x3dbl_2``…),
which torchvision and timm keep. Every conv is conv → BN (eps 1e-3) → ReLU with VALID padding unless given.
A width multiplier w scales every branch (w = 1 is the released network) and the spec's ``repeats`` set
how many modules each grid size has.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compscale.models.classic_layers import ClassifierHead, ConvBnAct, renamed_keys
from compscale.models.registry import build_model, register_model
from compscale.models.weights import register_key_map
from compscale.specs._classic import scale_channels
from compscale.specs.inception import InceptionV3Spec, InceptionV4Spec


def _init(model: nn.Module) -> None:
    # Truncated normal (σ = 0.1) convs, as the TF-slim Inception reference and timm/torchvision do.
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.1)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _Branches(nn.Module):
    """Shared helper: a conv factory that applies the width multiplier and the BN epsilon."""

    def __init__(self, width: float, eps: float) -> None:
        super().__init__()
        self._w, self._eps = width, eps

    def c(self, channels: int) -> int:
        return scale_channels(channels, self._w)

    def conv(self, cin: int, cout: int, kernel, stride: int = 1, padding=0) -> ConvBnAct:
        return ConvBnAct(cin, cout, kernel, stride, padding, eps=self._eps)


# --- Inception-v3 ------------------------------------------------------------------------------------------


class InceptionA(_Branches):
    """35×35: 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg-pool→1×1 (``pool_features``)."""

    def __init__(self, cin: int, pool_features: int, width: float, eps: float) -> None:
        super().__init__(width, eps)
        c = self.c
        self.branch1x1 = self.conv(cin, c(64), 1)
        self.branch5x5_1 = self.conv(cin, c(48), 1)
        self.branch5x5_2 = self.conv(c(48), c(64), 5, padding=2)
        self.branch3x3dbl_1 = self.conv(cin, c(64), 1)
        self.branch3x3dbl_2 = self.conv(c(64), c(96), 3, padding=1)
        self.branch3x3dbl_3 = self.conv(c(96), c(96), 3, padding=1)
        self.branch_pool = self.conv(cin, pool_features, 1)
        self.out_channels = c(64) + c(64) + c(96) + pool_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, 3, 1, 1))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(_Branches):
    """35→17 reduction: 3×3/2 | 1×1→3×3→3×3/2 | max-pool/2."""

    def __init__(self, cin: int, width: float, eps: float) -> None:
        super().__init__(width, eps)
        c = self.c
        self.branch3x3 = self.conv(cin, c(384), 3, 2)
        self.branch3x3dbl_1 = self.conv(cin, c(64), 1)
        self.branch3x3dbl_2 = self.conv(c(64), c(96), 3, padding=1)
        self.branch3x3dbl_3 = self.conv(c(96), c(96), 3, 2)
        self.out_channels = c(384) + c(96) + cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, 3, 2)], 1)


class InceptionC(_Branches):
    """17×17 with the 7×7 factorised into 1×7 and 7×1 (``c7`` inner channels)."""

    def __init__(self, cin: int, c7: int, width: float, eps: float) -> None:
        super().__init__(width, eps)
        c = self.c
        self.branch1x1 = self.conv(cin, c(192), 1)
        self.branch7x7_1 = self.conv(cin, c7, 1)
        self.branch7x7_2 = self.conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = self.conv(c7, c(192), (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = self.conv(cin, c7, 1)
        self.branch7x7dbl_2 = self.conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = self.conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = self.conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = self.conv(c7, c(192), (1, 7), padding=(0, 3))
        self.branch_pool = self.conv(cin, c(192), 1)
        self.out_channels = 4 * c(192)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            bd = conv(bd)
        bp = self.branch_pool(F.avg_pool2d(x, 3, 1, 1))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(_Branches):
    """17→8 reduction: 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | max-pool/2."""

    def __init__(self, cin: int, width: float, eps: float) -> None:
        super().__init__(width, eps)
        c = self.c
        self.branch3x3_1 = self.conv(cin, c(192), 1)
        self.branch3x3_2 = self.conv(c(192), c(320), 3, 2)
        self.branch7x7x3_1 = self.conv(cin, c(192), 1)
        self.branch7x7x3_2 = self.conv(c(192), c(192), (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = self.conv(c(192), c(192), (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = self.conv(c(192), c(192), 3, 2)
        self.out_channels = c(320) + c(192) + cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, 2)], 1)


class InceptionE(_Branches):
    """8×8 with the 3×3 expanded into parallel 1×3 and 3×1 outputs (the coarsest grid)."""

    def __init__(self, cin: int, width: float, eps: float) -> None:
        super().__init__(width, eps)
        c = self.c
        self.branch1x1 = self.conv(cin, c(320), 1)
        self.branch3x3_1 = self.conv(cin, c(384), 1)
        self.branch3x3_2a = self.conv(c(384), c(384), (1, 3), padding=(0, 1))
        self.branch3x3_2b = self.conv(c(384), c(384), (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = self.conv(cin, c(448), 1)
        self.branch3x3dbl_2 = self.conv(c(448), c(384), 3, padding=1)
        self.branch3x3dbl_3a = self.conv(c(384), c(384), (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = self.conv(c(384), c(384), (3, 1), padding=(1, 0))
        self.branch_pool = self.conv(cin, c(192), 1)
        self.out_channels = c(320) + 4 * c(384) + c(192)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        bp = self.branch_pool(F.avg_pool2d(x, 3, 1, 1))
        return torch.cat([b1, b3, bd, bp], 1)


class InceptionV3(nn.Module):
    """Stem (five convs, two max-pools) → A×n₁ → B → C×n₂ → D → E×n₃ → pool → dropout → FC."""

    def __init__(self, spec: InceptionV3Spec, features_only: bool = False) -> None:
        super().__init__()
        self.spec, self.features_only = spec, features_only
        w, eps = spec.width, spec.bn_eps
        c = lambda ch: scale_channels(ch, w)  # noqa: E731
        conv = lambda *a, **k: ConvBnAct(*a, eps=eps, **k)  # noqa: E731
        self.Conv2d_1a_3x3 = conv(spec.in_chans, c(32), 3, 2)
        self.Conv2d_2a_3x3 = conv(c(32), c(32), 3)
        self.Conv2d_2b_3x3 = conv(c(32), c(64), 3, padding=1)
        self.Conv2d_3b_1x1 = conv(c(64), c(80), 1)
        self.Conv2d_4a_3x3 = conv(c(80), c(192), 3)
        n_a, n_c, n_e = spec.repeats
        ch, mixed_5 = c(192), []
        for i in range(n_a):
            mixed_5.append(InceptionA(ch, c(32) if i == 0 else c(64), w, eps))
            ch = mixed_5[-1].out_channels
        self.mixed_5 = nn.ModuleList(mixed_5)
        self.Mixed_6a = InceptionB(ch, w, eps)
        ch = self.Mixed_6a.out_channels
        # The 7×7 inner width grows 128 → 160 … → 192 along the 17×17 grid, as in the released network.
        c7s = [128] + [160] * (n_c - 2) + [192] if n_c > 1 else [128]
        mixed_6 = []
        for c7 in c7s:  # each module takes the previous one's width (equal to Mixed_6a's only at width 1)
            mixed_6.append(InceptionC(ch, c(c7), w, eps))
            ch = mixed_6[-1].out_channels
        self.mixed_6 = nn.ModuleList(mixed_6)
        self.Mixed_7a = InceptionD(ch, w, eps)
        ch = self.Mixed_7a.out_channels
        mixed_7 = []
        for _ in range(n_e):
            mixed_7.append(InceptionE(ch, w, eps))
            ch = mixed_7[-1].out_channels
        self.mixed_7 = nn.ModuleList(mixed_7)
        self.num_features = ch
        if not features_only:
            self.head = ClassifierHead(ch, spec.num_classes, spec.dropout)
        _init(self)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        maps = [x]
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, 2)))
        maps.append(x)
        x = F.max_pool2d(x, 3, 2)
        for m in self.mixed_5:
            x = m(x)
        maps.append(x)
        x = self.Mixed_6a(x)
        for m in self.mixed_6:
            x = m(x)
        maps.append(x)
        x = self.Mixed_7a(x)
        for m in self.mixed_7:
            x = m(x)
        maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        maps = self.forward_stages(x)
        return maps if self.features_only else self.head(maps[-1])


# --- Inception-v4 ------------------------------------------------------------------------------------------


def _seq(*layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(*layers)


class _V4Block(_Branches):
    """Parallel branches (``branch0`` …) concatenated; a branch is a conv or a sequence of convs/pools."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, f"branch{i}")(x) for i in range(self._n)], 1)


class Mixed3a(nn.Module):
    def __init__(self, cin: int, cout: int, eps: float) -> None:
        super().__init__()
        self.maxpool = nn.MaxPool2d(3, 2)
        self.conv = ConvBnAct(cin, cout, 3, 2, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.maxpool(x), self.conv(x)], 1)


class Mixed4a(_V4Block):
    _n = 2

    def __init__(self, cin: int, width: float, eps: float) -> None:
        super().__init__(width, eps)
        c, conv = self.c, self.conv
        self.branch0 = _seq(conv(cin, c(64), 1), conv(c(64), c(96), 3))
        self.branch1 = _seq(conv(cin, c(64), 1), conv(c(64), c(64), (1, 7), padding=(0, 3)),
                            conv(c(64), c(64), (7, 1), padding=(3, 0)), conv(c(64), c(96), 3))
        self.out_channels = 2 * c(96)


class Mixed5a(nn.Module):
    def __init__(self, cin: int, eps: float) -> None:
        super().__init__()
        self.conv = ConvBnAct(cin, cin, 3, 2, eps=eps)
        self.maxpool = nn.MaxPool2d(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.maxpool(x)], 1)


def _avg() -> nn.AvgPool2d:
    return nn.AvgPool2d(3, 1, 1, count_include_pad=False)


class InceptionV4A(_V4Block):
    _n = 4

    def __init__(self, cin: int, width: float, eps: float) -> None:
        super().__init__(width, eps)
        c, conv = self.c, self.conv
        self.branch0 = conv(cin, c(96), 1)
        self.branch1 = _seq(conv(cin, c(64), 1), conv(c(64), c(96), 3, padding=1))
        self.branch2 = _seq(conv(cin, c(64), 1), conv(c(64), c(96), 3, padding=1), conv(c(96), c(96), 3, padding=1))
        self.branch3 = _seq(_avg(), conv(cin, c(96), 1))
        self.out_channels = 4 * c(96)


class ReductionV4A(_V4Block):
    _n = 3

    def __init__(self, cin: int, width: float, eps: float) -> None:
        super().__init__(width, eps)
        c, conv = self.c, self.conv
        self.branch0 = conv(cin, c(384), 3, 2)
        self.branch1 = _seq(conv(cin, c(192), 1), conv(c(192), c(224), 3, padding=1), conv(c(224), c(256), 3, 2))
        self.branch2 = nn.MaxPool2d(3, 2)
        self.out_channels = c(384) + c(256) + cin


class InceptionV4B(_V4Block):
    _n = 4

    def __init__(self, cin: int, width: float, eps: float) -> None:
        super().__init__(width, eps)
        c, conv = self.c, self.conv
        self.branch0 = conv(cin, c(384), 1)
        self.branch1 = _seq(conv(cin, c(192), 1), conv(c(192), c(224), (1, 7), padding=(0, 3)),
                            conv(c(224), c(256), (7, 1), padding=(3, 0)))
        self.branch2 = _seq(conv(cin, c(192), 1), conv(c(192), c(192), (7, 1), padding=(3, 0)),
                            conv(c(192), c(224), (1, 7), padding=(0, 3)), conv(c(224), c(224), (7, 1), padding=(3, 0)),
                            conv(c(224), c(256), (1, 7), padding=(0, 3)))
        self.branch3 = _seq(_avg(), conv(cin, c(128), 1))
        self.out_channels = c(384) + 2 * c(256) + c(128)


class ReductionV4B(_V4Block):
    _n = 3

    def __init__(self, cin: int, width: float, eps: float) -> None:
        super().__init__(width, eps)
        c, conv = self.c, self.conv
        self.branch0 = _seq(conv(cin, c(192), 1), conv(c(192), c(192), 3, 2))
        self.branch1 = _seq(conv(cin, c(256), 1), conv(c(256), c(256), (1, 7), padding=(0, 3)),
                            conv(c(256), c(320), (7, 1), padding=(3, 0)), conv(c(320), c(320), 3, 2))
        self.branch2 = nn.MaxPool2d(3, 2)
        self.out_channels = c(192) + c(320) + cin


class InceptionV4C(_Branches):
    def __init__(self, cin: int, width: float, eps: float) -> None:
        super().__init__(width, eps)
        c, conv = self.c, self.conv
        self.branch0 = conv(cin, c(256), 1)
        self.branch1_0 = conv(cin, c(384), 1)
        self.branch1_1a = conv(c(384), c(256), (1, 3), padding=(0, 1))
        self.branch1_1b = conv(c(384), c(256), (3, 1), padding=(1, 0))
        self.branch2_0 = conv(cin, c(384), 1)
        self.branch2_1 = conv(c(384), c(448), (3, 1), padding=(1, 0))
        self.branch2_2 = conv(c(448), c(512), (1, 3), padding=(0, 1))
        self.branch2_3a = conv(c(512), c(256), (1, 3), padding=(0, 1))
        self.branch2_3b = conv(c(512), c(256), (3, 1), padding=(1, 0))
        self.branch3 = _seq(_avg(), conv(cin, c(256), 1))
        self.out_channels = 6 * c(256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1_0(x)
        b2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        return torch.cat([self.branch0(x), self.branch1_1a(b1), self.branch1_1b(b1),
                          self.branch2_3a(b2), self.branch2_3b(b2), self.branch3(x)], 1)


class InceptionV4(nn.Module):
    """Stem (convs, Mixed 3a/4a/5a) → A×n₁ → reduction A → B×n₂ → reduction B → C×n₃ → pool → FC."""

    def __init__(self, spec: InceptionV4Spec, features_only: bool = False) -> None:
        super().__init__()
        self.spec, self.features_only = spec, features_only
        w, eps = spec.width, spec.bn_eps
        c = lambda ch: scale_channels(ch, w)  # noqa: E731
        layers: list[nn.Module] = [
            ConvBnAct(spec.in_chans, c(32), 3, 2, eps=eps),
            ConvBnAct(c(32), c(32), 3, eps=eps),
            ConvBnAct(c(32), c(64), 3, padding=1, eps=eps),
            Mixed3a(c(64), c(96), eps),
        ]
        layers.append(Mixed4a(c(64) + c(96), w, eps))
        layers.append(Mixed5a(layers[-1].out_channels, eps))
        ch = 2 * layers[-2].out_channels
        self.stage_ends = [2, 3]
        for block, reduction, n in ((InceptionV4A, ReductionV4A, spec.repeats[0]),
                                    (InceptionV4B, ReductionV4B, spec.repeats[1]),
                                    (InceptionV4C, None, spec.repeats[2])):
            for _ in range(n):
                layers.append(block(ch, w, eps))
                ch = layers[-1].out_channels
            self.stage_ends.append(len(layers) - 1)
            if reduction is not None:
                layers.append(reduction(ch, w, eps))
                ch = layers[-1].out_channels
        self.features = nn.Sequential(*layers)
        self.num_features = ch
        if not features_only:
            self.head = ClassifierHead(ch, spec.num_classes, spec.dropout)
        _init(self)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.stage_ends:
                maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_stages(x)
        return self.head(self.features(x))


@build_model.register
def _(spec: InceptionV3Spec, features_only: bool = False) -> nn.Module:
    return InceptionV3(spec, features_only=features_only)


@build_model.register
def _(spec: InceptionV4Spec, features_only: bool = False) -> nn.Module:
    return InceptionV4(spec, features_only=features_only)


register_model("inception_v3", InceptionV3Spec, "Inception-v3 (299 px)")
register_model("inception_v4", InceptionV4Spec, "Inception-v4 (299 px)")


@register_key_map(InceptionV3, "timm")
def _timm_v3_keys(model: InceptionV3) -> dict[str, str]:
    """timm / torchvision: ``Mixed_5b`` … named by grid and letter; the classifier is ``fc``."""
    rules = [("head.fc.", "fc.")]
    for grid, mods, first in (("5", model.mixed_5, "b"), ("6", model.mixed_6, "b"), ("7", model.mixed_7, "b")):
        rules += [(f"mixed_{grid}.{i}.", f"Mixed_{grid}{chr(ord(first) + i)}.") for i in range(len(mods))]
    return renamed_keys(model, rules)


@register_key_map(InceptionV4, "timm")
def _timm_v4_keys(model: InceptionV4) -> dict[str, str]:
    """timm: the same ``features.N`` sequence; the classifier is ``last_linear``."""
    return renamed_keys(model, [("head.fc.", "last_linear.")])
