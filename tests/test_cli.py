"""The command line: JSON outputs carry real numbers; mistakes give one line and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from compscale.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_profile_json(capsys):
    code, out, _ = run(capsys, "profile", "efficientnet_b0", "--json")
    assert code == 0
    assert json.loads(out) == {"model": "efficientnet_b0", "resolution": 224, "params": 5288548,
                               "macs": 385814752, "activations": json.loads(out)["activations"]}
    code, out, _ = run(capsys, "profile", "efficientnet_b0", "--resolution", "112", "--json")
    assert json.loads(out)["resolution"] == 112 and json.loads(out)["macs"] < 385814752 / 3


def test_scale_phi_json(capsys):
    code, out, _ = run(capsys, "scale", "--phi", "1", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["depth_multiplier"] == pytest.approx(1.2) and data["width_multiplier"] == pytest.approx(1.1)
    assert data["resolution"] == 258 and data["params"] == 9_109_994
    assert data["macs"] / data["base_macs"] == pytest.approx(2.573, abs=0.005)
    assert [s["repeats"] for s in data["stages"][1:-1]] == [2, 3, 3, 4, 4, 5, 2]


def test_scale_to_budget_json(capsys):
    code, out, _ = run(capsys, "scale", "--target-macs", "1G", "--json")
    data = json.loads(out)
    assert code == 0 and data["macs"] <= 1e9 and data["phi"] > 1


def test_scale_text_and_custom_coefficients(capsys):
    code, out, _ = run(capsys, "scale", "--alpha", "1.3", "--beta", "1.1", "--gamma", "1.1", "--phi", "1")
    assert code == 0 and "alpha=1.3" in out and "realized" in out


def test_models_and_demo(capsys):
    code, out, _ = run(capsys, "models", "efficientnet_b*", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["model"] for r in rows][:2] == ["efficientnet_b0", "efficientnet_b1"]
    assert rows[7]["params"] == 66_347_960
    code, out, _ = run(capsys, "family", "--json")
    data = json.loads(out)
    assert [r["model"] for r in data["official"]][-1] == "efficientnet_b7"
    assert all(abs(r["params_dev"]) < 0.05 and abs(r["macs_dev"]) < 0.05 for r in data["official"])
    assert next(r for r in data["formula"] if r["phi"] == 1)["macs_ratio"] == pytest.approx(2.573, abs=0.005)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["profile", "nope"], "unknown model 'nope'"),
        (["scale", "--alpha", "0.9", "--beta", "1.2", "--gamma", "1.2", "--phi", "1"], "alpha must be >= 1"),
        (["scale", "--alpha", "1.5", "--beta", "1.1", "--gamma", "1.15", "--phi", "1"], "is not within 2"),
        (["scale", "--alpha", "1.2", "--phi", "1"], "give all of --alpha"),
        (["scale", "--phi", "abc"], "not a number"),
        (["scale", "--phi", "nan"], "must be finite"),
        (["scale"], "give either --phi or a budget"),
        (["scale", "--target-macs", "lots"], "not an amount"),
        (["scale", "--target-macs", "10"], "below the smallest"),
        (["scale", "--base", "resnet9000", "--phi", "1"], "unknown model"),
        (["profile", "efficientnet_b0", "--resolution", "16"], ">= 32"),
        (["profile", "efficientnet_b0", "--resolution", "x"], "invalid int"),
        (["models", "zzz*"], "no model matches"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, fragment):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and lines[0].startswith("compscale: error:")
    assert "error: compscale" not in lines[0]  # one prefix, not "compscale: error: compscale scale: ..."


def test_a_usage_mistake_names_its_command_once(capsys):
    code, out, err = run(capsys, "latency")
    assert code == 2 and out == ""
    assert err == "compscale: error: latency: the following arguments are required: model\n"
    code, out, err = run(capsys, "study", "cardinality", "--budget", "x")
    assert code == 2 and err.startswith("compscale: error: study cardinality: argument --budget: ")


def test_console_script_exit_code_and_no_traceback():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "compscale", "scale", "--phi", "1", "--alpha", "0.5", "--beta", "1",
                           "--gamma", "1"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
