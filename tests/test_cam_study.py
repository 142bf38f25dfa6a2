"""cam-study: equal-cost models (realized MACs checked against the profiler), the localisation scores on
analytic maps, and the whole study end to end in its --quick configuration (files, ranges, resume)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from compscale.analysis.cam_study import (
    CAM_BASE,
    MODEL_NAMES,
    QUICK,
    CamStudyConfig,
    localisation_scores,
    object_masks,
    run_cam_study,
    study_models,
)
from compscale.cli import main
from compscale.models import build_model
from compscale.profiler import profile


def test_localisation_scores_on_analytic_maps():
    masks = np.zeros((4, 8, 8), dtype=bool)
    masks[:, 2:6, 2:6] = True  # a 4×4 object: a quarter of the image
    maps = np.zeros((4, 8, 8))
    maps[0] = masks[0]  # all the mass on the object
    maps[1] = 1.0  # spread evenly: the share is the object's area
    maps[2, 0, 0] = 1.0  # all the mass in a background corner
    maps[3] = 0.0  # flat after normalisation: area share, and no peak to point with
    energy, hits = localisation_scores(maps, masks)
    np.testing.assert_allclose(energy, [1.0, 0.25, 0.0, 0.25])
    # A tie (map 1) points at its first maximum, pixel (0, 0), which is background here.
    np.testing.assert_array_equal(hits, [1.0, 0.0, 0.0, 0.0])


def test_object_masks_follow_bright_pixels():
    images = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    images[0, 0, 2:6, 2:6] = 255
    mask = object_masks(images, 16, threshold=0.5)[0]
    assert mask.shape == (16, 16)
    assert mask[4:12, 4:12].all() and not mask[:3].any() and not mask[:, :3].any()
    assert mask.sum() == 64  # the 4×4 square at 2× scale, bilinear boundary at exactly the half-way value


def test_models_match_the_compound_cost_and_change_one_dimension_each():
    models = {m.name: m for m in study_models(CAM_BASE, phi=2.0)}
    assert tuple(models) == MODEL_NAMES
    target = models["compound"].macs
    base_stages = CAM_BASE.stages
    for m in models.values():
        with torch.device("meta"):
            net = build_model(m.spec)
        p = profile(net, m.spec.resolution)
        assert (p.macs, p.params) == (m.macs, m.params)  # the reported cost is the built model's
        assert m.target_macs == target and m.deviation == pytest.approx(m.macs / target - 1)
    for name in ("deeper", "wider", "higher-res"):
        assert abs(models[name].deviation) < 0.10, (name, models[name].deviation)
    # Compound at φ = 2 is the paper's Table 7 compound model (d 1.44, w 1.21, r 1.32), about 4.5x the baseline.
    c = models["compound"]
    assert (c.depth, c.width, c.resolution_mult) == pytest.approx((1.2**2, 1.1**2, 1.15**2))
    assert c.spec.resolution == 42 and 4.0 < c.macs / models["baseline"].macs < 5.0
    deeper, wider, res = models["deeper"].spec, models["wider"].spec, models["higher-res"].spec
    assert deeper.resolution == 32 and [s.out_channels for s in deeper.stages] == [s.out_channels for s in base_stages]
    assert sum(s.repeats for s in deeper.stages) > sum(s.repeats for s in base_stages)
    assert wider.resolution == 32 and [s.repeats for s in wider.stages] == [s.repeats for s in base_stages]
    assert wider.head_channels > CAM_BASE.head_channels
    assert res.stages == base_stages and res.resolution > 60


def test_quick_study_writes_figure_and_scores_and_resumes(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["cam-study", "--quick", "--out", str(out), "--threads", "1", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    for name in ("cam_study.json", "cam_figure.png", "cam_scores.png", "section.md"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for png in ("cam_figure.png", "cam_scores.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((out / "cam_study.json").read_text())
    assert printed["summary"] == result["summary"]
    assert len(result["runs"]) == 5 * len(QUICK["seeds"]) and result["images"] == QUICK["images"]
    for run in result["runs"]:
        assert 0 <= run["energy"] <= 1 and 0 <= run["pointing"] <= 1 and 0 <= run["top1"] <= 1
        assert run["epochs"] == 1
    for row in result["summary"]:
        assert row["seeds"] == 2 and row["energy_std"] is not None
        for key in ("top1", "scored_top1", "energy", "pointing"):
            assert 0 <= row[f"{key}_mean"] <= 1
    # The deviation is reported, not assumed: recomputed from the realized MACs, and small.
    devs = [m["macs"] / m["target_macs"] - 1 for m in result["models"][1:]]
    assert result["max_abs_deviation"] == pytest.approx(max(abs(d) for d in devs))
    assert result["max_abs_deviation"] < 0.15
    assert 0 < result["chance"]["mask_area"] < 1
    section = (out / "section.md").read_text()
    assert all(f"| {name} |" in section for name in MODEL_NAMES) and "cam_figure.png" in section

    # Re-running reuses the trained weights: nothing is trained again, and the scores are the same.
    metrics = out / "runs" / "seed0" / "compound" / "metrics.jsonl"
    before = (metrics.stat().st_mtime_ns, metrics.read_text())
    again = run_cam_study(CamStudyConfig(**{**QUICK, "seeds": (0,)}, out=str(out), threads=1))
    assert (metrics.stat().st_mtime_ns, metrics.read_text()) == before
    first = {r["model"]: r for r in result["runs"] if r["seed"] == 0}
    for run in again["runs"]:
        assert run["top1"] == first[run["model"]]["top1"]
        assert run["energy"] == pytest.approx(first[run["model"]]["energy"], abs=1e-6)


@pytest.mark.parametrize("argv, match", [
    (["--seeds", "0,0"], "repeats a seed"),
    (["--threshold", "1.5"], "--threshold"),
    (["--method", "saliency"], "invalid choice"),
    (["--phi", "0"], "--phi must be positive"),
])
def test_bad_options_are_one_line_errors(capsys, tmp_path, argv, match):
    rc = main(["cam-study", "--quick", "--out", str(tmp_path / "x"), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and match in err, err


def test_batched_cam_equals_the_one_image_cam():
    from compscale.analysis.cam import activation_map
    from compscale.analysis.cam_study import batched_cam
    from conftest import calibrate_batchnorm

    torch.manual_seed(0)
    model = build_model(CAM_BASE.replace(in_chans=3))  # calibrate_batchnorm feeds RGB batches
    calibrate_batchnorm(model, resolution=32)
    model.eval()
    x = torch.randn(7, 3, 32, 32)
    labels = torch.tensor([0, 3, 9, 1, 1, 5, 7])
    maps, preds = batched_cam(model, x, labels, batch=3)
    for i in range(len(x)):
        one = activation_map(model, x[i : i + 1], int(labels[i]), "cam")
        assert one.map.max() == pytest.approx(1.0) and one.map.min() == pytest.approx(0.0)
        np.testing.assert_allclose(maps[i], one.map, atol=1e-5)
        assert preds[i] == int(one.logits.argmax())


def test_recalibrated_batchnorm_holds_the_exact_training_statistics():
    from compscale.analysis.cam_study import recalibrate_on_images
    from compscale.data import BatchPreparer, load_dataset

    torch.manual_seed(0)
    model = build_model(CAM_BASE)
    bundle = load_dataset("digits", 32, "none", limit_train=250)
    images = bundle.train.images
    recalibrate_on_images(model, images, bundle, 32, batch=100)  # three batches of unequal size
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not model.training and all(m.momentum == 0.1 and not m.training for m in norms)
    x = BatchPreparer(bundle, 32, 1, torch.device("cpu"))(images)
    conv, bn = model.stem.conv, model.stem.bn
    with torch.no_grad():
        y = conv(x)
    torch.testing.assert_close(bn.running_mean, y.mean((0, 2, 3)), rtol=1e-4, atol=1e-6)
    # The variance: each batch's (unbiased) variance, weighted by the batch's size.
    sizes = (100, 100, 50)
    per_batch = [c.transpose(0, 1).reshape(c.shape[1], -1).var(1) for c in y.split(100)]
    expected = sum(n * v for n, v in zip(sizes, per_batch)) / sum(sizes)
    torch.testing.assert_close(bn.running_var, expected, rtol=1e-4, atol=1e-6)
