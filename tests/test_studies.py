"""The seed's second question as studies: tiny ResNeXt / Inception-ResNet members, cardinality vs depth vs
width at equal cost, and the families at matched cost levels — run in their --quick forms on digits."""

from __future__ import annotations

import json
import time

import pytest
import torch

from compscale.cli import main
from compscale.compound import realized_cost
from compscale.errors import UserError
from compscale.models import create_model, model_spec
from compscale.specs import spec_from_dict

PNG = b"\x89PNG\r\n\x1a\n"


def test_tiny_members_build_through_their_specs_at_32px():
    for name, macs, params in (("resnext_tiny", 7_423_232, 41_786), ("inception_resnet_tiny", 3_492_672, 62_322)):
        spec = model_spec(name).replace(in_chans=1, num_classes=10)
        assert spec.resolution == 32 and spec.stem_type == "cifar"
        assert spec_from_dict(json.loads(spec.to_json())) == spec
        cost = realized_cost(spec)
        assert (cost.macs, cost.params) == (macs, params), name
        model = create_model(spec).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    # The CIFAR stem keeps ResNeXt's 32 px (stage maps 32, 16, 8); the ImageNet stem would start at 8.
    feats = create_model(model_spec("resnext_tiny").replace(in_chans=1), features_only=True)
    assert [f.shape[-1] for f in feats(torch.randn(1, 1, 32, 32))] == [32, 16, 8]


def test_stem_type_is_checked_and_defaults_keep_the_imagenet_networks():
    assert model_spec("resnext50_32x4d").stem_type == "imagenet"
    assert model_spec("inception_resnet_v2").stem_type == "imagenet"
    with pytest.raises(UserError, match="stem_type"):
        model_spec("resnext_tiny").replace(stem_type="tiny")
    with pytest.raises(UserError, match=">= 13"):
        model_spec("inception_resnet_tiny").replace(resolution=12)
    with pytest.raises(UserError, match=">= 75"):
        model_spec("inception_resnet_v2").replace(resolution=64)


def _run(args, capsys):
    t0 = time.perf_counter()
    rc = main(args)
    captured = capsys.readouterr()
    return rc, captured, time.perf_counter() - t0


@pytest.fixture(scope="module")
def quick_cardinality(tmp_path_factory):
    out = tmp_path_factory.mktemp("cardinality")
    t0 = time.perf_counter()
    rc = main(["study", "cardinality", "--quick", "--threads", "1", "--out", str(out)])
    return rc, out, time.perf_counter() - t0


@pytest.fixture(scope="module")
def quick_families(tmp_path_factory):
    out = tmp_path_factory.mktemp("families")
    t0 = time.perf_counter()
    rc = main(["study", "families", "--quick", "--threads", "1", "--out", str(out)])
    return rc, out, time.perf_counter() - t0


def _check_model_rows(models):
    for m in models:
        spec = spec_from_dict(m["spec"])
        assert (spec.in_chans, spec.num_classes, spec.resolution) == (1, 10, 32)  # the models trained on digits
        cost = realized_cost(spec)
        assert m["macs"] == cost.macs and m["params"] == cost.params  # realized, not nominal
        assert m["activations"] == cost.activations > 0
        # The study's JSON in the one vocabulary: top-1 over seeds as flat keys, fractions.
        assert m["seeds"] == 2 and len(m["top1_per_seed"]) == 2
        assert all(0.0 <= v <= 1.0 for v in m["top1_per_seed"])
        assert m["top1_min"] <= m["top1_mean"] <= m["top1_max"] and m["top1_std"] >= 0


def test_quick_cardinality_study(quick_cardinality):
    rc, out, seconds = quick_cardinality
    assert rc == 0
    payload = json.loads((out / "cardinality.json").read_text())
    assert (out / "cardinality.png").read_bytes()[:8] == PNG
    assert "| cardinality |" in (out / "section.md").read_text()
    models = {m["dimension"]: m for m in payload["models"]}
    assert list(models) == ["baseline", "cardinality", "width", "depth"]
    _check_model_rows(payload["models"])
    base = models["baseline"]
    assert payload["target_macs"] == round(2 * base["macs"])
    for dim in ("cardinality", "width", "depth"):
        m = models[dim]
        assert abs(m["macs"] / payload["target_macs"] - 1) <= 0.10, m  # matched cost, measured
        assert m["within_tolerance"] and m["macs"] > base["macs"] * 1.5  # every variant costs more than the base
    # Each variant spends the budget on its own dimension only.
    c, w, d = models["cardinality"], models["width"], models["depth"]
    assert c["cardinality"] > base["cardinality"] and c["base_width"] == base["base_width"]
    assert c["layers"] == base["layers"]
    assert w["cardinality"] == base["cardinality"] and w["base_width"] > base["base_width"]
    assert w["layers"] == base["layers"]
    assert (d["cardinality"], d["base_width"]) == (base["cardinality"], base["base_width"])
    assert sum(d["layers"]) > sum(base["layers"])
    assert sorted(payload["ranking"]) == ["cardinality", "depth", "width"]
    assert payload["all_within_tolerance"] is True
    # The winner's lead read as the demo reads its gaps: paired by seed, a 95% Student-t interval.
    lead = payload["winner_paired"]
    first, second = (models[d] for d in payload["ranking"][:2])
    assert lead["pairs"] == 2 and lead["gap"] == pytest.approx(first["top1_mean"] - second["top1_mean"])
    assert lead["gap_low"] <= lead["gap"] <= lead["gap_high"]
    assert payload["winner_separated"] == (lead["outcome"] == "won")
    section = (out / "section.md").read_text()
    assert "paired 95% interval" in section and "mean ± std bands" not in section


def test_rerun_resumes_the_finished_study(quick_cardinality, capsys):
    rc, out, first_seconds = quick_cardinality
    before = json.loads((out / "cardinality.json").read_text())
    rc, captured, seconds = _run(["study", "cardinality", "--quick", "--threads", "1", "--out", str(out)], capsys)
    assert rc == 0 and "4 jobs, 4 already done" in captured.err  # 4 models, their 2 seeds packed
    after = json.loads((out / "cardinality.json").read_text())
    assert [m["top1_per_seed"] for m in after["models"]] == [m["top1_per_seed"] for m in before["models"]]
    # A different setting in the same study folder is refused in one line.
    rc, captured, _ = _run(["study", "cardinality", "--quick", "--epochs", "2", "--out", str(out)], capsys)
    assert rc == 2 and "other settings" in captured.err and len(captured.err.strip().splitlines()) == 1


def test_quick_families_study(quick_families):
    rc, out, seconds = quick_families
    assert rc == 0
    payload = json.loads((out / "families.json").read_text())
    assert (out / "families.png").read_bytes()[:8] == PNG
    assert "Inception-ResNet" in (out / "section.md").read_text()
    _check_model_rows(payload["models"])
    families = {m["family"] for m in payload["models"]}
    assert families == {"resnext", "inception_resnet", "efficientnet"}
    assert payload["levels"] == [1.0, 2.0]
    for m in payload["models"]:
        assert abs(m["deviation"]) <= 0.10 and m["within_tolerance"], m
        assert m["target_macs"] == round(m["level"] * payload["reference_macs"])
        assert m["latency_ms"] > 0
    for family in families:
        rows = sorted((m for m in payload["models"] if m["family"] == family), key=lambda m: m["level"])
        assert rows[0]["macs"] < rows[1]["macs"]  # cost grows with the level in every family
    assert [c["level"] for c in payload["comparison"]] == [1.0, 2.0]
    for c in payload["comparison"]:
        assert c["paired"]["pairs"] == 2 and c["paired"]["gap"] == pytest.approx(c["resnext_minus_inception"])
        assert c["separated"] == (c["paired"]["outcome"] in ("won", "lost"))
    assert "paired 95% interval" in (out / "section.md").read_text()


def test_paired_reading_pairs_seed_k_with_seed_k():
    from compscale.studies.common import band, paired

    a = band([0.80, 0.70, 0.90], [2, 0, 1])  # seeds listed out of order
    b = band([0.69, 0.885, 0.79], [0, 1, 2])
    gap = paired(a, b)
    assert gap.n == 3 and gap.mean == pytest.approx((0.01 + 0.015 + 0.01) / 3) and gap.verdict == "won"
    assert paired(band([0.8]), band([0.7])).verdict == "no noise estimate"
    with pytest.raises(UserError, match="share no seed"):
        paired(band([0.8], [0]), band([0.7], [1]))


@pytest.mark.parametrize("args, message", [
    (["study", "nope"], "invalid choice"),
    (["study", "cardinality", "--quick", "--seeds", "0"], "--seeds"),
    (["study", "families", "--data", "no-such-dataset"], "no-such-dataset"),
    (["study", "cardinality"], "--data"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys, tmp_path):
    if "--out" not in args and len(args) > 2:
        args = [*args, "--out", str(tmp_path / "o")]
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1, err
