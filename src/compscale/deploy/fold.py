"""BatchNorm folding: ``BN(conv(x))`` becomes one convolution with rescaled weights and a bias.

In eval mode BatchNorm is the per-channel affine map ``y = γ (z − μ) / √(σ² + ε) + β``. When ``z`` is the
output of a convolution ``z = W ∗ x + b`` and nothing else reads ``z``, the pair equals one convolution with

    W' = W · s,   b' = (b − μ) · s + β,   s = γ / √(σ² + ε)   (s broadcast over each output channel).

The pairs are found by dataflow, not by naming: the model is traced with :mod:`torch.fx` (convolutions and
BatchNorms kept as leaf modules, so shape-dependent forwards such as TF "SAME" padding need not be
traceable), and a pair is folded only when the convolution's output feeds exactly one node, a BatchNorm2d.
A model fx cannot trace (Python control flow on tensor values or shapes) is run once on an example input
instead, under a dispatch mode that counts every ATen operation reading each convolution's output: the
pair is folded when the only reader is the BatchNorm's own kernel.
The folded model keeps its own classes and forward: the convolution's tensors are rewritten in place and
the BatchNorm is replaced by ``nn.Identity``. So it works for any family (EfficientNet's ``ConvNormAct``,
ResNet/ResNeXt bottlenecks, Inception-ResNet branches) and for ``Conv2dSame``.

Layer: imports nothing from the deploy package (the lowest layer, beside ``records`` and ``openvino_runtime``).
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import torch
from torch import fx, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from compscale.errors import UserError

__all__ = ["fold_batchnorm", "find_conv_bn_pairs", "fold_conv_bn"]


class _LeafTracer(fx.Tracer):
    """Keep every convolution and BatchNorm opaque (their forwards may branch on shapes)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (nn.Conv2d, nn.modules.batchnorm._BatchNorm)):
            return True
        return super().is_leaf_module(m, qualname)


def find_conv_bn_pairs(model: nn.Module, example_input: torch.Tensor | None = None) -> list[tuple[str, str]]:
    """``(conv_name, bn_name)`` for every Conv2d whose output is read only by a BatchNorm2d.

    Symbolic (torch.fx) when the model traces; otherwise observed on ``example_input`` (default: one image
    at the model's ``spec.resolution``).
    """
    try:
        graph = _LeafTracer().trace(model)
    except Exception:  # fx raises TraceError, TypeError, ... on Python control flow
        return _observed_pairs(model, example_input)
    modules = dict(model.named_modules())
    pairs, seen_conv, seen_bn = [], set(), set()
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.Conv2d):
            continue
        users = list(node.users)
        if len(users) != 1:
            continue
        user = users[0]
        if user.op != "call_module" or not isinstance(modules.get(user.target), nn.BatchNorm2d):
            continue
        if len(user.args) != 1 or user.kwargs:
            continue
        pairs.append((node.target, user.target))
    # A module called from two places (weight sharing) cannot be rewritten for one call site only.
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    out = []
    for conv, bn in pairs:
        if calls[conv] == 1 and calls[bn] == 1 and conv not in seen_conv and bn not in seen_bn:
            out.append((conv, bn))
            seen_conv.add(conv)
            seen_bn.add(bn)
    return out


class _ReadCounter(TorchDispatchMode):
    """Counts, per watched tensor, the ATen operations that read it, noting which BatchNorm was running.

    The watched tensors are the convolutions' outputs, found by forward hooks (:meth:`attach`), which also
    note each BatchNorm's input; :meth:`pairs` then names the convolutions read by one BatchNorm only.
    """

    def __init__(self) -> None:
        super().__init__()
        self.watched: dict[int, torch.Tensor] = {}  # id → tensor, kept alive so that ids stay unique
        self.reads: dict[int, list[str | None]] = {}
        self.current_bn: str | None = None
        self.conv_out: dict[str, list[int]] = {}
        self.bn_in: dict[str, list[int]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for a in tree_flatten((args, kwargs or {}))[0]:
            if isinstance(a, torch.Tensor) and id(a) in self.watched:
                self.reads[id(a)].append(self.current_bn)
        return func(*args, **(kwargs or {}))

    def _conv_done(self, name: str, _m: nn.Module, _inp: Any, out: Any) -> None:
        self.conv_out.setdefault(name, []).append(id(out))
        self.watched[id(out)] = out
        self.reads.setdefault(id(out), [])

    def _bn_starts(self, name: str, _m: nn.Module, inp: Any) -> None:
        self.bn_in.setdefault(name, []).append(id(inp[0]) if inp and isinstance(inp[0], torch.Tensor) else -1)
        self.current_bn = name

    def _bn_done(self, _m: nn.Module, _inp: Any, _out: Any) -> None:
        self.current_bn = None

    def attach(self, model: nn.Module) -> list[Any]:
        """Hooks on every Conv2d and BatchNorm2d of ``model``; the handles, to remove after the run."""
        handles = []
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                handles.append(m.register_forward_hook(functools.partial(self._conv_done, name)))
            elif isinstance(m, nn.BatchNorm2d):
                handles.append(m.register_forward_pre_hook(functools.partial(self._bn_starts, name)))
                handles.append(m.register_forward_hook(self._bn_done))
        return handles

    def pairs(self) -> list[tuple[str, str]]:
        """``(conv, bn)`` where the convolution ran once and its output was read by that BatchNorm alone."""
        producer = {ids[0]: name for name, ids in self.conv_out.items() if len(ids) == 1}
        return [(producer[ids[0]], bn) for bn, ids in self.bn_in.items()
                if len(ids) == 1 and ids[0] in producer and self.reads[ids[0]] == [bn]]


def _observed_pairs(model: nn.Module, example: torch.Tensor | None) -> list[tuple[str, str]]:
    if example is None:
        spec = getattr(model, "spec", None)
        if spec is None or not hasattr(spec, "resolution"):
            raise UserError(f"cannot trace {type(model).__name__} symbolically; "
                            "pass an example input to fold BatchNorm")
        example = torch.zeros(1, getattr(spec, "in_chans", 3), spec.resolution, spec.resolution)
    counter = _ReadCounter()
    handles = counter.attach(model)
    try:
        with torch.no_grad(), counter:
            model(example)
    finally:
        for h in handles:
            h.remove()
    return counter.pairs()


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Rewrite ``conv`` in place so that it computes ``bn(conv(x))`` (eval-mode statistics)."""
    if bn.running_mean is None or bn.running_var is None:
        raise UserError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    # float64 so that folding itself adds no rounding beyond the final cast.
    var = bn.running_var.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    if conv.bias is not None:
        shift = shift + conv.bias.double() * scale
    w = conv.weight
    shape = (-1,) + (1,) * (w.ndim - 1)
    conv.weight = nn.Parameter((w.double() * scale.view(shape)).to(w.dtype), requires_grad=w.requires_grad)
    conv.bias = nn.Parameter(shift.to(w.dtype), requires_grad=w.requires_grad)


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def fold_batchnorm(model: nn.Module, inplace: bool = False, example_input: torch.Tensor | None = None) -> nn.Module:
    """``model`` with every foldable conv→BatchNorm pair merged into the convolution (eval mode).

    Returns a copy unless ``inplace``; the copy is in eval mode (folding freezes the running statistics).
    The number of folded pairs is available as ``model.folded_batchnorms`` on the result.
    ``example_input`` is used only for a model that torch.fx cannot trace (see the module docstring).
    """
    if not isinstance(model, nn.Module):
        raise UserError(f"fold_batchnorm expects an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    pairs = find_conv_bn_pairs(model, example_input)
    for conv_name, bn_name in pairs:
        fold_conv_bn(model.get_submodule(conv_name), model.get_submodule(bn_name))
        _set_submodule(model, bn_name, nn.Identity())
    model.folded_batchnorms = len(pairs)
    return model
