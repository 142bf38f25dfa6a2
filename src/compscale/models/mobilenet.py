"""MobileNetV1 and MobileNetV2: the baselines the EfficientNet paper's Table 3 scales, built as timm builds them.

The family is data (:class:`~compscale.specs.MobileNetSpec`); this module builds it, names timm's variants
and maps timm's weight layout onto ours (so ``timm.create_model("mobilenetv2_100").state_dict()`` loads).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from compscale.models.blocks import ConvNormAct, MBConv, StemStagesHead, conv_bn_keys
from compscale.models.registry import build_model, register_model
from compscale.models.weights import register_key_map
from compscale.specs.mobilenet import MobileNetSpec, mobilenet_v1_spec, mobilenet_v2_spec


class SeparableConv(nn.Module):
    """MobileNetV1's block: k×k depthwise → BN → act → 1×1 pointwise → BN → act (no skip)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, act: str = "relu6",
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        norm = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.depthwise = ConvNormAct(in_channels, in_channels, kernel, stride, groups=in_channels, act=act, **norm)
        self.pointwise = ConvNormAct(in_channels, out_channels, 1, act=act, **norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class MobileNet(StemStagesHead, nn.Module):
    """stem conv3×3/2 → stages → (conv1×1 head) → global average pool → dropout → classifier.

    ``features_only=True`` drops the head and classifier; the forward then returns each stage's output
    (strides 2, 4, 8, 16, 32 for V1; 2, 4, 8, 16, 16, 32, 32 for V2).
    """

    def __init__(self, spec: MobileNetSpec, features_only: bool = False) -> None:
        super().__init__()
        self.spec = spec
        act = spec.activation
        norm = {"bn_eps": spec.bn_eps, "bn_momentum": spec.bn_momentum}
        self.stem = ConvNormAct(spec.in_chans, spec.stem_channels, 3, 2, act=act, **norm)

        def block(stage, in_ch: int, stride: int, index: int) -> nn.Module:
            if stage.block == "separable":
                return SeparableConv(in_ch, stage.out_channels, stage.kernel, stride, act, **norm)
            return MBConv(in_ch, stage.out_channels, stage.kernel, stride, stage.expand_ratio, se_ratio=0.0, act=act,
                          drop_path=spec.drop_path_rate * index / spec.total_blocks, **norm)

        in_ch = self.build_stages(spec.stages, spec.stem_channels, 2, block)
        self.build_top(in_ch, spec.head_channels, spec.num_features, spec.num_classes, spec.dropout, features_only,
                       act=act, **norm)


@build_model.register
def _(spec: MobileNetSpec, features_only: bool = False) -> nn.Module:
    return MobileNet(spec, features_only=features_only)


#: timm's MobileNet variants: name -> (spec function, description).
MOBILENETS = {
    "mobilenetv1_100": (partial(mobilenet_v1_spec, 1.0), "MobileNetV1 1.0"),
    "mobilenetv1_100h": (partial(mobilenet_v1_spec, 1.0, head_conv=True), "MobileNetV1 1.0, conv1x1 head"),
    "mobilenetv1_125": (partial(mobilenet_v1_spec, 1.25), "MobileNetV1 1.25"),
    "mobilenetv2_035": (partial(mobilenet_v2_spec, 0.35), "MobileNetV2 0.35"),
    "mobilenetv2_050": (partial(mobilenet_v2_spec, 0.5), "MobileNetV2 0.5"),
    "mobilenetv2_075": (partial(mobilenet_v2_spec, 0.75), "MobileNetV2 0.75"),
    "mobilenetv2_100": (partial(mobilenet_v2_spec, 1.0), "MobileNetV2 1.0"),
    "mobilenetv2_140": (partial(mobilenet_v2_spec, 1.4), "MobileNetV2 1.4"),
    "mobilenetv2_110d": (partial(mobilenet_v2_spec, 1.1, 1.2, fix_stem_head=True),
                         "MobileNetV2 1.1 width, 1.2 depth"),
    "mobilenetv2_120d": (partial(mobilenet_v2_spec, 1.2, 1.4, fix_stem_head=True),
                         "MobileNetV2 1.2 width, 1.4 depth"),
}
for _name, (_fn, _description) in MOBILENETS.items():
    register_model(_name, _fn, _description)


# --- Weight layouts of other libraries -----------------------------------------------------------------

@register_key_map(MobileNet, "timm")
def _timm_keys(model: MobileNet) -> dict[str, str]:
    """timm's ``EfficientNet`` layout: ``conv_stem``/``bn1``, ``blocks.S.B`` (``DepthwiseSeparableConv``:
    ``conv_dw``/``bn1``, ``conv_pw``/``bn2``; ``InvertedResidual``: ``conv_pw``/``bn1``, ``conv_dw``/``bn2``,
    ``conv_pwl``/``bn3``), ``conv_head``/``bn2``, ``classifier``."""
    names: dict[str, str] = {}

    def conv_bn(ours: str, conv: str, bn: str) -> None:
        conv_bn_keys(names, ours, conv, bn)

    conv_bn("stem", "conv_stem", "bn1")
    for s, stage in enumerate(model.stages):
        for b, blk in enumerate(stage):
            ours, p = f"stages.{s}.{b}", f"blocks.{s}.{b}"
            if isinstance(blk, SeparableConv):
                parts = {"depthwise": ("conv_dw", "bn1"), "pointwise": ("conv_pw", "bn2")}
            elif blk.expand is None:  # timm's DepthwiseSeparableConv without the pointwise activation
                parts = {"depthwise": ("conv_dw", "bn1"), "project": ("conv_pw", "bn2")}
            else:
                parts = {"expand": ("conv_pw", "bn1"), "depthwise": ("conv_dw", "bn2"), "project": ("conv_pwl", "bn3")}
            for part, (conv, bn) in parts.items():
                conv_bn(f"{ours}.{part}", f"{p}.{conv}", f"{p}.{bn}")
    if not model.features_only:
        if model.head is not None:
            conv_bn("head", "conv_head", "bn2")
        names["classifier.weight"], names["classifier.bias"] = "classifier.weight", "classifier.bias"
    return names
