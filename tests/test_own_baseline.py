"""Your own baseline: the spec files in examples/ (an EfficientNet-style and a ResNet-style baseline), and a
family of your own in Python (examples/my_family.py: spec + scaling rule + builder) reached by import path —
``--base package.module:name`` — by every command and by a study's worker subprocesses."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

import compscale
from compscale.cli import main
from compscale.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FAMILY = "examples.my_family:plain_tiny"
SMALL = ["--data", "digits", "--epochs", "1", "--limit-train", "64", "--limit-test", "32", "--batch-size", "32",
         "--threads", "1"]


@pytest.fixture
def in_root(monkeypatch):
    """Run from the repository root, where `examples.my_family` is importable (as `python -m` would find it)."""
    monkeypatch.chdir(ROOT)


def _json(capsys, argv: list[str]):
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("name, family", [("efficientnet_tiny.yaml", "efficientnet"), ("resnet_tiny.yaml", "resnet")])
def test_example_spec_files_profile_scale_and_train(capsys, tmp_path, name, family):
    path = str(EXAMPLES / name)
    spec = compscale.model_spec(path)
    assert spec.family == family and spec.resolution == 32
    assert _json(capsys, ["profile", path, "--json"])["macs"] < 50e6  # small: seconds per epoch on a CPU
    out = _json(capsys, ["scale", "--base", path, "--target-macs", "4x", "--json"])
    assert out["family"] == family and out["macs"] <= 4 * out["base_macs"] and out["macs_ratio"] > 2
    result = _json(capsys, ["train", path, *SMALL, "--out", str(tmp_path / "run"), "--json"])
    assert 0 <= result["top1"] <= 1


def test_readme_shows_the_examples_and_the_extension_point():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for needle in ("examples/efficientnet_tiny.yaml", "examples/resnet_tiny.yaml", "examples/my_family.py",
                   "--base examples.my_family:plain_tiny", "register_model", "--target-macs 4x",
                   "--format timm", "--format torchvision"):
        assert needle in readme, needle
    # The README's spec-file listing is the file itself.
    shown = re.search(r"```yaml\n# examples/efficientnet_tiny.yaml\n(.*?)```", readme, re.S)
    assert shown and shown.group(1).strip() in (EXAMPLES / "efficientnet_tiny.yaml").read_text(encoding="utf-8")


def test_a_family_of_your_own_by_import_path(in_root, capsys, tmp_path):
    spec = compscale.model_spec(FAMILY)
    assert spec.family == "plainnet" and type(spec).__module__ == "examples.my_family"
    assert compscale.model_spec("examples.my_family:PlainNetSpec") == spec  # a spec class: its defaults
    model = compscale.create_model(FAMILY, num_classes=4)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4) and model.spec.num_classes == 4
    # Its own scaling rule: round_repeats (ceil) on the depths, round_filters on the widths, the side by r.
    scaled = compscale.scale(FAMILY, phi=1)
    assert scaled.spec.depths == (2, 2, 2) and scaled.spec.widths == (16, 32, 72) and scaled.spec.resolution == 37
    assert compscale.spec_from_dict(scaled.spec.as_dict()) == scaled.spec  # JSON round trip
    assert _json(capsys, ["profile", FAMILY, "--json"])["params"] == compscale.profile(spec).params
    out = _json(capsys, ["scale", "--base", FAMILY, "--target-params", "2x", "--json"])
    assert out["family"] == "plainnet" and out["spec"]["family"] == "plainnet"
    result = _json(capsys, ["train", FAMILY, *SMALL, "--out", str(tmp_path / "run"), "--json"])
    weights = tmp_path / "run" / "model.safetensors"
    assert 0 <= result["top1"] <= 1 and compscale.model_spec(str(weights)).family == "plainnet"
    # ... and, trained, like any model: a CAM titled with its own name, an export.
    assert main(["cam", str(weights), "--image", "skimage:coffee", "--out", str(tmp_path / "cam.png")]) == 0
    assert main(["export", str(weights), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0


def test_search_workers_import_the_family(in_root, capsys, tmp_path, monkeypatch):
    """`compscale search --base module:name --workers 2`: the study's fingerprint names the module, and the
    worker subprocess (`compscale worker`) imports it before it builds a model. The main process is kept from
    taking jobs, so the subprocess must run every one of them."""
    import compscale.jobs.runner as runner

    monkeypatch.setattr(runner, "run_worker", lambda *args, **kwargs: 0)  # this process only: not the subprocess
    out = tmp_path / "search"
    result = _json(capsys, ["search", "--base", FAMILY, *SMALL, "--grid-step", "0.1", "--tolerance", "0.3",
                            "--workers", "2", "--out", str(out), "--json"])
    assert result["trials"] and all(t["state"] in ("complete", "pruned") for t in result["trials"])
    assert result["baseline"]["spec"]["family"] == "plainnet"
    log = (out / "worker1.log").read_text()
    ran = int(re.search(r"ran (\d+) job", log).group(1))
    assert ran == len(result["trials"]) >= 1, log
    from compscale.jobs.queue import load_study

    fingerprint = load_study(f"sqlite:///{out / 'study.db'}", "search").user_attrs["fingerprint"]
    assert fingerprint["imports"] == ["examples.my_family"]


def test_a_worker_that_cannot_import_the_family_says_so(in_root, tmp_path):
    from compscale.models.registry import import_modules

    with pytest.raises(UserError, match="cannot import 'no_such_pkg.family'") as err:
        import_modules(["no_such_pkg.family"])
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="list of module names"):
        import_modules(["os; rm -rf /"])


def test_a_family_defined_in_a_script_cannot_reach_workers(in_root, tmp_path):
    from compscale.jobs.runner import Job, RunSettings, study_imports

    spec = compscale.model_spec(FAMILY)
    main_spec = type("ScriptSpec", (type(spec),), {"__module__": "__main__", "family": "scriptnet"})()
    jobs = [Job(spec, (0,), "a"), Job(main_spec, (0,), "b")]
    assert study_imports(jobs[:1], RunSettings(data="digits", out=str(tmp_path), workers=2)) == ["examples.my_family"]
    assert study_imports(jobs, RunSettings(data="digits", out=str(tmp_path), workers=1)) == ["examples.my_family"]
    with pytest.raises(UserError, match="__main__.*package.module:name"):
        study_imports(jobs, RunSettings(data="digits", out=str(tmp_path), workers=2))


@pytest.mark.parametrize("ref, fragment", [
    ("examples.my_family:nothing_here", "has no 'nothing_here'"),
    ("examples.my_family:PlainNet", "nn.Module"),  # a builder's class, not a spec
    ("examples.my_family:torch", "must be a ModelSpec"),
    ("no_such_pkg.family:spec", "cannot import"),
    ("sys:exit", "must be a ModelSpec"),  # a builtin is never called (os:fork in someone's config file)
    ("os:getcwd", "must be a ModelSpec"),
])
def test_bad_import_paths_are_one_line(in_root, capsys, ref, fragment):
    assert main(["profile", ref]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err


def test_a_module_given_to_scale_is_one_line_pointing_to_the_examples():
    class MyCNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(*[torch.nn.Conv2d(3, 3, 3) for _ in range(20)])

    with pytest.raises(UserError) as err:
        compscale.scale(MyCNN(), phi=1)
    text = str(err.value)
    assert "\n" not in text and "MyCNN" in text and "examples/" in text and "module:name" in text
    assert "Conv2d(" not in text


def test_register_model_makes_a_name(in_root):
    from examples.my_family import plain_tiny

    assert "plainnet_tiny" in compscale.list_models("plainnet*")
    assert compscale.model_spec("plainnet_tiny") == plain_tiny()
    with pytest.raises(ValueError, match="already registered"):
        compscale.models.register_model("plainnet_tiny", plain_tiny)
    assert "examples" in sys.modules
