"""Hostile inputs (issue 17, classes 3, 4, 5 and 7): trials reused after their settings changed, metadata in spec
files, weights, checkpoints and configs trusted as read, weights with wrong values, and runaway sizes.

Every CLI case checks the same promise: exit status 2, exactly one line on stderr starting
``compscale: error:``, no traceback, nothing written, and an answer within seconds (the hostile value is
refused before any work starts: a 10⁹-block spec, a 10⁻⁹ grid step, 10⁹ seeds). Every API case checks a
one-line :class:`~compscale.errors.UserError`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from compscale.cli import EXIT_USER_ERROR, main
from compscale.errors import UserError
from conftest import time_limit, tiny_spec

TINY = tiny_spec(stages=2, head_channels=32)
TINY_DICT = json.loads(TINY.to_json())


# --- helpers ---------------------------------------------------------------------------------------------


def refused(capsys, *argv: Any, seconds: int = 60) -> str:
    """Run the command; it must be refused with one line (exit 2, no traceback, nothing on stdout), promptly."""
    capsys.readouterr()
    with time_limit(seconds):
        code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == EXIT_USER_ERROR, err[-3000:]
    errors = [line for line in lines if line.startswith("compscale: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err[-3000:]
    assert "Traceback" not in err and out == ""
    return errors[0]


def api_refused(call, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(UserError) as err:
        call(*args, **kwargs)
    message = str(err.value)
    assert "\n" not in message and message.strip()
    assert len(message) < 1000
    return message


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def tiny_model(spec=TINY):
    from compscale.models.registry import build_model

    return build_model(spec)


def weights_file(path: Path, state: dict[str, torch.Tensor] | None = None, model_spec=TINY, **metadata: str) -> Path:
    """A safetensors file with ``state`` (default: the tiny model's) and the given metadata strings (the spec of
    ``model_spec`` unless given), written directly (as anyone could), bypassing compscale's own writer."""
    from safetensors.torch import save_file

    state = state if state is not None else _tiny_state(model_spec)
    meta = {"spec": model_spec.to_json(), **metadata}
    save_file(state, str(path), metadata=meta)
    return path


def mutated(**changes: Any) -> dict[str, Any]:
    return {**TINY_DICT, **changes}


def stage(**changes: Any) -> dict[str, Any]:
    return {**TINY_DICT["stages"][0], **changes}


# --- class 4: spec files, weights' metadata, checkpoints, configs and preprocessing are checked when read --------

#: (id, spec mapping, expected fragment of the one line): every field of a spec file checked when it is read.
BAD_SPECS = [
    ("kernel-negative", mutated(stages=[stage(kernel=-1)]), r"stages\[0\]: kernel must be an integer from 1"),
    ("kernel-even", mutated(stages=[stage(kernel=4)]), r"kernel must be odd"),
    ("expand-zero", mutated(stages=[stage(expand_ratio=0)]), r"expand_ratio must be an integer from 1"),
    ("stride-3", mutated(stages=[stage(stride=3)]), r"stride must be 1 or 2, got 3"),
    ("repeats-1e9", mutated(stages=[stage(repeats=10**9)]), r"repeats must be an integer from 1 to 2,000"),
    ("width-1e8", mutated(stages=[stage(out_channels=10**8)]), r"out_channels must be an integer .* got 100000000"),
    ("channels-float", mutated(stages=[stage(out_channels=8.5)]), r"out_channels must be an integer"),
    ("channels-string", mutated(stages=[stage(out_channels="8")]), r"out_channels must be an integer .* got '8'"),
    ("channels-bool", mutated(stages=[stage(out_channels=True)]), r"out_channels must be an integer .* got True"),
    ("stage-unknown-key", mutated(stages=[{**stage(), "dilation": 2}]), r"stages\[0\]: unknown field 'dilation'"),
    ("stage-missing-key", mutated(stages=[{"kernel": 3}]), r"missing field 'expand_ratio'"),
    ("stages-integer", mutated(stages=7), r"stages must be a list, got 7"),
    ("stages-mapping", mutated(stages={"a": 1}), r"stages must be a list"),
    ("stages-of-integers", mutated(stages=[1, 2]), r"stages\[0\] must be a mapping"),
    ("stages-empty", mutated(stages=[]), r"at least one stage"),
    ("dropout-5", mutated(dropout=5), r"dropout must be a finite number in \[0, 1\), got 5"),
    ("dropout-nan", mutated(dropout=float("nan")), r"dropout must be a finite number"),
    ("drop-path-inf", mutated(drop_path_rate=float("inf")), r"drop_path_rate must be a finite number"),
    ("se-ratio-2", mutated(se_ratio=2.0), r"se_ratio must be a finite number in \[0, 1\]"),
    ("stem-zero", mutated(stem_channels=0), r"stem_channels must be an integer from 1"),
    ("head-string", mutated(head_channels="wide"), r"head_channels must be an integer .* 'wide'"),
    ("resolution-huge", mutated(resolution=10**6), r"resolution must be at most 100,000 pixels"),
    ("resolution-small", mutated(resolution=8), r"resolution must be an integer >= 32"),
    ("resolution-float", mutated(resolution=224.5), r"resolution must be an integer >= 32, got 224.5"),
    ("classes-zero", mutated(num_classes=0), r"num_classes must be an integer from 1"),
    ("in-chans-list", mutated(in_chans=[3]), r"in_chans must be an integer"),
    ("bn-eps-zero", mutated(bn_eps=0), r"bn_eps must be a finite number in \(0, 1\]"),
    ("bn-momentum-2", mutated(bn_momentum=2), r"bn_momentum must be a finite number in \[0, 1\]"),
    ("flag-int", mutated(scale_stem_head=1), r"scale_stem_head must be true or false, got 1"),
    ("activation-list", mutated(activation=["swish"]), r"unknown activation \['swish'\]"),
    ("family-list", {"family": ["efficientnet"]}, r"unknown model family \['efficientnet'\]"),
    ("huge-echo", mutated(stem_channels="x" * 100_000), r"stem_channels must be an integer"),
    ("resnet-stages-int", {"family": "resnet", "stages": 4}, r"stages must be a list"),
    ("resnet-cardinality-huge", {"family": "resnet", "cardinality": 10**12}, r"cardinality must be a positive integer"),
    ("resnet-repeats-1e9", {"family": "resnet", "stages": [{"repeats": 10**9, "planes": 64, "stride": 1}]},
     r"stage repeats must be a positive integer of at most 2,000"),
    ("irv2-stem-int", {"family": "inception_resnet_v2", "stem": 5}, r"the stem has 5 convolutions, got 5"),
    ("irv2-repeats-1e9", {"family": "inception_resnet_v2", "repeats": [10**9, 1, 1]}, r"too deep"),
    ("irv2-scales-nan", {"family": "inception_resnet_v2", "scales": [float("nan"), 0.1, 0.2]},
     r"scales\[0\] must be a finite number"),
    ("densenet-blocks-mapping", {"family": "densenet", "blocks": {"a": 1}}, r"blocks counts"),
    ("amoebanet-cells-1e6", {"family": "amoebanet", "cells_per_stack": 10**6}, r"cells_per_stack must be"),
    ("amoebanet-cells-deep", {"family": "amoebanet", "cells_per_stack": 100}, r"300 cells is too deep"),
    ("amoebanet-genotype-list", {"family": "amoebanet", "genotype": ["a"]}, r"unknown AmoebaNet genotype"),
    ("inception-width-1e9", {"family": "inception_v3", "width": 1e9}, r"width must be a finite number"),
    ("polynet-scale-string", {"family": "polynet", "scale_end": "0.7"}, r"scale_end must be a finite number"),
    ("senet-planes-string", {"family": "senet", "planes": "64"}, r"give one block count per stage"),
    ("nasnet-stem-negative", {"family": "nasnet", "stem_channels": -1}, r"stem_channels must be a positive integer"),
]


@pytest.mark.parametrize("data, pattern", [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS])
def test_every_spec_field_is_checked_when_a_file_is_read(capsys, tmp_path, data, pattern):
    import re

    path = write_json(tmp_path / "spec.json", data)
    line = refused(capsys, "profile", path, seconds=30)
    assert re.search(pattern, line), line
    assert len(line) < 600


@pytest.mark.parametrize("data, pattern", [c[1:] for c in BAD_SPECS[:12]], ids=[c[0] for c in BAD_SPECS[:12]])
def test_spec_files_in_yaml_are_checked_the_same(capsys, tmp_path, data, pattern):
    import re

    import yaml

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    assert re.search(pattern, refused(capsys, "profile", path, seconds=30))


def test_the_api_and_replace_check_the_same_fields():
    from compscale.specs import EfficientNetSpec, MBConvStage, ResNetSpec, spec_from_dict

    assert "kernel" in api_refused(MBConvStage, 1, -1, 1, 16, 1)
    assert "dropout" in api_refused(TINY.replace, dropout=5.0)
    assert "stem_channels" in api_refused(TINY.replace, stem_channels=0)
    assert "stages" in api_refused(EfficientNetSpec, stages=5)
    assert "resolution" in api_refused(ResNetSpec, resolution=10**9)
    assert "family" in api_refused(spec_from_dict, {"family": {"x": 1}})
    # Ints given for floats become floats (a JSON 0 is the same spec as 0.0), so files round-trip exactly.
    assert TINY.replace(dropout=0).dropout == 0.0 and isinstance(TINY.replace(dropout=0).dropout, float)


def test_every_registered_model_is_valid_and_round_trips():
    from compscale.models import list_models, model_spec
    from compscale.specs import spec_from_dict, spec_from_json

    for name in list_models():
        spec = model_spec(name)
        assert spec_from_dict(spec.as_dict()) == spec, name
        assert spec_from_json(spec.to_json()) == spec, name


@pytest.mark.parametrize("family, changes", [
    ("inception_v3", {"width": 0.05}), ("inception_v3", {"width": 0.2, "repeats": [2, 5, 1]}),
    ("inception_v4", {"width": 0.1}), ("polynet", {"width": 0.1, "repeats": [1, 1, 1]}),
], ids=["v3-0.05", "v3-0.2", "v4", "polynet"])
def test_what_the_checks_accept_builds(capsys, tmp_path, family, changes):
    """Found by the file fuzz: a valid Inception-v3 spec of width 0.05 crashed the builder (its 17×17 modules
    were all built for Mixed_6a's width), and Inception-v3/-v4 and PolyNet specs of 32 px passed the checks but
    not the valid-padded stem. Each family's smallest side is now checked, and every width builds."""
    import re

    spec = write_json(tmp_path / "spec.json", {"family": family, "resolution": 75, **changes})
    capsys.readouterr()
    assert main(["profile", str(spec)]) == 0, capsys.readouterr().err
    small = write_json(tmp_path / "small.json", {"family": family, "resolution": 32})
    assert re.search("resolution must be an integer >= 75, got 32", refused(capsys, "profile", small))


def test_validation_stays_cheap():
    """Step 1 builds thousands of specs: the checks cost microseconds."""
    spec = TINY
    t0 = time.perf_counter()
    for i in range(2000):
        spec.replace(resolution=32 + i % 64)
    assert time.perf_counter() - t0 < 2.0


def test_a_weights_file_claiming_1e9_blocks_is_refused_before_building(capsys, tmp_path):
    """The issue's 148 kB file: predict used to hang building 10⁹ blocks."""
    spec = mutated(stages=[stage(repeats=10**9)])
    path = weights_file(tmp_path / "w.safetensors", spec=json.dumps(spec))
    line = refused(capsys, "predict", "efficientnet_b0", "--weights", path, "--image", "skimage:coffee", seconds=30)
    assert "records an invalid model spec in its metadata: stages[0]: repeats must be" in line


@pytest.mark.parametrize("text, fragment", [
    ("{not json", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "records an invalid model spec"),
    ("1" * 5000, "not valid JSON"),
    (json.dumps({"family": "efficientnet", "stem_channels": -4}), "stem_channels"),
    (json.dumps([1, 2, 3]), "a model spec must be a mapping"),
], ids=["broken", "nested", "huge-int", "negative", "list"])
def test_hostile_spec_metadata_in_weights(capsys, tmp_path, text, fragment):
    path = weights_file(tmp_path / "w.safetensors", spec=text)
    assert fragment in refused(capsys, "predict", "efficientnet_b0", "--weights", path, "--image", "skimage:coffee")
    assert fragment in refused(capsys, "eval", "efficientnet_b0", "--weights", path, "--data", "digits")


def test_a_valid_spec_over_the_size_ceiling_is_refused_before_building(capsys, tmp_path, monkeypatch):
    """A spec within every field's range can still describe gigabytes: the ceiling refuses it from the spec alone
    (analytic counts), and says how to lift it; the environment variables lift or lower it."""
    big = mutated(stages=[stage(out_channels=2**20 // 4, expand_ratio=4, repeats=50)], head_channels=2**20)
    path = write_json(tmp_path / "big.json", big)
    with time_limit(30):
        line = refused(capsys, "export", path, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert "parameters, over the ceiling of 2,000,000,000" in line and "COMPSCALE_MAX_PARAMS=N" in line
    assert not (tmp_path / "m.onnx").exists()
    # Counting it is fine (nothing is built): profile and scale answer.
    assert main(["scale", "--base", str(path), "--phi", "0", "--json"]) == 0
    capsys.readouterr()
    # The ceilings are the environment's when set: lowered here to refuse even the tiny model.
    tiny = write_json(tmp_path / "tiny.json", TINY_DICT)
    monkeypatch.setenv("COMPSCALE_MAX_PARAMS", "1000")
    assert "over the ceiling of 1,000" in refused(capsys, "train", tiny, "--data", "digits", "--out", tmp_path / "o")
    monkeypatch.setenv("COMPSCALE_MAX_PARAMS", "lots")
    assert "COMPSCALE_MAX_PARAMS must be a positive number" in refused(
        capsys, "train", tiny, "--data", "digits", "--out", tmp_path / "o")
    monkeypatch.delenv("COMPSCALE_MAX_PARAMS")
    monkeypatch.setenv("COMPSCALE_MAX_MACS", "1e3")
    assert "multiply-adds at 32 px, over the ceiling" in refused(
        capsys, "eval", tiny, "--weights", weights_file(tmp_path / "w.safetensors"), "--data", "digits")
    assert not (tmp_path / "o").exists()


def test_the_size_ceiling_api():
    from compscale.compound import check_model_size, size_ceiling

    assert size_ceiling() == (2e9, 2e12, 8192)
    assert check_model_size(TINY).params > 0
    assert "parameters" in api_refused(check_model_size, TINY, max_params=10)
    assert "multiply-adds" in api_refused(check_model_size, TINY, max_macs=10)
    assert "px inputs" in api_refused(check_model_size, TINY.replace(resolution=10_000))
    assert "positive number" in api_refused(check_model_size, TINY, max_params=math.nan)


def _checkpoint(path: Path, **meta_changes: Any) -> Path:
    """A real training checkpoint of the tiny model (SGD state after one step), its metadata changed."""
    from compscale.train.checkpoint import save_checkpoint

    model = tiny_model(TINY.replace(num_classes=10, in_chans=1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 1, 32, 32)).sum().backward()
    optimizer.step()
    meta = {"epoch": 0, "step_in_epoch": 1, "global_step": 1, "config": {}, "history": [],
            "spec": model.spec.as_dict(), "ema_updates": 0, "epoch_loss": [2.3, 8]}
    for key, value in meta_changes.items():
        if value is _DROP:
            meta.pop(key)
        else:
            meta[key] = value
    save_checkpoint(path, model=model, optimizer=optimizer, ema=None, scaler=None, meta=meta)
    return path


_DROP = object()

BAD_CHECKPOINTS = [
    ("epoch-negative", {"epoch": -1}, "epoch must be an integer from 0"),
    ("epoch-string", {"epoch": "3"}, "epoch must be an integer"),
    ("epoch-float", {"epoch": 1.5}, "epoch must be an integer"),
    ("epoch-huge", {"epoch": 10**12}, "epoch must be an integer from 0 to 100,000"),
    ("epoch-missing", {"epoch": _DROP}, "it has no 'epoch' entry"),
    ("step-negative", {"step_in_epoch": -5}, "step_in_epoch must be"),
    ("history-string", {"history": "lots"}, "history must be a list"),
    ("history-longer", {"history": [{"epoch": 1}]}, "history must be a list of at most 0"),
    ("history-junk", {"epoch": 1, "history": [[1, 2]]}, "history[0] must be the record of epoch 1"),
    ("history-nan-top1", {"epoch": 1, "history": [{"epoch": 1, "train_loss": 1, "loss": 1, "top1": math.nan,
                                                   "top5": 1}]}, "history[0].top1 must be a finite number"),
    ("ema-negative", {"ema_updates": -1}, "ema_updates must be"),
    ("loss-nan", {"epoch_loss": [math.nan, 3]}, "epoch_loss[0] must be a finite number"),
    ("loss-scalar", {"epoch_loss": 3}, "epoch_loss must be [loss sum, images]"),
    ("spec-junk", {"spec": {"family": "efficientnet", "stages": 3}}, "its spec is invalid: stages must be a list"),
    ("config-list", {"config": [1]}, "config must be a mapping"),
]


@pytest.mark.parametrize("changes, fragment", [c[1:] for c in BAD_CHECKPOINTS], ids=[c[0] for c in BAD_CHECKPOINTS])
def test_checkpoint_metadata_is_checked_when_read(tmp_path, changes, fragment):
    from compscale.train.checkpoint import load_checkpoint

    path = _checkpoint(tmp_path / "checkpoint.safetensors", **changes)
    message = api_refused(load_checkpoint, path)
    assert message.startswith(f"{path} is not a valid checkpoint: ") and fragment in message, message


def test_checkpoint_tensors_and_json_are_checked(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from compscale.train.checkpoint import load_checkpoint

    good = _checkpoint(tmp_path / "good.safetensors")
    assert load_checkpoint(good).meta["epoch"] == 0
    with safe_open(str(good), "pt") as fh:
        meta, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    key = next(k for k in tensors if k.startswith("model/") and tensors[k].is_floating_point())

    def variant(name: str, tensors_: dict, meta_: dict) -> Path:
        save_file(tensors_, str(tmp_path / name), metadata=meta_)
        return tmp_path / name

    nan = {**tensors, key: torch.full_like(tensors[key], math.nan)}
    assert "holds NaN or infinite values" in api_refused(load_checkpoint, variant("nan.safetensors", nan, meta))
    assert "is not valid JSON" in api_refused(load_checkpoint, variant("json.safetensors", tensors,
                                                                       {**meta, "epoch": "{"}))
    assert "optimizer must be a mapping" in api_refused(load_checkpoint, variant(
        "optim.safetensors", tensors, {**meta, "optimizer": "[]"}))
    bad_key = {**tensors, "optim/x/momentum_buffer": torch.zeros(1)}
    assert "not an optimizer state key" in api_refused(load_checkpoint, variant("key.safetensors", bad_key, meta))
    lr_inf = json.loads(meta["optimizer"])
    lr_inf["param_groups"][0]["lr"] = "Infinity"
    text = json.dumps(lr_inf).replace('"Infinity"', "Infinity")
    assert "param_groups[0].lr must be a finite number" in api_refused(
        load_checkpoint, variant("lr.safetensors", tensors, {**meta, "optimizer": text}))


def test_a_negative_epoch_never_reaches_the_test_pause(tmp_path):
    """The issue's case: a checkpoint at epoch −1 made ``train --resume`` reach the test-only pause (step −1, the
    hook's old default) and sleep for an hour. Now the checkpoint is refused, and the hook (even set to −1, or to
    junk) only fires for a step ≥ 0 the run reaches. A real process, with a time limit."""
    spec = tmp_path / "tiny.json"
    spec.write_text(TINY.to_json())
    out = tmp_path / "run"
    out.mkdir()
    _checkpoint(out / "checkpoint.safetensors", epoch=-1)
    for hook in ("-1", "junk"):
        proc = subprocess.run([sys.executable, "-m", "compscale", "train", str(spec), "--data", "digits", "--out",
                               str(out), "--resume", "--epochs", "1", "--threads", "1", "--limit-train", "32",
                               "--limit-test", "16", "--batch-size", "16"],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "COMPSCALE_TEST_PAUSE_AT_STEP": hook})
        assert proc.returncode == EXIT_USER_ERROR, proc.stderr[-2000:]
        assert "paused" not in proc.stderr and "Traceback" not in proc.stderr
        assert "epoch must be an integer from 0" in proc.stderr.strip().splitlines()[-1]


def test_the_pause_hook_reads_only_non_negative_steps():
    """The one line of the engine that reads the hook: negative, signed, non-ASCII or junk values never pause."""
    import ast
    import inspect

    from compscale.train import loop

    source = inspect.getsource(loop)
    line = next(ln.strip() for ln in source.splitlines() if "os.environ.get(PAUSE_ENV" in ln)
    expr = ast.parse(line).body[0].value  # self.pause_at = <expr>
    code = compile(ast.Expression(expr), "<hook>", "eval")
    for value, expected in (("", None), ("-1", None), ("+3", None), ("٣", None), ("x", None), (" 7 ", 7),
                            ("0", 0), ("12", 12)):
        env = {loop.PAUSE_ENV: value}
        got = eval(code, {"os": type("os", (), {"environ": env}), "PAUSE_ENV": loop.PAUSE_ENV})
        assert got == expected, (value, got)


PREPROCESS = {"resolution": 32, "crop_pct": 1.0, "mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0],
              "in_chans": 3}
BAD_PREPROCESS = [
    ("std-zero", {**PREPROCESS, "std": [0.0, 128.0, 128.0]}, r"preprocess std\[0\] must be a finite number in \(0"),
    ("std-negative", {**PREPROCESS, "std": [-1, -1, -1]}, r"preprocess std\[0\]"),
    ("mean-nan", {**PREPROCESS, "mean": [math.nan, 0, 0]}, r"preprocess mean\[0\]"),
    ("mean-short", {**PREPROCESS, "mean": [1.0]}, r"preprocess mean needs 3 value"),
    ("crop-zero", {**PREPROCESS, "crop_pct": 0}, r"preprocess crop_pct"),
    ("channels-2", {**PREPROCESS, "in_chans": 2}, r"in_chans must be 1 or 3"),
    ("channels-mismatch", {**PREPROCESS, "in_chans": 1}, r"its preprocess gives 1 channel\(s\), the model takes 3"),
    ("resolution-huge", {**PREPROCESS, "resolution": 100_000}, r"100,000 px inputs, over the ceiling of 8,192 px"),
    ("resolution-string", {**PREPROCESS, "resolution": "big"}, r"preprocess resolution must be an integer"),
    ("unknown-key", {**PREPROCESS, "gamma": 2.2}, r"the preprocess entry must be a mapping of"),
]


@pytest.mark.parametrize("data, pattern", [c[1:] for c in BAD_PREPROCESS], ids=[c[0] for c in BAD_PREPROCESS])
def test_preprocess_metadata_is_checked(capsys, tmp_path, data, pattern):
    import re

    path = weights_file(tmp_path / "w.safetensors", preprocess=json.dumps(data))
    line = refused(capsys, "predict", "efficientnet_b0", "--weights", path, "--image", "skimage:coffee", seconds=30)
    assert re.search(pattern, line), line


def test_preprocess_and_class_names_api():
    from compscale.pretrained import Preprocess, class_names

    assert "not valid JSON" in api_refused(Preprocess.from_json, "{")
    assert "std" in api_refused(Preprocess, std=(0.0, 1.0, 1.0))
    assert "class names must be a list of 3 strings" in api_refused(class_names, 3, ["a", "b"])
    assert "class names" in api_refused(class_names, 2, "ab")
    assert "class names" in api_refused(class_names, 2, ["a", 2])
    assert class_names(2, ["a", "b"]) == ["a", "b"]


BAD_CONFIGS = [
    ("threads-huge", "threads: 100000000000\n", r"--threads must be at most"),
    ("seed-huge", "seed: 100000000000000000000000000000\n", r"--seed must be at most 9,223,372,036,854,775,807"),
    ("seed-negative", "seed: -1\n", r"--seed must be from 0"),
    ("batch-huge", "batch_size: 100000000000000000000\n", r"--batch-size must be at most 65,536"),
    ("epochs-huge", "epochs: 10000000\n", r"--epochs must be at most 100,000"),
    ("workers-huge", "workers: 1000\n", r"--workers must be at most"),
    ("resolution-huge", "resolution: 10000000\n", r"--resolution must be at most 100,000"),
    ("lr-overflow", "lr: 1e400\n", r"config key 'lr' must be a finite number"),
    ("drop-rate-2", "drop_rate: 2.0\n", r"invalid --drop-rate: 2.0"),
    ("warmup-huge", "warmup_epochs: 1e9\n", r"invalid --warmup-epochs"),
    ("minutes-zero", "checkpoint_minutes: 0\n", r"invalid --checkpoint-minutes"),
    ("precise-bn-huge", "precise_bn: 10000000000\n", r"invalid --precise-bn"),
    ("limit-zero", "limit_test: 0\n", r"--limit-test must be a positive number of images"),
    ("model-empty", "model: ''\n", r"--model must be a name or path"),
    ("channels-last-int", "channels_last: 1\n", r"config key 'channels_last' must be bool"),
]


@pytest.mark.parametrize("text, pattern", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_every_config_field_is_checked(capsys, tmp_path, text, pattern):
    import re

    path = tmp_path / "config.yaml"
    path.write_text(f"model: {tmp_path / 'tiny.json'}\ndata: digits\n" + text)
    write_json(tmp_path / "tiny.json", TINY_DICT)
    line = refused(capsys, "train", "--config", path, "--out", tmp_path / "out", seconds=30)
    assert re.search(pattern, line), line
    assert not (tmp_path / "out").exists()


def test_config_api_checks_types_and_bounds():
    from compscale.train.config import TrainConfig

    assert "'epochs' must be int" in api_refused(TrainConfig(epochs="3").validate)
    assert "'lr' must be a finite number" in api_refused(TrainConfig(lr=math.inf).validate)
    assert "--seed" in api_refused(TrainConfig(seed=2**63).validate)
    assert TrainConfig(seed=2**63 - 1, warmup_epochs=1).validate().warmup_epochs == 1.0


# --- class 5: weights with wrong values --------------------------------------------------------------------


def _tiny_state(spec=TINY) -> dict[str, torch.Tensor]:
    return {k: v.clone().contiguous() for k, v in tiny_model(spec).state_dict().items()}


def _float_key(state: dict[str, torch.Tensor]) -> str:
    return next(k for k, v in state.items() if k.endswith("weight") and v.is_floating_point())


@pytest.mark.parametrize("make, fragment", [
    (lambda t: t.to(torch.int64), "holds int64 values; float parameters accept float tensors only"),
    (lambda t: t.to(torch.int8), "holds int8 values; float parameters accept float tensors only"),
    (lambda t: t > 0, "holds bool values; float parameters accept float tensors only"),
    (lambda t: torch.full_like(t, math.nan), "holds NaN or infinite values; the weights are refused"),
    (lambda t: torch.full_like(t, math.inf), "holds NaN or infinite values"),
    (lambda t: t.to(torch.float16), None),  # another float precision: the same numbers, accepted
], ids=["int64", "int8", "bool", "nan", "inf", "half"])
def test_wrong_valued_weights_are_refused_naming_the_key(tmp_path, make, fragment):
    from compscale.models.weights import load_weights

    state = _tiny_state()
    key = _float_key(state)
    state[key] = make(state[key])
    path = tmp_path / "w.safetensors"
    weights_file(path, state)
    if fragment is None:
        load_weights(tiny_model(), path)
        return
    message = api_refused(load_weights, tiny_model(), path)
    assert key in message and fragment in message, message


def test_an_integer_buffer_accepts_integers_only(tmp_path):
    from compscale.models.weights import load_state_dict

    state = _tiny_state()
    key = next(k for k in state if k.endswith("num_batches_tracked"))
    assert "accepts integers only" in api_refused(load_state_dict, tiny_model(), {**state, key: torch.tensor(1.5)})
    weight = _float_key(state)
    assert "accept float tensors only" in api_refused(load_state_dict, tiny_model(),
                                                      {**state, weight: state[weight].to(torch.complex64)})
    # Other float precisions and integer widths are the same numbers: accepted.
    half = {k: (v.half() if v.is_floating_point() else v.to(torch.int32)) for k, v in state.items()}
    load_state_dict(tiny_model(), half)


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_nan_weights_give_one_line_not_a_result(capsys, tmp_path, command):
    """The issue's case: NaN weights gave ``prob nan`` and an evaluation of 9.72 % as if nothing were wrong."""
    ten = TINY.replace(num_classes=10)  # digits' classes: eval builds the model for the data
    state = _tiny_state(ten)
    key = _float_key(state)
    state[key] = torch.full_like(state[key], math.nan)
    path = weights_file(tmp_path / "w.safetensors", state, ten)
    spec = write_json(tmp_path / "tiny.json", json.loads(ten.to_json()))
    argv = (["predict", spec, "--weights", path, "--image", "skimage:coffee"] if command == "predict"
            else ["eval", spec, "--weights", path, "--data", "digits", "--resolution", "32"])
    line = refused(capsys, *argv)
    assert key in line and "NaN or infinite" in line


# --- class 7: every count bounded before work starts -------------------------------------------------------


def _search(tmp_path: Path, *extra: Any) -> list[Any]:
    spec = write_json(tmp_path / "tiny.json", TINY_DICT)
    return ["search", "--base", spec, "--data", "digits", "--out", tmp_path / "s", *extra]


def test_grid_steps_that_would_enumerate_forever_are_refused_up_front(capsys, tmp_path):
    line = refused(capsys, *_search(tmp_path, "--grid-step", "1e-9"), seconds=20)
    assert "points" in line and "more than 200,000" in line and "COMPSCALE_MAX_GRID_POINTS=N" in line
    line = refused(capsys, *_search(tmp_path, "--grid-step", "1e-4"), seconds=20)
    assert "the grid has 250,125,020,001 points (10,001 x 5,001 x 5,001" in line
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("runs"))


def test_grid_bound_in_the_library(monkeypatch):
    from compscale.search.candidates import enumerate_candidates, grid

    with time_limit(10):
        assert "points" in api_refused(enumerate_candidates, TINY, step=1e-4)
        assert "points" in api_refused(enumerate_candidates, TINY, step=5e-324)
        assert "points" in api_refused(grid, 1.0, 2.0, 1e-9)
    monkeypatch.setenv("COMPSCALE_MAX_GRID_POINTS", "10")
    assert "more than 10" in api_refused(enumerate_candidates, TINY)
    assert len(grid(1.0, 1.45, 0.05)) == 10
    monkeypatch.setenv("COMPSCALE_MAX_GRID_POINTS", "-3")
    assert "COMPSCALE_MAX_GRID_POINTS must be a positive integer" in api_refused(grid, 1.0, 2.0, 0.5)


@pytest.mark.parametrize("argv, fragment", [
    (["sweep", "--seeds", "1000000000"], "--seeds must be at most 1,000"),
    (["sweep", "--seed", "9223372036854775807", "--seeds", "2"], "passes 9,223,372,036,854,775,807"),
    (["search", "--workers", "1000"], "--workers must be at most"),
    (["search", "--threads", "100000000000"], "--threads must be at most"),
    (["search", "--batch-size", "100000000000000000000"], "--batch-size must be at most 65,536"),
    (["sweep", "--epochs", "10000000"], "--epochs must be at most 100,000"),
    (["search", "--resolution", "1000000"], "--resolution must be at most 100,000"),
    (["search", "--limit-train", "0"], "--limit-train must be at least 1"),
], ids=["seeds", "seed-range", "workers", "threads", "batch", "epochs", "resolution", "limit"])
def test_study_counts_are_bounded(capsys, tmp_path, argv, fragment):
    spec = write_json(tmp_path / "tiny.json", TINY_DICT)
    line = refused(capsys, argv[0], "--base", spec, "--data", "digits", "--out", tmp_path / "s", *argv[1:],
                   seconds=30)
    assert fragment in line, line


@pytest.mark.parametrize("argv, fragment", [
    (["study", "cardinality", "--quick", "--seeds", "1000000000"], "--seeds must be at most 1,000"),
    (["study", "families", "--quick", "--levels", "1e30"], "levels must be 1 to 100 numbers"),
    (["study", "families", "--quick", "--threads", "100000000000"], "--threads: must be from 1 to"),
    (["demo", "--quick", "--workers", "1000"], "--workers: must be from 1 to"),
    (["worker", "--storage", "sqlite:///x.db", "--study", "s", "--threads", "100000000000"], "--threads: must be"),
    (["bench", "efficientnet_b0", "--threads", "100000000000"], "--threads: must be from 1 to"),
    (["bench", "efficientnet_b0", "--batch", "100000000000000000000"], "--batch: must be from 1 to 65,536"),
    (["export", "efficientnet_b0", "--format", "onnx", "--batch", "1000000", "--out", "{d}/m.onnx"],
     "--batch: must be from 1 to 65,536"),
    (["eval", "efficientnet_b0", "--weights", "x.safetensors", "--data", "digits", "--batch-size", "10000000"],
     "--batch-size must be from 1 to 65,536"),
    (["eval", "efficientnet_b0", "--weights", "x.safetensors", "--data", "digits", "--workers", "1000"],
     "--workers must be from 0 to"),
], ids=["study-seeds", "levels", "study-threads", "demo-workers", "worker-threads", "bench-threads", "bench-batch",
        "export-batch", "eval-batch", "eval-workers"])
def test_command_counts_are_bounded(capsys, tmp_path, argv, fragment):
    out = tmp_path / "out"
    line = refused(capsys, *[a.replace("{d}", str(tmp_path)) for a in argv], "--out", out, seconds=30) \
        if argv[0] in ("study", "demo") else refused(capsys, *[a.replace("{d}", str(tmp_path)) for a in argv],
                                                     seconds=30)
    assert fragment in line, line
    assert not out.exists() and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("flag, value, fragment", [
    ("--seed", "100000000000000000000000000000", "--seed must be at most"),
    ("--threads", "100000000000", "--threads must be at most"),
    ("--batch-size", "100000000000000000000", "--batch-size must be at most 65,536"),
    ("--resolution", "100000", "100,000 px inputs, over the ceiling of 8,192 px"),
    ("--epochs", "1000000", "--epochs must be at most 100,000"),
    ("--limit-train", "100000000000", "--limit-train must be at most"),
    ("--eval-batch-size", "100000000", "--eval-batch-size must be at most"),
    ("--workers", "1000", "--workers must be at most"),
], ids=["seed", "threads", "batch", "resolution", "epochs", "limit", "eval-batch", "workers"])
def test_training_counts_are_bounded(capsys, tmp_path, flag, value, fragment):
    spec = write_json(tmp_path / "tiny.json", TINY_DICT)
    line = refused(capsys, "train", spec, "--data", "digits", "--out", tmp_path / "out", flag, value, seconds=30)
    assert fragment in line, line
    assert not (tmp_path / "out").exists()


def test_export_at_100000_pixels_is_refused_before_building(capsys, tmp_path):
    line = refused(capsys, "export", "efficientnet_b0", "--format", "onnx", "--resolution", "100000", "--out",
                   tmp_path / "m.onnx", seconds=30)
    assert "100,000 px inputs" in line and "COMPSCALE_MAX_SIDE=N" in line
    assert not (tmp_path / "m.onnx").exists()


def test_run_settings_bound_every_count():
    from compscale.jobs.runner import RunSettings

    def settings(**kw):
        return RunSettings(data="digits", out="x", **kw).validate

    assert "--seeds must be at most 1,000" in api_refused(settings(seeds=10**9))
    assert "--seed" in api_refused(settings(seed=2**63))
    assert "--seed" in api_refused(settings(seed=-1))
    assert "--workers must be at most" in api_refused(settings(workers=1000))
    assert "--workers must be at most 256 per machine" in api_refused(
        settings(workers=1000, storage="postgresql://u@h/db"))
    RunSettings(data="digits", out="x", workers=100, storage="postgresql://u@h/db").validate()
    assert "--epochs must be an integer" in api_refused(settings(epochs="3"))
    assert "--lr must be a finite positive number" in api_refused(settings(lr=math.nan))
    assert "--threads must be at most" in api_refused(settings(threads=10**11))


# --- class 3: a study's trials are never reused under other settings ---------------------------------------


def test_a_job_folder_trained_with_other_settings_is_refused(tmp_path):
    """A study re-run with another --lr into the same folder (a new storage, the same --out) would resume each
    job's finished run and report its accuracy as the new study's. The job's folder says how it was trained:
    another setting is one line naming it; the same settings resume."""
    from compscale.jobs.trial import train_spec

    out = tmp_path / "job"
    opts = dict(batch_size=32, limit_train=64, limit_test=32, threads=1, warmup_epochs=0.0)
    first = train_spec(TINY, "digits", out, epochs=1, lr=0.01, **opts)
    again = train_spec(TINY, "digits", out, epochs=1, lr=0.01, **opts)  # the same settings: resumed, same result
    assert again["top1"] == first["top1"]
    for changes, key in (({"lr": 0.02}, "lr"), ({"lr": 0.01, "limit_test": 16}, "limit_test"),
                         ({"lr": 0.01, "schedule": "cosine"}, "schedule")):
        message = api_refused(train_spec, TINY, "digits", out, 1, **{**opts, **changes})
        assert f"holds a run trained with {key} = " in message and "use another --out" in message
    # A hostile metrics.jsonl beside the checkpoint is one line too.
    (out / "metrics.jsonl").write_text("not json\n")
    assert "is not an epoch record" in api_refused(train_spec, TINY, "digits", out, 1, lr=0.01, **opts)


def test_a_study_rerun_with_another_lr_is_refused(capsys, tmp_path):
    """The same folder and storage with another --lr: the study's fingerprint names the setting."""
    spec = write_json(tmp_path / "tiny.json", TINY_DICT)
    base = ["sweep", "--base", spec, "--data", "digits", "--out", tmp_path / "s", "--phis", "0", "--strategies",
            "compound", "--seeds", "1", "--epochs", "1", "--limit-train", "64", "--limit-test", "32",
            "--batch-size", "32", "--threads", "1", "--json"]
    capsys.readouterr()
    assert main([str(a) for a in base + ["--lr", "0.01"]]) == 0
    line = refused(capsys, *base, "--lr", "0.02")
    assert "was run with other settings" in line and "lr" in line
