"""`compscale compare`: measured params, multiply-adds and activations side by side, ratios to the first."""

from __future__ import annotations

import json

import pytest

from compscale.cli import main
from compscale.commands.families import compare_rows


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_resnext_vs_inception_resnet_json(capsys):
    """The seed's question: ResNeXt-101 (64x4d at 320 px, the paper's row) against Inception-ResNet-v2."""
    code, out, _ = run(capsys, "compare", "resnext101_64x4d@320", "inception_resnet_v2", "--json")
    assert code == 0
    first, second = json.loads(out)
    assert (first["model"], first["resolution"], first["params"], first["macs"]) == (
        "resnext101_64x4d", 320, 83_455_272, 31_549_440_000)
    assert (second["model"], second["resolution"], second["params"], second["macs"]) == (
        "inception_resnet_v2", 299, 55_843_464, 13_155_794_016)
    assert first["macs_ratio"] == first["params_ratio"] == first["activations_ratio"] == 1.0
    assert second["macs_ratio"] == pytest.approx(13_155_794_016 / 31_549_440_000)
    assert second["params_ratio"] == pytest.approx(0.669, abs=0.001)
    assert second["activations"] == 25_059_976 and first["activations"] == 63_693_800
    # The paper's figures ride along, labelled, for the rows the seed table has.
    assert (first["paper_model"], first["paper_top1"]) == ("ResNeXt-101", 0.809)
    assert (second["paper_model"], second["paper_top1"], second["paper_macs"]) == ("Inception-ResNet-v2", 0.801, 13e9)


def test_resolution_for_all_and_per_model():
    rows = compare_rows(["resnet50", "efficientnet_b0@112", "resnext50_32x4d"], resolution=160)
    assert [r["resolution"] for r in rows] == [160, 112, 160]
    assert rows[0]["macs"] < 4_089_184_256 * (160 / 224) ** 2 * 1.05
    assert rows[2]["macs_ratio"] == pytest.approx(rows[2]["macs"] / rows[0]["macs"])
    assert rows[1]["paper_top1"] == 0.771 and rows[2]["paper_model"] is None


def test_text_table(capsys):
    code, out, _ = run(capsys, "compare", "resnet50", "resnet152")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["model", "res", "params"]
    assert "25.56M" in lines[2] and "60.19M" in lines[3] and "2.82x" in lines[3]  # 11.51G / 4.09G
    assert "ratios are to resnet50" in out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["compare"], "the following arguments are required"),
        (["compare", "resnet50", "nope"], "unknown model 'nope'"),
        (["compare", "resnet50@x"], "must be an input side"),
        (["compare", "inception_resnet_v2", "--resolution", "64"], "input side >= 75"),
        (["compare", "resnet50", "--resolution", "16"], ">= 32"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, fragment):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0]
