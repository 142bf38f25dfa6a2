"""Weights in and out: key maps from other libraries' layouts, and safetensors I/O.

A *layout* is a naming scheme for the same tensors (timm, torchvision, the ``_conv_stem/_blocks.N/_fc``
layout of the original PyTorch port and the Lite weight packages). Each family registers, per layout, a
function giving for every key of *our* state dict the key it has in that layout. Loading is strict: the
first missing, unexpected or mis-shaped key is named in one line. Nothing here unpickles code: safetensors,
or ``torch.load(weights_only=True)`` for ``.pth`` files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from compscale.errors import UserError, first_line
from compscale.io import atomic_path
from compscale.models.registry import ModelReference
from compscale.models.registry import read_metadata as read_metadata  # re-exported (the registry reads metadata)
from compscale.specs import ModelSpec

KeyMap = Callable[[nn.Module], dict[str, str]]
_KEY_MAPS: dict[tuple[type, str], KeyMap] = {}


def register_key_map(model_type: type, layout: str) -> Callable[[KeyMap], KeyMap]:
    """Register ``fn(model) -> {our_key: their_key}`` for models of ``model_type`` in ``layout``."""

    def deco(fn: KeyMap) -> KeyMap:
        _KEY_MAPS[(model_type, layout)] = fn
        return fn

    return deco


def layouts_for(model: nn.Module) -> list[str]:
    return ["compscale"] + [layout for (t, layout) in _KEY_MAPS if isinstance(model, t)]


def _key_map(model: nn.Module, layout: str) -> dict[str, str]:
    if layout == "compscale":
        return {k: k for k in model.state_dict()}
    for (t, name), fn in _KEY_MAPS.items():
        if name == layout and isinstance(model, t):
            return fn(model)
    raise UserError(f"unknown weight layout {layout!r} for {type(model).__name__};"
                    f" known: {', '.join(layouts_for(model))}")


def detect_layout(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str:
    """The layout whose key names overlap ``state_dict`` the most."""
    keys = set(state_dict)
    best, best_hits = "compscale", -1
    for layout in layouts_for(model):
        hits = len(keys & set(_key_map(model, layout).values()))
        if hits > best_hits:
            best, best_hits = layout, hits
    return best


def convert_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], layout: str | None = None
) -> dict[str, torch.Tensor]:
    """Rename ``state_dict`` from ``layout`` (detected when None) to our keys, checking every key and shape."""
    layout = layout or detect_layout(model, state_dict)
    mapping = _key_map(model, layout)
    ours = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, theirs in mapping.items():
        if theirs not in state_dict:
            # Some exporters drop BatchNorm's step counter; it does not change the function.
            if key.endswith("num_batches_tracked"):
                out[key] = ours[key]
                continue
            raise UserError(f"weights do not fit this model ({layout} layout): missing key {theirs!r}")
        tensor = state_dict[theirs]
        if tuple(tensor.shape) != tuple(ours[key].shape):
            raise UserError(
                f"weights do not fit this model ({layout} layout): {theirs!r} has shape "
                f"{tuple(tensor.shape)}, the model expects {tuple(ours[key].shape)}"
            )
        check_tensor_values(theirs, tensor, ours[key])
        out[key] = tensor
    unexpected = sorted(set(state_dict) - set(mapping.values()))
    if unexpected:
        raise UserError(f"weights do not fit this model ({layout} layout): unexpected key {unexpected[0]!r}")
    return out


def check_tensor_values(key: str, tensor: torch.Tensor, target: torch.Tensor) -> None:
    """One line when ``tensor`` cannot stand for ``target`` (a parameter or buffer of the model): float
    parameters accept float tensors only (an integer or bool tensor would be cast silently), integer buffers
    (BatchNorm's step counter) integer tensors only, and no value may be NaN or infinite."""
    if not isinstance(tensor, torch.Tensor):
        raise UserError(f"weights: {key!r} is not a tensor")
    if target.is_floating_point():
        if not tensor.is_floating_point():
            raise UserError(f"weights: {key!r} holds {str(tensor.dtype).replace('torch.', '')} values; "
                            f"float parameters accept float tensors only")
        if tensor.device.type != "meta" and not bool(torch.isfinite(tensor).all()):
            raise UserError(f"weights: {key!r} holds NaN or infinite values; the weights are refused")
    elif tensor.dtype != target.dtype and (tensor.is_floating_point() or tensor.is_complex()
                                           or tensor.dtype == torch.bool):
        raise UserError(f"weights: {key!r} holds {str(tensor.dtype).replace('torch.', '')} values; "
                        f"the model's {str(target.dtype).replace('torch.', '')} buffer accepts integers only")


def load_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], layout: str | None = None
) -> nn.Module:
    """Load a state dict from any registered layout into ``model``, strictly; returns the model."""
    model.load_state_dict(convert_state_dict(model, state_dict, layout), strict=True)
    return model


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file, or a ``.pth``/``.pt`` file loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise UserError(f"{path} is not a readable safetensors file: {err}") from None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types here (UnpicklingError, RuntimeError, EOFError)
        text = str(err).strip()
        if "Weights only load failed" in text:
            # The file pickles Python objects (possibly code); torch's message advises weights_only=False,
            # which would run it. Name what it tried to import instead.
            import re

            what = re.search(r"GLOBAL ([\w.]+)", text)
            raise UserError(f"{path} is refused (only tensors are accepted): it holds pickled Python objects, and "
                            f"loading it could run code" + (f" (it imports {what.group(1)})" if what else "")) from None
        first = first_line(err)
        raise UserError(f"{path} is not a loadable weights file (only tensors are accepted): {first}") from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UserError(f"{path} does not hold a state dict of tensors")
    return data


def load_weights(model: nn.Module, path: str | os.PathLike, layout: str | None = None) -> nn.Module:
    """Read ``path`` and load it into ``model`` (layout detected unless given)."""
    return load_state_dict(model, read_state_dict(path), layout)


def save_weights(model: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike,
                 metadata: dict[str, str] | None = None, layout: str = "compscale") -> None:
    """Write weights atomically: safetensors, with the model's spec in the metadata when it has one, or, for a
    ``.pth``/``.pt`` path, ``torch.save`` of the tensors alone (no metadata; ``torch.load(weights_only=True)``
    reads it).

    ``layout`` names the tensors as another library does (``"timm"``, ``"torchvision"``, any layout
    :func:`layouts_for` lists for the model): the inverse of the key map that loads that library's weights, so
    that its model of the same architecture takes the file with ``load_state_dict(state, strict=True)``."""
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    if layout != "compscale":
        if not isinstance(model, nn.Module):
            raise UserError(f"saving in the {layout} layout needs the model, not a state dict")
        state = to_layout(model, layout)
    meta = dict(metadata or {})
    spec = getattr(model, "spec", None)
    if spec is not None:
        meta.setdefault("spec", spec.to_json())
    if layout != "compscale":
        meta.setdefault("layout", layout)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() in (".pth", ".pt"):
            torch.save(tensors, tmp)
        else:
            save_safetensors(tensors, tmp, meta, path)


def to_layout(model: nn.Module, layout: str) -> dict[str, torch.Tensor]:
    """``model``'s state dict with its keys named as in ``layout`` (the inverse of :func:`convert_state_dict`);
    one line when the layout has no name for one of its tensors."""
    mapping = _key_map(model, layout)
    state = model.state_dict()
    missing = [k for k in state if k not in mapping]
    if missing:
        raise UserError(f"the {layout} layout has no name for {missing[0]!r} of this {type(model).__name__}")
    out = {mapping[k]: v for k, v in state.items()}
    if len(out) != len(state):
        raise UserError(f"the {layout} layout gives two tensors of this {type(model).__name__} one name")
    return out


def save_safetensors(tensors: Mapping[str, torch.Tensor], tmp: Path, metadata: dict[str, str],
                     target: str | os.PathLike) -> None:
    """``safetensors.torch.save_file`` to ``tmp``; a failed write (a full disk: safetensors raises its own error
    type, not OSError) becomes one line naming ``target``.

    safetensors writes a ``.tmpXXXXXX`` file of its own (mode 0o600) and renames it over the path it is given:
    it is given a path in a private staging folder (removed afterwards; a killed writer's is removed by the
    next write beside ``target``), then its file moves onto ``tmp`` and gets the usual mode back (0o666 minus
    the umask, or the replaced file's)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from compscale.io import new_file_mode, staging_folder

    with staging_folder(target) as stage:
        try:
            save_file(dict(tensors), str(stage / "weights.safetensors"), metadata=metadata)
        except SafetensorError as err:
            raise UserError(f"cannot write {target}: {first_line(err)}") from None
        os.replace(stage / "weights.safetensors", tmp)
        os.chmod(tmp, new_file_mode(target))


def model_from_weights(path: str | os.PathLike, name: str | None = None) -> nn.Module:
    """Build the model a weights file was saved from (its spec is in compscale's safetensors metadata) and
    load it; for other files, build ``name`` and load strictly. The model is returned in eval mode."""
    from compscale.models.registry import build_model

    model = build_model(spec_of_weights(path, name))
    load_weights(model, path)
    return model.eval()


def spec_of_weights(path: str | os.PathLike, name: str | None = None) -> ModelSpec:
    """The spec :func:`model_from_weights` builds: the one in the file's metadata (every field checked; one
    line naming the file when it is not a valid spec), else ``name``'s (any model reference)."""
    from compscale.models.registry import model_spec, recorded_spec

    spec = recorded_spec(path)
    if spec is not None:
        if name is not None and model_spec(name).family != spec.family:
            what = f"a {name.family} model" if isinstance(name, ModelSpec) else name
            raise UserError(f"{path} holds a {spec.family} model, not {what}")
        return spec
    if name is not None:
        return model_spec(name)
    raise UserError(f"{path} does not say which model it holds; name the model")


def reference_with_weights(ref: object, weights: str | os.PathLike | None = None) -> ModelReference:
    """The model reference ``ref`` (:func:`~compscale.models.registry.resolve_reference`) with an explicit
    ``weights`` file: the architecture the file records (its classes, input channels, resolution), else
    ``ref``'s; the class names it records. Nothing is built: check its size, then :func:`build_reference`."""
    from compscale.models.registry import recorded_classes, recorded_name, recorded_spec, resolve_reference

    reference = resolve_reference(ref)
    if weights is None:
        return reference
    weights = os.fspath(weights)
    if not Path(weights).is_file():
        raise UserError(f"weights file not found: {weights}")
    meta = read_metadata(weights)
    spec = recorded_spec(weights, meta) or reference.spec
    if spec.family != reference.spec.family:
        raise UserError(f"{weights} holds a {spec.family} model, not {ref}")
    # Named after the weights' own model when they record another architecture than ``ref``'s.
    name = reference.name if spec == reference.spec else recorded_name(weights, meta, spec)
    return ModelReference(spec, weights, name, recorded_classes(weights, meta, spec.num_classes))


def build_reference(reference: ModelReference) -> nn.Module:
    """The model of a resolved reference, with its weights loaded when it has some, in eval mode."""
    from compscale.models.registry import build_model

    model = build_model(reference.spec)
    if reference.weights is not None:
        load_weights(model, reference.weights)
    return model.eval()
