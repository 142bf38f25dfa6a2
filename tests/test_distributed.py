"""torchrun with 2 CPU processes (gloo): the same global batches as one process, the same accuracy within noise."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import tiny_spec_file


def test_two_process_torchrun_matches_one_process(tmp_path):
    spec = tiny_spec_file(tmp_path / "tiny.json")
    args = ["-m", "compscale", "train", spec, "--data", "digits", "--epochs", "6", "--batch-size", "32",
            "--threads", "1", "--optimizer", "rmsproptf", "--lr", "0.016", "--json"]
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], capture_output=True, text=True,
                         timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args,
                          "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    r1 = json.loads(one.stdout)
    lines = [line for line in two.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # only rank 0 reports
    r2 = json.loads(lines[0])
    assert "2 processes" in two.stderr
    assert r1["top1"] >= 0.9 and r2["top1"] >= 0.9, (r1, r2)
    # Same samples at every step; only per-process BatchNorm statistics and summation order differ
    # (measured here: 97.2 vs 95.6 % with seed 0, 96.9 vs 95.8 % with seed 1).
    assert abs(r1["top1"] - r2["top1"]) <= 0.04, (r1, r2)
    # Rank 0 alone wrote the outputs; the evaluation covered each test image exactly once.
    records = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "two" / "model.safetensors").is_file()
