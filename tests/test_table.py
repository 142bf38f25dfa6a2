"""The seed's efficiency table: every row measured, with the paper's numbers beside ours."""

from __future__ import annotations

import json

import pytest

from compscale.cli import main
from compscale.paper import SEED_TABLE

DOCUMENTED = {"Inception-v4", "SENet"}  # the paper's params disagree with every public implementation


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    out = tmp_path_factory.mktemp("table")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["table", "--json", "--plot", "--out", str(out)]) == 0
    return json.loads(buf.getvalue())


def test_every_seed_row_is_measured(table):
    rows = {r["paper_model"]: r for r in table["rows"]}
    assert list(rows) == [r.model for r in SEED_TABLE]
    for row in table["rows"]:
        assert set(row) >= {"model", "paper_model", "paper_params", "paper_macs", "params", "macs", "resolution",
                            "params_ratio", "macs_ratio", "note"}
        assert 0 < row["paper_top1"] < 1  # a fraction, as every accuracy compscale prints
        if row["paper_model"] in DOCUMENTED:
            assert "disagrees" in row["note"]
        else:
            assert row["params"] == pytest.approx(row["paper_params"], rel=0.05), row["model"]


def test_ratios_are_recomputed_from_our_counts(table):
    rows = {r["paper_model"]: r for r in table["rows"]}
    b0, r50 = rows["EfficientNet-B0"], rows["ResNet-50"]
    assert (b0["model"], r50["model"]) == ("efficientnet_b0", "resnet50")
    assert r50["params_ratio"] == pytest.approx(r50["params"] / b0["params"])
    assert r50["macs_ratio"] == pytest.approx(r50["macs"] / b0["macs"])
    assert r50["params"] == 25_557_032 and b0["params"] == 5_288_548
    resnext = rows["ResNeXt-101"]
    assert resnext["resolution"] == 320 and resnext["macs"] == pytest.approx(31.55e9, rel=0.01)
    assert rows["GPipe"]["paper_macs"] is None and rows["GPipe"]["params"] == pytest.approx(557e6, rel=0.01)


def test_figures_are_written(table):
    assert len(table["plots"]) == 2
    for path in table["plots"]:
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_csv_and_markdown(capsys):
    assert main(["table", "--csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("model,paper_model,paper_params,paper_macs,params,macs")
    assert len(lines) == 1 + len(SEED_TABLE)


def test_latency_command(capsys):
    assert main(["latency", "b0", "resnet50", "--repeats", "2", "--threads", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "efficientnet_b0" and out["peer"] == "resnet50"
    assert out["latency_ms"] > 0 and out["speedup_vs_peer"] == pytest.approx(
        out["peer_latency_ms"] / out["latency_ms"])
    assert main(["latency", "b9", "resnet50"]) == 2
    assert "unknown model" in capsys.readouterr().err
