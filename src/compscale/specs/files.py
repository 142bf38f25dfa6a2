"""Spec files: a concrete architecture written as JSON or YAML (``ModelSpec.as_dict``), read back as a spec.

Any architecture — one printed by ``compscale scale --json``, a study's trial, your own baseline — can be
kept in a file and used wherever a model name is accepted. Pure Python: no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compscale.errors import UserError, first_line
from compscale.specs.base import ModelSpec, spec_from_dict

SPEC_SUFFIXES = (".json", ".yaml", ".yml")
#: A spec file larger than this is refused unread (the largest real ones are a few kB).
MAX_SPEC_BYTES = 1 << 20


def is_spec_file(model: Any) -> bool:
    """True when ``model`` names a spec file (by its suffix), whether or not the file exists yet."""
    return isinstance(model, (str, Path)) and Path(model).suffix.lower() in SPEC_SUFFIXES


def read_spec_file(path: str | Path) -> ModelSpec:
    """The spec in ``path``: a ``ModelSpec.as_dict`` mapping, or any mapping with one under ``"spec"`` (the
    output of ``compscale scale --json``)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"model spec file not found: {path}")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as err:
        raise UserError(f"cannot read model spec {path}: {first_line(err)}") from None
    if len(raw) > MAX_SPEC_BYTES:  # PyYAML takes minutes over megabytes; a spec is a few kB
        raise UserError(f"model spec {path} is larger than {MAX_SPEC_BYTES // 1024} kB: not a spec file")
    try:
        text = raw.decode("utf-8")  # invalid UTF-8: a UnicodeDecodeError, a ValueError
        # JSON with json: YAML 1.1 (PyYAML) reads exponents without a dot such as 1e-05 as strings.
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise UserError(f"cannot read model spec {path}: {first_line(err)}") from None
    except RecursionError:
        raise UserError(f"cannot read model spec {path}: nested too deeply") from None
    if isinstance(data, dict) and isinstance(data.get("spec"), dict):
        data = data["spec"]
    try:
        return spec_from_dict(data)
    except RecursionError:  # a value nested too deeply for Python to handle
        raise UserError(f"cannot read model spec {path}: a value is nested too deeply") from None
