"""The bad-input table: every user mistake is one readable line, exit status 2, and no partial output.

Each CLI case runs ``compscale.cli.main(argv)`` in process and checks: the return code is
``EXIT_USER_ERROR`` (2), stderr is exactly one line ``compscale: error: ...`` matching the expected text, no
traceback, nothing on stdout, and the case's output folder holds no file (or only the complete files the
case allows: a run that fails after starting has written its ``config.yaml``, atomically). Each API case
checks that the library raises :class:`~compscale.errors.UserError` with a one-line message.
Two cases also run as real processes, to prove no traceback escapes the installed entry point.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from compscale.cli import EXIT_USER_ERROR, main
from compscale.errors import UserError
from conftest import tiny_spec

TINY = tiny_spec(stages=2, head_channels=32)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Every bad file the table needs, made once: specs, weights, images, folders, configs."""
    from PIL import Image

    from compscale.models.registry import build_model, resolve_spec
    from compscale.models.weights import save_weights

    d = tmp_path_factory.mktemp("bad")
    (d / "tiny.json").write_text(json.dumps(TINY.as_dict()))
    save_weights(build_model(resolve_spec(TINY, 10, 1)), d / "tiny.safetensors")
    raw = (d / "tiny.safetensors").read_bytes()
    (d / "truncated.safetensors").write_bytes(raw[: len(raw) // 2])
    (d / "header.safetensors").write_bytes(raw[:5])
    (d / "garbage.safetensors").write_bytes(b"\xff" * 100)
    torch.save({"conv.weight": torch.zeros(2)}, d / "wrong_keys.pth")
    torch.save([1, 2, 3], d / "list.pth")
    (d / "truncated.pth").write_bytes((d / "wrong_keys.pth").read_bytes()[:40])
    (d / "broken.json").write_text('{"family": "efficientnet", ')
    (d / "unknown_family.json").write_text('{"family": "transformer"}')

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(d / "good.png")
    png = (d / "good.png").read_bytes()
    (d / "truncated.png").write_bytes(png[: len(png) // 2])
    (d / "garbage.png").write_bytes(b"this is not an image")
    (d / "empty.png").write_bytes(b"")
    (d / "empty_folder").mkdir()
    for cls in ("a", "b"):
        (d / "no_images" / cls).mkdir(parents=True)
        (d / "no_images" / cls / "x.jpg").write_bytes(b"not a jpeg")
        # A truncated JPEG passes PIL's verify() (which does not decode): it fails only when decoded.
        (d / "truncated_jpeg" / cls).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(d / "truncated_jpeg" / cls / f"{i}.jpg")
        jpg = (d / "truncated_jpeg" / cls / "0.jpg").read_bytes()
        (d / "truncated_jpeg" / cls / "0.jpg").write_bytes(jpg[: len(jpg) // 2])

    configs = {
        "unknown_key.yaml": "model: tiny.json\nepochz: 3\n",
        "wrong_type.yaml": "model: tiny.json\nepochs: three\n",
        "nan_lr.yaml": "model: tiny.json\nlr: .nan\n",
        "inf_warmup.yaml": "model: tiny.json\nwarmup_epochs: .inf\n",
        "list.yaml": "- model\n- epochs\n",
        "not_yaml.yaml": "model: [unclosed\n",
        "python_tag.yaml": "model: !!python/object/apply:os.system ['echo hacked']\n",
        "mixed_keys.yaml": "1: one\nnull: two\nmodel: tiny.json\n",
        "huge_int_lr.yaml": "model: tiny.json\nlr: " + "9" * 400 + "\n",
        "bool_epochs.yaml": "model: tiny.json\nepochs: true\n",
    }
    for name, text in configs.items():
        (d / name).write_text(text)
    return d


#: (id, argv with {d} = the files folder and {out} = a fresh output folder, stderr regex, files allowed in {out})
CLI_CASES: list[tuple[str, list[str], str, set[str]]] = [
    # coefficients and phi
    ("phi-nan", ["scale", "--phi", "nan"], r"--phi: must be finite", set()),
    ("phi-inf", ["scale", "--phi=-inf"], r"--phi: must be finite", set()),
    ("phi-huge", ["scale", "--phi", "1e308"], r"phi = 1e\+308 is too large", set()),
    ("phi-too-large", ["scale", "--phi", "100"], r"phi = 100 is too large: it multiplies depth by 8.28e\+07", set()),
    ("phi-text", ["scale", "--phi", "one"], r"--phi: not a number: 'one'", set()),
    ("alpha-below-1", ["scale", "--alpha", "0.5", "--beta", "1.1", "--gamma", "1.15", "--phi", "1"],
     r"alpha must be >= 1", set()),
    ("alpha-alone", ["scale", "--alpha", "1.2", "--phi", "1"], r"give all of --alpha, --beta and --gamma", set()),
    ("constraint", ["scale", "--alpha", "2", "--beta", "2", "--gamma", "2", "--phi", "1"],
     r"alpha\*beta\^2\*gamma\^2 = 32.0000 is not within 2", set()),
    ("tolerance-zero", ["scale", "--tolerance", "0", "--phi", "1"], r"tolerance must be > 0", set()),
    ("delta-on-efficientnet", ["scale", "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.1", "--delta", "1.1",
                               "--phi", "1"], r"delta scales the cardinality", set()),
    ("phi-and-budget", ["scale", "--phi", "1", "--target-macs", "1G"], r"give either --phi or a budget", set()),
    # budgets
    ("budget-negative", ["scale", "--target-macs", "-5"], r"--target-macs: not an amount: '-5'", set()),
    ("budget-zero", ["scale", "--target-params", "0"], r"--target-params: must be positive", set()),
    ("budget-too-small", ["scale", "--target-macs", "10k"], r"budget is below the smallest buildable model", set()),
    ("budget-text", ["scale", "--target-params", "lots"], r"not an amount: 'lots'", set()),
    # model names and resolutions
    ("model-unknown", ["profile", "efficientnet_b9"], r"unknown model 'efficientnet_b9'", set()),
    ("model-unknown-base", ["scale", "--base", "resnet9000", "--phi", "1"], r"unknown model 'resnet9000'", set()),
    ("models-no-match", ["models", "zzz*"], r"no model matches 'zzz\*'", set()),
    ("resolution-zero", ["profile", "efficientnet_b0", "--resolution", "0"],
     r"resolution must be an integer >= 32", set()),
    ("resolution-text", ["profile", "efficientnet_b0", "--resolution", "big"],
     r"--resolution: invalid int value", set()),
    ("compare-at-text", ["compare", "resnet50@big"], r"the part after '@' must be an input side", set()),
    ("export-resolution", ["export", "efficientnet_b0", "--format", "onnx", "--resolution", "0",
                           "--out", "{out}/m.onnx"],
     r"--resolution: must be >= 1", set()),
    ("export-unknown", ["export", "nosuch", "--format", "onnx", "--out", "{out}/m.onnx"],
     r"unknown model 'nosuch'", set()),
    ("spec-file-missing", ["train", "{d}/missing.json", "--out", "{out}"], r"model spec file not found", set()),
    ("spec-file-broken", ["train", "{d}/broken.json", "--out", "{out}"],
     r"cannot read model spec .*broken.json", set()),
    # dataset paths, images, folders
    ("data-missing", ["train", "{d}/tiny.json", "--data", "{d}/nowhere", "--out", "{out}"],
     r"dataset .* not found", set()),
    ("data-is-file", ["train", "{d}/tiny.json", "--data", "{d}/good.png", "--out", "{out}"], r"is not a folder", set()),
    ("data-empty-folder", ["train", "{d}/tiny.json", "--data", "{d}/empty_folder", "--out", "{out}"],
     r"has no class folders", set()),
    ("data-no-readable-images", ["train", "{d}/tiny.json", "--data", "{d}/no_images", "--out", "{out}"],
     r"no readable images in .*\(2 unreadable file\(s\) skipped\)", set()),
    ("data-truncated-jpeg", ["train", "{d}/tiny.json", "--data", "{d}/truncated_jpeg", "--out", "{out}",
                             "--epochs", "1", "--batch-size", "4", "--resolution", "32", "--threads", "1"],
     r"0.jpg is not a readable image \(image file is truncated", {"config.yaml"}),
    ("holdout-too-big", ["train", "{d}/tiny.json", "--holdout", "100000", "--out", "{out}"],
     r"leaves no training images", set()),
    ("image-corrupt", ["predict", "efficientnet_b0", "--weights", "{d}/tiny.safetensors", "--image", "{d}/garbage.png"],
     r"garbage.png is not a readable image", set()),
    ("image-truncated", ["predict", "efficientnet_b0", "--weights", "{d}/tiny.safetensors",
                         "--image", "{d}/truncated.png"],
     r"truncated.png is not a readable image", set()),
    ("image-empty", ["cam", "efficientnet_b0", "--weights", "{d}/tiny.safetensors", "--image", "{d}/empty.png",
                     "--out", "{out}/cam.png"], r"empty.png is not a readable image", set()),
    ("image-missing", ["predict", "efficientnet_b0", "--weights", "{d}/tiny.safetensors", "--image", "{d}/nope.png"],
     r"image not found", set()),
    ("topk-negative", ["predict", "efficientnet_b0", "--weights", "{d}/tiny.safetensors", "--image", "{d}/good.png",
                       "--topk", "-3"], r"topk must be a positive integer, got -3", set()),
    # checkpoints and weights files
    ("weights-missing", ["eval", "{d}/tiny.json", "--weights", "{d}/none.safetensors", "--data", "digits"],
     r"weights file not found", set()),
    ("weights-truncated", ["eval", "{d}/tiny.json", "--weights", "{d}/truncated.safetensors", "--data", "digits"],
     r"truncated.safetensors is not a readable safetensors file", set()),
    ("weights-header-only", ["predict", "efficientnet_b0", "--weights", "{d}/header.safetensors",
                             "--image", "{d}/good.png"],
     r"header.safetensors is not a readable safetensors file", set()),
    ("weights-garbage-export", ["export", "efficientnet_b0", "--format", "onnx", "--weights", "{d}/garbage.safetensors",
                                "--out", "{out}/m.onnx"],
     r"garbage.safetensors is not a readable safetensors file", set()),
    ("weights-wrong-model", ["eval", "efficientnet_b0", "--weights", "{d}/tiny.safetensors", "--data", "digits"],
     r"holds weights of another model than efficientnet_b0 \(head_channels: 32 there, 1280 here\)", set()),
    ("weights-wrong-family", ["predict", "resnet50", "--weights", "{d}/tiny.safetensors", "--image", "{d}/good.png"],
     r"holds a efficientnet model, not resnet50", set()),
    ("weights-wrong-keys", ["export", "efficientnet_b0", "--format", "onnx", "--weights", "{d}/wrong_keys.pth",
                            "--out", "{out}/m.onnx"], r"weights do not fit this model .*missing key", set()),
    ("weights-not-a-dict", ["export", "efficientnet_b0", "--format", "torchscript", "--weights", "{d}/list.pth",
                            "--out", "{out}/m.pt"], r"does not hold a state dict of tensors", set()),
    ("weights-truncated-pth", ["eval", "{d}/tiny.json", "--weights", "{d}/truncated.pth", "--data", "digits"],
     r"truncated.pth is not a loadable weights file", set()),
    ("finetune-no-weights", ["finetune", "{d}/tiny.json", "--out", "{out}"], r"finetune needs --weights", set()),
    # YAML configs
    ("config-unknown-key", ["train", "--config", "{d}/unknown_key.yaml", "--out", "{out}"],
     r"unknown key 'epochz' \(did you mean 'epochs'\?\)", set()),
    ("config-wrong-type", ["train", "--config", "{d}/wrong_type.yaml", "--out", "{out}"],
     r"config key 'epochs' must be int, got str 'three'", set()),
    ("config-bool-for-int", ["train", "--config", "{d}/bool_epochs.yaml", "--out", "{out}"],
     r"config key 'epochs' must be int, got bool True", set()),
    ("config-nan", ["train", "--config", "{d}/nan_lr.yaml", "--out", "{out}"],
     r"config key 'lr' must be a finite number", set()),
    ("config-inf", ["train", "--config", "{d}/inf_warmup.yaml", "--out", "{out}"],
     r"config key 'warmup_epochs' must be a finite number", set()),
    ("config-huge-int", ["train", "--config", "{d}/huge_int_lr.yaml", "--out", "{out}"],
     r"config key 'lr' must be float", set()),
    ("config-list", ["train", "--config", "{d}/list.yaml", "--out", "{out}"],
     r"must be a mapping of keys to values", set()),
    ("config-not-yaml", ["train", "--config", "{d}/not_yaml.yaml", "--out", "{out}"], r"is not valid YAML", set()),
    ("config-python-tag", ["train", "--config", "{d}/python_tag.yaml", "--out", "{out}"],
     r"is not valid YAML: could not determine a constructor for the tag .*python/object/apply", set()),
    ("config-mixed-keys", ["train", "--config", "{d}/mixed_keys.yaml", "--out", "{out}"], r"unknown key 1", set()),
    ("config-missing", ["train", "--config", "{d}/none.yaml", "--out", "{out}"], r"cannot read config", set()),
    ("flag-epochs-zero", ["train", "{d}/tiny.json", "--epochs", "0", "--out", "{out}"],
     r"--epochs must be at least 1", set()),
    ("flag-lr-inf", ["train", "{d}/tiny.json", "--lr", "inf", "--out", "{out}"], r"--lr: must be finite", set()),
    ("flag-augment", ["train", "{d}/tiny.json", "--augment", "mixup", "--out", "{out}"],
     r"unknown augmentation 'mixup'", set()),
    ("flag-unknown", ["train", "{d}/tiny.json", "--learning-rate", "0.1", "--out", "{out}"],
     r"unrecognized arguments", set()),
    ("command-unknown", ["trian"], r"invalid choice: 'trian'", set()),
]


def _fill(argv: list[str], d: Path, out: Path) -> list[str]:
    return [a.replace("{d}", str(d)).replace("{out}", str(out)) for a in argv]


def _files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


@pytest.mark.parametrize("argv, pattern, allowed", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_one_line_exit_2_no_partial_output(argv, pattern, allowed, files, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(_fill(argv, files, out))
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    # Progress lines of a run that started (the truncated-image case) come before the error; the error is the last.
    errors = [ln for ln in lines if ln.startswith("compscale: error:")]
    assert rc == EXIT_USER_ERROR, captured.err
    assert len(errors) == 1 and lines[-1] == errors[0], captured.err
    assert "Traceback" not in captured.err
    if not allowed:
        assert len(lines) == 1, captured.err
    import re

    assert re.search(pattern, errors[0]), errors[0]
    assert captured.out == ""
    left = _files_in(out)
    assert left <= allowed, f"partial output left: {sorted(left - allowed)}"
    assert not any(name.endswith(".tmp") for name in left)


def _api_cases() -> list[tuple[str, Callable[[Path], object], str]]:
    import compscale
    from compscale.data import load_dataset
    from compscale.jobs.queue import open_storage
    from compscale.models.weights import load_weights, read_state_dict
    from compscale.pretrained import load_image
    from compscale.scaling import CompoundScaling
    from compscale.train.checkpoint import load_checkpoint
    from compscale.train.config import TrainConfig, config_from_mapping, load_config

    def tiny_model():
        from compscale.models.registry import build_model, resolve_spec

        return build_model(resolve_spec(TINY, 10, 1))

    return [
        ("api-alpha-nan", lambda d: CompoundScaling(alpha=float("nan")), r"alpha must be a finite number"),
        ("api-beta-text", lambda d: CompoundScaling(beta="wide"), r"beta must be a number, got 'wide'"),
        ("api-phi-inf", lambda d: compscale.scale("efficientnet_b0", float("inf")), r"phi must be a finite number"),
        ("api-phi-steep",
         lambda d: compscale.scale("efficientnet_b0", 10, CompoundScaling(alpha=3.0, enforce_constraint=False)),
         r"phi = 10 is too large"),
        ("api-budget-negative", lambda d: compscale.scale_to_budget("efficientnet_b0", target_macs=-1.0),
         r"a budget must be positive"),
        ("api-budget-none", lambda d: compscale.scale_to_budget("efficientnet_b0"), r"give a budget"),
        ("api-model-unknown", lambda d: compscale.create_model("efficientnet_b42"),
         r"unknown model 'efficientnet_b42'"),
        ("api-num-classes", lambda d: compscale.create_model("efficientnet_b0", num_classes=0),
         r"num_classes must be a positive integer"),
        ("api-resolution", lambda d: compscale.profile("efficientnet_b0", resolution=8),
         r"resolution must be an integer >= 32"),
        ("api-spec-family", lambda d: compscale.spec_from_dict({"family": "transformer"}), r"transformer"),
        ("api-weights-truncated", lambda d: load_weights(tiny_model(), d / "truncated.safetensors"),
         r"is not a readable safetensors file"),
        ("api-weights-wrong-model",
         lambda d: load_weights(compscale.create_model("efficientnet_b0"), d / "tiny.safetensors"),
         r"weights do not fit this model .*has shape"),
        ("api-weights-missing", lambda d: read_state_dict(d / "none.pth"), r"weights file not found"),
        ("api-checkpoint-not-training", lambda d: load_checkpoint(d / "tiny.safetensors"),
         r"is not a compscale training checkpoint"),
        ("api-checkpoint-truncated", lambda d: load_checkpoint(d / "truncated.safetensors"),
         r"is not a readable checkpoint"),
        ("api-config-unknown", lambda d: config_from_mapping({"lr": 0.1, "bacth_size": 8}),
         r"unknown key 'bacth_size' \(did you mean 'batch_size'\?\)"),
        ("api-config-type", lambda d: config_from_mapping({"seed": 1.5}),
         r"config key 'seed' must be int, got float 1.5"),
        ("api-config-file", lambda d: load_config(d / "wrong_type.yaml"), r"must be int"),
        ("api-config-validate", lambda d: TrainConfig(optimizer="lamb").validate(), r"unknown optimizer 'lamb'"),
        ("api-dataset-empty", lambda d: load_dataset(str(d / "empty_folder"), 32), r"has no class folders"),
        ("api-dataset-limit", lambda d: load_dataset("digits", 32, limit_train=0), r"--limit-train must be a positive"),
        ("api-image-corrupt", lambda d: load_image(str(d / "garbage.png")), r"is not a readable image"),
        ("api-image-array", lambda d: load_image(np.zeros((4, 4, 3), dtype=np.float32)), r"image arrays must be uint8"),
        ("api-storage-scheme", lambda d: open_storage("nosuchdb://x"), r"cannot open the study storage nosuchdb://x"),
        ("api-storage-sqlite-dir", lambda d: open_storage(f"sqlite:///{d}/no/such/dir/study.db"),
         r"cannot open the study storage .*unable to open database file"),
        ("api-storage-garbage", lambda d: open_storage("not a url"), r"cannot open the study storage not a url"),
    ]


API_CASES = _api_cases()


@pytest.mark.parametrize("call, pattern", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_bad_input_raises_one_line_user_error(call, pattern, files):
    import re

    with pytest.raises(UserError) as err:
        call(files)
    message = str(err.value)
    assert "\n" not in message and message.strip(), message
    assert re.search(pattern, message), message


def test_storage_url_password_never_printed():
    """An unreachable PostgreSQL URL: one line, and the password is not in it."""
    from compscale.jobs.queue import open_storage

    with pytest.raises(UserError) as err:
        open_storage("postgresql://alice:s3cret-pw@127.0.0.1:1/studies")
    message = str(err.value)
    assert "\n" not in message and "s3cret-pw" not in message
    assert "alice:***@127.0.0.1:1" in message or "needs" in message


@pytest.mark.parametrize("case", ["weights-truncated", "config-python-tag"])
def test_no_traceback_escapes_the_real_process(case, files, tmp_path):
    argv = next(c[1] for c in CLI_CASES if c[0] == case)
    proc = subprocess.run([sys.executable, "-m", "compscale", *_fill(argv, files, tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_USER_ERROR
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("compscale: error: ")


def test_the_table_is_large_enough():
    """The README quotes these figures: keep them honest."""
    assert len(CLI_CASES) + len(API_CASES) + 1 >= 30
    assert len({c[0] for c in CLI_CASES + API_CASES}) == len(CLI_CASES) + len(API_CASES)
