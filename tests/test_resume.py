"""Checkpoints that lose nothing: SIGKILL mid-epoch, resume, and end with the uninterrupted run's weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import tiny_spec_file


def _cmd(spec: str, out, *extra: str) -> list[str]:
    # Dropout, stochastic depth, augmentation and EMA on: every source of randomness and state is exercised.
    return [sys.executable, "-m", "compscale", "train", spec, "--data", "digits", "--epochs", "3", "--threads", "1",
            "--deterministic", "--checkpoint-steps", "4", "--ema", "0.99", "--drop-rate", "0.2",
            "--drop-path-rate", "0.1", "--augment", "crop-flip", "--optimizer", "adamw", "--out", str(out), "--json",
            *extra]


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_sigkill_mid_epoch_then_resume_is_bit_exact(tmp_path):
    spec = tiny_spec_file(tmp_path / "tiny.json")
    ref = subprocess.run(_cmd(spec, tmp_path / "ref"), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]

    # Global step 30 is step 8 of epoch 2 (22 steps per epoch); the last checkpoint is at step 28.
    env = {**os.environ, "COMPSCALE_TEST_PAUSE_AT_STEP": "30"}
    err_path = tmp_path / "killed.err"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(_cmd(spec, tmp_path / "run"), stdout=subprocess.DEVNULL, stderr=err, env=env)
        deadline = time.monotonic() + 240
        while "paused at step 30" not in err_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, err_path.read_text()[-2000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "run" / "model.safetensors").exists()

    resumed = subprocess.run(_cmd(spec, tmp_path / "run", "--resume"), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming at epoch 2 step 6" in resumed.stderr
    a, b = _weights(tmp_path / "ref" / "model.safetensors"), _weights(tmp_path / "run" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    ra, rb = json.loads(ref.stdout), json.loads(resumed.stdout)
    assert ra["top1"] == rb["top1"] and ra["epochs"] == rb["epochs"] == 3
    ma = [json.loads(x) for x in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["top1"], r["loss"]) for r in ma] == [(r["epoch"], r["top1"], r["loss"]) for r in mb]
    assert mb[1]["train_loss"] == pytest.approx(ma[1]["train_loss"], rel=1e-12)
    # The interrupted epoch's step losses before the checkpoint come back from it: the same log, step for step.
    assert [r["step_loss"] for r in ma] == [r["step_loss"] for r in mb]

    # Resuming a finished run does no more work and keeps the result.
    again = subprocess.run(_cmd(spec, tmp_path / "run", "--resume"), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and json.loads(again.stdout)["top1"] == ra["top1"]


def test_checkpoint_holds_tensors_only_and_refuses_another_model(tmp_path):
    from compscale.errors import UserError
    from compscale.train.checkpoint import load_checkpoint
    from compscale.train.config import TrainConfig
    from compscale.train.loop import train

    spec = tiny_spec_file(tmp_path / "tiny.json")
    cfg = TrainConfig(model=spec, data="digits", out=str(tmp_path / "run"), epochs=1, batch_size=256, threads=1,
                      limit_train=512, optimizer="rmsproptf")
    train(cfg)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    assert state.meta["epoch"] == 1 and state.meta["step_in_epoch"] == 0
    assert {k.split("/")[0] for k in state.tensors} == {"model", "optim"}
    assert any(k.endswith("/square_avg") for k in state.tensors)  # the RMSProp state itself
    # A wider model cannot resume from it: one line naming the difference.
    wide = json.loads((tmp_path / "tiny.json").read_text())
    wide["head_channels"] = 96
    (tmp_path / "wide.json").write_text(json.dumps(wide))
    other = TrainConfig(**{**cfg.__dict__, "model": str(tmp_path / "wide.json"), "epochs": 2})
    with pytest.raises(UserError, match="another model .*head_channels: 64 there, 96 here") as err:
        train(other, resume=True)
    assert "\n" not in str(err.value)
    # Changing what fixes the data order is refused too.
    with pytest.raises(UserError, match="batch_size was 256, now 128"):
        train(TrainConfig(**{**cfg.__dict__, "batch_size": 128, "epochs": 2}), resume=True)
    # The same architecture from a spec file that moved (a study folder copied elsewhere) resumes.
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "run", moved / "run")
    shutil.copy(tmp_path / "tiny.json", moved / "tiny.json")
    started: list[int] = []

    def progress(event):
        if event.kind == "epoch_start":
            started.append(event.info["epoch"])

    moved_cfg = TrainConfig(**{**cfg.__dict__, "model": str(moved / "tiny.json"), "out": str(moved / "run"),
                               "epochs": 2})
    result = train(moved_cfg, resume=True, progress=progress)
    assert started == [1] and result["epochs"] == 2  # went on from the saved epoch, did not start over
