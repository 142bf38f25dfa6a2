"""Complexity of any module: parameters, multiply-adds (what the EfficientNet paper calls FLOPs) and
activations (elements written by conv and linear layers, as pycls counts them).

Counting runs the forward pass on the ``meta`` device: shapes propagate, no memory is allocated, so B7 at
600 px takes a second. Multiply-adds come from :class:`torch.utils.flop_counter.FlopCounterMode`, which
reports 2 × MACs for convolutions and matrix products and ignores element-wise ops (BN, activations, the
SE gate), exactly the convention of the paper's table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from compscale.errors import UserError
from compscale.scaling import MAX_RESOLUTION, MIN_RESOLUTION


@dataclass(frozen=True)
class LayerProfile:
    name: str
    kind: str
    params: int
    macs: int
    activations: int


@dataclass(frozen=True)
class Profile:
    """Totals for one model at one input resolution (``layers`` only when asked for)."""

    params: int
    macs: int
    activations: int
    resolution: int
    layers: tuple[LayerProfile, ...] = field(default=(), repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"params": self.params, "macs": self.macs, "activations": self.activations,
                "resolution": self.resolution}


_COUNTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _meta_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers as meta tensors of the same shapes, so the real ones are never touched."""
    state = {n: torch.empty_like(p, device="meta") for n, p in model.named_parameters(remove_duplicate=False)}
    state.update({n: torch.empty_like(b, device="meta") for n, b in model.named_buffers(remove_duplicate=False)})
    return state


def profile(
    model: nn.Module | str,
    resolution: int | tuple[int, int] | None = None,
    per_layer: bool = False,
    in_chans: int | None = None,
) -> Profile:
    """Count params, multiply-adds and activations of ``model`` for one image of side ``resolution``.

    ``model`` is a module or any model reference (a registered name, a spec, a spec or weights file,
    ``module:name``; built on the meta device). The resolution defaults to the
    model spec's. Weights are never read and no activation memory is allocated.
    """
    model = _as_module(model)
    h, w = _input_size(model, resolution)
    if in_chans is None:
        spec = getattr(model, "spec", None)
        in_chans = spec.in_chans if spec is not None else _first_conv_in_channels(model)
    params = sum(p.numel() for p in model.parameters())
    flops, acts = _count(model, in_chans, h, w)
    total_macs = sum(flops.get("Global", {}).values()) // 2
    layers = _layer_profiles(model, flops, acts) if per_layer else ()
    return Profile(params, int(total_macs), sum(acts.values()), int(h) if h == w else (int(h), int(w)), layers)


def _as_module(model: nn.Module | str) -> nn.Module:
    """``model`` itself, or the model of a reference (a registered name, a spec or spec file, a weights file,
    ``module:name``: :func:`compscale.models.registry.resolve_reference`) built on the meta device."""
    if not isinstance(model, nn.Module):
        from compscale.models import create_model

        with torch.device("meta"):
            model = create_model(model)
    return model


def _input_size(model: nn.Module, resolution: int | tuple[int, int] | None) -> tuple[int, int]:
    """(height, width) of the input: ``resolution`` (one side or both), else the model spec's; checked."""
    spec = getattr(model, "spec", None)
    if resolution is None:
        if spec is None:
            raise UserError("give a resolution: this model carries no spec")
        resolution = spec.resolution
    # A spec made for smaller images (e.g. a stride-1 stem at 28 px) may go down to its own side; a module of
    # the user's own (no spec) to any side it accepts.
    lowest = min(MIN_RESOLUTION, spec.resolution) if spec is not None else 1
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    for side in (h, w):
        if int(side) != side or side < lowest:
            raise UserError(f"resolution must be an integer >= {lowest}, got {side!r}")
        if side > MAX_RESOLUTION:
            raise UserError(f"resolution must be at most {MAX_RESOLUTION:,} pixels, got {side!r}")
    return h, w


def _count(model: nn.Module, in_chans: int, h: int, w: int) -> tuple[dict[str, dict[Any, int]], dict[str, int]]:
    """One eval-mode forward pass on the meta device: FLOP counts per module (2 × MACs, as
    :class:`FlopCounterMode` reports them), and the elements written by each counted layer."""
    acts: dict[str, int] = {}

    def record(name: str):
        def hook(_mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            acts[name] = acts.get(name, 0) + out.numel()

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if isinstance(m, _COUNTED)]
    was_training = model.training
    model.eval()
    try:
        x = torch.empty(1, in_chans, int(h), int(w), device="meta")
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            functional_call(model, _meta_state(model), (x,))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return counter.get_flop_counts(), acts


def _layer_profiles(model: nn.Module, flops: dict[str, dict[Any, int]],
                    acts: dict[str, int]) -> tuple[LayerProfile, ...]:
    """One :class:`LayerProfile` per conv and linear layer, in module order."""
    rows = []
    for name, mod in model.named_modules():
        if not isinstance(mod, _COUNTED):
            continue
        own = flops.get(f"{type(model).__name__}.{name}", {}) if name else {}
        rows.append(
            LayerProfile(
                name=name,
                kind=type(mod).__name__,
                params=sum(p.numel() for p in mod.parameters(recurse=False)),
                macs=sum(own.values()) // 2,
                activations=acts.get(name, 0),
            )
        )
    return tuple(rows)


def _first_conv_in_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise UserError("cannot tell the input channels of this model; pass in_chans")
