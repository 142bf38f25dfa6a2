"""One registry of named models: a name maps to a spec; a spec builds into an ``nn.Module``."""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, fields
from functools import singledispatch
from typing import Callable

from torch import nn

from compscale.errors import UserError
from compscale.specs import ModelSpec, is_spec_file, read_spec_file


@dataclass(frozen=True)
class ModelEntry:
    name: str
    spec_fn: Callable[[], ModelSpec]
    description: str = ""


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, spec_fn: Callable[[], ModelSpec], description: str = "") -> None:
    """Register ``name`` so that ``create_model(name)`` builds ``spec_fn()``."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelEntry(name, spec_fn, description)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a shell-style pattern (``"efficientnet_b*"``)."""
    names = sorted(_REGISTRY, key=_natural_key)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def _natural_key(name: str) -> tuple:
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def model_entry(name: str) -> ModelEntry:
    if not isinstance(name, str) or name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `compscale models`"
        raise UserError(f"unknown model {name!r}{hint}")
    return _REGISTRY[name]


def model_spec(name: str | ModelSpec) -> ModelSpec:
    """The concrete spec of a registered model name or of a spec file (``.json``/``.yaml``, as written by
    ``ModelSpec.as_dict``); a spec passes through unchanged. Any concrete architecture, e.g. one produced by
    ``compscale scale``, can be used without registering it."""
    if isinstance(name, ModelSpec):
        return name
    if is_spec_file(name):
        return read_spec_file(name)
    return model_entry(name).spec_fn()


@singledispatch
def build_model(spec: ModelSpec, features_only: bool = False) -> nn.Module:
    """Turn a concrete spec into a module; each family registers its builder with ``@build_model.register``."""
    raise UserError(f"no builder for spec family {getattr(spec, 'family', type(spec).__name__)!r}")


def resolve_spec(
    name: str | ModelSpec,
    num_classes: int | None = None,
    in_chans: int | None = None,
    drop_rate: float | None = None,
    drop_path_rate: float | None = None,
    resolution: int | None = None,
) -> ModelSpec:
    """The spec of ``name`` with the usual user overrides applied and checked."""
    spec = model_spec(name)
    changes: dict[str, object] = {}
    if num_classes is not None:
        if int(num_classes) != num_classes or num_classes < 1:
            raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
        changes["num_classes"] = int(num_classes)
    if in_chans is not None:
        if int(in_chans) != in_chans or in_chans < 1:
            raise UserError(f"in_chans must be a positive integer, got {in_chans!r}")
        changes["in_chans"] = int(in_chans)
    if drop_rate is not None:
        if not 0.0 <= drop_rate < 1.0:
            raise UserError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        changes["dropout"] = float(drop_rate)
    if drop_path_rate is not None:
        if not 0.0 <= drop_path_rate < 1.0:
            raise UserError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        if "drop_path_rate" not in {f.name for f in fields(spec)}:
            raise UserError(f"{spec.family} models have no stochastic depth")
        changes["drop_path_rate"] = float(drop_path_rate)
    if resolution is not None:
        from compscale.scaling import MAX_RESOLUTION, MIN_RESOLUTION

        if int(resolution) != resolution or resolution < MIN_RESOLUTION:
            raise UserError(f"resolution must be an integer >= {MIN_RESOLUTION}, got {resolution!r}")
        if resolution > MAX_RESOLUTION:
            raise UserError(f"resolution must be at most {MAX_RESOLUTION:,} pixels, got {resolution!r}")
        changes["resolution"] = int(resolution)
    return spec.replace(**changes) if changes else spec


def create_model(
    name: str | ModelSpec,
    num_classes: int | None = None,
    in_chans: int | None = None,
    drop_rate: float | None = None,
    drop_path_rate: float | None = None,
    features_only: bool = False,
) -> nn.Module:
    """Build a registered model (or any concrete spec).

    ``num_classes`` and ``in_chans`` default to the spec's (1000 and 3 for every registered model);
    ``drop_rate`` overrides the variant's dropout before the classifier, ``drop_path_rate`` the stochastic
    depth rate; ``features_only=True`` returns a backbone whose forward gives the per-stage feature maps.
    The built module carries its spec as ``model.spec``.
    """
    spec = resolve_spec(name, num_classes, in_chans, drop_rate, drop_path_rate)
    return build_model(spec, features_only=features_only)
