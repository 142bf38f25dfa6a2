"""Layers the seed table's comparison architectures share: conv-BN(-ReLU) with any kernel and padding,
TF "SAME" pooling, separable convolutions and the factorised reduction of the NAS cells.

Attribute names follow the TF-slim scopes of the reference implementations (``conv``/``bn``,
``depthwise_conv2d``/``pointwise_conv2d``, ``path_1``/``path_2``/``final_path_bn``), which the PyTorch ports
keep as well, so weight key maps stay short.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compscale.models.blocks import same_padding


class ConvBnAct(nn.Module):
    """conv (no bias) → BatchNorm → ReLU (``act=False`` drops the ReLU). Kernel and padding may be pairs."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
        eps: float = 1e-3,
        act: bool = True,
        groups: int = 1,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def same_conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
              dilation: int = 1) -> nn.Conv2d:
    """A bias-free conv with TF "SAME" padding: static k//2 when stride 1, dynamic (right-heavy) when strided."""
    if stride == 1 and (dilation * (kernel - 1)) % 2 == 0:
        return nn.Conv2d(in_channels, out_channels, kernel, 1, dilation * (kernel - 1) // 2, dilation,
                         groups=groups, bias=False)
    from compscale.models.blocks import Conv2dSame

    return Conv2dSame(in_channels, out_channels, kernel, stride, 0, dilation, groups=groups, bias=False)


class SamePool(nn.Module):
    """TF "SAME" max/avg pooling as the PyTorch NASNet ports do it: at stride 1 a symmetric pad that the
    average excludes; when strided, the input is padded first (−∞ for max, zeros for avg, and those zeros
    *are* averaged in, as in timm's ``AvgPool2dSame``)."""

    def __init__(self, kind: str, kernel: int, stride: int, count_pad: bool = True) -> None:
        super().__init__()
        if kind not in ("max", "avg"):
            raise ValueError(f"unknown pooling {kind!r}")
        self.kind, self.kernel, self.stride = kind, kernel, stride
        # count_pad=False: TF's own semantics (the mean is over the real pixels only).
        self.count_pad = count_pad
        self.static = stride == 1 and kernel % 2 == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel, self.stride
        if self.static:
            if self.kind == "max":
                return F.max_pool2d(x, k, 1, k // 2)
            return F.avg_pool2d(x, k, 1, k // 2, count_include_pad=False)
        ph = same_padding(x.shape[-2], k, s)
        pw = same_padding(x.shape[-1], k, s)
        if self.kind == "max":
            return F.max_pool2d(F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=float("-inf")), k, s)
        pad = (pw[0], pw[1], ph[0], ph[1])
        out = F.avg_pool2d(F.pad(x, pad), k, s)
        if not self.count_pad and any(pad):
            ones = F.pad(torch.ones_like(x[:1, :1]), pad)
            out = out / F.avg_pool2d(ones, k, s)
        return out

    def extra_repr(self) -> str:
        return f"{self.kind}, kernel={self.kernel}, stride={self.stride}"


class SeparableConv(nn.Module):
    """Depthwise k×k (the stride lives here) → pointwise 1×1, no bias (TF ``separable_conv2d``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, same: bool = True,
                 padding: int | None = None, dilation: int = 1) -> None:
        super().__init__()
        if same:
            self.depthwise_conv2d = same_conv(in_channels, in_channels, kernel, stride, in_channels, dilation)
        else:
            pad = kernel // 2 if padding is None else padding
            self.depthwise_conv2d = nn.Conv2d(in_channels, in_channels, kernel, stride, pad, groups=in_channels,
                                              bias=False)
        self.pointwise_conv2d = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv2d(self.depthwise_conv2d(x))


class ActConvBn(nn.Module):
    """ReLU → conv (SAME) → BN: the "1×1" adapters at a NAS cell's inputs and its strided 1×1 ops."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1,
                 eps: float = 1e-3) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.conv = same_conv(in_channels, out_channels, kernel, stride)
        self.bn = nn.BatchNorm2d(out_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.act(x)))


class BranchSeparables(nn.Module):
    """The NAS "separable k×k ×2" op: (ReLU → separable → BN) twice, the stride in the first.

    ``mid`` is the channels between the two (the input's, except in NASNet's stem cells where it is the output's).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, mid: int | None = None,
                 eps: float = 1e-3, dilation: int = 1) -> None:
        super().__init__()
        mid = in_channels if mid is None else mid
        self.act_1 = nn.ReLU()
        self.separable_1 = SeparableConv(in_channels, mid, kernel, stride, dilation=dilation)
        self.bn_sep_1 = nn.BatchNorm2d(mid, eps=eps)
        self.act_2 = nn.ReLU()
        self.separable_2 = SeparableConv(mid, out_channels, kernel, 1, dilation=dilation)
        self.bn_sep_2 = nn.BatchNorm2d(out_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn_sep_1(self.separable_1(self.act_1(x)))
        return self.bn_sep_2(self.separable_2(self.act_2(x)))


class _ShiftedSubsample(nn.Module):
    """x[..., 1::2, 1::2] with a zero row/column appended when needed: TF's ``pad(0, 1)[1:, 1:]`` then stride 2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (-1, 1, -1, 1))[..., ::2, ::2]


class _Subsample(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., ::2, ::2]


class FactorizedReduction(nn.Module):
    """Halve the grid without losing half the pixels (NASNet): two 1×1 convs on the input subsampled at
    offsets (0, 0) and (1, 1), concatenated, then BN. ``relu`` applies a ReLU first."""

    def __init__(self, in_channels: int, out_channels: int, eps: float = 1e-3, relu: bool = True) -> None:
        super().__init__()
        self.act = nn.ReLU() if relu else nn.Identity()
        self.path_1 = nn.Sequential()
        self.path_1.add_module("avgpool", _Subsample())
        self.path_1.add_module("conv", nn.Conv2d(in_channels, out_channels // 2, 1, bias=False))
        self.path_2 = nn.Sequential()
        self.path_2.add_module("avgpool", _ShiftedSubsample())
        self.path_2.add_module("conv", nn.Conv2d(in_channels, out_channels - out_channels // 2, 1, bias=False))
        self.final_path_bn = nn.BatchNorm2d(out_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        return self.final_path_bn(torch.cat([self.path_1(x), self.path_2(x)], 1))


class ClassifierHead(nn.Module):
    """Global average pool → dropout → linear; ``features_only`` models have none."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(x.mean((2, 3))))


class StagePooledClassifier:
    """The head of the seed table's classic networks: last stage's map → global average pool → dropout →
    linear, plus the head API the rest of compscale uses (``forward_features``, ``forward_head``,
    ``get_classifier``). ``classifier_attr`` names the linear layer as the peer's weight layout does.

    The network provides ``spec``, ``features_only`` and ``forward_stages`` (the per-stage maps).
    """

    classifier_attr = "last_linear"

    def make_head(self, channels: int) -> None:
        self.num_features = channels
        if not self.features_only:
            self.dropout = nn.Dropout(self.spec.dropout)
            setattr(self, self.classifier_attr, nn.Linear(channels, self.spec.num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(x.mean((2, 3)))
        return x if pre_logits else self.get_classifier()(x)

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.classifier_attr)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_stages(x)
        return self.forward_head(self.forward_features(x))


def kaiming_init(module: nn.Module) -> None:
    """He-normal (fan-out) convs, unit BN, zero-bias linear: the init every one of these papers' ports uses."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def renamed_keys(model: nn.Module, rules: list[tuple[str, str]]) -> dict[str, str]:
    """A key map by prefix substitution: each of our keys takes the first rule whose prefix it starts with
    (``(ours, theirs)``); keys matching no rule keep their name (both layouts use the reference's scopes)."""
    names: dict[str, str] = {}
    for key in model.state_dict():
        for ours, theirs in rules:
            if key.startswith(ours):
                names[key] = theirs + key[len(ours):]
                break
        else:
            names[key] = key
    return names
