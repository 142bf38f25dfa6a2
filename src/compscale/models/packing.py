"""Packed seeds: k copies of one network, each with its own initialisation, trained as ONE module.

Training several seeds of a small CNN one after the other leaves a CPU or GPU mostly idle; HFTA (Wang et al.,
MLSys 2021, "horizontally fused training array") and Packed-Ensembles (Laurent et al., ICLR 2023) fuse the k
models into one wider network whose layers stay block diagonal, so that member m is still exactly its own
network. :func:`pack` does this for our families:

* every ``nn.Conv2d`` (subclasses such as :class:`~compscale.models.blocks.Conv2dSame` included, converted in
  place so their forward keeps working) gets k× its input and output channels and k× its groups, its weight
  being the members' weights concatenated along the output channels. The channel layout is *member-major*
  (channels ``[member 0's C, member 1's C, ...]``), which a grouped convolution preserves;
* every ``nn.BatchNorm2d(C)`` becomes one of C·k features (affine parameters and running statistics
  concatenated): per member by construction;
* every ``nn.Linear(in, out)`` becomes a :class:`PackedLinear`, block diagonal, whose weight is stored as
  ``(k·out, in)`` and bias ``(k·out,)``: parameter ndims are those of the originals, so the engine's
  :func:`~compscale.train.optim.param_groups` puts them in the same decay / no-decay groups;
* :class:`~compscale.models.blocks.DropPath` (one Bernoulli draw per sample) becomes a :class:`PackedDropPath`
  (one draw per sample *and member*): members are never coupled;
* activations, pooling, flatten, residual additions, squeeze-and-excitation (convs) and ``nn.Dropout`` (one
  draw per element) act per channel and stay as they are.

Anything else that mixes channels outside a convolution (``torch.cat`` of branches as in Inception blocks,
channel shuffles, reshapes) breaks the member-major layout. :func:`pack` refuses unknown parametrised modules
up front and then *checks* the packed network: a float32 forward, in train and eval mode, of per-member random
inputs through the packed network and through each member alone must agree, else it raises
:class:`~compscale.errors.UserError` ("... cannot be packed: ...") and the caller trains the seeds separately.

Training: feed member m its own batch in input channels ``m·C_in .. (m+1)·C_in`` (:func:`stack_inputs`), take
the SUM of the members' mean losses (:func:`member_losses`) — each member's gradient is then exactly the one of
its separate run, and every optimizer of the engine is elementwise, so each member follows its separate run's
trajectory (up to floating-point summation order). :func:`unpack` gives back k ordinary models.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch import nn

from compscale.errors import UserError, first_line
from compscale.models.blocks import DropPath


class NotPackable(UserError):
    """The architecture cannot be packed (it mixes channels outside its convolutions, or holds modules packing
    does not know): train its seeds one at a time instead."""


#: The largest input side the packing check uses (the members' resolution when smaller).
CHECK_SIZE = 64

#: Relative tolerance of the packing check. It runs in float32 — CPU kernels for float64 depthwise and grouped
#: convolutions are ~100x slower, which made the check cost seconds per trial — where the packed and separate
#: summation orders differ by ~1e-6 relative; a layout error is O(1).
CHECK_RTOL = 1e-3

#: Architectures (spec, members) already checked in this process: a study packs the same ones over and over.
_CHECKED: set[tuple[str, int]] = set()


class PackedLinear(nn.Module):
    """k block-diagonal ``nn.Linear(in, out)``: member m's outputs depend only on member m's inputs.

    ``weight`` is ``(k·out, in)`` (rows m·out..(m+1)·out are member m's weight) and ``bias`` ``(k·out,)``, so
    the parameters have the ndims of the originals. Input ``(..., k·in)``, output ``(..., k·out)``.
    """

    def __init__(self, k: int, in_features: int, out_features: int, bias: bool = True,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.k, self.in_features, self.out_features = k, in_features, out_features
        self.weight = nn.Parameter(torch.empty(k * out_features, in_features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(k * out_features, device=device, dtype=dtype)) if bias else None

    @classmethod
    def from_linears(cls, linears: Sequence[nn.Linear]) -> "PackedLinear":
        """The packed layer of ``linears`` (same shapes), one member each, weights copied."""
        first = linears[0]
        out = cls(len(linears), first.in_features, first.out_features, first.bias is not None,
                  device=first.weight.device, dtype=first.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(torch.cat([lin.weight for lin in linears]))
            out.weight.requires_grad_(first.weight.requires_grad)
            if out.bias is not None:
                out.bias.copy_(torch.cat([lin.bias for lin in linears]))
                out.bias.requires_grad_(first.bias.requires_grad)
        return out

    def member(self, m: int) -> nn.Linear:
        """Member ``m``'s layer as an ordinary ``nn.Linear`` (its own copy of the weights)."""
        rows = slice(m * self.out_features, (m + 1) * self.out_features)
        lin = nn.Linear(self.in_features, self.out_features, self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.weight[rows])
            lin.weight.requires_grad_(self.weight.requires_grad)
            if self.bias is not None:
                lin.bias.copy_(self.bias[rows])
                lin.bias.requires_grad_(self.bias.requires_grad)
        return lin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., k·in) → (..., k, in); y[..., m, o] = Σ_i x[..., m, i] · W_m[o, i]
        x = x.unflatten(-1, (self.k, self.in_features))
        w = self.weight.view(self.k, self.out_features, self.in_features)
        y = torch.einsum("...ki,koi->...ko", x, w).flatten(-2)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"k={self.k}, in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}"


class PackedDropPath(DropPath):
    """Stochastic depth for k packed members: one Bernoulli draw per sample AND member, so member m drops its
    residual branch for a sample independently of the other members (as in its separate run). The mask
    ``(B, k)`` is expanded to each member's channels of a member-major ``(B, k·C, ...)`` tensor."""

    def __init__(self, k: int, p: float = 0.0) -> None:
        super().__init__(p)
        self.k = int(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        batch, channels = x.shape[0], x.shape[1]
        mask = x.new_empty((batch, self.k)).bernoulli_(keep)
        mask = mask.repeat_interleave(channels // self.k, dim=1).view((batch, channels) + (1,) * (x.ndim - 2))
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"k={self.k}, p={self.p:.4f}"


class PackedModel(nn.Module):
    """k members of one architecture packed into one module (see the module docstring).

    ``k``: the number of members; ``spec``: the members' spec (``None`` if they carry none); ``in_chans``: one
    member's input channels; ``net``: the packed network. :meth:`forward` takes ``(B, k·C_in, H, W)`` — member
    m's batch in channels m·C_in..(m+1)·C_in (:func:`stack_inputs`) — and returns logits ``(B, k, classes)``.
    """

    def __init__(self, net: nn.Module, k: int, in_chans: int, spec: object | None = None) -> None:
        super().__init__()
        self.net = net
        self.k, self.in_chans, self.spec = int(k), int(in_chans), spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 2 or x.shape[1] != self.k * self.in_chans:
            raise ValueError(f"a packed model of {self.k} members with {self.in_chans} input channels each takes "
                             f"{self.k * self.in_chans} channels, got input of shape {tuple(x.shape)}")
        return self.net(x).unflatten(1, (self.k, -1))

    def get_classifier(self) -> nn.Module:
        """The packed classifier (the members' ``get_classifier()``, packed): the engine's fine-tuning head."""
        getter = getattr(self.net, "get_classifier", None)
        if getter is None:
            raise AttributeError(f"{type(self.net).__name__} has no get_classifier()")
        return getter()

    def extra_repr(self) -> str:
        return f"k={self.k}, in_chans={self.in_chans}"


# --- packing ---------------------------------------------------------------------------------------------------


def _label(model: nn.Module) -> str:
    family = getattr(getattr(model, "spec", None), "family", None)
    return f"{type(model).__name__} ({family})" if family else type(model).__name__


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d)


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, nn.BatchNorm2d)


def _supported_leaf(m: nn.Module) -> bool:
    """Modules that own parameters or buffers and that packing knows how to pack."""
    return _is_conv(m) or _is_bn(m) or type(m) is nn.Linear


def _own_tensors(m: nn.Module) -> bool:
    return any(t is not None for t in m._parameters.values()) or any(t is not None for t in m._buffers.values())


def _check_same_architecture(models: Sequence[nn.Module]) -> None:
    """UserError unless every model has the first one's class, module tree, hyper-parameters and tensors."""
    first = models[0]
    ref_modules = [(n, type(m), m.extra_repr()) for n, m in first.named_modules()]
    ref_state = {k: (tuple(v.shape), v.dtype, v.device) for k, v in first.state_dict().items()}
    ref_training = [m.training for m in first.modules()]
    for i, model in enumerate(models[1:], start=1):
        if type(model) is not type(first):
            reason = f"member 0 is a {type(first).__name__}, member {i} a {type(model).__name__}"
        elif getattr(first, "spec", None) != getattr(model, "spec", None):
            reason = f"members 0 and {i} have different specs"
        elif [(n, type(m), m.extra_repr()) for n, m in model.named_modules()] != ref_modules:
            reason = f"members 0 and {i} have different module trees"
        elif {k: (tuple(v.shape), v.dtype, v.device) for k, v in model.state_dict().items()} != ref_state:
            reason = f"members 0 and {i} have different tensors (names, shapes, dtypes or devices)"
        elif [m.training for m in model.modules()] != ref_training:
            reason = f"members 0 and {i} are not in the same train/eval mode"
        else:
            continue
        raise UserError(f"cannot pack models of different architectures: {reason}")


def _check_packable(model: nn.Module) -> None:
    """UserError for what packing cannot handle, found without running the model."""
    label = _label(model)
    if isinstance(model, PackedModel):
        raise NotPackable(f"{label} cannot be packed: it is already packed")
    for name, m in model.named_modules():
        if _own_tensors(m) and not _supported_leaf(m):
            raise NotPackable(f"{label} cannot be packed: its {type(m).__name__} at {name or '<root>'!r} holds "
                            "parameters or buffers packing does not know (only Conv2d, BatchNorm2d and Linear)")
    params = list(model.named_parameters(remove_duplicate=False))
    if len({id(p) for _, p in params}) != len(params):
        raise NotPackable(f"{label} cannot be packed: it shares (ties) parameters between layers")


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def _sharing_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model``'s modules that shares its parameters and buffers (all replaced afterwards)."""
    memo: dict[int, object] = {id(t): t for t in model.parameters()}
    memo.update({id(t): t for t in model.buffers()})
    return copy.deepcopy(model, memo)


@torch.no_grad()
def _concat_tensors(dst: nn.Module, srcs: Sequence[nn.Module], label: str, name: str) -> None:
    """Every parameter and buffer of ``dst`` ← the members' concatenated along dim 0 (0-dim buffers, such as
    BatchNorm's ``num_batches_tracked``, must be equal across the members and are kept)."""
    for key, p in list(dst._parameters.items()):
        if p is not None:
            dst._parameters[key] = nn.Parameter(torch.cat([s._parameters[key] for s in srcs]),
                                                requires_grad=p.requires_grad)
    for key, b in list(dst._buffers.items()):
        if b is None:
            continue
        if b.ndim == 0:
            values = [s._buffers[key] for s in srcs]
            if any(not torch.equal(v, values[0]) for v in values[1:]):
                raise NotPackable(f"{label} cannot be packed: the members' {name}.{key} differ "
                                f"({', '.join(str(v.item()) for v in values)})")
            dst._buffers[key] = values[0].clone()
        else:
            dst._buffers[key] = torch.cat([s._buffers[key] for s in srcs])


def _convert(models: Sequence[nn.Module]) -> nn.Module:
    """The packed network of ``models`` (already checked: same architecture, only supported leaves)."""
    k, label = len(models), _label(models[0])
    net = _sharing_copy(models[0])
    sources = [dict(m.named_modules()) for m in models]
    for name, mod in list(net.named_modules()):
        srcs = [s[name] for s in sources]
        if _is_conv(mod):
            _concat_tensors(mod, srcs, label, name)
            mod.in_channels, mod.out_channels, mod.groups = mod.in_channels * k, mod.out_channels * k, mod.groups * k
        elif _is_bn(mod):
            _concat_tensors(mod, srcs, label, name)
            mod.num_features *= k
        elif type(mod) is nn.Linear:
            _replace(net, name, PackedLinear.from_linears(srcs).train(mod.training))
        elif isinstance(mod, DropPath):
            _replace(net, name, PackedDropPath(k, mod.p).train(mod.training))
    return net


def _in_chans(model: nn.Module) -> int:
    spec = getattr(model, "spec", None)
    if spec is not None and hasattr(spec, "in_chans"):
        return int(spec.in_chans)
    first_conv = next((m for m in model.modules() if _is_conv(m)), None)
    if first_conv is None:
        raise NotPackable(f"{_label(model)} cannot be packed: it has no convolution to tell its input channels")
    return first_conv.in_channels


def _no_randomness(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.modules.dropout._DropoutNd, DropPath)):
            m.p = 0.0
    return model


@torch.no_grad()
def _probe_members(models: Sequence[nn.Module]) -> list[nn.Module]:
    """float32 copies of the members without dropout or stochastic depth, with random BatchNorm affine
    parameters (a zero-initialised γ, as ResNets' last BN of a block, would hide a layout error)."""
    probes = []
    for i, model in enumerate(models):
        probe = _no_randomness(copy.deepcopy(model).float())
        g = torch.Generator().manual_seed(1000 + i)
        for m in probe.modules():
            if _is_bn(m) and m.affine:
                m.weight.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float32) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float32) * 0.2)
        probes.append(probe)
    return probes


@torch.no_grad()
def _verify(models: Sequence[nn.Module], in_chans: int) -> None:
    """UserError unless the packed network computes each member's function on its own input (float32, train
    and eval mode, random per-member inputs): the check that catches channel mixing outside convolutions."""
    label, k = _label(models[0]), len(models)
    probes = _probe_members(models)
    packed = PackedModel(_convert(probes), k, in_chans)
    device = next(iter(models[0].parameters()), torch.empty(0)).device
    resolution = int(getattr(getattr(models[0], "spec", None), "resolution", 32) or 32)
    sizes = [min(resolution, CHECK_SIZE)] + ([resolution] if resolution > CHECK_SIZE else [])
    g = torch.Generator().manual_seed(0)
    for training in (False, True):
        for mod in (packed, *probes):
            mod.train(training)
        for size in sizes:
            xs = [torch.randn(2, in_chans, size, size, generator=g, dtype=torch.float32).to(device) for _ in probes]
            try:
                refs = [probe(x) for probe, x in zip(probes, xs)]
            except Exception as err:  # e.g. an input too small for the network: try its own resolution
                if size != sizes[-1]:
                    continue
                raise NotPackable(f"{label} cannot be packed: its check forward failed: {first_line(err)}") from err
            break
        if not all(isinstance(r, torch.Tensor) and r.ndim == 2 for r in refs):
            raise NotPackable(f"{label} cannot be packed: its output is not logits of shape (batch, classes) "
                            "(a features_only model?)")
        try:
            got = packed(stack_inputs(xs))
        except Exception as err:
            raise NotPackable(f"{label} cannot be packed: the packed forward failed: {first_line(err)}") from err
        want = torch.stack(refs, dim=1)
        scale = float(want.abs().max())
        if got.shape != want.shape or not float((got - want).abs().max()) <= CHECK_RTOL * scale + 1e-300:
            raise NotPackable(f"{label} cannot be packed: it mixes channels outside its convolutions (e.g. a "
                            "concatenation of branches), so its members would not stay separate")


def pack(models: Sequence[nn.Module], check: bool = True) -> PackedModel:
    """Pack ``models`` (k ≥ 1 networks of one architecture, e.g. ``torch.manual_seed(s); build_model(spec)``
    for k seeds) into one :class:`PackedModel` whose member m computes exactly ``models[m]``.

    The members are not modified; the packed model has copies of their parameters and buffers, their dtype,
    device and train/eval mode. ``check`` (default on) runs the float32 equivalence check that detects layouts
    packing would break; turn it off only for an architecture already checked. Raises
    :class:`~compscale.errors.UserError` for models of different architectures and for a model that cannot
    be packed (the caller then trains the seeds separately).
    """
    models = list(models)
    if not models:
        raise UserError("pack needs at least one model")
    if not all(isinstance(m, nn.Module) for m in models):
        raise UserError("pack takes a sequence of nn.Module")
    _check_same_architecture(models)
    _check_packable(models[0])
    in_chans = _in_chans(models[0])
    spec = getattr(models[0], "spec", None)
    key = (spec.to_json(), len(models)) if hasattr(spec, "to_json") else None
    if check and (key is None or key not in _CHECKED):
        _verify(models, in_chans)
        if key is not None:
            _CHECKED.add(key)
    return PackedModel(_convert(models), len(models), in_chans, getattr(models[0], "spec", None))


# --- unpacking -------------------------------------------------------------------------------------------------


@torch.no_grad()
def _slice_tensors(mod: nn.Module, m: int, k: int) -> None:
    """Every parameter and buffer of ``mod`` ← member ``m``'s rows (its own copies; 0-dim tensors copied)."""
    for key, p in list(mod._parameters.items()):
        if p is not None:
            n = p.shape[0] // k
            mod._parameters[key] = nn.Parameter(p[m * n:(m + 1) * n].clone(), requires_grad=p.requires_grad)
    for key, b in list(mod._buffers.items()):
        if b is not None:
            n = b.shape[0] // k if b.ndim else 0
            mod._buffers[key] = b[m * n:(m + 1) * n].clone() if b.ndim else b.clone()


def unpack(packed: PackedModel) -> list[nn.Module]:
    """The k members of ``packed`` as ordinary models: each the members' own class (with its ``.spec``), the
    same ``state_dict`` keys as a separately built one, and exactly member m's parameters and buffers (BatchNorm
    running statistics and ``num_batches_tracked`` included), in the packed model's dtype, device and mode."""
    if not isinstance(packed, PackedModel):
        raise UserError(f"unpack takes a PackedModel, got {type(packed).__name__}")
    k, members = packed.k, []
    for m in range(k):
        net = _sharing_copy(packed.net)
        for name, mod in list(net.named_modules()):
            if isinstance(mod, PackedLinear):
                _replace(net, name, mod.member(m).train(mod.training))
            elif isinstance(mod, PackedDropPath):
                _replace(net, name, DropPath(mod.p).train(mod.training))
            elif _is_conv(mod):
                _slice_tensors(mod, m, k)
                mod.in_channels, mod.out_channels, mod.groups = (mod.in_channels // k, mod.out_channels // k,
                                                                 mod.groups // k)
            elif _is_bn(mod):
                _slice_tensors(mod, m, k)
                mod.num_features //= k
        members.append(net)
    return members


# --- feeding and the loss ---------------------------------------------------------------------------------------


def stack_inputs(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The packed input of per-member batches ``xs`` (each ``(B, C_in, H, W)``): ``(B, k·C_in, H, W)``, member
    m's batch in channels m·C_in..(m+1)·C_in. (The result is channels_last when the inputs are.)"""
    xs = list(xs)
    if not xs:
        raise UserError("stack_inputs needs at least one batch")
    if any(x.shape != xs[0].shape for x in xs[1:]):
        raise UserError(f"the members' batches differ in shape: {', '.join(str(tuple(x.shape)) for x in xs)}")
    return torch.cat(xs, dim=1)


def member_losses(logits: torch.Tensor, targets: torch.Tensor,
                  criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Each member's loss, ``(k,)``: ``criterion(logits[:, m], targets[:, m])`` for packed logits ``(B, k, C)``
    and targets ``(B, k)`` (member m's labels in column m). Train on their SUM: member m's gradient is then
    exactly its separate run's (the mean would divide every member's learning signal by k)."""
    if logits.ndim != 3 or targets.shape[:2] != logits.shape[:2]:
        raise UserError(f"member_losses takes logits (B, k, C) and targets (B, k), got {tuple(logits.shape)} and "
                        f"{tuple(targets.shape)}")
    return torch.stack([criterion(logits[:, m], targets[:, m]) for m in range(logits.shape[1])])
