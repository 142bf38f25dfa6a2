"""One vocabulary for ``--json``: every command that has ``--json``, run on tiny inputs, prints only keys of
:data:`compscale.vocabulary.TERMS`, each in a command the table names, in the table's unit (accuracies are
fractions everywhere), and every object that stands for a model names it (``model``). The JSON files the tools
write use the same keys, and the README's table is the module's."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image

from compscale import vocabulary
from compscale.cli import main
from compscale.vocabulary import OPAQUE, TERMS, normalize, term
from conftest import tiny_spec_file

ROOT = Path(__file__).resolve().parents[1]
T1 = ["--threads", "1"]
SMALL = ["--batch-size", "32", "--limit-train", "64", "--limit-test", "32"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """A tiny spec file, weights trained from it on digits (one epoch, 64 images), and an image."""
    d = tmp_path_factory.mktemp("inputs")
    tiny = tiny_spec_file(d / "tiny.json")
    assert main(["train", tiny, "--data", "digits", "--epochs", "1", *SMALL, *T1, "--out", str(d / "run")]) == 0
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (32, 32), np.uint8)).save(d / "img.png")
    return {"tiny": tiny, "weights": str(d / "run" / "model.safetensors"), "image": str(d / "img.png"),
            "run": str(d / "run")}


def _argv(name: str, i: dict[str, str], out: Path) -> list[str]:
    tiny, weights = i["tiny"], i["weights"]
    return {
        "models": ["models", "resnext_tiny", "--json"],
        "profile": ["profile", "resnext_tiny", "--per-layer", "--json"],
        "scale": ["scale", "--base", "resnext_tiny", "--phi", "1", "--json"],
        "family": ["family", "--json"],
        "compare": ["compare", "resnext_tiny", "efficientnet_b0", "--json"],
        "table": ["table", "--json"],
        "latency": ["latency", "b0", "b1", "--repeats", "1", "--threads", "1", "--json"],
        "bench": ["bench", tiny, "--backend", "eager", "--repeats", "1", "--warmup", "1", "--threads", "1", "--json"],
        "pareto": ["pareto", "--base", tiny, "--phis", "0", "1", "--no-best", "--threads", "1", "--max-seconds",
                   "0.3", "--out", str(out / "p"), "--json"],
        "export": ["export", tiny, "--format", "torchscript", "--out", str(out / "m.pt"), "--json"],
        "train": ["train", tiny, "--data", "digits", "--epochs", "1", *SMALL, *T1, "--out", str(out / "run"),
                  "--json"],
        "finetune": ["finetune", tiny, "--weights", weights, "--data", "digits", "--epochs", "1", *SMALL, *T1,
                     "--out", str(out / "ft"), "--json"],
        "eval": ["eval", tiny, "--weights", weights, "--data", "digits", "--json"],
        "predict": ["predict", tiny, "--weights", weights, "--image", i["image"], "--json"],
        "cam": ["cam", tiny, "--weights", weights, "--image", i["image"], "--out", str(out / "cam.png"), "--json"],
        "search": ["search", "--base", tiny, "--data", "digits", "--epochs", "1", "--grid-step", "0.2",
                   "--tolerance", "0.2", "--alpha-range", "1", "2", "--beta-range", "1", "1.4", "--gamma-range", "1",
                   "1.4", *SMALL, *T1, "--out", str(out / "s"), "--json"],
        "sweep": ["sweep", "--base", tiny, "--data", "digits", "--epochs", "1", "--phis", "0", "1", "--seeds", "1",
                  "--strategies", "compound", "width", *SMALL, *T1, "--out", str(out / "w"), "--json"],
        "study cardinality": ["study", "cardinality", "--quick", "--seeds", "1", "--limit-train", "32",
                              "--limit-test", "16", *T1, "--out", str(out / "c"), "--json"],
        "study families": ["study", "families", "--quick", "--levels", "1", "--seeds", "1", "--limit-train", "32",
                           "--limit-test", "16", "--latency-repeats", "1", *T1, "--out", str(out / "f"), "--json"],
        "cam-study": ["cam-study", "--quick", "--seeds", "0,", "--limit-train", "64", "--limit-test", "32",
                      "--images", "8", "--figure-images", "1", *T1, "--out", str(out / "cs"), "--json"],
        "transfer-demo": ["transfer-demo", "--quick", "--limit-train", "64", "--limit-test", "32", *T1,
                          "--out", str(out / "t"), "--json"],
        "demo": ["demo", "--quick", "--data", "digits", "--workers", "1", "--threads", "1", "--out", str(out / "d"),
                 "--json"],
    }[name]


#: Where an object stands for a model and must name it: "" the printed object, "[]" each item of a printed list,
#: "KEY[]" each item of that list.
MODEL_AT: dict[str, tuple[str, ...]] = {
    "models": ("[]",), "profile": ("",), "scale": ("",), "family": ("official[]", "formula[]"),
    "compare": ("[]",), "table": ("rows[]",), "latency": ("",), "bench": ("[]",), "pareto": ("", "rows[]"),
    "export": ("",), "train": ("",), "finetune": ("",), "eval": ("",), "predict": ("",), "cam": ("",),
    "search": ("",), "sweep": ("",),
    "study cardinality": ("models[]",), "study families": ("models[]",), "cam-study": ("summary[]", "models[]"),
    "transfer-demo": ("",), "demo": (),
}

SLOW = {"study cardinality", "study families", "cam-study", "transfer-demo", "demo", "search"}
COMMANDS = [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in MODEL_AT]


def _run(capsys, argv: list[str]) -> Any:
    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    return json.loads(captured.out)


def _keys(value: Any, path: str = "") -> Iterator[tuple[str, Any, str]]:
    """(key, value, path) of every key in ``value``, not looking inside :data:`OPAQUE` keys."""
    if isinstance(value, list):
        for item in value:
            yield from _keys(item, path + "[]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key, item, path
            if key not in OPAQUE:
                yield from _keys(item, f"{path}.{key}" if path else key)


def _objects_at(value: Any, where: str) -> list[dict]:
    if where == "":
        return [value]
    if where == "[]":
        return list(value)
    key = where[:-2]
    return list(value[key])


def _check_unit(key: str, value: Any, where: str) -> None:
    unit = term(key).unit
    if value is None:
        return
    what = f"{key} = {value!r} printed by {where}"
    if unit == "fraction":
        assert isinstance(value, (int, float)) and 0 <= value <= 1, f"{what}: not a fraction"
    elif unit == "difference":
        assert isinstance(value, (int, float)) and -1 <= value <= 1, f"{what}: not a difference of fractions"
    elif unit == "count":
        assert isinstance(value, int) and not isinstance(value, bool) and value >= 0, f"{what}: not a count"
    elif unit == "multiple":
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, f"{what}: not a multiple"
    elif unit in ("ms", "seconds"):
        assert isinstance(value, (int, float)) and value >= 0, f"{what}: not a time"


def check_vocabulary(value: Any, where: str) -> set[str]:
    """Every key of ``value`` (what ``where`` printed or wrote) in the vocabulary, documented for ``where``, in its
    unit; the keys."""
    seen = set()
    for key, item, path in _keys(value):
        entry = term(key)
        assert entry is not None, (f"{where} prints {key!r} (at {path or 'the top'}), which is not in "
                                   f"compscale.vocabulary.TERMS: use the vocabulary's name or add a Term")
        assert where in entry.where, f"{where} prints {key!r}: add {where!r} to its Term's `where`"
        _check_unit(key, item, where)
        seen.add(key)
    return seen


def _small_demo(monkeypatch) -> None:
    """The demo's quick plan made smaller still (only the fields its plan has)."""
    from compscale.analysis import demo

    plan = getattr(demo, "QUICK", None)
    if plan is None or not dataclasses.is_dataclass(plan):
        return
    smaller = {"search_limit_train": 200, "holdout": 64, "sweep_limit_train": 200, "limit_test": 64,
               "sweep_epochs": 1, "search_epochs": 1, "batch_size": 32, "grid_step": 0.5}
    names = {f.name for f in dataclasses.fields(plan)}
    monkeypatch.setattr(demo, "QUICK", dataclasses.replace(plan, **{k: v for k, v in smaller.items() if k in names}))


def _fast_table(monkeypatch) -> None:
    """The table's counting of every row (a minute) replaced by made-up counts: the keys are what is tested."""
    from compscale.analysis import table
    from compscale.paper import SEED_TABLE

    monkeypatch.setattr(table, "_measure_rows", lambda progress: {
        row.model: {"params": 1_000_000 * (i + 1), "macs": 100_000_000 * (i + 1)} for i, row in enumerate(SEED_TABLE)})


@pytest.mark.parametrize("command", COMMANDS)
def test_every_json_key_is_in_the_vocabulary(command, inputs, tmp_path, capsys, monkeypatch):
    if command == "demo":
        _small_demo(monkeypatch)
    if command == "table":
        _fast_table(monkeypatch)
    out = _run(capsys, _argv(command, inputs, tmp_path))
    check_vocabulary(out, command)
    for where in MODEL_AT[command]:
        objects = _objects_at(out, where)
        assert objects, f"{command}: nothing at {where!r}"
        for obj in objects:
            assert obj.get("model"), f"{command}: an object at {where or 'the top'} does not name its model: {obj}"
    # The files the tool writes use the same words as what it prints.
    files = {"search": "s/search.json", "study cardinality": "c/cardinality.json", "study families": "f/families.json",
             "cam-study": "cs/cam_study.json", "transfer-demo": "t/transfer.json"}
    if command in files:
        check_vocabulary(json.loads((tmp_path / files[command]).read_text()), command)
    if command == "search":
        assert out == json.loads((tmp_path / "s" / "search.json").read_text())
        assert all(0 <= t["top1"] <= 1 for t in out["trials"] if t["top1"] is not None)


def test_metrics_jsonl_uses_the_vocabulary(inputs):
    records = [json.loads(line) for line in (Path(inputs["run"]) / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        check_vocabulary(record, "metrics.jsonl")


def test_normalize_renames_in_one_place():
    old = {"best": {"alpha": 1.2, "accuracy": 0.5}, "trials": [{"accuracies": [0.5], "realized_ratio": 2.1,
                                                                "nominal_ratio": 1.9}],
           "models": [{"name": "resnext-L1", "accuracy": {"mean": 0.4, "std": 0.1, "min": 0.3, "max": 0.5,
                                                          "values": [0.3, 0.5], "seeds": 2},
                       "scaling": {"depth": 1.2, "width": 1.1}, "spec": {"depth": 3, "name": "kept"}}],
           "data": {"name": "digits"}, "study": {"name": "search"}, "search": {"candidates": 3},
           "points": [{"accuracy_mean": 0.4, "accuracy_std": 0.0, "stages": [{"name": "stem"}]}]}
    new = normalize(old)
    assert new["best"] == {"alpha": 1.2, "top1": 0.5}
    assert new["trials"] == [{"top1_per_seed": [0.5], "macs_ratio": 2.1, "nominal_macs_ratio": 1.9}]
    m = new["models"][0]
    assert m["model"] == "resnext-L1" and (m["top1_mean"], m["top1_std"], m["top1_min"], m["top1_max"]) == (
        0.4, 0.1, 0.3, 0.5) and m["top1_per_seed"] == [0.3, 0.5] and m["seeds"] == 2
    assert m["scaling"] == {"depth_multiplier": 1.2, "width_multiplier": 1.1}
    assert m["spec"] == {"depth": 3, "name": "kept"}  # a spec is read back by spec_from_dict: never renamed
    assert new["dataset"] == {"name": "digits"} and new["queue"] == {"name": "search"}
    assert new["search"] == {"distinct": 3}
    assert new["points"] == [{"top1_mean": 0.4, "top1_std": 0.0, "stages": [{"name": "stem"}]}]
    assert old["best"] == {"alpha": 1.2, "accuracy": 0.5}  # the input is untouched
    for new_name in vocabulary.RENAMED.values():
        assert term(new_name) is not None, new_name


def test_the_table_is_well_formed_and_in_the_readme():
    keys = [t.key for t in TERMS]
    assert len(keys) == len(set(keys)), "one key, one entry"
    commands = set(MODEL_AT) | {"metrics.jsonl"}
    for t in TERMS:
        assert t.unit in vocabulary.UNITS, t
        assert t.meaning and t.where and set(t.where) <= commands, t
    assert vocabulary.markdown_table() in (ROOT / "README.md").read_text(encoding="utf-8"), \
        "README.md: paste compscale.vocabulary.markdown_table() into its JSON section"
