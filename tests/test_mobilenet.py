"""MobileNetV1 / V2: exact counts against timm, logits equal to timm's after weight transfer, the exact
pure-Python complexity, and compound scaling of the family (the EfficientNet paper's Table 3)."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compscale import create_model, load_state_dict, model_spec, profile, scale
from compscale.cli import main
from compscale.errors import UserError
from compscale.models.blocks import MBConv
from compscale.models.mobilenet import MOBILENETS, MobileNet, SeparableConv
from compscale.models.weights import detect_layout
from compscale.scaling import ScaleFactors
from compscale.specs import MobileNetSpec, MobileNetStage, spec_from_dict, spec_from_json
from compscale.specs.mobilenet import V1_STAGES, V2_STAGES
from conftest import assert_same_logits, calibrate_batchnorm, timm_counts


@pytest.mark.parametrize("name", list(MOBILENETS))
def test_params_and_macs_equal_timm_and_complexity_equals_profile(name):
    ours = profile(name)
    assert ours.resolution == 224
    assert (ours.params, ours.macs) == timm_counts(name, 224)
    c = model_spec(name).complexity()
    assert (c.macs, c.params, c.activations) == (ours.macs, ours.params, ours.activations)


@pytest.mark.parametrize(
    "name, params, macs",
    [
        ("mobilenetv1_100", 4_231_976, 568_740_352),  # the V1 paper: 4.2M / 569M
        ("mobilenetv2_100", 3_504_872, 300_774_272),  # the V2 paper: 3.4M / 300M
        ("mobilenetv2_140", 6_108_776, 582_195_824),  # timm: 6.11M / 582M
    ],
)
def test_exact_numbers(name, params, macs):
    c = model_spec(name).complexity()
    assert (c.params, c.macs) == (params, macs)


def test_structure_of_the_named_variants():
    v1 = model_spec("mobilenetv1_100")
    assert v1.total_blocks == 13 and v1.head_channels == 0 and v1.num_features == 1024
    assert [s.out_channels for s in model_spec("mobilenetv1_125").stages] == [80, 160, 320, 640, 1280]
    assert model_spec("mobilenetv1_100h").head_channels == 1024
    v2 = model_spec("mobilenetv2_100")
    assert v2.total_blocks == 17 and (v2.stem_channels, v2.head_channels) == (32, 1280)
    small = model_spec("mobilenetv2_050")  # the head is never thinned below 1280
    assert (small.stem_channels, small.head_channels, small.stages[0].out_channels) == (16, 1280, 8)
    assert model_spec("mobilenetv2_140").head_channels == 1792
    d110 = model_spec("mobilenetv2_110d")  # fix_stem_head: stem, head and first/last depth kept
    assert (d110.stem_channels, d110.head_channels) == (32, 1280)
    assert [s.repeats for s in d110.stages] == [1, 3, 4, 5, 4, 4, 1]
    assert [s.repeats for s in model_spec("mobilenetv2_120d").stages] == [1, 3, 5, 6, 5, 5, 1]
    model = create_model("mobilenetv1_100")
    assert isinstance(model.stages[1][0], SeparableConv) and model.stages[1][0].depthwise.conv.stride == (2, 2)
    assert isinstance(model.stages[1][0].pointwise.act, torch.nn.ReLU6)  # V1 ends its block with an activation
    first = create_model("mobilenetv2_100").stages[0][0]
    assert isinstance(first, MBConv) and first.expand is None and not first.has_skip


@pytest.mark.parametrize("name", ["mobilenetv1_100", "mobilenetv2_100", "mobilenetv1_100h"])
def test_logits_equal_timm_after_transfer(name):
    torch.manual_seed(0)
    peer = timm.create_model(name)
    calibrate_batchnorm(peer, resolution=64)
    model = create_model(name)
    assert detect_layout(model, peer.state_dict()) == "timm"
    load_state_dict(model, peer.state_dict())
    assert_same_logits(peer, model)


def test_head_api_features_only_and_overrides():
    model = create_model("mobilenetv1_100", num_classes=7, drop_rate=0.1).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert model(x).shape == (1, 7)
        assert model.forward_features(x).shape == (1, 1024, 2, 2)
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (1, 1024)
    assert model.get_classifier().out_features == 7
    model.reset_classifier(3)
    assert model.get_classifier().out_features == 3
    backbone = create_model("mobilenetv2_100", features_only=True)
    with torch.no_grad():
        maps = backbone(x)
    assert [m.shape[1] for m in maps] == [16, 24, 32, 64, 96, 160, 320]
    assert [64 // m.shape[-1] for m in maps] == [i["reduction"] for i in backbone.feature_info]
    deep = create_model("mobilenetv2_100", drop_path_rate=0.2)
    rates = [b.drop_path.p for s in deep.stages for b in s if b.has_skip]
    assert rates and max(rates) < 0.2 and rates == sorted(rates)


def _random_stage(block: str) -> st.SearchStrategy:
    return st.builds(MobileNetStage, st.just(block), st.integers(1, 24), st.integers(1, 2), st.sampled_from([1, 2]),
                     st.sampled_from([3, 5]), st.just(1) if block == "separable" else st.sampled_from([1, 3, 6]))


@settings(max_examples=6, deadline=None)
@given(
    base=st.sampled_from([V1_STAGES, V2_STAGES]),
    depth=st.floats(0.2, 1.6),
    width=st.floats(0.1, 1.6),
    resolution=st.floats(0.15, 0.4),
    head=st.sampled_from([0, 1280]),
    fix=st.booleans(),
)
def test_complexity_equals_meta_profile_over_random_multipliers(base, depth, width, resolution, head, fix):
    """The pure-Python count used by budget solving and search must equal the meta-device profile."""
    spec = MobileNetSpec(stages=base, head_channels=head, scale_stem_head=not fix, fix_first_last_depth=fix)
    spec = spec.scaled(ScaleFactors(depth=depth, width=width, resolution_mult=resolution))
    with torch.device("meta"):
        model = create_model(spec)
    p = profile(model)
    c = spec.complexity()
    assert (c.macs, c.params, c.activations) == (p.macs, p.params, p.activations)


@settings(max_examples=6, deadline=None)
@given(stages=st.lists(st.sampled_from(["separable", "inverted"]).flatmap(_random_stage), min_size=1, max_size=4),
       resolution=st.integers(32, 71), in_chans=st.sampled_from([1, 3]), num_classes=st.integers(2, 12))
def test_complexity_equals_meta_profile_for_any_stages(stages, resolution, in_chans, num_classes):
    spec = MobileNetSpec(stages=tuple(stages), stem_channels=8, head_channels=0, resolution=resolution,
                         in_chans=in_chans, num_classes=num_classes)
    with torch.device("meta"):
        model = create_model(spec)
    p = profile(model)
    c = spec.complexity()
    assert (c.macs, c.params, c.activations) == (p.macs, p.params, p.activations)


def test_compound_scaling_of_mobilenets():
    for name in ("mobilenetv2_100", "mobilenetv1_100"):
        base, bigger = scale(name, phi=0), scale(name, phi=1)
        assert base.macs == model_spec(name).complexity().macs
        assert bigger.macs > base.macs and bigger.params > base.params
        assert bigger.spec.resolution == 258 and bigger.spec.family == "mobilenet"
    spec = scale("mobilenetv2_100", phi=1).spec
    assert [s.repeats for s in spec.stages] == [2, 3, 4, 5, 4, 4, 2]  # ceil(1.2 · L)
    assert spec.head_channels == 1408 and spec.stages[3].out_channels == 72  # round_filters(·, 1.1)


def test_cli_scale_mobilenet(capsys):
    assert main(["scale", "--base", "mobilenetv2_100", "--phi", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["family"] == "mobilenet" and data["macs"] > data["base_macs"] and data["macs_ratio"] > 1
    assert data["stages"][1]["op"] == "MBConv1" and data["stages"][-1]["name"] == "head"
    assert spec_from_dict(data["spec"]) == scale("mobilenetv2_100", phi=1).spec


def test_spec_round_trips_through_json_and_builds_identically():
    for name in ("mobilenetv1_125", "mobilenetv2_110d"):
        spec = model_spec(name)
        again = spec_from_json(spec.to_json())
        assert again == spec and isinstance(again.stages[0], MobileNetStage)
        torch.manual_seed(0)
        a = create_model(spec)
        torch.manual_seed(0)
        b = create_model(again)
        assert isinstance(b, MobileNet)
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda: MobileNetSpec(stages=()), "at least one stage"),
        (lambda: MobileNetSpec(stages=(MobileNetStage("dense", 8, 1, 1),)), "unknown block"),
        (lambda: MobileNetSpec(stages=(MobileNetStage("separable", 8, 1, 1, expand_ratio=6),)), "no expansion"),
        (lambda: MobileNetSpec(stages=(MobileNetStage("inverted", 8, 1, 3),)), "stride must be 1 or 2"),
        (lambda: MobileNetSpec(head_channels=-1), "head_channels"),
        (lambda: MobileNetSpec(activation="gelu"), "unknown activation"),
        (lambda: spec_from_dict({"family": "mobilenet", "resolution": 224, "width": 2}), "unknown field"),
    ],
)
def test_bad_input_is_a_user_error(make, fragment):
    with pytest.raises(UserError, match=fragment):
        make()


_V2 = model_spec("mobilenetv2_100").as_dict()


def _v2_with(stage: dict | None = None, **fields) -> dict:
    data = json.loads(json.dumps(_V2))
    data["stages"][1].update(stage or {})
    return {**data, **fields}


@pytest.mark.parametrize(
    "data, fragment",
    [
        (_v2_with({"repeats": 10**9}), "repeats must be an integer from 1 to 2,000"),
        (_v2_with({"out_channels": 10**8}), "out_channels must be an integer from 1 to 1,048,576"),
        (_v2_with(stem_channels=10**8), "stem_channels must be an integer from 1 to 1,048,576"),
        (_v2_with(head_channels=10**8), "head_channels must be an integer from 0 to 1,048,576"),
        (_v2_with({"expand_ratio": 10**6}), "expand_ratio must be an integer from 1 to 256"),
        (_v2_with({"out_channels": 200_000, "expand_ratio": 6}), "too wide"),
        (_v2_with({"kernel": 4}), "kernel must be odd"),
        (_v2_with({"repeats": True}), "repeats must be an integer"),
        (_v2_with({"out_channels": 2.5}), "out_channels must be an integer"),
        (_v2_with({"block": "dense"}), "unknown block 'dense'"),
        (_v2_with(dropout=float("nan")), "dropout must be a finite number"),
        (_v2_with(resolution=10**9), "resolution must be at most"),
        (_v2_with(num_classes=0), "num_classes must be an integer"),
        (_v2_with(scale_stem_head="yes"), "scale_stem_head must be true or false"),
        ({**_V2, "stages": [{**_V2["stages"][1], "repeats": 1500}] * 2}, "too deep"),
        ({**_V2, "stages": "abc"}, "stages must be a list"),
    ],
)
def test_every_field_is_checked_like_the_other_families(data, fragment):
    """A MobileNet spec (from a file, weights' metadata or the API) gets the shared field checks
    (compscale.specs.checks): 10⁹ repeats or 10⁸ channels are refused in one line, before anything is built."""
    with pytest.raises(UserError, match=fragment) as err:
        spec_from_dict(data)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("field, value, fragment", [
    ("repeats", 10**9, "repeats must be an integer from 1 to 2,000"),
    ("out_channels", 10**8, "out_channels must be an integer from 1 to 1,048,576"),
])
def test_cli_refuses_a_huge_mobilenet_spec_file_in_one_line(tmp_path, capsys, field, value, fragment):
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(_v2_with({field: value})))
    assert main(["profile", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err


def test_width_multiplier_too_wide_is_refused():
    with pytest.raises(UserError, match="must be an integer from 1 to 1,048,576|too wide|at most"):
        MobileNetSpec().scaled(ScaleFactors(width=1e5))
