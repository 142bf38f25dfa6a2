"""Building blocks shared by the families: conv+BN+activation, TF "SAME" padding, squeeze-and-excitation,
stochastic depth and the MBConv block."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"swish": nn.SiLU, "relu6": nn.ReLU6, "relu": nn.ReLU}


def activation(name: str) -> nn.Module:
    """The activation ``name`` (swish, relu6, relu). ReLU and ReLU6 run in place (their backward needs only the
    output); SiLU does not: its backward needs the input, so autograd clones the input of an in-place SiLU
    before overwriting it, an extra full-size copy per activation (4-5 % of a training step of the demo's
    networks on CPU, measured with torch.profiler) that an out-of-place SiLU does not pay."""
    cls = ACTIVATIONS[name]
    return cls(inplace=cls is not nn.SiLU)


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF "SAME" padding of one side: total = max((⌈x/s⌉−1)·s + (k−1)·dil + 1 − x, 0), extra on the right."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def reached_taps(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> tuple[slice, tuple[int, int]]:
    """The kernel taps (along one dimension) that ever read the input rather than its zero padding, and the
    padding ``(before, after)`` that the convolution restricted to those taps needs for the same output.

    A k×k kernel on an input smaller than its reach, as in the last stages of a small network (a 5×5 depthwise
    kernel on 2×2 maps, a 3×3 one on 1×1 maps), spends most of its multiply-adds on padding, and oneDNN's
    kernels for these shapes are slow: the convolution with the other taps dropped is the same function (the
    dropped taps only ever multiply zeros, so they get zero gradient either way) and 1.5-3.7x faster to train
    per layer on CPU (2 threads; a whole training step of B0 at a quarter of its depth and width on 32 px:
    1.1x). Multiply-adds are still counted for the whole kernel, as the papers do.
    """
    out = (size + pad[0] + pad[1] - kernel) // stride + 1
    first = max(0, pad[0] - (out - 1) * stride)
    last = min(kernel - 1, size - 1 + pad[0])
    if (first, last) == (0, kernel - 1) or first > last or max(pad) >= kernel:  # nothing to skip
        return slice(0, kernel), pad
    before, taps = pad[0] - first, last - first + 1
    after = max(0, (out - 1) * stride - pad[0] + last - (size - 1))
    if before >= after and (size + 2 * before - taps) // stride + 1 == out:
        after = before  # symmetric (extra zeros past the last output are never read): no explicit pad needed
    return slice(first, last + 1), (before, after)


class CroppedConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, same state dict) that in training skips the kernel taps which on this
    input only ever read padding (:func:`reached_taps`): exactly the same function, cheaper on small maps."""

    def _crops(self, x: torch.Tensor) -> bool:
        """Only training crops (where the time goes). The profiler's meta-device pass counts the whole kernel,
        the papers' way; evaluation, tracing and export keep it too: exporters need static kernel shapes."""
        return self.training and self.dilation == (1, 1) and not x.is_meta and not torch.jit.is_tracing()

    def _padding(self, x: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
        return (self.padding[0], self.padding[0]), (self.padding[1], self.padding[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._crops(x) or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super().forward(x)
        pads = self._padding(x)
        (rows, ph), (cols, pw) = (reached_taps(x.shape[d - 2], self.kernel_size[d], self.stride[d], pads[d])
                                  for d in (0, 1))
        weight = self.weight
        if rows.stop - rows.start < self.kernel_size[0] or cols.stop - cols.start < self.kernel_size[1]:
            weight = weight[:, :, rows, cols]
        if ph[0] == ph[1] and pw[0] == pw[1]:
            return F.conv2d(x, weight, self.bias, self.stride, (ph[0], pw[0]), 1, self.groups)
        return F.conv2d(F.pad(x, (pw[0], pw[1], ph[0], ph[1])), weight, self.bias, self.stride, 0, 1, self.groups)


class Conv2dSame(CroppedConv2d):
    """A convolution with TF "SAME" padding, which for stride 2 depends on the input size (asymmetric)."""

    def _padding(self, x: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
        return (same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0]),
                same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._crops(x):
            return super().forward(x)
        ph, pw = self._padding(x)
        if any(ph) or any(pw):
            x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def make_conv(
    in_channels: int,
    out_channels: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    bias: bool = False,
    padding: str = "symmetric",
) -> nn.Conv2d:
    """A k×k convolution; SAME padding equals symmetric k//2 at stride 1, so only strided convs pay for it."""
    if padding == "same" and stride > 1:
        return Conv2dSame(in_channels, out_channels, kernel, stride, padding=0, groups=groups, bias=bias)
    if kernel == 1:
        return nn.Conv2d(in_channels, out_channels, kernel, stride, padding=0, groups=groups, bias=bias)
    return CroppedConv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, groups=groups, bias=bias)


class ConvNormAct(nn.Module):
    """conv → BatchNorm → activation (``act=None`` for the linear projection of MBConv)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "swish",
        padding: str = "symmetric",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.conv = make_conv(in_channels, out_channels, kernel, stride, groups, padding=padding)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.act = activation(act) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al.): x · σ(W₂ δ(W₁ GAP(x))), with 1×1 convs for W₁ (reduce), W₂ (expand)."""

    def __init__(self, channels: int, squeeze_channels: int, act: str = "swish") -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1, bias=True)
        self.act = activation(act)
        self.expand = nn.Conv2d(squeeze_channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.expand(self.act(self.reduce(scale)))
        return x * scale.sigmoid()


class DropPath(nn.Module):
    """Stochastic depth (Huang et al.): drop the residual branch per sample with probability p at train
    time and divide the survivors by 1 − p, as the official TF code does."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"


class MBConv(nn.Module):
    """Mobile inverted bottleneck (MobileNetV2) with optional squeeze-excitation, as used by EfficientNet:
    1×1 expand (when the ratio > 1) → k×k depthwise → SE → 1×1 linear projection, plus the identity skip
    when the stride is 1 and the channels do not change."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        expand_ratio: int,
        se_ratio: float = 0.25,
        act: str = "swish",
        padding: str = "symmetric",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        norm = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        mid = in_channels * expand_ratio
        self.expand = ConvNormAct(in_channels, mid, 1, act=act, **norm) if expand_ratio != 1 else None
        self.depthwise = ConvNormAct(mid, mid, kernel, stride, groups=mid, act=act, padding=padding, **norm)
        # The squeeze width follows the block *input* channels (official code), not the expanded ones.
        self.se = SqueezeExcitation(mid, max(1, int(in_channels * se_ratio)), act) if se_ratio > 0 else None
        self.project = ConvNormAct(mid, out_channels, 1, act=None, **norm)
        self.has_skip = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path) if self.has_skip and drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.depthwise(out)
        if self.se is not None:
            out = self.se(out)
        out = self.project(out)
        if self.has_skip:
            out = self.drop_path(out) + x
        return out


class PooledClassifier:
    """The head API shared by networks that end in global average pooling → dropout → linear classifier.

    The network provides ``pool``, ``dropout``, ``classifier``, ``num_features``, ``features_only``,
    ``forward_features`` (the last maps before pooling) and ``forward_stages`` (per-stage maps).
    """

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(self.pool(x).flatten(1))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_stages(x)
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier for ``num_classes`` (transfer learning); 0 makes the model a feature extractor."""
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            self.init_classifier(self.classifier)

    def init_classifier(self, linear: nn.Linear) -> None:
        """How a new classifier is initialised (PyTorch's default unless a family says otherwise)."""


class StemStagesHead(PooledClassifier):
    """stem → stages of blocks → (conv1×1 head) → :class:`PooledClassifier`: the trunk EfficientNet and
    MobileNet share. A family builds its stem and says how to make each block (:meth:`build_stages`); this
    builds the stages with timm's ``feature_info``, the head and the classifier, and runs them."""

    def build_stages(self, stages, in_ch: int, reduction: int, make_block) -> int:
        """``self.stages`` from the spec's stage rows: ``make_block(stage, in_ch, stride, block_index)`` makes
        each block (the first of a stage has its stride); returns the last stage's channels."""
        built, block_idx = [], 0
        self.feature_info: list[dict[str, int | str]] = []
        for i, stage in enumerate(stages):
            blocks = []
            for b in range(stage.repeats):
                blocks.append(make_block(stage, in_ch, stage.stride if b == 0 else 1, block_idx))
                in_ch, block_idx = stage.out_channels, block_idx + 1
            reduction *= stage.stride
            built.append(nn.Sequential(*blocks))
            self.feature_info.append({"module": f"stages.{i}", "num_chs": in_ch, "reduction": reduction})
        self.stages = nn.ModuleList(built)
        return in_ch

    def build_top(self, in_ch: int, head_channels: int, num_features: int, num_classes: int, dropout: float,
                  features_only: bool, **conv: object) -> None:
        """The conv1×1 head (none when ``head_channels`` is 0), pool, dropout and classifier (none with
        ``features_only``); then the TF initialisation of everything."""
        self.features_only = features_only
        self.num_features = num_features
        if not features_only:
            self.head = ConvNormAct(in_ch, head_channels, 1, **conv) if head_channels else None
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Linear(num_features, num_classes)
        init_weights_tf(self)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's output feature map (B0: strides 2, 4, 8, 16, 16, 32, 32)."""
        x = self.stem(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def init_classifier(self, linear: nn.Linear) -> None:
        init_weights_tf(linear)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map before pooling (the head's, or the last stage's without a head conv): the maps a
        class activation map is made of."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x if self.head is None else self.head(x)


#: A BatchNorm's tensors, as every weight layout names them.
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def conv_bn_keys(names: dict[str, str], ours: str, conv: str, bn: str) -> None:
    """Add to a key map our ``ours.conv``/``ours.bn`` tensors under a peer's ``conv`` and ``bn`` names."""
    names[f"{ours}.conv.weight"] = f"{conv}.weight"
    for k in BN_KEYS:
        names[f"{ours}.bn.{k}"] = f"{bn}.{k}"


def init_weights_tf(module: nn.Module) -> None:
    """The official TF initialisation: conv ~ N(0, √(2/fan_out)), dense ~ U(±1/√out), BN γ=1, β=0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)
