"""ResNet / ResNeXt: exact counts against timm, logits equal to timm's and torchvision's after weight transfer,
the two forms of the aggregated transformation, and compound scaling (with cardinality) of the family."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from compscale import CompoundScaling, create_model, load_state_dict, model_spec, profile, scale, scale_to_budget
from compscale.cli import main
from compscale.compound import realized_cost
from compscale.errors import UserError
from compscale.models.resnet import (
    RESNETS,
    Bottleneck,
    PathsBottleneck,
    ResNet,
    convert_aggregation,
    to_aggregation,
)
from compscale.models.weights import detect_layout
from compscale.specs import ResNetSpec, ResNetStage, resnet_spec, spec_from_dict, spec_from_json
from conftest import assert_same_logits, calibrate_batchnorm, timm_counts


@pytest.mark.parametrize("name", list(RESNETS))
def test_params_equal_timm_and_macs_within_one_percent(name):
    ours = profile(name)
    params, macs = timm_counts(name, ours.resolution)
    assert ours.params == params
    assert ours.macs == pytest.approx(macs, rel=0.01)


@pytest.mark.parametrize(
    "name, resolution, params, macs",
    [
        ("resnet50", 224, 25_557_032, 4_089_184_256),  # 25.56M / 4.09G
        ("resnet152", 224, 60_192_808, 11_513_626_624),  # 60.19M / 11.5G
        ("resnext50_32x4d", 224, 25_028_904, 4_230_479_872),
        ("resnext101_64x4d", 224, 83_455_272, 15_460_270_080),
        ("resnext101_64x4d", 320, 83_455_272, 31_549_440_000),  # the seed table's ResNeXt-101 row: 84M / 32B
    ],
)
def test_exact_numbers(name, resolution, params, macs):
    p = profile(name, resolution)
    assert (p.params, p.macs) == (params, macs)


def test_resnext_width_rule_and_stride_in_the_3x3():
    model = create_model("resnext101_32x8d")
    first = model.stages[1][0]
    # bottleneck width = floor(planes * base_width / 64) * C = floor(128 * 8 / 64) * 32 = 512
    assert first.transform.conv.out_channels == 512 and first.transform.conv.groups == 32
    assert first.transform.conv.stride == (2, 2) and first.reduce.conv.stride == (1, 1)  # V1.5
    spec = model_spec("resnext50_32x4d")
    assert [spec.bottleneck_width(s) for s in spec.stages] == [128, 256, 512, 1024]
    assert [spec.group_width(s) for s in spec.stages] == [4, 8, 16, 32]
    assert [spec.out_channels(s) for s in spec.stages] == [256, 512, 1024, 2048]


PEERS = [
    ("resnet50", lambda: timm.create_model("resnet50"), "timm"),
    ("resnext50_32x4d", lambda: timm.create_model("resnext50_32x4d"), "timm"),
    ("resnext50_32x4d", lambda: torchvision.models.resnext50_32x4d(), "torchvision"),
]


@pytest.mark.parametrize("ours, make_peer, layout", PEERS, ids=[f"{p[0]}-{p[2]}" for p in PEERS])
def test_logits_equal_peer_after_transfer(ours, make_peer, layout):
    torch.manual_seed(0)
    peer = make_peer()
    calibrate_batchnorm(peer, resolution=64)
    model = create_model(ours)
    assert detect_layout(model, peer.state_dict()) in ("timm", "torchvision")  # the two name tensors alike
    load_state_dict(model, peer.state_dict(), layout)
    assert_same_logits(peer, model)


def _randomise_bn(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.mark.parametrize("cardinality, group_width", [(1, 16), (4, 8), (32, 4)])
def test_explicit_paths_equal_grouped_conv_after_conversion(cardinality, group_width):
    """F(x) = Σ_i T_i(x) with C explicit paths is the grouped-conv block, in eval and in train mode."""
    torch.manual_seed(cardinality)
    grouped = Bottleneck(64, 128, group_width, cardinality, stride=2)
    _randomise_bn(grouped, cardinality)
    paths = convert_aggregation(grouped, PathsBottleneck(64, 128, group_width, cardinality, stride=2))
    assert len(paths.paths) == cardinality
    assert sum(p.numel() for p in paths.parameters()) == sum(p.numel() for p in grouped.parameters())
    # and back: paths → grouped only slices and concatenates, so the round trip is bit-exact
    back = convert_aggregation(paths, Bottleneck(64, 128, group_width, cardinality, stride=2))
    assert all(torch.equal(v, grouped.state_dict()[k]) for k, v in back.state_dict().items())
    x = torch.randn(2, 64, 15, 15)
    for train in (False, True):  # train mode normalises with batch statistics: still the same function
        grouped.train(train), paths.train(train)
        with torch.no_grad():
            a, b = grouped(x), paths(x)
        assert a.abs().max().item() > 0.1
        assert (a - b).abs().max().item() <= 1e-5 * a.abs().max().item()


def test_whole_model_in_the_paths_form():
    spec = resnet_spec((1, 2, 1, 1), cardinality=4, base_width=4, resolution=32, num_classes=5)
    torch.manual_seed(0)
    grouped = create_model(spec)
    calibrate_batchnorm(grouped, resolution=32)
    paths = to_aggregation(grouped, "paths")
    assert paths.spec.aggregation == "paths" and isinstance(paths.stages[1][1], PathsBottleneck)
    assert profile(paths).macs == profile(grouped).macs and profile(paths).params == profile(grouped).params
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        a, b = grouped(x), paths(x)
    assert a.abs().max().item() > 0.1 and (a - b).abs().max().item() <= 1e-5 * a.abs().max().item()
    with torch.no_grad():
        assert torch.equal(to_aggregation(paths, "grouped")(x), a)
    # A peer's grouped weights do not fit the paths form by name: one clear error, not a shape crash.
    with pytest.raises(UserError, match="missing key"):
        load_state_dict(create_model(spec.replace(aggregation="paths")), grouped.state_dict(), "timm")


def test_features_only_and_overrides():
    model = create_model("resnet50", features_only=True).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 64, 64))
    assert [m.shape[1] for m in maps] == [256, 512, 1024, 2048]
    assert [64 // m.shape[-1] for m in maps] == [4, 8, 16, 32]
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
    assert not hasattr(model, "classifier")
    model = create_model("resnext50_32x4d", num_classes=7, in_chans=1, drop_rate=0.1, drop_path_rate=0.2)
    assert model.classifier.out_features == 7 and model.stem.conv.in_channels == 1 and model.dropout.p == 0.1
    assert model.stages[3][2].drop_path.p == pytest.approx(0.2 * 15 / 16)
    with torch.no_grad():
        assert model.eval().forward_features(torch.randn(1, 1, 64, 64)).shape == (1, 2048, 2, 2)
    # zero_init_last: every block starts as the identity on its residual branch
    assert all(not b.expand.bn.weight.detach().any() for s in model.stages for b in s)


def test_any_layers_cardinality_and_width_through_the_spec():
    spec = resnet_spec((2, 2, 2, 2), cardinality=8, base_width=16, resolution=48, num_classes=3)
    model = create_model(spec).eval()
    assert isinstance(model, ResNet) and model.stages[0][0].transform.conv.groups == 8
    assert model.stages[0][0].transform.conv.out_channels == 16 * 8  # floor(64 * 16 / 64) * 8
    with torch.no_grad():
        assert model(torch.randn(2, 3, 48, 48)).shape == (2, 3)


def test_spec_round_trips_through_json():
    for spec in (model_spec("resnext101_64x4d"), scale("resnet50", 1.0).spec,
                 resnet_spec((1, 1, 1, 1), 4, 4, aggregation="paths", resolution=40)):
        assert spec_from_json(spec.to_json()) == spec
        assert spec_from_dict(json.loads(json.dumps(spec.as_dict()))) == spec
    assert spec_from_json(model_spec("resnet50").to_json()).stages[2] == ResNetStage(6, 256, 2)


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda: resnet_spec((3, 4, 6, 3), cardinality=0), "cardinality must be a positive integer"),
        (lambda: resnet_spec((3, 4, 6, 3), base_width=0), "base_width must be a positive integer"),
        (lambda: ResNetSpec(stages=(ResNetStage(1, 8, 1),), base_width=4), "group width of 0"),  # floor(8·4/64)
        (lambda: resnet_spec((3, 4, 6)), "give 4 stage depths"),
        (lambda: resnet_spec((3, 0, 6, 3)), "stage repeats must be a positive integer"),
        (lambda: resnet_spec((3, 4, 6, 3), aggregation="sum"), "unknown aggregation"),
        (lambda: ResNetSpec(resolution=16), "resolution must be an integer >= 32"),
        (lambda: create_model("resnext9000"), "unknown model"),
        (lambda: spec_from_dict({**model_spec("resnet50").as_dict(), "cardinality": -1}), "cardinality"),
        (lambda: convert_aggregation(Bottleneck(8, 32, 4, 2), PathsBottleneck(8, 32, 4, 4)), "blocks differ"),
        (lambda: CompoundScaling(delta=0.5), "delta must be >= 1"),
        (lambda: CompoundScaling(delta=1.5), r"alpha\*beta\^2\*gamma\^2\*delta = 2.88"),
    ],
)
def test_bad_input_is_a_user_error(make, fragment):
    with pytest.raises(UserError, match=fragment):
        make()


def test_compound_scaling_of_resnet50_reports_the_realized_ratio():
    s = scale("resnet50", 1.0)  # the paper's α=1.2, β=1.1, γ=1.15
    assert s.spec.layers == (4, 5, 8, 4)  # ceil(1.2 · (3, 4, 6, 3))
    assert [st.planes for st in s.spec.stages] == [72, 144, 280, 560] and s.spec.stem_channels == 72
    assert s.spec.resolution == 258
    # Measured: 9,237,659,800 / 4,089,184,256 = 2.259x, not the nominal 1.2·1.1²·1.15² = 1.920x (nor 2x):
    # ceil rounds 16 blocks up to 21 (depth x1.31 instead of x1.2).
    assert s.macs == 9_237_659_800 and s.params == 38_932_304
    assert s.macs_ratio == pytest.approx(2.259, abs=0.001)
    assert s.scaling.nominal_flops_ratio(1.0) == pytest.approx(1.920, abs=0.001)


def test_cardinality_is_a_fourth_dimension_linear_in_flops():
    """At a fixed group width, doubling C doubles the multiply-adds of every bottleneck convolution exactly;
    the stem, the projection shortcuts and the classifier do not grow, so the whole net grows less."""
    base = model_spec("resnext50_32x4d")
    doubled = scale(base, 1.0, CompoundScaling(alpha=1, beta=1, gamma=1, delta=2.0))
    assert doubled.spec.cardinality == 64 and doubled.factors.cardinality == 2.0
    assert [doubled.spec.group_width(s) for s in doubled.spec.stages] == [4, 8, 16, 32]  # d kept

    def bottleneck_macs(spec):
        with torch.device("meta"):
            layers = profile(create_model(spec), per_layer=True).layers
        parts = (".reduce.", ".transform.", ".expand.")
        return sum(layer.macs for layer in layers if any(p in layer.name for p in parts))

    assert bottleneck_macs(doubled.spec) == 2 * bottleneck_macs(base)
    assert doubled.macs_ratio == pytest.approx(1.887, abs=0.001)  # measured: the fixed parts dilute it
    four_d = scale(base, 1.0, CompoundScaling(alpha=1.1, beta=1.05, gamma=1.1, delta=1.35))
    assert four_d.spec.cardinality == 43 and four_d.spec.layers == (4, 5, 7, 4) and four_d.spec.resolution == 246
    assert four_d.scaling.flops_factor == pytest.approx(1.981, abs=0.001)
    assert four_d.macs_ratio == pytest.approx(2.160, abs=0.001)  # measured realized ratio


def test_budget_solving_on_a_resnext():
    small = resnet_spec((1, 1, 2, 1), cardinality=8, base_width=4, resolution=64)
    result = scale_to_budget(small, target_macs=3e8, target_params=8e6)
    assert result.macs <= 3e8 and result.params <= 8e6
    nxt = scale(small, result.phi + 1e-3)
    assert nxt.macs > 3e8 or nxt.params > 8e6
    assert result.phi > 0 and result.spec.layers != small.layers


def test_cli_scale_resnet_bases(capsys):
    assert main(["scale", "--base", "resnet50", "--phi", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["macs_ratio"] == pytest.approx(2.259, abs=0.001) and data["delta"] == 1.0
    assert [r["repeats"] for r in data["stages"][1:]] == [4, 5, 8, 4]
    argv = ["scale", "--base", "resnext50_32x4d", "--alpha", "1.1", "--beta", "1.05", "--gamma", "1.1",
            "--delta", "1.35", "--phi", "1", "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["delta"] == 1.35 and data["spec"]["cardinality"] == 43
    assert main(["scale", "--base", "resnext50_32x4d", "--target-macs", "6G"]) == 0
    out = capsys.readouterr().out
    assert "bottleneck 32x" in out and "realized" in out
    assert main(["scale", "--base", "efficientnet_b0", "--delta", "1.04", "--phi", "1"]) == 2
    assert "efficientnet models have none" in capsys.readouterr().err


@settings(max_examples=12, deadline=None)
@given(st.floats(-3, 4), st.floats(0.0, 1.5))
def test_realized_cost_monotone_in_phi_with_cardinality(phi, step):
    """The budget solver bisects on φ, so the realized cost must never drop as φ grows — with every
    rounding in play (ceil repeats, round_filters, floor of the group width, nearest cardinality)."""
    tiny = resnet_spec((1, 1, 2, 1), cardinality=4, base_width=4, resolution=48)
    rule = CompoundScaling(alpha=1.1, beta=1.05, gamma=1.1, delta=1.35)
    low = realized_cost(tiny.scaled(rule.factors(phi)))
    high = realized_cost(tiny.scaled(rule.factors(phi + step)))
    assert low.macs <= high.macs and low.params <= high.params
