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
        text = path.read_text()
        # JSON with json: YAML 1.1 (PyYAML) reads exponents without a dot such as 1e-05 as strings.
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise UserError(f"cannot read model spec {path}: {first_line(err)}") from None
    if isinstance(data, dict) and isinstance(data.get("spec"), dict):
        data = data["spec"]
    return spec_from_dict(data)
