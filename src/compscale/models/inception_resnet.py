"""Inception-ResNet-v2 (Szegedy et al., 2016), exactly the TF-slim network that Keras and timm reproduce.

Every module is a public class usable on its own: the stem, ``Mixed5b``, the residual blocks
:class:`InceptionResNetA` (TF-slim's Block35), :class:`InceptionResNetB` (Block17) and
:class:`InceptionResNetC` (Block8), and the reductions :class:`ReductionA` (Mixed_6a) and :class:`ReductionB`
(Mixed_7a). A residual block computes ``act(x + scale · W·concat(branches(x)))``: the paper's residual
scaling (0.17, 0.10, 0.20) keeps the very deep sum stable; the last block C has scale 1 and no ReLU.

Widths come from :class:`~compscale.specs.InceptionResNetV2Spec` (so width scaling reaches every branch);
kernels, strides and paddings are fixed here. Stride-2 and stem convolutions are "valid" (no padding), the
others "same", which is why the input must be at least 75 pixels.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from compscale.errors import UserError
from compscale.models.blocks import PooledClassifier
from compscale.models.classic_layers import ConvBnAct
from compscale.models.registry import build_model, register_model
from compscale.models.weights import register_key_map
from compscale.specs.inception_resnet import InceptionResNetV2Spec

#: A convolution in a branch: (kernel, stride, padding); "avg" is a 3×3/1 average pool (no padded zeros
#: counted), "max" a 3×3/2 max-pool branch that passes the trunk through.
Kernel = tuple[int | tuple[int, int], int, int | tuple[int, int]]
_1x1: Kernel = (1, 1, 0)
_3x3: Kernel = (3, 1, 1)
_3x3_S2: Kernel = (3, 2, 0)


class BasicConv(ConvBnAct):
    """conv (no bias) → BatchNorm (eps 1e-3, TF-slim) → ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0, bn_eps: float = 1e-3, bn_momentum: float = 0.1) -> None:
        super().__init__(in_channels, out_channels, kernel, stride, padding, eps=bn_eps, momentum=bn_momentum)


class InceptionModule(nn.Module):
    """Parallel branches concatenated along the channels. Subclasses fix ``KERNELS`` (one list per conv
    branch) and ``MAX_POOL`` (an extra 3×3/2 max-pool branch passing the input through, in reductions)."""

    KERNELS: tuple[tuple[Kernel | str, ...], ...] = ()
    MAX_POOL: bool = False

    def __init__(self, in_channels: int, widths: Sequence[Sequence[int]], bn_eps: float = 1e-3,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        norm = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        convs_per_branch = tuple(sum(1 for k in ks if k != "avg") for ks in self.KERNELS)
        if tuple(len(w) for w in widths) != convs_per_branch:
            raise UserError(f"{type(self).__name__} needs branches of {convs_per_branch} widths, got {widths!r}")
        branches = []
        for kernels, branch_widths in zip(self.KERNELS, widths):
            layers: list[nn.Module] = []
            ch, it = in_channels, iter(branch_widths)
            for k in kernels:
                if k == "avg":
                    layers.append(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False))
                    continue
                out = next(it)
                kernel, stride, padding = k
                layers.append(BasicConv(ch, out, kernel, stride, padding, **norm))
                ch = out
            branches.append(nn.Sequential(*layers))
        if self.MAX_POOL:
            branches.append(nn.Sequential(nn.MaxPool2d(3, stride=2)))
        self.branches = nn.ModuleList(branches)
        self.out_channels = sum(w[-1] for w in widths) + (in_channels if self.MAX_POOL else 0)

    def concat(self, x: torch.Tensor) -> torch.Tensor:
        """Every branch on ``x``, concatenated along the channels."""
        outs = []
        for branch in self.branches:
            outs.append(branch(x))
        return torch.cat(outs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.concat(x)


class Mixed5b(InceptionModule):
    """The last stem module (TF-slim Mixed_5b): 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avgpool→1×1; 192 → 320."""

    KERNELS = ((_1x1,), (_1x1, (5, 1, 2)), (_1x1, _3x3, _3x3), ("avg", _1x1))

    def __init__(self, in_channels: int = 192, widths: Sequence[Sequence[int]] = ((96,), (48, 64), (64, 96, 96), (64,)),
                 **norm: float) -> None:
        super().__init__(in_channels, widths, **norm)


class ReductionA(InceptionModule):
    """Reduction-A (Mixed_6a), 35×35 → 17×17: 3×3/2 | 1×1→3×3→3×3/2 | maxpool/2; 320 → 1088."""

    KERNELS = ((_3x3_S2,), (_1x1, _3x3, _3x3_S2))
    MAX_POOL = True

    def __init__(self, in_channels: int = 320, widths: Sequence[Sequence[int]] = ((384,), (256, 256, 384)),
                 **norm: float) -> None:
        super().__init__(in_channels, widths, **norm)


class ReductionB(InceptionModule):
    """Reduction-B (Mixed_7a), 17×17 → 8×8: 1×1→3×3/2 | 1×1→3×3/2 | 1×1→3×3→3×3/2 | maxpool/2; 1088 → 2080."""

    KERNELS = ((_1x1, _3x3_S2), (_1x1, _3x3_S2), (_1x1, _3x3, _3x3_S2))
    MAX_POOL = True

    def __init__(self, in_channels: int = 1088,
                 widths: Sequence[Sequence[int]] = ((256, 384), (256, 288), (256, 288, 320)), **norm: float) -> None:
        super().__init__(in_channels, widths, **norm)


class InceptionResNetBlock(InceptionModule):
    """y = act(x + scale · W·concat(branches(x))): W a 1×1 with bias projecting back to the trunk width;
    ``activate=False`` leaves out the ReLU (the network's last block C)."""

    def __init__(self, channels: int, widths: Sequence[Sequence[int]], scale: float = 1.0, activate: bool = True,
                 **norm: float) -> None:
        super().__init__(channels, widths, **norm)
        self.scale = float(scale)
        self.project = nn.Conv2d(self.out_channels, channels, 1, bias=True)
        self.out_channels = channels
        self.act = nn.ReLU(inplace=True) if activate else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.project(self.concat(x)) * self.scale + x)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


class InceptionResNetA(InceptionResNetBlock):
    """Block A (Block35, 35×35): 1×1 | 1×1→3×3 | 1×1→3×3→3×3, 32/32/64 wide on a 320-channel trunk."""

    KERNELS = ((_1x1,), (_1x1, _3x3), (_1x1, _3x3, _3x3))

    def __init__(self, channels: int = 320, widths: Sequence[Sequence[int]] = ((32,), (32, 32), (32, 48, 64)),
                 scale: float = 0.17, activate: bool = True, **norm: float) -> None:
        super().__init__(channels, widths, scale, activate, **norm)


class InceptionResNetB(InceptionResNetBlock):
    """Block B (Block17, 17×17): 1×1 | 1×1→1×7→7×1, 192/192 wide on a 1088-channel trunk."""

    KERNELS = ((_1x1,), (_1x1, ((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0))))

    def __init__(self, channels: int = 1088, widths: Sequence[Sequence[int]] = ((192,), (128, 160, 192)),
                 scale: float = 0.10, activate: bool = True, **norm: float) -> None:
        super().__init__(channels, widths, scale, activate, **norm)


class InceptionResNetC(InceptionResNetBlock):
    """Block C (Block8, 8×8): 1×1 | 1×1→1×3→3×1, 192/256 wide on a 2080-channel trunk."""

    KERNELS = ((_1x1,), (_1x1, ((1, 3), 1, (0, 1)), ((3, 1), 1, (1, 0))))

    def __init__(self, channels: int = 2080, widths: Sequence[Sequence[int]] = ((192,), (192, 224, 256)),
                 scale: float = 0.20, activate: bool = True, **norm: float) -> None:
        super().__init__(channels, widths, scale, activate, **norm)


#: TF-slim's names for the same modules.
Block35, Block17, Block8 = InceptionResNetA, InceptionResNetB, InceptionResNetC
Mixed6a, Mixed7a = ReductionA, ReductionB


class InceptionResNetStem(nn.Module):
    """conv3×3/2 → conv3×3 → conv3×3 (padded) → maxpool/2 → 1×1 → conv3×3 → maxpool/2 (299 → 35×35).

    ``cifar=True``: the same convolutions, all padded, only conv1a strided, no max-pools (32 → 16×16).
    """

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (32, 32, 64, 80, 192), cifar: bool = False,
                 **norm: float) -> None:
        super().__init__()
        c1a, c2a, c2b, c3b, c4a = widths
        pad = 1 if cifar else 0
        self.conv1a = BasicConv(in_channels, c1a, 3, 2, pad, **norm)
        self.conv2a = BasicConv(c1a, c2a, 3, padding=pad, **norm)
        self.conv2b = BasicConv(c2a, c2b, 3, padding=1, **norm)
        self.pool3a: nn.Module = nn.Identity() if cifar else nn.MaxPool2d(3, stride=2)
        self.conv3b = BasicConv(c2b, c3b, 1, **norm)
        self.conv4a = BasicConv(c3b, c4a, 3, padding=pad, **norm)
        self.pool5a: nn.Module = nn.Identity() if cifar else nn.MaxPool2d(3, stride=2)
        self.out_channels = c4a

    def forward_taps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(after conv2b: stride 2, after conv4a: stride 4, the output: stride 8)."""
        a = self.conv2b(self.conv2a(self.conv1a(x)))
        b = self.conv4a(self.conv3b(self.pool3a(a)))
        return a, b, self.pool5a(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_taps(x)[2]


class InceptionResNetV2(PooledClassifier, nn.Module):
    """stem → Mixed_5b → A×10 → Reduction-A → B×20 → Reduction-B → C×9 → C (scale 1, no ReLU) → 1×1 → 1536
    → global average pool → dropout → FC.

    ``features_only=True`` drops the head; the forward then returns five maps (strides 2, 4, 8, 16, 32:
    after conv2b, conv4a, blocks A, blocks B, blocks C), the taps timm uses except the last is before the
    head conv.
    """

    def __init__(self, spec: InceptionResNetV2Spec, features_only: bool = False) -> None:
        super().__init__()
        self.spec = spec
        norm = {"bn_eps": spec.bn_eps, "bn_momentum": spec.bn_momentum}
        ca, cb, cc = spec.channels_a, spec.channels_b, spec.channels_c
        (na, nb, nc), (sa, sb, sc) = spec.repeats, spec.scales
        cifar = spec.stem_type == "cifar"
        self.stem = InceptionResNetStem(spec.in_chans, spec.stem, cifar=cifar, **norm)
        self.mixed_5b = Mixed5b(self.stem.out_channels, spec.mixed_5b, **norm)
        self.blocks_a = nn.Sequential(*(InceptionResNetA(ca, spec.block_a, sa, **norm) for _ in range(na)))
        self.mixed_6a = ReductionA(ca, spec.mixed_6a, **norm)
        self.blocks_b = nn.Sequential(*(InceptionResNetB(cb, spec.block_b, sb, **norm) for _ in range(nb)))
        self.mixed_7a = ReductionB(cb, spec.mixed_7a, **norm)
        self.blocks_c = nn.Sequential(*(InceptionResNetC(cc, spec.block_c, sc, **norm) for _ in range(nc)))
        self.block_c_final = InceptionResNetC(cc, spec.block_c, spec.final_scale, activate=False, **norm)
        self.feature_info: list[dict[str, int | str]] = [
            {"module": "stem.conv2b", "num_chs": spec.stem[2], "reduction": 2},
            {"module": "stem.conv4a", "num_chs": spec.stem[4], "reduction": 2 if cifar else 4},
            {"module": "blocks_a", "num_chs": ca, "reduction": 2 if cifar else 8},
            {"module": "blocks_b", "num_chs": cb, "reduction": 4 if cifar else 16},
            {"module": "block_c_final", "num_chs": cc, "reduction": 8 if cifar else 32},
        ]
        self.min_side = spec.min_resolution
        self.features_only = features_only
        self.num_features = spec.head_channels
        if not features_only:
            self.head = BasicConv(cc, spec.head_channels, 1, **norm)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(spec.dropout)
            self.classifier = nn.Linear(spec.head_channels, spec.num_classes)
        # Weights keep PyTorch's default initialisation, as timm's model does.

    @torch.jit.unused
    def _check_input(self, x: torch.Tensor) -> None:
        if min(x.shape[-2:]) < self.min_side:
            raise UserError(
                f"Inception-ResNet-v2 needs an input side >= {self.min_side}, got {tuple(x.shape[-2:])}"
            )

    def _check(self, x: torch.Tensor) -> None:
        if not torch.jit.is_scripting() and not torch.jit.is_tracing():
            self._check_input(x)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five feature maps of ``feature_info`` (strides 2, 4, 8, 16, 32)."""
        self._check(x)
        s2, s4, x = self.stem.forward_taps(x)
        a = self.blocks_a(self.mixed_5b(x))
        b = self.blocks_b(self.mixed_6a(a))
        c = self.block_c_final(self.blocks_c(self.mixed_7a(b)))
        return [s2, s4, a, b, c]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The head's 1536-channel map before pooling (the maps a class activation map is made of)."""
        self._check(x)
        x = self.blocks_a(self.mixed_5b(self.stem(x)))
        x = self.blocks_b(self.mixed_6a(x))
        x = self.block_c_final(self.blocks_c(self.mixed_7a(x)))
        return self.head(x)


@build_model.register
def _(spec: InceptionResNetV2Spec, features_only: bool = False) -> nn.Module:
    return InceptionResNetV2(spec, features_only=features_only)


register_model("inception_resnet_v2", InceptionResNetV2Spec, "Inception-ResNet-v2 (TF-slim layout), 299 px")


# --- weight layout of timm (the TF-slim port: conv2d_1a .. conv2d_7b, mixed_5b, repeat, repeat_1, ...) ----


@register_key_map(InceptionResNetV2, "timm")
def _timm_keys(model: InceptionResNetV2) -> dict[str, str]:
    names: dict[str, str] = {}

    def same_suffixes(module: nn.Module, ours: str, theirs: str) -> None:
        for k in module.state_dict():
            names[f"{ours}.{k}"] = f"{theirs}.{k}"

    for ours, theirs in (("conv1a", "conv2d_1a"), ("conv2a", "conv2d_2a"), ("conv2b", "conv2d_2b"),
                         ("conv3b", "conv2d_3b"), ("conv4a", "conv2d_4a")):
        same_suffixes(getattr(model.stem, ours), f"stem.{ours}", theirs)

    modules: list[tuple[str, str, InceptionModule]] = [("mixed_5b", "mixed_5b", model.mixed_5b),
                                                        ("mixed_6a", "mixed_6a", model.mixed_6a),
                                                        ("mixed_7a", "mixed_7a", model.mixed_7a),
                                                        ("block_c_final", "block8", model.block_c_final)]
    for ours, theirs in (("blocks_a", "repeat"), ("blocks_b", "repeat_1"), ("blocks_c", "repeat_2")):
        modules += [(f"{ours}.{i}", f"{theirs}.{i}", blk) for i, blk in enumerate(getattr(model, ours))]
    for ours, theirs, module in modules:
        for b, branch in enumerate(module.branches):
            for j, layer in enumerate(branch):
                # timm keeps a one-layer branch as the bare layer, longer ones as an nn.Sequential.
                target = f"{theirs}.branch{b}" if len(branch) == 1 else f"{theirs}.branch{b}.{j}"
                same_suffixes(layer, f"{ours}.branches.{b}.{j}", target)
        if isinstance(module, InceptionResNetBlock):
            same_suffixes(module.project, f"{ours}.project", f"{theirs}.conv2d")
    if not model.features_only:
        same_suffixes(model.head, "head", "conv2d_7b")
        same_suffixes(model.classifier, "classifier", "classif")
    return names


# --- a small Inception-ResNet for CPU studies at 32 px (compscale study families) ------------------------


def inception_resnet_tiny_spec() -> InceptionResNetV2Spec:
    """Inception-ResNet-v2's module types (stem, Mixed_5b, Block35, Mixed_6a, Block17, Mixed_7a, Block8, head)
    with one block each of A, B and C (plus the final unscaled C), every branch 8 or 16 channels wide (so
    width scaling, which rounds to multiples of 8, leaves it unchanged at w = 1), on the CIFAR stem (padded
    convs, stride 2 once, no pools) at 32 px: blocks A at 16×16 on a 32-channel trunk, B at 7×7 on 64, C at
    3×3 on 112, head 128, no dropout."""
    return InceptionResNetV2Spec(
        stem=(8, 8, 8, 8, 16),
        mixed_5b=((8,), (8, 8), (8, 8, 8), (8,)),
        block_a=((8,), (8, 8), (8, 8, 8)),
        mixed_6a=((16,), (8, 8, 16)),
        block_b=((16,), (8, 8, 16)),
        mixed_7a=((8, 16), (8, 16), (8, 16, 16)),
        block_c=((16,), (16, 16, 16)),
        head_channels=128,
        repeats=(1, 1, 1),
        dropout=0.0,
        stem_type="cifar",
        resolution=32,
    )


register_model("inception_resnet_tiny", inception_resnet_tiny_spec,
               "Inception-ResNet-v2 modules, 8-16 channel branches, 1 block each of A/B/C, CIFAR stem, 32 px")
