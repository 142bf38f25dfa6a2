"""The profiler: exact counts on hand-computed networks, per-layer sums, meta-device speed."""

from __future__ import annotations

import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from compscale import create_model, profile
from compscale.errors import UserError
from compscale.specs import EfficientNetSpec, MBConvStage


def test_hand_computed_network():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),  # 8*3*9*32*32 MACs, 8*32*32 outputs
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2),  # 16*(8/2)*9*16*16 MACs, 16*16*16 outputs
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),  # 160 MACs, 10 outputs
    )
    p = profile(net, 32)
    assert p.params == 8 * 3 * 9 + 16 + 16 * 4 * 9 + 16 + 16 * 10 + 10
    assert p.macs == 8 * 3 * 9 * 32 * 32 + 16 * 4 * 9 * 16 * 16 + 160
    assert p.activations == 8 * 32 * 32 + 16 * 16 * 16 + 10


def test_per_layer_sums_to_total():
    p = profile("efficientnet_b0", per_layer=True)
    assert sum(layer.macs for layer in p.layers) == p.macs
    assert sum(layer.activations for layer in p.layers) == p.activations
    stem = p.layers[0]
    assert (stem.name, stem.params, stem.macs, stem.activations) == ("stem.conv", 864, 32 * 27 * 112 * 112,
                                                                     32 * 112 * 112)


def test_resolution_changes_macs_not_params():
    small, big = profile("efficientnet_b0", 112), profile("efficientnet_b0", 224)
    assert small.params == big.params
    assert 3.5 < big.macs / small.macs < 4.1  # ~ r² (the SE and FC layers do not scale with r)


def test_real_model_is_untouched_and_b7_is_fast():
    model = create_model("efficientnet_b0")
    before = model.stem.conv.weight.clone()
    p = profile(model, 96)
    assert model.stem.conv.weight.device.type == "cpu" and torch.equal(model.stem.conv.weight, before)
    assert p.params == 5_288_548 and model.training
    start = time.perf_counter()
    b7 = profile("efficientnet_b7", 600)
    assert time.perf_counter() - start < 10
    assert b7.macs == pytest.approx(37.75e9, rel=0.01)


def test_bad_resolution():
    with pytest.raises(UserError, match=">= 32"):
        profile("efficientnet_b0", 16)


stage_st = st.builds(
    MBConvStage,
    expand_ratio=st.sampled_from([1, 3, 6]),
    kernel=st.sampled_from([3, 5]),
    stride=st.sampled_from([1, 2]),
    out_channels=st.integers(1, 6).map(lambda k: 8 * k),
    repeats=st.integers(1, 3),
)


@settings(max_examples=25, deadline=None)
@given(
    stages=st.lists(stage_st, min_size=1, max_size=4).map(tuple),
    resolution=st.integers(32, 97),
    se_ratio=st.sampled_from([0.0, 0.25]),
    padding=st.sampled_from(["symmetric", "same"]),
    in_chans=st.sampled_from([1, 3]),
    num_classes=st.integers(2, 12),
)
def test_spec_complexity_equals_profile_of_built_model(stages, resolution, se_ratio, padding, in_chans, num_classes):
    """The pure-Python count used by budget solving and search must equal the meta-device profile."""
    spec = EfficientNetSpec(stages=stages, stem_channels=16, head_channels=64, resolution=resolution, se_ratio=se_ratio,
                            padding=padding, in_chans=in_chans, num_classes=num_classes)
    with torch.device("meta"):
        model = create_model(spec)
    p = profile(model)
    c = spec.complexity()
    assert (c.macs, c.params, c.activations) == (p.macs, p.params, p.activations)
