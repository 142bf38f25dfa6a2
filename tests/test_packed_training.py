"""Packed seeds through the training engine: each member is its seed's separate run (float64: equal weights),
learns like it (float32: accuracies within seed noise), writes the same files, and a killed pack resumes bit
for bit. Also: the job runner trains a study's seeds packed, and falls back when an architecture cannot be."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compscale.jobs.trial import train_spec, train_specs_packed
from compscale.models.weights import load_weights
from conftest import tiny_spec

OPTS = {"batch_size": 32, "optimizer": "sgd", "lr": 0.05, "schedule": "constant", "warmup_epochs": 0.0,
        "limit_train": 256, "limit_test": 100, "threads": 1, "drop_rate": 0.0, "drop_path_rate": 0.0}


def _state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _relative_error(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest difference of a tensor relative to its magnitude (floored at 1e-3: a few of a fresh network's
    BatchNorm biases get no gradient and hold only rounding noise, ~1e-17, in both runs)."""
    worst = 0.0
    for key in a:
        if a[key].is_floating_point():
            scale = max(float(b[key].abs().max()), 1e-3)
            worst = max(worst, float((a[key] - b[key]).abs().max()) / scale)
        else:
            assert torch.equal(a[key], b[key]), key
    return worst


def test_float64_members_equal_their_separate_runs(tmp_path):
    """The issue's proof: after N steps in float64 every member's weights (and BatchNorm buffers) equal the
    separately trained seed's within 1e-6 relative — same initialisation, own data order, own gradient."""
    spec = tiny_spec()
    seeds = [3, 4, 5]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        packed = train_specs_packed(spec, "digits", [tmp_path / f"p{s}" for s in seeds], tmp_path / "pack", 2,
                                    seeds, **OPTS)
        separate = [train_spec(spec, "digits", tmp_path / f"s{s}", 2, s, **OPTS) for s in seeds]
    finally:
        torch.set_default_dtype(previous)
    for s, p, q in zip(seeds, packed, separate):
        a, b = _state(tmp_path / f"p{s}" / "model.safetensors"), _state(tmp_path / f"s{s}" / "model.safetensors")
        assert set(a) == set(b)
        assert a["stem.conv.weight"].dtype == torch.float64
        assert _relative_error(a, b) < 1e-6, s
        assert p["top1"] == pytest.approx(q["top1"], abs=1e-9)
    # The members really differ (different seeds), so equality above is not one model compared with itself.
    a0, a1 = _state(tmp_path / "p3" / "model.safetensors"), _state(tmp_path / "p4" / "model.safetensors")
    assert _relative_error(a0, a1) > 1e-2


def test_float32_pack_learns_like_separate_runs_and_writes_their_files(tmp_path):
    spec = tiny_spec()
    seeds = [0, 1, 2]
    opts = {**OPTS, "limit_train": 600, "limit_test": 300}
    packed = train_specs_packed(spec, "digits", [tmp_path / f"p{s}" for s in seeds], tmp_path / "pack", 3, seeds,
                                **opts)
    separate = [train_spec(spec, "digits", tmp_path / f"s{s}", 3, s, **opts) for s in seeds]
    acc_p = [r["top1"] for r in packed]
    acc_s = [r["top1"] for r in separate]
    assert min(acc_p) > 0.5 and min(acc_s) > 0.5  # both learn (chance is 0.1)
    # Same seeds, same data order: float32 summation order is the only difference, far below seed noise.
    assert abs(sum(acc_p) / 3 - sum(acc_s) / 3) < 0.05, (acc_p, acc_s)
    # One figure for the pack, every seed's curves in it; each seed's folder has its own records and weights.
    assert (tmp_path / "pack" / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for s in seeds:
        folder = tmp_path / f"p{s}"
        for name in ("model.safetensors", "config.yaml", "metrics.jsonl"):
            assert (folder / name).is_file(), name
        assert not (folder / "metrics.png").exists()
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in records] == [1, 2, 3]
        # Each member's weights load into an ordinary model of the spec (one file per seed, as today).
        from compscale.models import build_model

        model = load_weights(build_model(spec.replace(in_chans=1, num_classes=10, resolution=32)),
                             folder / "model.safetensors")
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


_SCRIPT = """
import sys, torch
sys.path[:0] = {path!r}
from conftest import tiny_spec
from compscale.jobs.trial import train_specs_packed
opts = {opts!r}
root = {root!r}
train_specs_packed(tiny_spec(), "digits", [root + "/m0", root + "/m1"], root + "/pack", 2, [7, 8],
                   deterministic=True, checkpoint_steps=2, **opts)
"""


def _run(root: Path, pause_at: int | None) -> subprocess.Popen:
    env = _env()
    if pause_at is not None:
        env["COMPSCALE_TEST_PAUSE_AT_STEP"] = str(pause_at)
    code = _SCRIPT.format(path=[str(Path(__file__).parent)] + sys.path, opts=OPTS, root=str(root))
    return subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)


def test_killed_pack_resumes_bit_for_bit(tmp_path):
    """SIGKILL mid-epoch (after a step checkpoint), then the same call again: every member's final weights equal
    an uninterrupted pack's exactly (deterministic mode)."""
    whole = _run(tmp_path / "whole", None)
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    killed = _run(tmp_path / "killed", pause_at=4)  # 8 steps per epoch: inside epoch 1, after step 4's checkpoint
    for line in killed.stderr:
        if "paused at step" in line:
            break
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert (tmp_path / "killed" / "pack" / "checkpoint.safetensors").is_file()
    resumed = _run(tmp_path / "killed", None)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    for m in ("m0", "m1"):
        a = _state(tmp_path / "whole" / m / "model.safetensors")
        b = _state(tmp_path / "killed" / m / "model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), m
        ra = (tmp_path / "whole" / m / "metrics.jsonl").read_text().splitlines()
        rb = (tmp_path / "killed" / m / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["top1"] for x in ra] == [json.loads(x)["top1"] for x in rb]


def test_the_runner_packs_a_studys_seeds_and_falls_back_when_it_cannot(tmp_path):
    from compscale.jobs.runner import Job, RunSettings, run_jobs
    from compscale.models import model_spec

    settings = RunSettings(data="digits", out=str(tmp_path / "study"), epochs=1, seeds=2, batch_size=32,
                           optimizer="sgd", lr=0.05, limit_train=128, limit_test=64, threads=1, resolution=32)
    inception = model_spec("inception_resnet_tiny").replace(in_chans=1, num_classes=10)
    jobs = [Job(tiny_spec(), (0, 1), "effnet", {"model": "effnet"}), Job(inception, (0, 1), "irv2", {"model": "irv2"})]
    results = run_jobs("test", settings, jobs, {})
    assert all(r.state == "complete" and len(r.accuracies) == 2 for r in results)
    runs = tmp_path / "study" / "runs"
    assert (runs / "effnet" / "packed" / "checkpoint.safetensors").is_file()  # trained packed
    assert not (runs / "irv2" / "packed" / "checkpoint.safetensors").exists()  # cannot be packed: one by one
    for job in ("effnet", "irv2"):
        assert all((runs / job / f"seed{s}" / "model.safetensors").is_file() for s in (0, 1))


@pytest.mark.parametrize("packed", [False, True], ids=["single", "packed"])
def test_eval_every_skips_evaluations_without_changing_the_run(tmp_path, packed):
    """--eval-every N (a sweep's non-baseline jobs: only after the last epoch): the skipped epochs are recorded
    with null test metrics, the evaluated ones and the final weights are bit-identical to evaluating every epoch —
    precise BN (on here) re-estimates from scratch and every step re-seeds, so evaluation never touches training."""
    from compscale.jobs.trial import _metrics

    spec, seeds = tiny_spec(), [0, 1]
    opts = {**OPTS, "precise_bn": 64, "augment": "crop-flip"}

    def run(name: str, every: int) -> list[list[dict]]:
        outs = [tmp_path / name / f"seed{s}" for s in seeds]
        if packed:
            train_specs_packed(spec, "digits", outs, tmp_path / name / "pack", 3, seeds, eval_every=every, **opts)
        else:
            for out, s in zip(outs, seeds):
                train_spec(spec, "digits", out, 3, s, eval_every=every, **opts)
        return [_metrics(out / "metrics.jsonl") for out in outs]

    every, last = run("every", 1), run("last", 3)
    for s, a, b in zip(seeds, every, last):
        assert [r["epoch"] for r in b] == [1, 2, 3]
        assert [r["top1"] is None for r in b] == [True, True, False]
        assert b[0]["loss"] is None and b[0]["top5"] is None and b[0]["train_loss"] > 0
        assert b[-1]["top1"] == a[-1]["top1"] and b[-1]["loss"] == a[-1]["loss"]
        assert [r["train_loss"] for r in b] == [r["train_loss"] for r in a]
        wa = _state(tmp_path / "every" / f"seed{s}" / "model.safetensors")
        wb = _state(tmp_path / "last" / f"seed{s}" / "model.safetensors")
        assert all(torch.equal(wa[k], wb[k]) for k in wa), s
        figure = tmp_path / "last" / ("pack" if packed else f"seed{s}") / "metrics.png"
        assert figure.stat().st_size > 0
    from compscale.errors import UserError
    from compscale.train.config import TrainConfig

    with pytest.raises(UserError, match="eval-every"):
        TrainConfig(eval_every=0).validate()


def test_one_figure_draws_every_seed(tmp_path, monkeypatch):
    """The pack's metrics.png: one step curve and one top-1 curve per seed, in the seed's own colour; a single
    run's figure keeps its train/test/top-5 lines."""
    import compscale.plots as plots

    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, dpi=110, tight=False: drawn.append(fig))

    def history(offset: float) -> list[dict]:
        return [{"epoch": e, "step": 4 * e, "train_loss": 2.0 - e + offset, "loss": 1.5 - e / 2 + offset,
                 "top1": 0.5 + e / 10 - offset, "top5": 0.9, "step_loss": [2.0 + offset] * 4} for e in (1, 2)]

    plots.plot_runs({f"seed {s}": history(s / 10) for s in range(3)} | {"seed 9": []}, tmp_path / "m.png")
    losses, accuracy = drawn[0].axes
    steps = [line for line in losses.get_lines() if line.get_label().endswith("train (each step)")]
    assert [line.get_label() for line in steps] == [f"seed {s} train (each step)" for s in range(3)]
    assert len(steps[0].get_xdata()) == 8  # 4 steps x 2 epochs
    top1 = {line.get_label(): list(line.get_ydata()) for line in accuracy.get_lines()}
    assert top1 == {f"seed {s} top-1": pytest.approx([60 - 10 * s, 70 - 10 * s]) for s in range(3)}
    assert len({line.get_color() for line in steps}) == 3
    plots.plot_metrics(history(0.0), tmp_path / "one.png")
    assert {line.get_label() for line in drawn[1].axes[1].get_lines()} == {"top-1", "top-5"}
    plots.plot_runs({"seed 0": []}, tmp_path / "none.png")
    assert len(drawn) == 2  # nothing to draw: no figure
