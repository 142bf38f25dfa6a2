"""The one table of inference backends: how to build each for a (BatchNorm-folded) model and an example input.

:func:`compscale.optimize` builds every variant of the backends it tries, checks each against the model's
logits and times them; :func:`compscale.deploy.paths.build_path` builds one backend's plain form for
``compscale bench``. Both read :data:`BACKEND_TABLE`.

Layer: imports only :mod:`~compscale.deploy.export` and :mod:`~compscale.deploy.openvino_runtime` from the
deploy package.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from compscale.deploy.export import OnnxRuntimeModule, onnx_bytes, require_onnxruntime, trace_frozen
from compscale.deploy.openvino_runtime import OpenVinoModule, default_streams, require_openvino

__all__ = ["BACKEND_TABLE", "Backend", "BuildOptions", "Built", "MICRO_BATCHES", "OPENVINO_MICRO_BATCHES"]

# Micro-batch sizes tried, measured on B0 at 224 px, 2 cores: ONNX Runtime gains most at 8 and 4 (it runs one
# request at a time), OpenVINO at 4 and 2 with two streams in flight (each layer's activations stay in L2).
MICRO_BATCHES = (8, 4, 1)
OPENVINO_MICRO_BATCHES = (4, 2)


@dataclass(frozen=True)
class BuildOptions:
    """``threads`` for ONNX Runtime and OpenVINO; ``precision`` for OpenVINO (the others are fp32);
    ``variants``: also the micro-batch variants, from a dynamic-batch graph (what ``optimize`` races), else
    only the backend's plain form for the example's shape (what ``compscale bench`` times)."""

    threads: int | None = None
    precision: str = "fp32"
    variants: bool = True


@dataclass
class Built:
    """One runnable form of a backend: ``module`` applied to the input (made channels_last if so marked);
    ``fixed_shape``: traced or exported, it accepts only inputs of the example's (C, H, W)."""

    name: str
    module: nn.Module | Callable[[torch.Tensor], torch.Tensor]
    channels_last: bool = False
    fixed_shape: bool = False
    what: str = ""  # a description for tables

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the memory format ``module`` expects."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def _nothing() -> None:
    """No optional package needed."""


@dataclass(frozen=True)
class Backend:
    """How to build one inference backend (``build``: model, example, options → its variants, the plain
    form first) and how to check it can be: ``require`` raises a UserError naming a missing optional package.

    ``lazy``: creates its session or compiles on the first call; ``optimizable``: ``optimize`` may choose it
    (else it is a reference point for ``compscale bench`` only); ``default``: tried unless backends are named."""

    name: str
    build: Callable[[nn.Module, torch.Tensor, BuildOptions], list[Built]]
    require: Callable[[], object] = _nothing
    lazy: bool = False
    optimizable: bool = True
    default: bool = True


def _channels_last_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def _eager(model: nn.Module, x: torch.Tensor, options: BuildOptions) -> list[Built]:
    return [Built("eager", model, what="eager, NCHW")]


def _channels_last(model: nn.Module, x: torch.Tensor, options: BuildOptions) -> list[Built]:
    return [Built("channels_last", _channels_last_copy(model), True, what="eager, channels_last")]


def _torchscript(model: nn.Module, x: torch.Tensor, options: BuildOptions) -> list[Built]:
    traced = trace_frozen(_channels_last_copy(model), x.contiguous(memory_format=torch.channels_last))
    return [Built("torchscript", traced, True, True, "TorchScript trace+freeze, channels_last")]


def _compile(model: nn.Module, x: torch.Tensor, options: BuildOptions) -> list[Built]:
    compiled = torch.compile(_channels_last_copy(model), dynamic=False)
    return [Built("compile", compiled, True, what="torch.compile (inductor), channels_last")]


def _onnxruntime_static(model: nn.Module, x: torch.Tensor, threads: int | None, tuned: bool) -> OnnxRuntimeModule:
    """The graph exported at the example's batch (a static shape), optimized and in a tuned session or as
    a peer's user gets it (no graph rewrite, ONNX Runtime's default session)."""
    data = onnx_bytes(model, x, dynamic_batch=False, optimize_graph=tuned)
    return OnnxRuntimeModule(data, tuple(x.shape), threads=threads, tuned=tuned)


def _onnxruntime_default(model: nn.Module, x: torch.Tensor, options: BuildOptions) -> list[Built]:
    module = _onnxruntime_static(model, x, None, tuned=False)
    return [Built("onnxruntime_default", module, fixed_shape=True, what="ONNX Runtime, default session")]


def _onnxruntime(model: nn.Module, x: torch.Tensor, options: BuildOptions) -> list[Built]:
    what = f"ONNX Runtime, tuned session ({options.threads or 'default'} threads)"
    if not options.variants:
        return [Built("onnxruntime", _onnxruntime_static(model, x, options.threads, True), False, True, what)]
    data, n = onnx_bytes(model, x[:1], dynamic_batch=True), x.shape[0]
    return [Built(f"onnxruntime[micro_batch={m}]" if m < n else "onnxruntime",
                  OnnxRuntimeModule(data, tuple(x.shape), options.threads, micro_batch=m if m < n else None),
                  False, True, what if m == n else f"{what}, micro-batches of {m}")
            for m in [n] + [m for m in MICRO_BATCHES if m < n]]


def _openvino(model: nn.Module, x: torch.Tensor, options: BuildOptions) -> list[Built]:
    data, n, shape = onnx_bytes(model, x[:1], dynamic_batch=True), x.shape[0], tuple(x.shape)
    threads, precision, streams = options.threads, options.precision, default_streams(options.threads)
    tag = "" if precision == "fp32" else precision
    out = [Built(f"openvino[{tag}]" if tag else "openvino", OpenVinoModule(data, shape, threads, precision),
                 False, True, f"OpenVINO {precision}, whole batch")]
    for m in (m for m in OPENVINO_MICRO_BATCHES if m < n and options.variants):
        label = ",".join(filter(None, [tag, f"micro_batch={m}", f"streams={streams}"]))
        module = OpenVinoModule(data, shape, threads, precision, micro_batch=m, streams=streams)
        out.append(Built(f"openvino[{label}]", module, False, True,
                         f"OpenVINO {precision}, micro-batches of {m} on {streams} streams"))
    return out


def _require_onnx_and_openvino() -> None:
    require_onnxruntime()  # the OpenVINO backend compiles the ONNX graph
    require_openvino()


#: Every backend by name, in the order ``optimize`` tries them.
BACKEND_TABLE: dict[str, Backend] = {b.name: b for b in (
    Backend("eager", _eager),
    Backend("channels_last", _channels_last),
    Backend("torchscript", _torchscript),
    Backend("onnxruntime_default", _onnxruntime_default, require_onnxruntime, lazy=True, optimizable=False),
    Backend("onnxruntime", _onnxruntime, require_onnxruntime, lazy=True),
    Backend("openvino", _openvino, _require_onnx_and_openvino, lazy=True),
    Backend("compile", _compile, lazy=True, default=False),
)}
