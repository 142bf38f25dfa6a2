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
import math
from dataclasses import fields

import pytest
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
        assert "\n" not in str(err) and str(err).startswith("compscale")
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
