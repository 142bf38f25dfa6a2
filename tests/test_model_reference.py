"""One model reference everywhere: every command and API that takes a model takes a registered name, a spec file
or a weights file that records its spec (classes, input channels, resolution and weights come from it), through
one resolver (``compscale.models.registry.resolve_reference``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import compscale
from compscale.cli import main
from compscale.errors import UserError
from compscale.models.registry import resolve_reference
from conftest import tiny_spec, tiny_spec_file

FORMS = ("name", "spec", "weights")
TRAIN = ["--data", "digits", "--epochs", "1", "--limit-train", "96", "--limit-test", "48", "--batch-size", "32",
         "--threads", "1"]


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> dict[str, tuple[str, str | None]]:
    """Each form → (MODEL, the --weights the commands that need weights are given): a registered name
    (resnext_tiny) with weights saved for digits; the tests' tiny EfficientNet as a spec file with the weights a
    real `compscale train` run wrote on digits (1 channel, 10 classes); that weights file alone."""
    root = tmp_path_factory.mktemp("refs")
    spec_file = tiny_spec_file(root / "tiny.json")
    assert main(["train", spec_file, *TRAIN, "--out", str(root / "run")]) == 0
    trained = str(root / "run" / "model.safetensors")
    named = str(root / "resnext.safetensors")
    torch.manual_seed(0)
    compscale.save_weights(compscale.create_model("resnext_tiny", num_classes=10, in_chans=1), named)
    return {"name": ("resnext_tiny", named), "spec": (spec_file, trained), "weights": (trained, None)}


def _run(capsys, argv: list[str]) -> dict | list:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def _weights(refs, form: str) -> list[str]:
    weights = refs[form][1]
    return ["--weights", weights] if weights else []


# --- the API ----------------------------------------------------------------------------------------------


def test_the_resolver_gives_the_recorded_architecture_and_weights(refs):
    trained = refs["weights"][0]
    ref = resolve_reference(trained)
    assert ref.weights == trained and ref.spec.in_chans == 1 and ref.spec.num_classes == 10
    assert ref.spec == tiny_spec().replace(in_chans=1, num_classes=10)
    assert ref.classes == tuple(str(i) for i in range(10)) and ref.name == "tiny"
    spec_ref = resolve_reference(refs["spec"][0])
    assert spec_ref.spec == tiny_spec() and spec_ref.weights is None and spec_ref.name == "tiny"
    assert resolve_reference("resnext_tiny").spec == compscale.model_spec("resnext_tiny")


def test_every_api_that_takes_a_model_takes_each_form(refs):
    for form in FORMS:
        ref = refs[form][0]
        spec = compscale.model_spec(ref)
        assert compscale.profile(ref).params == compscale.profile(compscale.create_model(spec)).params
        assert compscale.scale(ref, phi=1).base == spec
        budget = compscale.scale_to_budget(ref, target_macs="2x")
        assert budget.macs <= 2 * budget.base_macs and budget.phi > 0


def test_a_weights_file_without_a_spec_and_a_module_are_refused_in_one_line(tmp_path):
    bare = tmp_path / "bare.pth"
    torch.save(compscale.create_model("resnext_tiny").state_dict(), bare)
    with pytest.raises(UserError, match="does not say which model it holds.*--weights") as err:
        compscale.model_spec(str(bare))
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="not found"):
        compscale.model_spec(str(tmp_path / "missing.safetensors"))
    for call in (lambda: compscale.scale(torch.nn.Conv2d(3, 8, 3), phi=1),
                 lambda: compscale.create_model(compscale.create_model("resnext_tiny"))):
        with pytest.raises(UserError, match="not an nn.Module.*examples") as err:
            call()
        assert "\n" not in str(err.value) and "Conv2d(" not in str(err.value)


def test_cli_says_what_a_model_may_be(capsys):
    assert main(["profile", "zzzz_not_a_model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model" in err[0] and "spec file" in err[0], err


# --- every command, on every form -------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
def test_profile_scale_compare(refs, capsys, form):
    ref = refs[form][0]
    spec = compscale.model_spec(ref)
    assert _run(capsys, ["profile", ref, "--json"])["params"] == compscale.profile(ref).params
    out = _run(capsys, ["scale", "--base", ref, "--phi", "1", "--json"])
    assert out["family"] == spec.family and out["base_macs"] == compscale.scale(ref, 0).macs
    relative = _run(capsys, ["scale", "--base", ref, "--target-macs", "3x", "--json"])
    assert relative["macs"] <= 3 * relative["base_macs"]
    rows = _run(capsys, ["compare", ref, "resnext_tiny", "--json"])
    assert rows[0]["model"] == ref and rows[0]["family"] == spec.family and rows[0]["resolution"] == 32


@pytest.mark.parametrize("form", FORMS)
def test_export_onnx(refs, capsys, tmp_path, form):
    ref = refs[form][0]
    out = tmp_path / "m.onnx"
    report = _run(capsys, ["export", ref, *_weights(refs, form), "--format", "onnx", "--out", str(out), "--json"])
    assert out.is_file() and report["input_shape"][1] == 1  # every form's weights are digits' (1 channel)
    if form != "name":  # the trained weights (1 channel, 10 classes) went into the file: ONNX Runtime agrees
        import onnxruntime as ort

        model = compscale.load_weights(compscale.create_model(compscale.model_spec(refs["weights"][0])),
                                       refs["weights"][0]).eval()
        x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        (theirs,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            ours = model(x)
        assert theirs.shape == (2, 10)
        assert (torch.from_numpy(theirs) - ours).abs().max() <= 1e-4 * ours.abs().max()


@pytest.mark.parametrize("form", FORMS)
def test_bench_and_latency(refs, capsys, form):
    ref = refs[form][0]
    rows = _run(capsys, ["bench", ref, "--batch", "1", "--repeats", "1", "--warmup", "1", "--backend", "eager",
                         "--threads", "1", "--json"])
    assert rows[0]["model"] == ref and rows[0]["resolution"] == 32
    peer = refs["spec"][0] if form == "name" else "resnext_tiny"
    out = _run(capsys, ["latency", ref, peer, "--repeats", "1", "--threads", "1", "--json"])
    assert out["model"] == ref and out["speedup_vs_peer"] > 0


@pytest.mark.parametrize("form", FORMS)
def test_predict_and_cam(refs, capsys, tmp_path, form):
    ref = refs[form][0]
    out = _run(capsys, ["predict", ref, *_weights(refs, form), "--image", "skimage:coffee", "--topk", "3", "--json"])
    assert len(out["top"]) == 3 and all(0 <= r["prob"] <= 1 for r in out["top"])
    png = tmp_path / "cam.png"
    out = _run(capsys, ["cam", ref, *_weights(refs, form), "--image", "skimage:coffee", "--out", str(png), "--json"])
    assert png.is_file() and 0 <= out["target"] < 10


@pytest.mark.parametrize("form", FORMS)
def test_eval(refs, capsys, form):
    ref = refs[form][0]
    out = _run(capsys, ["eval", ref, *_weights(refs, form), "--data", "digits", "--batch-size", "128", "--json"])
    assert 0 <= out["top1"] <= 1 and out["classes"] == [str(i) for i in range(10)]


@pytest.mark.parametrize("form", FORMS)
def test_train_and_finetune(refs, capsys, tmp_path, form):
    ref = refs[form][0]
    out = _run(capsys, ["train", ref, *TRAIN, "--out", str(tmp_path / "train"), "--json"])
    assert 0 <= out["top1"] <= 1
    assert compscale.model_spec(str(tmp_path / "train" / "model.safetensors")).family == \
        compscale.model_spec(ref).family
    out = _run(capsys, ["finetune", ref, *_weights(refs, form), *TRAIN, "--out", str(tmp_path / "ft"), "--json"])
    assert 0 <= out["top1"] <= 1


def test_finetune_without_weights_needs_a_weights_file(refs, capsys, tmp_path):
    assert main(["finetune", refs["spec"][0], *TRAIN, "--out", str(tmp_path / "ft")]) == 2
    assert "a weights file as MODEL" in capsys.readouterr().err


@pytest.mark.parametrize("form", FORMS)
def test_sweep_and_search_take_each_form_as_base(refs, capsys, tmp_path, form):
    ref = refs[form][0]
    small = ["--data", "digits", "--epochs", "1", "--limit-train", "64", "--limit-test", "32", "--batch-size", "32",
             "--threads", "1", "--json"]
    out = _run(capsys, ["sweep", "--base", ref, "--phis", "0", "--strategies", "compound", "--seeds", "1",
                        "--out", str(tmp_path / "sweep"), *small])
    assert out["points"] and out["points"][0]["top1_mean"] is not None
    grid = ["--grid-step", "0.1", "--tolerance", "0.3"]  # 3 or 4 candidates: these baselines' rounding is coarse
    out = _run(capsys, ["search", "--base", ref, *grid, "--out", str(tmp_path / "search"), *small])
    assert out["baseline"]["spec"]["family"] == compscale.model_spec(ref).family
    assert out["baseline"]["spec"]["in_chans"] == 1  # the baseline as trained on digits


def test_default_output_folders_are_named_after_the_reference(refs):
    from compscale.models.registry import reference_label

    assert reference_label("resnext_tiny") == "resnext_tiny"
    assert reference_label(refs["spec"][0]) == "tiny"
    assert reference_label(refs["weights"][0]) == "run"  # runs/NAME/model.safetensors → NAME
    assert reference_label("examples.my_family:plain_tiny") == "plain_tiny"
    assert Path(reference_label("a/b/c.safetensors")).name == "c"
