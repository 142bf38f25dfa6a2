"""EfficientNet (Tan & Le, 2019): the B0 baseline, the official B1..B7 and Lite variants, and any φ.

The family is data (:class:`~compscale.specs.EfficientNetSpec`); this module only builds it and names the
released variants.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from compscale.models.blocks import ConvNormAct, MBConv, StemStagesHead, conv_bn_keys
from compscale.models.registry import build_model, register_model
from compscale.models.weights import register_key_map
from compscale.scaling import EFFICIENTNET_COEFFICIENTS, EFFICIENTNET_LITE_COEFFICIENTS, CompoundScaling
from compscale.specs import EfficientNetSpec

#: TensorFlow's BatchNorm defaults (decay 0.99 = PyTorch momentum 0.01; eps 1e-3).
TF_BN = {"bn_eps": 1e-3, "bn_momentum": 0.01}


class EfficientNet(StemStagesHead, nn.Module):
    """stem conv3×3/2 (or /1: ``spec.stem_stride``) → MBConv stages → conv1×1 head → global average pool →
    dropout → classifier.

    ``features_only=True`` drops the head and classifier; the forward then returns each stage's output.
    """

    def __init__(self, spec: EfficientNetSpec, features_only: bool = False) -> None:
        super().__init__()
        self.spec = spec
        act = spec.activation
        norm = {"bn_eps": spec.bn_eps, "bn_momentum": spec.bn_momentum}
        self.stem = ConvNormAct(spec.in_chans, spec.stem_channels, 3, spec.stem_stride, act=act, padding=spec.padding,
                                **norm)

        def block(stage, in_ch: int, stride: int, index: int) -> nn.Module:
            return MBConv(in_ch, stage.out_channels, stage.kernel, stride, stage.expand_ratio, se_ratio=spec.se_ratio,
                          act=act, padding=spec.padding,
                          # The linear stochastic-depth schedule: rate × block index / total blocks.
                          drop_path=spec.drop_path_rate * index / spec.total_blocks, **norm)

        in_ch = self.build_stages(spec.stages, spec.stem_channels, spec.stem_stride, block)
        self.build_top(in_ch, spec.head_channels, spec.head_channels, spec.num_classes, spec.dropout, features_only,
                       act=act, **norm)


@build_model.register
def _(spec: EfficientNetSpec, features_only: bool = False) -> nn.Module:
    return EfficientNet(spec, features_only=features_only)


def efficientnet_spec(
    variant: str | None = None,
    phi: float | None = None,
    scaling: CompoundScaling | None = None,
    tf: bool = False,
    depth_rounding: str = "ceil",
) -> EfficientNetSpec:
    """The spec of a released variant (``"b0"``..``"b7"``) or of B0 scaled by the compound coefficient φ.

    ``tf=True`` gives TF "SAME" padding and TF BatchNorm (the ``tf_efficientnet_*`` layout).
    """
    base = EfficientNetSpec(**({"padding": "same", **TF_BN} if tf else {}))
    if variant is not None:
        return base.scaled(EFFICIENTNET_COEFFICIENTS[variant].factors(), depth_rounding)
    factors = (scaling or CompoundScaling()).factors(0.0 if phi is None else phi)
    return base.scaled(factors, depth_rounding)


def efficientnet_lite_spec(variant: str) -> EfficientNetSpec:
    """EfficientNet-Lite: no SE, ReLU6, stem and head not scaled, first/last stage depth fixed, SAME padding."""
    base = EfficientNetSpec(
        se_ratio=0.0,
        activation="relu6",
        padding="same",
        scale_stem_head=False,
        fix_first_last_depth=True,
        **TF_BN,
    )
    return base.scaled(EFFICIENTNET_LITE_COEFFICIENTS[variant].factors())


for _v in EFFICIENTNET_COEFFICIENTS:
    register_model(f"efficientnet_{_v}", partial(efficientnet_spec, _v), f"EfficientNet-{_v.upper()}")
    register_model(
        f"tf_efficientnet_{_v}", partial(efficientnet_spec, _v, tf=True), f"EfficientNet-{_v.upper()}, TF padding/BN"
    )
for _v in EFFICIENTNET_LITE_COEFFICIENTS:
    register_model(f"efficientnet_{_v}", partial(efficientnet_lite_spec, _v), f"EfficientNet-{_v.capitalize()}")


# --- Weight layouts of other libraries -----------------------------------------------------------------
# Each function gives, for every key of our state dict, the key of the same tensor in that layout.

def _effnet_key_map(model: EfficientNet, stem: str, stem_bn: str, head: str, head_bn: str, fc: str,
                    block) -> dict[str, str]:
    names: dict[str, str] = {}

    def conv_bn(ours: str, conv: str, bn: str) -> None:
        conv_bn_keys(names, ours, conv, bn)

    conv_bn("stem", stem, stem_bn)
    index = 0
    for s, stage in enumerate(model.stages):
        for b, blk in enumerate(stage):
            parts = block(s, b, index, blk)
            for part in ("expand", "depthwise", "project"):
                if getattr(blk, part) is not None:
                    conv_bn(f"stages.{s}.{b}.{part}", *parts[part])
            if blk.se is not None:
                for ours, theirs in zip(("reduce", "expand"), parts["se"]):
                    for k in ("weight", "bias"):
                        names[f"stages.{s}.{b}.se.{ours}.{k}"] = f"{theirs}.{k}"
            index += 1
    if not model.features_only:
        conv_bn("head", head, head_bn)
        names["classifier.weight"], names["classifier.bias"] = f"{fc}.weight", f"{fc}.bias"
    return names


@register_key_map(EfficientNet, "timm")
def _timm_keys(model: EfficientNet) -> dict[str, str]:
    def block(s: int, b: int, _i: int, blk: MBConv) -> dict:
        p = f"blocks.{s}.{b}"
        if blk.expand is None:  # timm's DepthwiseSeparableConv
            return {"depthwise": (f"{p}.conv_dw", f"{p}.bn1"), "project": (f"{p}.conv_pw", f"{p}.bn2"),
                    "se": (f"{p}.se.conv_reduce", f"{p}.se.conv_expand")}
        return {"expand": (f"{p}.conv_pw", f"{p}.bn1"), "depthwise": (f"{p}.conv_dw", f"{p}.bn2"),
                "project": (f"{p}.conv_pwl", f"{p}.bn3"), "se": (f"{p}.se.conv_reduce", f"{p}.se.conv_expand")}

    return _effnet_key_map(model, "conv_stem", "bn1", "conv_head", "bn2", "classifier", block)


@register_key_map(EfficientNet, "torchvision")
def _torchvision_keys(model: EfficientNet) -> dict[str, str]:
    def block(s: int, b: int, _i: int, blk: MBConv) -> dict:
        p = f"features.{s + 1}.{b}.block"
        order = [n for n in ("expand", "depthwise", "se", "project") if getattr(blk, n) is not None]
        parts = {n: (f"{p}.{i}.0", f"{p}.{i}.1") for i, n in enumerate(order)}
        if "se" in parts:
            i = order.index("se")
            parts["se"] = (f"{p}.{i}.fc1", f"{p}.{i}.fc2")
        return parts

    last = len(model.stages) + 1
    return _effnet_key_map(model, "features.0.0", "features.0.1", f"features.{last}.0", f"features.{last}.1",
                           "classifier.1", block)


@register_key_map(EfficientNet, "efficientnet_pytorch")
def _port_keys(model: EfficientNet) -> dict[str, str]:
    """The original PyTorch port's layout (``_conv_stem``, ``_blocks.N``, ``_fc``), used by the Lite packages."""

    def block(_s: int, _b: int, i: int, _blk: MBConv) -> dict:
        p = f"_blocks.{i}"
        return {"expand": (f"{p}._expand_conv", f"{p}._bn0"), "depthwise": (f"{p}._depthwise_conv", f"{p}._bn1"),
                "project": (f"{p}._project_conv", f"{p}._bn2"), "se": (f"{p}._se_reduce", f"{p}._se_expand")}

    return _effnet_key_map(model, "_conv_stem", "_bn0", "_conv_head", "_bn1", "_fc", block)
