"""Fuzzing the command line and the config loader: random argv and random configs never crash.

* The parser of every subcommand, given random tokens (its own option names mixed with numbers, NaN/inf,
  unicode, empty strings): a namespace, or a one-line UserError, nothing else.
* ``main()`` on the commands whose work is bounded (scale, profile, compare, models, predict without usable
  weights): it returns 0 or 2 and never raises.
* The training commands up to the point where training would start: their parsed flags go through the same
  config building and validation as a real run (``_config_from_args``).
* The config loader, given random mappings of its keys to random-typed values, directly and through YAML.

Commands that do heavy work (training, search, benchmarks, the demo) are only parsed, never run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compscale.cli import EXIT_USER_ERROR, build_parser, main
from compscale.errors import UserError
from compscale.train.config import TrainConfig, config_from_mapping, load_config

#: The figures the README quotes (examples per test, per run).
PARSER_EXAMPLES, MAIN_EXAMPLES, TRAIN_EXAMPLES, CONFIG_EXAMPLES, YAML_EXAMPLES = 600, 300, 300, 600, 200
FUZZ = settings(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

PARSER = build_parser()
SUBPARSERS: dict[str, argparse.ArgumentParser] = next(
    a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)).choices
HELP = ("-h", "--help")


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(o for a in parser._actions for o in a.option_strings if o not in HELP)


# Argument-like text: no NUL (a real argv cannot hold one) and no option that prints help and exits.
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
_numbers = st.one_of(
    st.integers(-10**6, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(-1e3, 1e3).map(lambda v: f"{v:g}"),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e308", "-0", "0", "1", "2", "32", "1G", "10M", "4e9",
                     "1,000", "0x10", "1_000", "", " ", "💥", "ünïcödé", "efficientnet_b0", "resnet50", "b1",
                     "resnet50@abc", "resnet50@64", "digits", "/nonexistent/x.safetensors", "skimage:chelsea"]),
)
_value = st.one_of(_text, _numbers)


def _no_help(tokens: list[str]) -> bool:
    # argparse expands unambiguous prefixes: "--he" is "--help"; "-h…" may be "-h" plus an attached value.
    return not any(t.startswith("-h") or (t.startswith("--h") and "--help".startswith(t.split("=")[0])) for t in tokens)


@st.composite
def _argv_for(draw, command: str) -> list[str]:
    opts = _options(SUBPARSERS[command])
    token = st.one_of(_value, st.sampled_from(opts),
                      st.builds(lambda o, v: f"{o}={v}", st.sampled_from(opts), _value)) \
        if opts else _value
    return draw(st.lists(token, max_size=8).filter(_no_help))


@settings(FUZZ, max_examples=PARSER_EXAMPLES)
@given(st.data())
def test_every_parser_gives_a_namespace_or_one_line(data):
    command = data.draw(st.sampled_from(sorted(SUBPARSERS)), label="command")
    argv = [command] + data.draw(_argv_for(command), label="argv")
    try:
        args = PARSER.parse_args(argv)
    except UserError as err:
        # One line; main adds the one "compscale: error: " prefix (the message never repeats the program's name).
        assert "\n" not in str(err) and not str(err).startswith("compscale")
    else:
        assert args.command == command and callable(args.func)


#: Commands main() may run under fuzzing: their work is bounded (meta-device counting, or a fast failure).
CHEAP = ["scale", "profile", "compare", "models", "predict"]


@st.composite
def _cheap_argv(draw) -> list[str]:
    command = draw(st.sampled_from(CHEAP))
    argv = draw(_argv_for(command))
    if command == "predict":
        # Never real weights or a packaged pretrained name: predict stops at the first bad input.
        argv = [a for a in argv if "lite" not in a] + ["--weights", "/nonexistent/w.safetensors"]
    if command == "models":
        # Exactly one pattern that matches no model: listing them all measures every model (~20 s).
        argv = [a for a in argv if a.startswith("-")] + ["zz" + draw(_text).replace("*", "").replace("?", "")]
    return [command] + argv


@settings(FUZZ, max_examples=MAIN_EXAMPLES)
@given(_cheap_argv())
def test_main_returns_0_or_2_and_never_raises(argv):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(argv)
    assert rc in (0, EXIT_USER_ERROR)
    if rc == EXIT_USER_ERROR:
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("compscale: error: "), err.getvalue()
    assert "Traceback" not in err.getvalue()


@settings(FUZZ, max_examples=TRAIN_EXAMPLES)
@given(st.data())
def test_training_flags_validate_or_fail_in_one_line(tmp_path, data):
    """train/finetune/eval: parsed, then validated exactly as a run would be, and stopped before any work."""
    from compscale.commands.train import _config_from_args

    command = data.draw(st.sampled_from(["train", "finetune", "eval"]), label="command")
    argv = [command] + [a for a in data.draw(_argv_for(command), label="argv") if a not in ("--config", "--resume")]
    try:
        args = PARSER.parse_args(argv)
        if command == "eval":
            if args.batch_size < 1:
                raise UserError("batch size")
            return
        args.out = str(tmp_path / "out")  # whatever the fuzz says, nothing goes outside the test's folder
        cfg = _config_from_args(args, finetune=command == "finetune")
    except UserError as err:
        assert "\n" not in str(err)
        return
    assert isinstance(cfg, TrainConfig)
    cfg.resolved(224)


_FIELDS = [f.name for f in fields(TrainConfig)]
_any = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-10**400, 10**400),
              st.floats(allow_nan=True, allow_infinity=True), _text, _numbers),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)), max_leaves=5)
_mapping = st.dictionaries(st.one_of(st.sampled_from(_FIELDS), st.sampled_from(_FIELDS).map(str.upper), _text,
                                     st.integers(-3, 3), st.none()), _any, max_size=8)


def _check_config(cfg: TrainConfig) -> None:
    """A config that validates is usable: resolvable, numbers finite, and it survives its own YAML."""
    cfg = cfg.validate().resolved(224)
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float):
            assert math.isfinite(value), (f.name, value)
    assert config_from_mapping(yaml.safe_load(cfg.to_yaml())) == cfg


@settings(FUZZ, max_examples=CONFIG_EXAMPLES)
@given(_mapping)
def test_config_from_random_mappings(mapping):
    try:
        cfg = config_from_mapping(mapping)
        _check_config(cfg)
    except UserError as err:
        assert "\n" not in str(err)


@settings(FUZZ, max_examples=YAML_EXAMPLES)
@given(st.one_of(_mapping, _any))
def test_config_files_from_random_yaml(tmp_path, document):
    path = tmp_path / "config.yaml"
    try:
        text = yaml.safe_dump(document, allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        return  # not representable as YAML at all
    path.write_text(text, encoding="utf-8")
    try:
        _check_config(load_config(path))
    except UserError as err:
        assert "\n" not in str(err)


@pytest.mark.parametrize("argv", [["scale", "--phi", "25"], ["scale", "--target-macs", "1e30"],
                                  ["profile", "efficientnet_b0", "--resolution", "100000000000000000000"],
                                  ["compare", "efficientnet_b0@99999999999999999999"]])
def test_extremes_found_by_fuzzing_stay_bounded(argv, capsys):
    """Inputs at the edge of what the fuzzer draws: each answers (0 or one line), promptly."""
    import time

    t0 = time.perf_counter()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc in (0, EXIT_USER_ERROR) and "Traceback" not in err
    assert time.perf_counter() - t0 < 30


# --- files: spec files, weights' metadata and config files (issue 17) ------------------------------------------
#
# Each example is a file derived from a real one — a small spec of every family, the tiny model's weights with
# their metadata, a training config — with fields mutated to random types and values (nested junk, huge and
# negative numbers, NaN/inf, unicode, empty), or replaced by junk bytes; the real command reads it and must
# answer 0 or one line and exit 2, never raise. Integers are drawn small or huge, never "large but valid": a
# valid 2,000-block network is refused by no check and only costs time (the bounds have their own tests).

SPEC_FILE_EXAMPLES, WEIGHTS_META_EXAMPLES, CONFIG_FILE_EXAMPLES = 120, 100, 50


def _seed_specs() -> list[dict]:
    """A small, valid spec of every family (each builds and profiles on the meta device in well under a second)."""
    from compscale import specs as s
    from compscale.models import model_spec
    from conftest import tiny_spec

    specs = [tiny_spec(stages=2, head_channels=32),
             s.ResNetSpec(stages=(s.ResNetStage(1, 8, 1), s.ResNetStage(1, 16, 2)), stem_channels=8, resolution=32),
             model_spec("inception_resnet_tiny"),
             s.DenseNetSpec(growth_rate=4, blocks=(1, 1), resolution=32),
             s.XceptionSpec(repeats=(1,), width=0.05, resolution=32),
             s.InceptionV3Spec(repeats=(1, 1, 1), width=0.05, resolution=75),
             s.PolyNetSpec(repeats=(1, 1, 1), width=0.05, resolution=75),
             s.SENetSpec(layers=(1, 1), planes=(16, 32), groups=8, reduction=8, stem_channels=16, resolution=32),
             s.AmoebaNetSpec(cells_per_stack=1, filters=8, stem_channels=8, resolution=32),
             s.NASNetSpec(cells_per_stack=1, penultimate_filters=96, stem_channels=8, resolution=32),
             s.PNASNetSpec(cells_per_stack=1, penultimate_filters=80, stem_channels=8, resolution=32)]
    return [json.loads(s.to_json()) for s in specs]


SEED_SPECS = _seed_specs()
_small = st.one_of(st.none(), st.booleans(), st.integers(-3, 12), _text,
                   st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([10**9, -10**9, 2**31, 2**63, 10**30, 10**400, 0.5, -0.0, 1e308, 1e-308, "", "3",
                                    "nan", "1e9", "ünïcödé", "💥", "\u202e", "swish", "same", "a", "cifar"]))
_junk = st.recursive(_small, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(_text, inner, max_size=3)), max_leaves=6)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON document a value lives (keys of mappings, indices of lists), the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _paths(v, prefix + (i,))
    return found


@st.composite
def _mutated(draw, seed: Any) -> Any:
    """``seed`` with 1 to 3 mutations: a value anywhere replaced by junk, a key dropped, an unknown key added."""
    doc = json.loads(json.dumps(seed))
    for _ in range(draw(st.integers(1, 3))):
        places = _paths(doc)
        where = draw(st.sampled_from(places))
        action = draw(st.sampled_from(["replace", "replace", "replace", "drop", "add"]))
        if not where:
            if action == "replace" and draw(st.integers(0, 9)) == 0:
                doc = draw(_junk)
            continue
        parent = doc
        for step in where[:-1]:
            parent = parent[step]
        last = where[-1]
        if action == "replace":
            parent[last] = draw(_junk)
        elif action == "drop":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(_text)] = draw(_junk)
    return doc


#: Files that are not documents at all: empty, truncated, invalid UTF-8, nested beyond any parser, a BOM.
RAW_FILES = [b"", b"{", b"\xff\xfe\x00junk", b"[" * 5000, b"{\"family\": " * 3000, b"\xef\xbb\xbf{}", b"null",
             b"family: efficientnet\nstages: *x\n", b"a: &a [*a]\n"]


def _write_document(path: Path, document: Any, fmt: str) -> bool:
    """``document`` as JSON or YAML at ``path``; False when it cannot be written as that format at all."""
    try:
        text = json.dumps(document) if fmt == "json" else yaml.safe_dump(document, allow_unicode=True)
    except (ValueError, TypeError, yaml.YAMLError):
        return False
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return True


def _answers_0_or_one_line(argv: list[str]) -> int:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(argv)
    assert rc in (0, EXIT_USER_ERROR), err.getvalue()[-3000:]
    assert "Traceback" not in err.getvalue()
    if rc == EXIT_USER_ERROR:
        lines = [ln.strip() for ln in err.getvalue().splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("compscale: error: ")]
        assert len(errors) == 1 and lines[-1] == errors[0], err.getvalue()[-3000:]
        assert len(errors[0]) <= 1100
    return rc


@pytest.fixture
def small_ceiling(monkeypatch):
    """Only small models may be built while fuzzing: a mutated but valid spec of a few hundred million parameters
    would be allowed by the default ceiling, and allocated."""
    monkeypatch.setenv("COMPSCALE_MAX_PARAMS", "2e7")
    monkeypatch.setenv("COMPSCALE_MAX_MACS", "2e9")
    monkeypatch.setenv("COMPSCALE_MAX_SIDE", "512")


@settings(FUZZ, max_examples=SPEC_FILE_EXAMPLES)
@given(st.data())
def test_spec_files_from_random_documents(tmp_path, small_ceiling, data):
    """``compscale profile FILE`` (and ``scale --base FILE``) on a mutated spec file: 0 or one line."""
    fmt = data.draw(st.sampled_from(["json", "yaml"]), label="format")
    path = tmp_path / f"spec.{fmt}"
    if data.draw(st.integers(0, 19), label="raw") == 0:
        path.write_bytes(data.draw(st.sampled_from(RAW_FILES), label="bytes"))
    else:
        seed = data.draw(st.sampled_from(SEED_SPECS), label="seed")
        document = data.draw(_mutated(seed), label="document")
        if data.draw(st.booleans(), label="wrapped"):
            document = {"spec": document, "phi": 1}  # the output of `compscale scale --json`
        if not _write_document(path, document, fmt):
            return
    command = data.draw(st.sampled_from([["profile", str(path)], ["scale", "--base", str(path), "--phi", "0"]]),
                        label="command")
    _answers_0_or_one_line(command)


@pytest.fixture(scope="module")
def fuzz_files(tmp_path_factory):
    """The tiny model's tensors and spec, and a small image, for the weights-metadata fuzz."""
    from PIL import Image

    from compscale.models.registry import build_model
    from compscale.specs import spec_from_dict

    d = tmp_path_factory.mktemp("fuzz")
    tiny = spec_from_dict(SEED_SPECS[0])
    state = {k: v.contiguous() for k, v in build_model(tiny).state_dict().items()}
    Image.new("RGB", (40, 40), (120, 30, 200)).save(d / "image.png")
    return d, state


_PREPROCESS = {"resolution": 32, "crop_pct": 1.0, "mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0],
               "in_chans": 3}


@settings(FUZZ, max_examples=WEIGHTS_META_EXAMPLES)
@given(st.data())
def test_weights_files_with_random_metadata(tmp_path, small_ceiling, fuzz_files, data):
    """``compscale predict --weights FILE`` on the tiny model's tensors under random ``spec`` and ``preprocess``
    metadata (mutated documents, junk text): the model is built only from a valid spec within the ceiling."""
    from safetensors.torch import save_file

    folder, state = fuzz_files
    meta = {}
    for key, seed in (("spec", SEED_SPECS[0] if data.draw(st.booleans(), label="own") else None),
                      ("preprocess", _PREPROCESS)):
        choice = data.draw(st.sampled_from(["keep", "mutate", "text", "absent"]), label=f"{key} kind")
        seed = seed or data.draw(st.sampled_from(SEED_SPECS), label="seed")
        if choice == "keep":
            meta[key] = json.dumps(seed)
        elif choice == "mutate":
            meta[key] = json.dumps(data.draw(_mutated(seed), label=key))
        elif choice == "text":
            meta[key] = data.draw(st.one_of(_text, st.sampled_from([s.decode("utf-8", "replace") for s in RAW_FILES])),
                                  label=key)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path), metadata=meta)
    model = data.draw(st.sampled_from(["efficientnet_b0", "resnet50", "efficientnet_lite0"]), label="model")
    _answers_0_or_one_line(["predict", model, "--weights", str(path), "--image", str(folder / "image.png")])


_CONFIG_FIELDS = [f.name for f in fields(TrainConfig)
                  if f.name not in ("out", "epochs", "limit_train", "limit_test", "batch_size", "resolution",
                                    "threads", "workers", "deterministic")]
#: Plausible values per kind of field, beside the junk: so that a good share of the configs are valid and run.
_PLAUSIBLE = st.one_of(st.floats(-1.0, 2.0), st.integers(-2, 6), st.booleans(), st.none(),
                       st.sampled_from(["sgd", "adamw", "rmsproptf", "cosine", "step", "constant", "none", "flip",
                                        "crop-flip", "cpu", "auto", "cuda", "meta", "mps", "digits"]))


@settings(FUZZ, max_examples=CONFIG_FILE_EXAMPLES)
@given(st.data())
def test_train_config_files_from_random_documents(tmp_path_factory, small_ceiling, fuzz_files, data):
    """``compscale train --config FILE`` with tiny limits on the command line (one epoch of 16 images): a random
    config trains or is refused with one line. The fields the flags fix are the only ones not fuzzed."""
    folder, _ = fuzz_files
    tmp = tmp_path_factory.mktemp("cfg")
    spec = tmp / "tiny.json"
    spec.write_text(json.dumps(SEED_SPECS[0]))
    config: dict[str, Any] = {"model": str(spec), "data": "digits"}
    for name in data.draw(st.lists(st.sampled_from(_CONFIG_FIELDS), max_size=5, unique=True), label="fields"):
        config[name] = data.draw(st.one_of(_PLAUSIBLE, _junk), label=name)
    path = tmp / "config.yaml"
    if data.draw(st.integers(0, 14), label="raw") == 0:
        path.write_bytes(data.draw(st.sampled_from(RAW_FILES), label="bytes"))
    elif not _write_document(path, config, "yaml"):
        return
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        _answers_0_or_one_line(["train", "--config", str(path), "--out", str(tmp / "out"), "--epochs", "1",
                                "--limit-train", "16", "--limit-test", "16", "--batch-size", "8", "--resolution",
                                "32", "--threads", "1", "--workers", "0"])
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(1)
