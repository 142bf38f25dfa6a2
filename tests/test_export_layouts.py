"""Weights out in the peers' layouts (``save_weights(..., layout=...)``, ``compscale export --format
timm|torchvision``): the peer's own ``load_state_dict(strict=True)`` takes them and its logits equal ours; and
class names stored with trained weights, shown by predict, eval and cam."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image
from safetensors.torch import load_file

import compscale
from compscale.cli import main
from compscale.errors import UserError
from conftest import calibrate_batchnorm, tiny_spec_file

PEERS = {
    "timm": lambda name, **kw: timm.create_model(name, pretrained=False, **kw),
    "torchvision": lambda name, **kw: torchvision.models.get_model(name, weights=None, **kw),
}
CASES = [
    ("efficientnet_b0", "timm"), ("efficientnet_b0", "torchvision"), ("tf_efficientnet_b0", "timm"),
    ("resnet50", "timm"), ("resnet50", "torchvision"), ("resnext50_32x4d", "torchvision"),
    ("mobilenetv2_100", "timm"), ("mobilenetv1_100", "timm"),
]
SMALL = ["--epochs", "1", "--limit-train", "64", "--limit-test", "32", "--batch-size", "32", "--threads", "1"]


def _read(path) -> dict[str, torch.Tensor]:
    return load_file(str(path)) if str(path).endswith(".safetensors") else torch.load(path, weights_only=True)


def _assert_same_logits(ours: torch.nn.Module, peer: torch.nn.Module, in_chans: int = 3) -> None:
    x = torch.randn(2, in_chans, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mine, theirs = ours.eval()(x), peer.eval()(x)
    scale = theirs.abs().max().item()
    assert scale > 0.1, "logits collapsed: the comparison would be meaningless"
    assert (mine - theirs).abs().max().item() <= 1e-5 * scale


@pytest.mark.parametrize("name, layout", CASES)
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_save_weights_in_a_peer_layout_loads_strictly_with_equal_logits(tmp_path, name, layout, suffix):
    torch.manual_seed(0)
    ours = compscale.create_model(name)
    calibrate_batchnorm(ours, resolution=64)
    path = tmp_path / f"w{suffix}"
    compscale.save_weights(ours, path, layout=layout)
    peer = PEERS[layout](name)
    peer.load_state_dict(_read(path), strict=True)
    _assert_same_logits(ours, peer)
    # ... and back: our loader detects the layout, so the file round-trips.
    again = compscale.load_weights(compscale.create_model(name), path).eval()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize("layout", ["timm", "torchvision"])
def test_cli_export_to_a_peer_layout(tmp_path, capsys, layout):
    """`compscale export NAME --weights W --format timm|torchvision`: W (ours, e.g. trained) comes out in the
    peer's names; a model for other classes keeps them (the peer is built with num_classes)."""
    torch.manual_seed(0)
    ours = compscale.create_model("efficientnet_b0", num_classes=10)
    calibrate_batchnorm(ours, resolution=64)
    ours_file, out = tmp_path / "ours.safetensors", tmp_path / f"peer-{layout}.pth"
    compscale.save_weights(ours, ours_file)
    capsys.readouterr()
    assert main(["export", "efficientnet_b0", "--weights", str(ours_file), "--format", layout, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "efficientnet_b0" in text and "num_classes=10" in text and "strict=True" in text
    peer = PEERS[layout]("efficientnet_b0", num_classes=10)
    peer.load_state_dict(_read(out), strict=True)
    _assert_same_logits(ours, peer)
    # The weights file alone is a model reference too.
    assert main(["export", str(ours_file), "--format", layout, "--out", str(tmp_path / "again.safetensors"),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["peer_model"] == "efficientnet_b0" and report["format"] == layout
    assert _read(tmp_path / "again.safetensors").keys() == _read(out).keys()


def test_a_trained_grayscale_model_goes_to_timm(tmp_path, capsys):
    """Trained on 1-channel data with 10 classes, exported: timm's model built with in_chans=1, num_classes=10
    takes the file strictly."""
    from compscale.specs import MobileNetSpec, MobileNetStage

    spec = MobileNetSpec(stages=(MobileNetStage("inverted", 16, 1, 1, expand_ratio=1),
                                 MobileNetStage("inverted", 24, 1, 2, expand_ratio=6)),
                         stem_channels=16, head_channels=64, resolution=32)
    spec_file = tmp_path / "small_mobilenet.json"
    spec_file.write_text(spec.to_json())
    assert main(["train", str(spec_file), "--data", "digits", *SMALL, "--out", str(tmp_path / "run")]) == 0
    trained = tmp_path / "run" / "model.safetensors"
    out = tmp_path / "timm.safetensors"
    capsys.readouterr()
    assert main(["export", str(trained), "--format", "timm", "--out", str(out)]) == 0
    assert "same architecture (10 classes, 1 channels)" in capsys.readouterr().out
    state = _read(out)
    assert state["conv_stem.weight"].shape[1] == 1 and state["classifier.weight"].shape[0] == 10
    assert "blocks.1.0.conv_pwl.weight" in state


@pytest.mark.parametrize("argv, fragment", [
    (["export", "mobilenetv2_100", "--format", "torchvision", "--out", "x.pth"], "unknown weight layout 'torchvision'"),
    (["export", "efficientnet_b0", "--format", "timm", "--out", "x.onnx"], "must end in .safetensors or .pth"),
    (["export", "efficientnet_b0", "--format", "timm", "--fold-bn", "--out", "x.pth"], "--fold-bn"),
])
def test_export_layout_bad_input_is_one_line(tmp_path, capsys, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert not list(tmp_path.iterdir())


def test_save_weights_layout_needs_the_model(tmp_path):
    with pytest.raises(UserError, match="needs the model"):
        compscale.save_weights(compscale.create_model("resnext_tiny").state_dict(), tmp_path / "x.safetensors",
                               layout="timm")


# --- class names -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion")
    spec_file = tiny_spec_file(root / "tiny.json")
    assert main(["train", spec_file, "--data", "fashion-mnist", *SMALL, "--out", str(root / "run")]) == 0
    return root / "run" / "model.safetensors"


def test_training_stores_class_names_and_preprocessing(fashion):
    from compscale.data import FASHION_MNIST_CLASSES
    from compscale.models.weights import read_metadata
    from compscale.pretrained import Preprocess

    meta = read_metadata(fashion)
    assert tuple(json.loads(meta["classes"])) == FASHION_MNIST_CLASSES and meta["model"] == "tiny"
    pre = Preprocess.from_json(meta["preprocess"])
    assert pre.in_chans == 1 and pre.resolution == 32 and pre.mean == pytest.approx((0.2860 * 255,))


def test_predict_eval_and_cam_show_class_names(fashion, capsys, tmp_path, monkeypatch):
    capsys.readouterr()
    assert main(["predict", str(fashion), "--image", "skimage:coffee", "--topk", "10", "--json"]) == 0
    names = {row["name"] for row in json.loads(capsys.readouterr().out)["top"]}
    assert "Trouser" in names and "1" not in names
    assert main(["predict", str(fashion), "--image", "skimage:coffee", "--topk", "10"]) == 0
    assert "Ankle boot" in capsys.readouterr().out
    assert main(["eval", str(fashion), "--data", "fashion-mnist", "--batch-size", "500", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"][1] == "Trouser"

    import compscale.analysis.cam as cam

    titles = []
    monkeypatch.setattr(cam, "save_cam_figure", lambda path, panels, title="": titles.append(panels[0][0]))
    assert main(["cam", str(fashion), "--image", "skimage:coffee", "--target", "1", "--out",
                 str(tmp_path / "c.png")]) == 0
    assert "(Trouser)" in capsys.readouterr().out
    # Titled with the trained model's own name and the class name, also when the command names another model.
    assert main(["cam", "efficientnet_b0", "--weights", str(fashion), "--image", "skimage:coffee", "--target", "1",
                 "--out", str(tmp_path / "d.png")]) == 0
    assert titles[0] == titles[1] == "tiny (cam, Trouser)"


def _image_folder(root, classes):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return str(root)


def test_image_folder_class_names_travel_with_the_weights(tmp_path, capsys):
    pets = _image_folder(tmp_path / "pets", ["cat", "dog"])
    spec_file = tiny_spec_file(tmp_path / "tiny.json")
    assert main(["train", spec_file, "--data", pets, "--epochs", "1", "--batch-size", "4", "--threads", "1",
                 "--out", str(tmp_path / "run")]) == 0
    weights = str(tmp_path / "run" / "model.safetensors")
    capsys.readouterr()
    assert main(["predict", weights, "--image", str(tmp_path / "pets" / "cat" / "0.png"), "--json"]) == 0
    assert {row["name"] for row in json.loads(capsys.readouterr().out)["top"]} == {"cat", "dog"}
    # Evaluated on data whose classes are others: a warning (the class order would score nonsense).
    bugs = _image_folder(tmp_path / "bugs", ["ant", "bee"])
    assert main(["eval", weights, "--data", bugs, "--json"]) == 0
    assert "trained on classes cat, dog, the data has ant, bee" in capsys.readouterr().err


def test_hostile_class_names_are_one_line(tmp_path, capsys):
    model = compscale.create_model(compscale.model_spec(tiny_spec_file(tmp_path / "t.json")))
    for bad in ('["a", "b"]', '"abc"', '[1, 2, 3]', "[" + ", ".join(['"x\\u0000"'] * 1000) + "]", "not json"):
        path = tmp_path / "bad.safetensors"
        compscale.save_weights(model, path, metadata={"classes": bad})
        assert main(["predict", str(path), "--image", "skimage:coffee"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "class names must be a list of 1000" in err[0], err
