"""The train / eval / finetune commands end to end, and their one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from compscale.cli import main
from compscale.data import FASHION_MNIST_DIR
from conftest import tiny_spec_file


def _one_line_error(capsys, argv: list[str], match: str) -> None:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("compscale: error:"), err
    assert match in err, err


def test_bad_inputs_give_one_line_and_exit_2(capsys, tmp_path):
    tiny = tiny_spec_file(tmp_path / "tiny.json")
    _one_line_error(capsys, ["train", tiny, "--data", str(tmp_path / "no-such-dir")], "not found")
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "a" / "x.jpg").write_text("not a jpeg")
    _one_line_error(capsys, ["train", tiny, "--data", str(tmp_path / "noimg")], "no readable images")
    _one_line_error(capsys, ["train", tiny, "--data", "digits", "--optimizer", "lamb"], "unknown optimizer 'lamb'")
    _one_line_error(capsys, ["train", tiny, "--data", "digits", "--epochs", "-1"], "--epochs must be at least 1")
    _one_line_error(capsys, ["train", tiny, "--data", "digits", "--epochs", "two"], "not an integer")
    _one_line_error(capsys, ["train", "efficientnet_b99", "--data", "digits"], "unknown model")
    (tmp_path / "bad.yaml").write_text("epochs: 2\nbatchsize: 16\n")
    _one_line_error(capsys, ["train", tiny, "--config", str(tmp_path / "bad.yaml")], "unknown key 'batchsize'")
    (tmp_path / "bad2.yaml").write_text("epochs: 2.5\n")
    _one_line_error(capsys, ["train", tiny, "--config", str(tmp_path / "bad2.yaml")], "'epochs' must be int")
    (tmp_path / "bad3.yaml").write_text("epochs: [\n")
    _one_line_error(capsys, ["train", tiny, "--config", str(tmp_path / "bad3.yaml")], "not valid YAML")
    # Weights of another model (a different head width) for eval and finetune.
    import torch

    from compscale.models import create_model
    from compscale.models.registry import model_spec
    from compscale.models.weights import save_weights
    from compscale.specs import spec_from_dict

    tiny_spec_file(tmp_path / "wide.json", head_channels=96)
    wide = spec_from_dict(json.loads((tmp_path / "wide.json").read_text()))
    save_weights(create_model(wide, num_classes=10, in_chans=1), tmp_path / "wide.safetensors")
    _one_line_error(capsys, ["eval", tiny, "--weights", str(tmp_path / "wide.safetensors"), "--data", "digits"],
                    "another model")
    _one_line_error(capsys, ["finetune", "efficientnet_b0", "--weights", str(tmp_path / "wide.safetensors"),
                             "--data", "digits"], "another model")
    # A weights file without a spec (e.g. converted elsewhere) is still checked key by key and shape by shape.
    torch.save(create_model(model_spec("efficientnet_b0").replace(num_classes=10, in_chans=1)).state_dict(),
               tmp_path / "b0.pth")
    _one_line_error(capsys, ["eval", tiny, "--weights", str(tmp_path / "b0.pth"), "--data", "digits"],
                    "weights do not fit this model")
    _one_line_error(capsys, ["finetune", tiny, "--data", "digits"], "--weights")
    _one_line_error(capsys, ["eval", tiny, "--weights", str(tmp_path / "none.safetensors"), "--data", "digits"],
                    "not found")


def test_config_file_train_eval_finetune(capsys, tmp_path):
    tiny = tiny_spec_file(tmp_path / "tiny.json")
    out = tmp_path / "run"
    (tmp_path / "cfg.yaml").write_text(f"model: {tiny}\ndata: digits\nepochs: 2\nbatch_size: 50\nthreads: 1\n"
                                       f"limit_train: 600\nweight_decay: 1e-5\nout: {out}\n")
    assert main(["train", "--config", str(tmp_path / "cfg.yaml"), "--epochs", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"top1", "top5", "epochs"} and result["epochs"] == 3 and 0 < result["top1"] <= 1
    import yaml

    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["epochs"] == 3 and resolved["lr"] == pytest.approx(0.016 * 50 / 256)
    assert resolved["resolution"] == 32
    # The written config reproduces the run exactly.
    assert main(["train", "--config", str(out / "config.yaml"), "--out", str(tmp_path / "again"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == result["top1"]

    assert main(["eval", tiny, "--weights", str(out / "model.safetensors"), "--data", "digits", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["top1"] == pytest.approx(result["top1"]) and ev["count"] == 360
    assert np.array(ev["confusion"]).sum() == 360 and len(ev["per_class"]) == 10
    assert main(["eval", tiny, "--weights", str(out / "model.safetensors"), "--data", "digits"]) == 0
    text = capsys.readouterr().out
    assert "confusion matrix" in text and "top-1" in text

    from PIL import Image

    for c in range(2):
        (tmp_path / "new" / f"c{c}").mkdir(parents=True)
        for k in range(6):
            Image.fromarray(np.full((8, 8), 40 + 150 * c + k, np.uint8)).save(tmp_path / "new" / f"c{c}" / f"{k}.png")
    assert main(["finetune", tiny, "--weights", str(out / "model.safetensors"), "--data", str(tmp_path / "new"),
                 "--freeze-backbone", "--head-lr", "0.05", "--epochs", "2", "--batch-size", "4", "--threads", "1",
                 "--out", str(tmp_path / "ft"), "--json"]) == 0
    ft = json.loads(capsys.readouterr().out)
    assert ft["epochs"] == 2 and ft["top5"] == 1.0  # two classes: top-5 covers both


@pytest.mark.skipif(not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="dataset-fashion-mnist not installed (make setup-test installs it)")
def test_fashion_mnist_end_to_end_with_progress_bar(tmp_path):
    # The command with efficientnet_b0 takes minutes on 2 shared cores; the same path with a small model.
    tiny = tiny_spec_file(tmp_path / "tiny.json")
    proc = subprocess.run([sys.executable, "-m", "compscale", "train", tiny, "--data", "fashion-mnist", "--resolution",
                           "32", "--epochs", "1", "--limit-train", "5000", "--threads", "1",
                           "--out", str(tmp_path / "f"), "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "epoch 1/1" in proc.stderr and ("step/s" in proc.stderr or "s/step" in proc.stderr)  # the tqdm bar
    assert "5000 train / 10000 test" in proc.stderr
    result = json.loads(proc.stdout)
    assert result["epochs"] == 1 and result["top1"] > 0.5  # well above chance (0.1) after 78 steps
    record = json.loads((tmp_path / "f" / "metrics.jsonl").read_text())
    assert record["epoch"] == 1 and record["images_per_s"] > 0
    for name in ("model.safetensors", "config.yaml", "metrics.png", "checkpoint.safetensors"):
        assert (tmp_path / "f" / name).is_file()


def test_one_epoch_logs_every_step_evaluates_with_a_bar_and_writes_tensorboard(capsys, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from compscale.plots import _step_curve

    tiny = tiny_spec_file(tmp_path / "tiny.json")
    out, board = tmp_path / "run", tmp_path / "tb"
    assert main(["train", tiny, "--data", "digits", "--epochs", "1", "--batch-size", "32", "--limit-train", "256",
                 "--limit-test", "64", "--threads", "1", "--out", str(out), "--tensorboard", str(board),
                 "--json"]) == 0
    err = capsys.readouterr().err
    assert "epoch 1/1: test" in err  # the evaluation's own bar
    # metrics.jsonl: one record per epoch, with the loss of each of its 8 steps (256 images / 32).
    (record,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert record["step"] == 8 and len(record["step_loss"]) == 8
    assert sum(record["step_loss"]) / 8 == pytest.approx(record["train_loss"], rel=1e-6)  # equal batches
    # metrics.png draws them: a one-epoch run is a curve of 8 points, not one dot.
    xs, ys = _step_curve([record])
    assert xs == pytest.approx([k / 8 for k in range(1, 9)]) and ys == record["step_loss"]
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # TensorBoard: the loss and lr of every step, each epoch's test metrics, against the global step.
    events = EventAccumulator(str(board))
    events.Reload()
    assert set(events.Tags()["scalars"]) >= {"train/loss", "train/lr", "test/top1", "test/top5", "test/loss",
                                             "train/epoch_loss"}
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(1, 9))
    assert [e.value for e in losses] == pytest.approx(record["step_loss"], rel=1e-6)
    (top1,) = events.Scalars("test/top1")
    assert top1.step == 8 and top1.value == pytest.approx(record["top1"], rel=1e-6)
    # eval over the test set (360 images, 12 batches of 32) shows a bar with its count and rate.
    assert main(["eval", tiny, "--weights", str(out / "model.safetensors"), "--data", "digits", "--batch-size", "32",
                 "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["model"] == tiny
    assert "evaluating" in captured.err and "12/12" in captured.err and "batch/s" in captured.err


def test_tensorboard_without_the_package_is_one_line(capsys, tmp_path, monkeypatch):
    tiny = tiny_spec_file(tmp_path / "tiny.json")
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    _one_line_error(capsys, ["train", tiny, "--data", "digits", "--tensorboard", str(tmp_path / "tb")],
                    "pip install tensorboard")
    (tmp_path / "afile").write_text("")
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard")
    if __import__("importlib").util.find_spec("tensorboard") is not None:
        _one_line_error(capsys, ["train", tiny, "--data", "digits", "--tensorboard", str(tmp_path / "afile")],
                        "not a folder")
