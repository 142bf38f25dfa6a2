"""Ctrl-C / SIGTERM during training: the run checkpoints where it is and prints the exact resume command;
`train --resume --out DIR` alone resumes it from DIR's config; the resumed run ends where an uninterrupted one
does (bit for bit, deterministic mode)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import tiny_spec_file


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _train(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "compscale", "train", *args], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_checkpoints_and_names_the_resume_command(tmp_path, sig):
    from safetensors.torch import load_file

    spec = tiny_spec_file(tmp_path / "tiny.json")
    common = ["--data", "digits", "--epochs", "2", "--batch-size", "32", "--limit-train", "320", "--lr", "0.05",
              "--optimizer", "sgd", "--threads", "1", "--deterministic"]
    whole = _train([str(spec), *common, "--out", str(tmp_path / "whole")], _env())
    assert whole.wait(timeout=300) == 0, whole.stderr.read()

    out = tmp_path / "stopped"
    env = {**_env(), "COMPSCALE_TEST_PAUSE_AT_STEP": "13"}  # epoch 2 (10 steps each), no step checkpoints asked
    run = _train([str(spec), *common, "--out", str(out)], env)
    for line in run.stderr:
        if "paused at step" in line:
            break
    run.send_signal(sig)  # arrives during the pause: the run stops after the step in hand
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    lines = [line for line in err.strip().splitlines() if line.startswith("compscale:")]
    assert len(lines) == 1 and f"resume with: compscale train --resume --out {out}" in lines[0], err
    assert sig.name in lines[0]

    resumed = subprocess.run([sys.executable, "-m", "compscale", "train", "--resume", "--out", str(out)],
                             env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_out_without_a_run_is_one_line(tmp_path, capsys):
    from compscale.cli import main

    assert main(["train", "--resume", "--out", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no config.yaml" in err[0]
