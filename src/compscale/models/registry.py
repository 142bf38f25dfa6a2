"""One registry of named models: a name maps to a spec; a spec builds into an ``nn.Module``."""

from __future__ import annotations

import difflib
import fnmatch
import math
import os
import re
import sys
from dataclasses import dataclass, fields
from functools import singledispatch
from pathlib import Path
from typing import Callable, Iterable

from torch import nn

from compscale.errors import UserError, first_line, shorten
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
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def model_entry(name: str) -> ModelEntry:
    if not isinstance(name, str) or name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3)
        hint = (f"; did you mean {', '.join(close)}?" if close else
                "; a model is a registered name (`compscale models`), a spec file, a weights file or module:name")
        raise UserError(f"unknown model {shorten(repr(name))}{hint}")
    return _REGISTRY[name]


def model_spec(name: str | ModelSpec) -> ModelSpec:
    """The concrete spec of a model reference (:func:`resolve_reference`): a registered name, a spec file
    (``.json``/``.yaml``, as written by ``ModelSpec.as_dict``), a weights file that records its spec, or
    ``package.module:name``; a spec passes through unchanged. Any concrete architecture, e.g. one produced by
    ``compscale scale``, can be used without registering it."""
    if isinstance(name, ModelSpec):
        return name
    return resolve_reference(name).spec


# --- model references: one resolver for every command and API that takes a model ------------------------

#: The suffixes of weights files (safetensors, or a tensors-only ``torch.save``).
WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt")
#: ``package.module:name`` — a spec (or a function returning one) defined in importable Python code.
_IMPORT_PATH = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)")
#: How long a model name or a class name recorded in a weights file may be.
MAX_LABEL = 200
#: A model passed as an ``nn.Module``, where a reference is expected: what to do instead.
MODULE_HINT = ("compscale takes a model reference, not an nn.Module: a registered name, a spec file (.json/.yaml; "
               "see examples/), a weights file saved by compscale, or package.module:name for your own family "
               "(see examples/my_family.py and register_model in the README)")


@dataclass(frozen=True)
class ModelReference:
    """What a model reference resolves to: the concrete ``spec``; the ``weights`` file to load (when the
    reference is a weights file); a ``name`` for messages and titles (the registered name, the spec file's or
    the trained model's); and the ``classes`` names recorded with the weights (None when not recorded)."""

    spec: ModelSpec
    weights: str | None = None
    name: str = ""
    classes: tuple[str, ...] | None = None


def is_weights_file(ref: object) -> bool:
    """True when ``ref`` names a weights file by its suffix (``.safetensors``, ``.pth``, ``.pt``)."""
    return isinstance(ref, (str, os.PathLike)) and Path(ref).suffix.lower() in WEIGHTS_SUFFIXES


def family_modules(specs: Iterable[ModelSpec]) -> list[str]:
    """The modules outside compscale that define the families of ``specs``, in first-seen order: what a process
    that rebuilds these specs from JSON (a study's worker, ``compscale worker``) must import first. Importing a
    family's module registers its spec class and, by the extension point's contract, its builder."""
    modules: list[str] = []
    for spec in specs:
        module = type(spec).__module__
        if module.split(".")[0] != "compscale" and module not in modules:
            modules.append(module)
    return modules


def import_modules(modules: object) -> None:
    """Import ``modules`` (a study's record of :func:`family_modules`) so that their families, builders and
    names are registered here too; the working folder is searched as ``python -m`` would."""
    if not isinstance(modules, (list, tuple)) or not all(isinstance(m, str) and _IMPORT_PATH.fullmatch(m + ":x")
                                                         for m in modules):
        raise UserError(f"a study's imports must be a list of module names, got {shorten(repr(modules))}")
    for module in modules:
        _import_module(module, module)


def _import_module(module: str, ref: str):
    import importlib

    if os.getcwd() not in sys.path and "" not in sys.path:  # `compscale` (a console script) does not search here
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise UserError(f"cannot import {module!r} (from {shorten(ref)}): {first_line(err)}; run from the folder "
                        f"that holds it or install it") from None
    return mod


def _import_reference(ref: str) -> ModelSpec:
    """``package.module:name``: the module is imported (registering its family and builder), ``name`` is a spec
    or a function of no arguments returning one."""
    match = _IMPORT_PATH.fullmatch(ref)
    module, attr = match.group(1), match.group(2)
    mod = _import_module(module, ref)
    if not hasattr(mod, attr):
        raise UserError(f"module {module!r} has no {attr!r} (from {shorten(ref)})")
    value = getattr(mod, attr)
    if isinstance(value, nn.Module) or (isinstance(value, type) and issubclass(value, nn.Module)):
        raise UserError(f"{shorten(ref)} is an nn.Module; {MODULE_HINT}")
    if not isinstance(value, ModelSpec):
        import inspect

        # Only a spec, a spec class or a Python function of no arguments is called: never a builtin (os.fork) or
        # any other callable a reference in someone else's config file could name.
        is_spec_class = isinstance(value, type) and issubclass(value, ModelSpec)
        try:
            callable_ok = (is_spec_class or inspect.isfunction(value)) and inspect.signature(value).bind() is not None
        except TypeError:
            callable_ok = False
        if not callable_ok:
            raise UserError(f"{shorten(ref)} must be a ModelSpec or a function of no arguments returning one, got "
                            f"{type(value).__name__}")
        value = value()
    if isinstance(value, nn.Module):
        raise UserError(f"{shorten(ref)} returns an nn.Module; {MODULE_HINT}")
    if not isinstance(value, ModelSpec):
        raise UserError(f"{shorten(ref)} must be a ModelSpec or a function returning one; it returned "
                        f"{type(value).__name__}")
    return value


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file (empty for other formats)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable safetensors file: {err}") from None


def recorded_spec(path: str | os.PathLike, meta: dict[str, str] | None = None) -> ModelSpec | None:
    """The spec a weights file records in its metadata, every field checked (None when it records none; one
    line naming the file when it is not a valid spec)."""
    from compscale.specs import spec_from_json

    meta = read_metadata(path) if meta is None else meta
    if "spec" not in meta:
        return None
    try:
        return spec_from_json(meta["spec"])
    except UserError as err:
        raise UserError(f"{path} records an invalid model spec in its metadata: {err}") from None
    except RecursionError:
        raise UserError(f"{path} records an invalid model spec in its metadata: nested too deeply") from None


def recorded_classes(path: str | os.PathLike, meta: dict[str, str], num_classes: int) -> tuple[str, ...] | None:
    """The class names a weights file records (``classes``: a JSON list of one name per class), checked; None
    when it records none."""
    import json

    if "classes" not in meta:
        return None
    try:
        names = json.loads(meta["classes"])
    except (ValueError, RecursionError):
        names = None
    if (not isinstance(names, list) or len(names) != num_classes
            or not all(isinstance(n, str) and 0 < len(n) <= MAX_LABEL and n.isprintable() for n in names)):
        raise UserError(f"{path}: its class names must be a list of {num_classes} printable names of at most "
                        f"{MAX_LABEL} characters, got {shorten(meta['classes'])}")
    return tuple(names)


def recorded_name(path: str | os.PathLike, meta: dict[str, str], spec: ModelSpec) -> str:
    """What to call the model of a weights file: the name it records (``model``, written by training), else
    the registered name of its architecture, else the file's label (:func:`reference_label`)."""
    name = meta.get("model", "")
    if 0 < len(name) <= MAX_LABEL and name.isprintable():
        return name
    return registered_name(spec) or reference_label(path)


def resolve_reference(ref: str | os.PathLike | ModelSpec) -> ModelReference:
    """The one resolver of a model reference, used by every command and API that takes a model:

    * a registered name (``compscale models``);
    * a spec file (``.json``/``.yaml``: ``ModelSpec.as_dict``, or ``compscale scale --json``'s output);
    * a weights file saved by compscale (``.safetensors`` with its spec in the metadata: classes, input
      channels and resolution come from it, and the weights are to be loaded);
    * ``package.module:name``: a spec, or a function returning one, in importable Python code (your own
      family: the module registers its spec class and builder when imported);
    * a :class:`~compscale.specs.ModelSpec`, which passes through.

    An ``nn.Module`` is refused in one line saying what to pass instead."""
    if isinstance(ref, ModelSpec):
        return ModelReference(ref, None, ref.family)
    if isinstance(ref, nn.Module):
        raise UserError(f"got an nn.Module ({type(ref).__name__}); {MODULE_HINT}")
    if not isinstance(ref, (str, os.PathLike)):
        raise UserError(f"a model is a registered name, a spec file, a weights file or package.module:name, got "
                        f"{type(ref).__name__} {shorten(repr(ref))}")
    text = os.fspath(ref)
    if text in _REGISTRY:
        return ModelReference(_REGISTRY[text].spec_fn(), None, text)
    at_phi = _AT_PHI.fullmatch(text) if isinstance(text, str) else None
    if at_phi and not _exists(text):
        return _scaled_reference(at_phi.group(1), at_phi.group(2))
    if is_spec_file(text):
        return ModelReference(read_spec_file(text), None, Path(text).stem)
    if is_weights_file(text):
        if not Path(text).is_file():
            raise UserError(f"weights file not found: {shorten(text)}")
        meta = read_metadata(text)
        spec = recorded_spec(text, meta)
        if spec is None:
            raise UserError(f"{shorten(text)} does not say which model it holds (no spec in its metadata): name the "
                            f"model and pass the file with --weights")
        return ModelReference(spec, text, recorded_name(text, meta, spec),
                              recorded_classes(text, meta, spec.num_classes))
    if isinstance(text, str) and _IMPORT_PATH.fullmatch(text):
        return ModelReference(_import_reference(text), None, text.rpartition(":")[2])
    model_entry(text)  # an unknown name: one line, with the closest names
    raise AssertionError("unreachable")


#: ``REFERENCE@phi=X``: the model of REFERENCE compound-scaled by φ = X (the paper's α, β, γ).
_AT_PHI = re.compile(r"(.+)@phi=([^@]*)")


def _exists(text: str) -> bool:
    try:
        return Path(text).exists()
    except (OSError, ValueError):
        return False


def _scaled_reference(base: str, phi_text: str) -> ModelReference:
    """``base@phi=X``: the architecture of ``base`` compound-scaled by φ = X with the paper's coefficients (what
    ``compscale scale --base BASE --phi X`` prints); a weights file's weights do not fit it and are refused."""
    from compscale.scaling import CompoundScaling

    try:
        phi = float(phi_text)
    except ValueError:
        phi = math.nan
    if not math.isfinite(phi):
        raise UserError(f"{shorten(base)}@phi=...: phi must be a number (e.g. @phi=1.5), got {shorten(phi_text)}")
    ref = resolve_reference(base)
    if ref.weights is not None:
        raise UserError(f"{shorten(base)}@phi={phi:g}: scaling builds a new architecture, which the weights in "
                        f"{shorten(base)} do not fit; scale its spec instead")
    try:
        spec = ref.spec.scaled(CompoundScaling().factors(phi))
    except NotImplementedError:
        raise UserError(f"{shorten(base)}@phi={phi:g}: {ref.spec.family} models have no scaling rule") from None
    return ModelReference(spec, None, f"{ref.name or reference_label(base)}@phi={phi:g}")


def reference_label(ref: object) -> str:
    """A short, file-name-safe label for a model reference (default output folders): the registered name, the
    spec or weights file's name (its folder's for ``model.safetensors``), the ``name`` of ``module:name``."""
    if isinstance(ref, ModelSpec):
        return ref.family
    text = os.fspath(ref) if isinstance(ref, (str, os.PathLike)) else str(ref)
    if text in _REGISTRY:
        return text
    if is_weights_file(text) and Path(text).stem == "model" and Path(text).parent.name:
        return Path(text).parent.name
    if _IMPORT_PATH.fullmatch(text):
        return text.rpartition(":")[2]
    at_phi = _AT_PHI.fullmatch(text)
    if at_phi and not _exists(text):
        return f"{reference_label(at_phi.group(1))}@phi={at_phi.group(2)}"
    return Path(text).stem or "model"


def registered_name(spec: ModelSpec) -> str | None:
    """The registered name whose architecture ``spec`` is (classes, input channels, resolution and dropout
    may differ), or None: what a peer library calls the model, for messages."""
    loose = {"num_classes", "in_chans", "resolution", "dropout", "drop_path_rate"}
    mine = {k: v for k, v in spec.as_dict().items() if k not in loose}
    for name, entry in _REGISTRY.items():
        other = entry.spec_fn()
        if type(other) is type(spec) and {k: v for k, v in other.as_dict().items() if k not in loose} == mine:
            return name
    return None


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

        # A spec made for smaller images (e.g. a stride-1 stem at 28 px) may go down to its own side.
        lowest = min(MIN_RESOLUTION, spec.resolution)
        if int(resolution) != resolution or resolution < lowest:
            raise UserError(f"resolution must be an integer >= {lowest}, got {resolution!r}")
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
