"""The training engine: TF RMSProp, EMA, schedule, a real run that learns, transfer learning, evaluation."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch

from compscale.errors import UserError
from compscale.train.config import TrainConfig
from compscale.train.ema import ModelEma
from compscale.train.optim import RMSpropTF, lr_factor
from conftest import tiny_spec_file


def test_rmsprop_tf_follows_the_tf_update_rule():
    p = torch.nn.Parameter(torch.tensor([1.0]))
    opt = RMSpropTF([p], lr=0.1, alpha=0.9, eps=1e-3, momentum=0.9)
    p.grad = torch.tensor([1.0])
    opt.step()
    # ms = 0.9·1 + 0.1·1² = 1 (ms starts at 1); m = 0.1·1/√(1 + 1e-3); θ = 1 − m
    assert p.item() == pytest.approx(1 - 0.1 / math.sqrt(1.001), abs=1e-7)
    p.grad = torch.tensor([2.0])
    opt.step()
    ms = 0.9 * 1 + 0.1 * 4
    m = 0.9 * (0.1 / math.sqrt(1.001)) + 0.1 * 2 / math.sqrt(ms + 1e-3)
    assert p.item() == pytest.approx(1 - 0.1 / math.sqrt(1.001) - m, abs=1e-6)


def test_rmsprop_tf_equals_timm_and_not_torch():
    timm_optim = pytest.importorskip("timm.optim")
    torch.manual_seed(0)
    ours = [torch.randn(4, 3, requires_grad=True) for _ in range(3)]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    plain = [p.detach().clone().requires_grad_() for p in ours]
    a = RMSpropTF(ours, lr=0.01, weight_decay=1e-2)
    b = timm_optim.RMSpropTF(theirs, lr=0.01, alpha=0.9, eps=1e-3, momentum=0.9, weight_decay=1e-2)
    c = torch.optim.RMSprop(plain, lr=0.01, alpha=0.9, eps=1e-3, momentum=0.9, weight_decay=1e-2)
    for _ in range(10):
        grads = [torch.randn(4, 3) for _ in ours]
        for group, opt in ((ours, a), (theirs, b), (plain, c)):
            for p, g in zip(group, grads):
                p.grad = g.clone()
            opt.step()
    assert max((x - y).abs().max().item() for x, y in zip(ours, theirs)) < 1e-6
    assert max((x - y).abs().max().item() for x, y in zip(ours, plain)) > 1e-2


def test_ema_uses_tf_warmup_then_the_decay():
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = ModelEma(model, decay=0.9)
    model.weight.data.fill_(1.0)
    ema.update(model)  # d = min(0.9, 1/10) = 0.1 → 0.1·0 + 0.9·1
    assert ema.module.weight[0, 0].item() == pytest.approx(0.9)
    for _ in range(20):
        ema.update(model)
    model.weight.data.fill_(2.0)
    ema.update(model)  # d = min(0.9, 22/31) = 0.71 ...
    n = 21
    d = min(0.9, (1 + n) / (10 + n))
    assert ema.module.weight[0, 0].item() == pytest.approx(d * 1.0 + (1 - d) * 2.0, rel=1e-5)


def test_schedule_warmup_and_paper_step_decay():
    cfg = TrainConfig(epochs=10, warmup_epochs=1, schedule="step")
    assert lr_factor(0, 100, cfg) == pytest.approx(0.01)
    assert lr_factor(99, 100, cfg) == pytest.approx(1.0)
    assert lr_factor(239, 100, cfg) == 1.0 and lr_factor(240, 100, cfg) == pytest.approx(0.97)
    assert lr_factor(500, 100, cfg) == pytest.approx(0.97**2)
    cos = TrainConfig(epochs=10, warmup_epochs=0, schedule="cosine")
    assert lr_factor(0, 100, cos) == 1.0 and lr_factor(500, 100, cos) == pytest.approx(0.5)
    assert lr_factor(1000, 100, cos) == pytest.approx(0.0, abs=1e-12)


def test_config_rejects_bad_values():
    from compscale.train.config import config_from_mapping

    with pytest.raises(UserError, match="unknown key 'epoch'.*'epochs'"):
        config_from_mapping({"epoch": 3})
    with pytest.raises(UserError, match="'epochs' must be int"):
        config_from_mapping({"epochs": "three"})
    with pytest.raises(UserError, match="unknown optimizer"):
        TrainConfig(optimizer="lamb").validate()
    assert config_from_mapping({"weight_decay": "1e-5"}).weight_decay == 1e-5  # PyYAML reads 1e-5 as a string


@pytest.fixture(scope="module")
def trained_digits(tmp_path_factory):
    """The acceptance run: the tiny model, the paper's optimizer, 6 epochs of digits, one thread."""
    from compscale.train.loop import train

    tmp = tmp_path_factory.mktemp("digits")
    cfg = TrainConfig(model=tiny_spec_file(tmp / "tiny.json"), data="digits", out=str(tmp / "run"), epochs=6,
                      batch_size=32, optimizer="rmsproptf", lr=0.016, threads=1, seed=0)
    t0 = time.perf_counter()
    result = train(cfg)
    return cfg, result, time.perf_counter() - t0


def test_tiny_model_learns_digits_in_under_a_minute(trained_digits):
    cfg, result, seconds = trained_digits
    assert result["top1"] >= 0.90, result
    assert seconds < 60
    assert result["epochs"] == 6
    out = __import__("pathlib").Path(cfg.out)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 7))
    assert records[-1]["top1"] == result["top1"] and records[0]["train_loss"] > records[-1]["train_loss"]
    assert all(r["images_per_s"] > 0 and r["top5"] >= r["top1"] for r in records)
    # Every step's training loss, in order; their mean is the epoch's (the last batch may be smaller).
    assert all(len(r["step_loss"]) == r["step"] // r["epoch"] for r in records)
    assert all(abs(sum(r["step_loss"]) / len(r["step_loss"]) - r["train_loss"]) < 0.05 * r["train_loss"]
               for r in records)
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from compscale.train.config import load_config

    saved = load_config(out / "config.yaml")
    assert saved.lr == 0.016 and saved.resolution == 32 and saved.weight_decay == 1e-5  # resolved values


def test_eval_matches_training_and_reports_per_class(trained_digits):
    from compscale.train.evaluate import eval_model

    cfg, result, _ = trained_digits
    ev, data = eval_model(cfg.model, f"{cfg.out}/model.safetensors", "digits", device="cpu")
    assert ev.top1 == pytest.approx(result["top1"], abs=1e-12)
    assert ev.count == 360 and int(ev.confusion.sum()) == 360
    assert ev.top1 == pytest.approx(float(ev.confusion.trace()) / 360)
    per_class = ev.per_class
    assert len(per_class) == 10 and np.mean(per_class) == pytest.approx(ev.top1, abs=0.02)


def _digit_folder(root, classes=(0, 1, 2), per_class=30):
    """Some digits as PNG files in ImageFolder layout: a "new" 3-class dataset to transfer to."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for c in classes:
        (root / f"digit{c}").mkdir(parents=True)
        for k, img in enumerate(d.images[d.target == c][:per_class]):
            Image.fromarray(np.rint(img * 255 / 16).astype(np.uint8)).save(root / f"digit{c}" / f"{k}.png")
    return str(root)


def test_finetune_new_head_with_frozen_backbone(trained_digits, tmp_path):
    from compscale.models.weights import read_state_dict
    from compscale.train.loop import train

    cfg, _, _ = trained_digits
    data = _digit_folder(tmp_path / "folder")
    weights = f"{cfg.out}/model.safetensors"
    ft = TrainConfig(model=cfg.model, data=data, out=str(tmp_path / "ft"), epochs=5, batch_size=16, threads=1,
                     warmup_epochs=0, weights=weights, freeze_backbone=True, head_lr=0.05, lr=0.001, augment="none",
                     resolution=32)
    result = train(ft)
    before, after = read_state_dict(weights), read_state_dict(tmp_path / "ft" / "model.safetensors")
    assert after["classifier.weight"].shape == (3, 64)  # the new head, for 3 classes
    body = [k for k in before if not k.startswith("classifier")]
    assert all(torch.equal(before[k], after[k]) for k in body)  # a frozen backbone (BN statistics included)
    assert result["top1"] >= 0.6  # the features transfer: 3 classes, 5 short epochs, head only
    # --unfreeze-after 1: the body trains in the second epoch.
    ft2 = TrainConfig(**{**ft.__dict__, "freeze_backbone": False, "unfreeze_after": 1, "out": str(tmp_path / "ft2")})
    train(ft2)
    after2 = read_state_dict(tmp_path / "ft2" / "model.safetensors")
    assert not torch.equal(before["stem.conv.weight"], after2["stem.conv.weight"])


def test_finetune_rejects_weights_of_another_model(trained_digits, tmp_path):
    from compscale.train.loop import train

    cfg, _, _ = trained_digits
    bad = TrainConfig(model="efficientnet_b0", data="digits", out=str(tmp_path / "x"), epochs=1,
                      weights=f"{cfg.out}/model.safetensors")
    with pytest.raises(UserError, match="another model than efficientnet_b0") as err:
        train(bad)
    assert "\n" not in str(err.value)


def test_precise_bn_before_evaluation_holds_the_subset_statistics(tmp_path):
    """--precise-bn N: the evaluated model's BatchNorm statistics are exactly those of N training images (a
    fixed random subset), not the moving averages; the run still learns."""
    from compscale.data import BatchPreparer, load_dataset
    from compscale.models import model_spec
    from compscale.models.weights import load_weights
    from compscale.train.distributed import derive_seed
    from compscale.train.loop import build_for_data, train

    cfg = TrainConfig(model=tiny_spec_file(tmp_path / "tiny.json"), data="digits", out=str(tmp_path / "run"), epochs=2,
                      batch_size=32, threads=1, seed=3, augment="none", precise_bn=300)
    result = train(cfg)
    assert result["top1"] > 0.5
    data = load_dataset("digits", 32, "none")
    model = build_for_data(cfg.resolved(model_spec(cfg.model).resolution), data)
    load_weights(model, tmp_path / "run" / "model.safetensors")
    picked = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(derive_seed(3, 0xB7)))[:300]
    x = BatchPreparer(data, 32, 1, torch.device("cpu"))(data.train.images[picked])
    with torch.no_grad():
        y = model.stem.conv(x)
    torch.testing.assert_close(model.stem.bn.running_mean, y.mean((0, 2, 3)), rtol=1e-4, atol=1e-6)
    with pytest.raises(UserError, match="precise-bn"):
        TrainConfig(precise_bn=-1).validate()


def test_recalibrate_batchnorm_edge_cases():
    from compscale.train.precise_bn import recalibrate_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.BatchNorm2d(4, track_running_stats=False), torch.nn.Dropout(0.5))
    before = model[1].running_mean.clone()
    assert recalibrate_batchnorm(model, []) == 0  # nothing seen: nothing changed
    assert torch.equal(model[1].running_mean, before) and not model.training
    x = torch.randn(10, 1, 8, 8)
    assert recalibrate_batchnorm(model, [x[:7], x[7:]]) == 10
    with torch.no_grad():
        torch.testing.assert_close(model[1].running_mean, model[0](x).mean((0, 2, 3)))
    assert model[1].momentum == 0.1 and model[2].running_mean is None


def test_process_settings_are_restored_and_unchanged_ones_left_alone(monkeypatch):
    """A run puts back what it changed (threads, deterministic kernels) and does not call
    torch.use_deterministic_algorithms when nothing changed: that call imports torch._inductor and torch._dynamo
    (~1.6 s), which a short run would otherwise pay at its end."""
    from compscale.train.distributed import init_distributed
    from compscale.train.loop import process_settings_restored

    calls: list[bool] = []
    real = torch.use_deterministic_algorithms
    monkeypatch.setattr(torch, "use_deterministic_algorithms",
                        lambda mode, **kw: (calls.append(mode), real(mode, **kw)))
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    info = init_distributed("cpu")
    with process_settings_restored(info):
        torch.set_num_threads(threads + 1)
    assert calls == [] and torch.get_num_threads() == threads
    with process_settings_restored(info):
        torch.use_deterministic_algorithms(not deterministic)
    assert calls == [not deterministic, deterministic]
    assert torch.are_deterministic_algorithms_enabled() == deterministic
