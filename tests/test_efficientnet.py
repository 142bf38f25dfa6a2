"""The EfficientNet family: exact counts against timm and the paper, the builder's options and modes."""

from __future__ import annotations

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from compscale import create_model, list_models, model_spec, profile
from compscale.errors import UserError
from compscale.models.blocks import DropPath, same_padding
from compscale.paper import EFFICIENTNET_PAPER
from compscale.specs import EfficientNetSpec, spec_from_dict, spec_from_json

VARIANTS = [f"b{i}" for i in range(8)]


def _timm_macs(name: str, resolution: int) -> int:
    with torch.device("meta"):
        model = timm.create_model(name).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.empty(1, 3, resolution, resolution))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("variant", VARIANTS)
def test_params_and_macs_equal_timm_and_paper(variant):
    name = f"efficientnet_{variant}"
    with torch.device("meta"):
        theirs = sum(p.numel() for p in timm.create_model(name).parameters())
    ours = profile(name)
    assert ours.params == theirs
    assert ours.macs == pytest.approx(_timm_macs(name, ours.resolution), rel=0.01)
    paper = EFFICIENTNET_PAPER[variant]
    assert ours.params == pytest.approx(paper.params, rel=0.05)
    assert ours.macs == pytest.approx(paper.macs, rel=0.05)


def test_b0_exact_numbers():
    p = profile("efficientnet_b0")
    assert (p.params, p.macs, p.resolution) == (5_288_548, 385_814_752, 224)
    spec = model_spec("efficientnet_b0")
    assert [s.repeats for s in spec.stages] == [1, 2, 2, 3, 3, 4, 1]
    assert [s.out_channels for s in spec.stages] == [16, 24, 40, 80, 112, 192, 320]
    assert spec.total_blocks == 16 and spec.dropout == 0.2


@pytest.mark.parametrize("variant, blocks, stem, head",
                         [("b1", 23, 32, 1280), ("b2", 23, 32, 1408), ("b3", 26, 40, 1536),
                          ("b4", 32, 48, 1792), ("b5", 39, 48, 2048), ("b6", 45, 56, 2304),
                          ("b7", 55, 64, 2560)])
def test_official_variants_structure(variant, blocks, stem, head):
    spec = model_spec(f"efficientnet_{variant}")
    assert (spec.total_blocks, spec.stem_channels, spec.head_channels) == (blocks, stem, head)


@pytest.mark.parametrize("lite", ["lite0", "lite1", "lite2", "lite3", "lite4"])
def test_lite_params_equal_timm(lite):
    with torch.device("meta"):
        theirs = sum(p.numel() for p in timm.create_model(f"tf_efficientnet_{lite}").parameters())
        ours = sum(p.numel() for p in create_model(f"efficientnet_{lite}").parameters())
    assert ours == theirs


def test_lite_rules():
    spec = model_spec("efficientnet_lite4")
    assert spec.se_ratio == 0 and spec.activation == "relu6" and spec.padding == "same"
    assert (spec.stem_channels, spec.head_channels) == (32, 1280)  # not scaled
    assert spec.stages[0].repeats == 1 and spec.stages[-1].repeats == 1  # first/last depth fixed
    assert spec.stages[1].repeats == 4  # ceil(2 * 1.8)


def test_registry():
    names = list_models()
    for expected in ["efficientnet_b0", "efficientnet_b7", "tf_efficientnet_b3", "efficientnet_lite0",
                     "efficientnet_lite4"]:
        assert expected in names
    assert list_models("efficientnet_b*") == [f"efficientnet_b{i}" for i in range(8)]
    with pytest.raises(UserError, match="did you mean efficientnet_b0"):
        create_model("efficientnet-b0")


def test_create_model_overrides_and_forward():
    torch.manual_seed(0)
    model = create_model("efficientnet_b0", num_classes=7, in_chans=1, drop_rate=0.1, drop_path_rate=0.3)
    assert model.classifier.out_features == 7 and model.stem.conv.in_channels == 1
    assert model.dropout.p == 0.1
    rates = [m.p for m in model.modules() if isinstance(m, DropPath)]
    # The linear schedule: rate × block index / 16 for blocks with a skip (block 0 has none in B0).
    assert rates[0] == pytest.approx(0.3 * 2 / 16) and rates[-1] == pytest.approx(0.3 * 14 / 16)
    model.eval()
    x = torch.randn(2, 1, 64, 64)
    assert model(x).shape == (2, 7)
    assert model.forward_features(x).shape == (2, 1280, 2, 2)
    for bad in ({"num_classes": 0}, {"drop_rate": 1.5}, {"in_chans": -1}):
        with pytest.raises(UserError):
            create_model("efficientnet_b0", **bad)


def test_features_only_returns_per_stage_maps():
    model = create_model("efficientnet_b0", features_only=True).eval()
    maps = model(torch.randn(1, 3, 64, 64))
    assert [m.shape[1] for m in maps] == [16, 24, 40, 80, 112, 192, 320]
    assert [64 // m.shape[-1] for m in maps] == [2, 4, 8, 16, 16, 32, 32]
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 8, 16, 16, 32, 32]
    assert not hasattr(model, "classifier")


def test_tf_variant_uses_same_padding_and_tf_bn():
    model = create_model("tf_efficientnet_b0")
    assert model.stem.bn.eps == 1e-3 and model.stem.bn.momentum == 0.01
    assert type(model.stem.conv).__name__ == "Conv2dSame"
    assert same_padding(224, 3, 2) == (0, 1)  # the extra pixel goes right/bottom
    assert same_padding(225, 3, 2) == (1, 1)


def test_stochastic_depth_scales_survivors():
    torch.manual_seed(0)
    drop = DropPath(0.5).train()
    out = drop(torch.ones(4000, 1))
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    assert out.mean().item() == pytest.approx(1.0, abs=0.08)
    assert torch.equal(drop.eval()(torch.ones(3, 1)), torch.ones(3, 1))


def test_spec_round_trips_through_json_and_builds_identically():
    spec = model_spec("efficientnet_b3")
    again = spec_from_json(spec.to_json())
    assert again == spec
    assert spec_from_dict(spec.as_dict()) == spec
    with pytest.raises(UserError, match="unknown field"):
        spec_from_dict({**spec.as_dict(), "colour": "red"})
    with pytest.raises(UserError, match="unknown model family"):
        spec_from_dict({"family": "nope"})
    custom = EfficientNetSpec(resolution=32, stem_channels=8, head_channels=64, num_classes=3)
    model = create_model(custom).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
