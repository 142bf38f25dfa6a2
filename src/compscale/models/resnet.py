"""ResNet (He et al., 2016) and ResNeXt (Xie et al., 2017), with both forms of the aggregated transformation.

ResNeXt's block computes y = ReLU(x' + BN(F(x))) with the aggregated transformation (the paper's Eq. 2/3)

    F(x) = Σ_{i=1..C} T_i(x),     T_i = 1×1 (in → d) → BN → ReLU → 3×3 (d → d) → BN → ReLU → 1×1 (d → out)

where C is the cardinality and d the group width. Two modules compute it:

* :class:`PathsBottleneck` — C explicit parallel paths, each with its own 1×1 expansion, summed: the
  paper's form (a) literally. The block's last BatchNorm is applied once, to the sum (as in the paper's
  forms (b) and (c), where it follows the shared 1×1); BN is per-channel, so the C BNs of the first two
  layers of the paths are exactly one BN over the d·C concatenated channels.
* :class:`Bottleneck` — one grouped 3×3 convolution with C groups between two dense 1×1s: form (c), what
  torchvision and timm build. The 1×1 reduce of form (c) is the C paths' 1×1s stacked (rows i·d..(i+1)·d
  are path i); the grouped 3×3's group i is path i's 3×3; the 1×1 expand's input columns i·d..(i+1)·d are
  path i's expansion, so W·concat(h_i) = Σ_i W_i h_i.

The two are the same function; :func:`convert_aggregation` moves weights between them (exactly: it only
slices and concatenates) and :func:`to_aggregation` converts a whole model.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from compscale.errors import UserError
from compscale.models.blocks import ConvNormAct, DropPath, PooledClassifier, conv_bn_keys
from compscale.models.registry import build_model, register_model
from compscale.models.weights import register_key_map
from compscale.specs.resnet import ResNetSpec, resnet_spec


def _norm(spec: ResNetSpec) -> dict[str, float]:
    return {"bn_eps": spec.bn_eps, "bn_momentum": spec.bn_momentum}


class Bottleneck(nn.Module):
    """The bottleneck with a grouped 3×3 (ResNeXt form (c); ResNet when C = 1), stride in the 3×3 (V1.5).

    ``reduce`` 1×1 in → d·C, ``transform`` 3×3 d·C → d·C in C groups, ``expand`` 1×1 d·C → out (BN, no
    activation), ``shortcut`` a 1×1 projection when the stride or the width changes, else the identity.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        group_width: int,
        cardinality: int = 1,
        stride: int = 1,
        drop_path: float = 0.0,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        norm = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        width = group_width * cardinality
        self.cardinality, self.group_width = cardinality, group_width
        self.reduce = ConvNormAct(in_channels, width, 1, act="relu", **norm)
        self.transform = ConvNormAct(width, width, 3, stride, groups=cardinality, act="relu", **norm)
        self.expand = ConvNormAct(width, out_channels, 1, act=None, **norm)
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.drop_path(self.expand(self.transform(self.reduce(x)))) + identity)


class ResNeXtPath(nn.Module):
    """One path T_i of the aggregated transformation: 1×1 in → d, 3×3 d → d (stride here), 1×1 d → out.

    The final 1×1 has no BatchNorm of its own: the block normalises the sum Σ T_i(x) once.
    """

    def __init__(self, in_channels: int, group_width: int, out_channels: int, stride: int = 1,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        norm = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.reduce = ConvNormAct(in_channels, group_width, 1, act="relu", **norm)
        self.transform = ConvNormAct(group_width, group_width, 3, stride, act="relu", **norm)
        self.expand = nn.Conv2d(group_width, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.transform(self.reduce(x)))


class PathsBottleneck(nn.Module):
    """The ResNeXt block as the paper writes it: y = ReLU(x' + BN(Σ_{i=1..C} T_i(x))), C explicit paths.

    Slower than :class:`Bottleneck` (C small convolutions instead of one grouped one) and the same function.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        group_width: int,
        cardinality: int = 1,
        stride: int = 1,
        drop_path: float = 0.0,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        norm = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.cardinality, self.group_width = cardinality, group_width
        self.paths = nn.ModuleList(
            ResNeXtPath(in_channels, group_width, out_channels, stride, **norm) for _ in range(cardinality)
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def aggregate(self, x: torch.Tensor) -> torch.Tensor:
        """F(x) = Σ_i T_i(x), before the block's BatchNorm."""
        out: Optional[torch.Tensor] = None
        for path in self.paths:  # a plain loop over the ModuleList, so TorchScript can compile it
            y = path(x)
            out = y if out is None else out + y
        assert out is not None  # a block has at least one path (C >= 1)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.drop_path(self.bn(self.aggregate(x))) + identity)


def _shortcut(in_channels: int, out_channels: int, stride: int, norm: dict) -> ConvNormAct | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return ConvNormAct(in_channels, out_channels, 1, stride, act=None, **norm)


BLOCKS: dict[str, type[nn.Module]] = {"grouped": Bottleneck, "paths": PathsBottleneck}


# --- converting between the two forms ------------------------------------------------------------------


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, sl: slice = slice(None)) -> None:
    """dst ← src[sl] for every BN parameter and running statistic."""
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[sl])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


def _concat_bn(dst: nn.BatchNorm2d, srcs: list[nn.BatchNorm2d]) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(torch.cat([getattr(s, name) for s in srcs]))
    dst.num_batches_tracked.copy_(srcs[0].num_batches_tracked)


@torch.no_grad()
def convert_aggregation(src: nn.Module, dst: nn.Module) -> nn.Module:
    """Copy the weights of a ResNeXt block into a block of the other form of the aggregated transformation
    (:class:`Bottleneck` ↔ :class:`PathsBottleneck`, or the same form); returns ``dst``.

    grouped → paths: path i gets rows i·d..(i+1)·d of the 1×1 reduce and of the grouped 3×3 (its group i),
    the matching slices of their BatchNorms, and columns i·d..(i+1)·d of the 1×1 expand. paths → grouped
    concatenates them back. The shortcut and the last BatchNorm are shared and copied as they are.
    """
    if type(src) is type(dst):
        dst.load_state_dict(src.state_dict())
        return dst
    kinds = {type(src), type(dst)}
    if kinds != {Bottleneck, PathsBottleneck}:
        raise UserError(f"cannot convert {type(src).__name__} to {type(dst).__name__}: both must be ResNeXt blocks")
    if (src.cardinality, src.group_width) != (dst.cardinality, dst.group_width):
        raise UserError(
            f"blocks differ: C={src.cardinality}, d={src.group_width} vs C={dst.cardinality}, d={dst.group_width}"
        )
    d = src.group_width
    if isinstance(src, Bottleneck):
        for i, path in enumerate(dst.paths):
            rows = slice(i * d, (i + 1) * d)
            path.reduce.conv.weight.copy_(src.reduce.conv.weight[rows])
            _copy_bn(path.reduce.bn, src.reduce.bn, rows)
            # Group i of the grouped 3×3 maps input channels i·d..(i+1)·d to output channels i·d..(i+1)·d;
            # its weight rows are exactly those outputs, each seeing the d inputs of its own group.
            path.transform.conv.weight.copy_(src.transform.conv.weight[rows])
            _copy_bn(path.transform.bn, src.transform.bn, rows)
            path.expand.weight.copy_(src.expand.conv.weight[:, rows])
        _copy_bn(dst.bn, src.expand.bn)
    else:
        dst.reduce.conv.weight.copy_(torch.cat([p.reduce.conv.weight for p in src.paths]))
        _concat_bn(dst.reduce.bn, [p.reduce.bn for p in src.paths])
        dst.transform.conv.weight.copy_(torch.cat([p.transform.conv.weight for p in src.paths]))
        _concat_bn(dst.transform.bn, [p.transform.bn for p in src.paths])
        dst.expand.conv.weight.copy_(torch.cat([p.expand.weight for p in src.paths], dim=1))
        _copy_bn(dst.expand.bn, src.bn)
    if src.shortcut is not None:
        dst.shortcut.load_state_dict(src.shortcut.state_dict())
    return dst


# --- the network ---------------------------------------------------------------------------------------


class ResNet(PooledClassifier, nn.Module):
    """stem conv7×7/2 → max-pool 3×3/2 → four bottleneck stages → global average pool → dropout → FC.

    ``features_only=True`` drops the classifier; the forward then returns each stage's output (strides
    4, 8, 16, 32), as :class:`~compscale.models.efficientnet.EfficientNet` does.
    """

    def __init__(self, spec: ResNetSpec, features_only: bool = False) -> None:
        super().__init__()
        self.spec = spec
        norm = _norm(spec)
        if spec.stem_type == "cifar":  # one 3×3/1 conv, no pool: 32-pixel inputs keep their resolution
            self.stem = ConvNormAct(spec.in_chans, spec.stem_channels, 3, 1, act="relu", **norm)
            self.stem_pool: nn.Module = nn.Identity()
            reduction = 1
        else:
            self.stem = ConvNormAct(spec.in_chans, spec.stem_channels, 7, 2, act="relu", **norm)
            self.stem_pool = nn.MaxPool2d(3, 2, padding=1)
            reduction = 4
        block_cls = BLOCKS[spec.aggregation]
        stages, in_ch, block_idx = [], spec.stem_channels, 0
        self.feature_info: list[dict[str, int | str]] = []
        for i, stage in enumerate(spec.stages):
            out_ch = spec.out_channels(stage)
            blocks = []
            for b in range(stage.repeats):
                blocks.append(
                    block_cls(
                        in_ch,
                        out_ch,
                        spec.group_width(stage),
                        spec.cardinality,
                        stage.stride if b == 0 else 1,
                        # The linear stochastic-depth schedule, as our EfficientNet: rate × index / total.
                        drop_path=spec.drop_path_rate * block_idx / spec.total_blocks,
                        **norm,
                    )
                )
                in_ch, block_idx = out_ch, block_idx + 1
            reduction *= stage.stride
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append({"module": f"stages.{i}", "num_chs": out_ch, "reduction": reduction})
        self.stages = nn.ModuleList(stages)
        self.features_only = features_only
        self.num_features = in_ch
        if not features_only:
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(spec.dropout)
            self.classifier = nn.Linear(in_ch, spec.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """He init (fan-out, ReLU) for convs, BN γ=1 β=0 (γ=0 for each block's last BN when
        ``zero_init_last``), PyTorch's default for the classifier — as timm does."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.spec.zero_init_last:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.expand.bn.weight)
                elif isinstance(m, PathsBottleneck):
                    nn.init.zeros_(m.bn.weight)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's output feature map (strides 4, 8, 16, 32)."""
        x = self.stem_pool(self.stem(x))
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map before pooling (the maps a class activation map is made of)."""
        x = self.stem_pool(self.stem(x))
        for stage in self.stages:
            x = stage(x)
        return x


@build_model.register
def _(spec: ResNetSpec, features_only: bool = False) -> nn.Module:
    return ResNet(spec, features_only=features_only)


def to_aggregation(model: ResNet, aggregation: str) -> ResNet:
    """The same network with its aggregated transformations in the other form (``"grouped"`` or
    ``"paths"``), weights converted exactly; the result is in the same train/eval mode as ``model``."""
    if not isinstance(model, ResNet):
        raise UserError(f"to_aggregation needs a ResNet, got {type(model).__name__}")
    spec = model.spec.replace(aggregation=aggregation)  # validates the name
    ref = next(model.parameters())
    with torch.device(ref.device):
        out = ResNet(spec, features_only=model.features_only).to(ref.dtype)
    with torch.no_grad():
        out.stem.load_state_dict(model.stem.state_dict())
        for src_stage, dst_stage in zip(model.stages, out.stages):
            for src, dst in zip(src_stage, dst_stage):
                convert_aggregation(src, dst)
        if not model.features_only:
            out.classifier.load_state_dict(model.classifier.state_dict())
    return out.train(model.training)


# --- the named models ----------------------------------------------------------------------------------

#: name → (layers, cardinality C, base width), as timm and torchvision define them.
RESNETS: dict[str, tuple[tuple[int, int, int, int], int, int]] = {
    "resnet50": ((3, 4, 6, 3), 1, 64),
    "resnet101": ((3, 4, 23, 3), 1, 64),
    "resnet152": ((3, 8, 36, 3), 1, 64),
    "resnext50_32x4d": ((3, 4, 6, 3), 32, 4),
    "resnext101_32x4d": ((3, 4, 23, 3), 32, 4),
    "resnext101_32x8d": ((3, 4, 23, 3), 32, 8),
    "resnext101_64x4d": ((3, 4, 23, 3), 64, 4),
}


def _describe(name: str, layers: tuple[int, ...], c: int, w: int) -> str:
    depth = 3 * sum(layers) + 2
    if c == 1:
        return f"ResNet-{depth} (V1.5, stride in the 3x3)"
    return f"ResNeXt-{depth} {c}x{w}d (grouped-conv form)"


for _name, (_layers, _c, _w) in RESNETS.items():
    register_model(_name, lambda layers=_layers, c=_c, w=_w: resnet_spec(layers, c, w),
                   _describe(_name, _layers, _c, _w))


# --- weight layouts ------------------------------------------------------------------------------------
# timm and torchvision name a ResNet's tensors identically (conv1/bn1, layerN.M.conv1..bn3, downsample.0/1,
# fc). A model in the "paths" form has no counterpart there: its block keys map to themselves, so loading
# a peer's weights into it fails on the first block key; load into the grouped form and use to_aggregation.

@register_key_map(ResNet, "torchvision")
@register_key_map(ResNet, "timm")
def _resnet_keys(model: ResNet) -> dict[str, str]:
    names: dict[str, str] = {}

    def conv_bn(ours: str, conv: str, bn: str) -> None:
        conv_bn_keys(names, ours, conv, bn)

    conv_bn("stem", "conv1", "bn1")
    for s, stage in enumerate(model.stages):
        for b, blk in enumerate(stage):
            ours, theirs = f"stages.{s}.{b}", f"layer{s + 1}.{b}"
            if isinstance(blk, Bottleneck):
                for i, part in enumerate(("reduce", "transform", "expand"), start=1):
                    conv_bn(f"{ours}.{part}", f"{theirs}.conv{i}", f"{theirs}.bn{i}")
            else:
                names.update({k: k for k in blk.state_dict(prefix=f"{ours}.") if ".shortcut." not in k})
            if blk.shortcut is not None:
                conv_bn(f"{ours}.shortcut", f"{theirs}.downsample.0", f"{theirs}.downsample.1")
    if not model.features_only:
        names["classifier.weight"], names["classifier.bias"] = "fc.weight", "fc.bias"
    return names


# --- a small ResNeXt for CPU studies at 32 px (compscale study cardinality / families) -------------------


def resnext_tiny_spec() -> ResNetSpec:
    """ResNeXt "tiny 4×4d": the CIFAR stem (conv3×3/1, 16 channels), three stages of one bottleneck with
    planes 8, 16, 32 (strides 1, 2, 2; outputs 32, 64, 128) at C = 4 paths of d = 4, 8, 16 channels
    (base width 32), 32-pixel input: the ResNeXt paper's CIFAR layout (its Section 5.3) shrunk until it
    trains in seconds per epoch on one CPU core."""
    from compscale.specs.resnet import ResNetStage

    return ResNetSpec(stages=(ResNetStage(1, 8, 1), ResNetStage(1, 16, 2), ResNetStage(1, 32, 2)), cardinality=4,
                      base_width=32, stem_channels=16, stem_type="cifar", resolution=32)


register_model("resnext_tiny", resnext_tiny_spec, "ResNeXt tiny 4x4d (CIFAR stem, 3 stages of 1 block), 32 px")
