"""``compscale.optimize``: the fastest faithful inference form of a model on this machine.

Every candidate starts from the same BatchNorm-folded copy (:mod:`compscale.deploy.fold`); each backend is
built, checked against the *unoptimized* model's logits (max|Δ| ≤ ``rtol`` · max|logit|) and timed on the
example input, interleaved (:mod:`compscale.deploy.bench`). The fastest that passes wins.

Backends:

* ``eager`` — the folded model as is (NCHW);
* ``channels_last`` — NHWC memory format, which PyTorch's CPU depthwise and 1×1 kernels prefer;
* ``torchscript`` — ``torch.jit.trace`` + ``torch.jit.freeze`` of the channels_last model;
* ``onnxruntime`` — ONNX (``GlobalAveragePool`` rewrite, static shapes) run by ONNX Runtime with tuned
  session options, the batch split into micro-batches of the measured best size;
* ``compile`` — ``torch.compile`` (inductor); only when asked, since a cold compile costs 20-40 s per input
  shape on a 2-core CPU and recompiles for each new shape.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from compscale.deploy.bench import Timing, measure
from compscale.deploy.export import OnnxRuntimeModule, onnx_bytes, relative_error, trace_frozen
from compscale.deploy.fold import fold_batchnorm
from compscale.errors import UserError

__all__ = ["optimize", "OptimizedModel", "BACKENDS", "DEFAULT_BACKENDS"]

BACKENDS = ("eager", "channels_last", "torchscript", "onnxruntime", "compile")
DEFAULT_BACKENDS = ("eager", "channels_last", "torchscript", "onnxruntime")
MICRO_BATCHES = (8, 4, 1)


@dataclass
class _Candidate:
    name: str
    module: nn.Module | Callable[[torch.Tensor], torch.Tensor]
    channels_last: bool = False
    fixed_shape: bool = False  # traced/exported: only inputs of the example's (C, H, W) are accepted


class OptimizedModel(nn.Module):
    """The chosen inference path behind an ``nn.Module`` interface (eval only, no gradients).

    ``backend`` names the winner, ``timings`` maps each candidate measured to its median seconds per call
    on the example input, ``rejected`` maps a candidate that could not be built or did not match to why,
    ``max_relative_error`` is the winner's max|Δ| / max|logit| against the original model.
    """

    def __init__(self, candidate: _Candidate, input_shape: tuple[int, ...], timings: dict[str, float],
                 rejected: dict[str, str], errors: dict[str, float], folded_batchnorms: int) -> None:
        super().__init__()
        self.runner = candidate.module
        self.backend = candidate.name
        self.channels_last = candidate.channels_last
        self.fixed_shape = candidate.fixed_shape
        self.input_shape = input_shape
        self.timings = timings
        self.rejected = rejected
        self.errors = errors
        self.max_relative_error = errors[candidate.name]
        self.folded_batchnorms = folded_batchnorms

    @property
    def speedups(self) -> dict[str, float]:
        """Each candidate's median time divided by the winner's (≥ 1 for the losers)."""
        best = self.timings[self.backend]
        return {k: v / best for k, v in self.timings.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_shape and tuple(x.shape[1:]) != tuple(self.input_shape[1:]):
            raise UserError(f"optimized ({self.backend}) for inputs (N, {', '.join(map(str, self.input_shape[1:]))}), "
                            f"got {tuple(x.shape)}; optimize again for this size")
        with torch.no_grad():
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.runner(x)

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}, input_shape={self.input_shape}"


def _build(name: str, folded: nn.Module, example: torch.Tensor, threads: int | None) -> list[_Candidate]:
    if name == "eager":
        return [_Candidate("eager", folded)]
    if name == "channels_last":
        return [_Candidate("channels_last", copy.deepcopy(folded).to(memory_format=torch.channels_last), True)]
    if name == "torchscript":
        cl = copy.deepcopy(folded).to(memory_format=torch.channels_last)
        return [_Candidate("torchscript", trace_frozen(cl, example.contiguous(memory_format=torch.channels_last)), True, True)]
    if name == "compile":
        cl = copy.deepcopy(folded).to(memory_format=torch.channels_last)
        return [_Candidate("compile", torch.compile(cl, dynamic=False), True)]
    if name == "onnxruntime":
        data = onnx_bytes(folded, example[:1], dynamic_batch=True)
        n = example.shape[0]
        sizes = [n] + [m for m in MICRO_BATCHES if m < n]
        return [_Candidate(f"onnxruntime[micro_batch={m}]" if m < n else "onnxruntime",
                           OnnxRuntimeModule(data, tuple(example.shape), threads, micro_batch=m if m < n else None),
                           False, True) for m in sizes]
    raise UserError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


def optimize(
    model: nn.Module,
    example_input: torch.Tensor,
    backends: Sequence[str] | str | None = None,
    threads: int | None = None,
    rtol: float = 1e-4,
    warmup: int = 2,
    repeats: int = 5,
    min_seconds: float = 1.0,
    progress: Callable[[str], None] | None = None,
) -> OptimizedModel:
    """The fastest of ``backends`` for ``model`` on ``example_input`` whose logits match the model's.

    ``backends`` defaults to eager, channels_last, torchscript and onnxruntime (``"compile"`` is opt-in);
    ``threads`` sets ONNX Runtime's intra-op threads (PyTorch's own count is left as the caller set it:
    :func:`torch.set_num_threads`). The timings are taken at the example's batch size, so pass the batch
    you will serve. Each candidate is warmed up ``warmup`` times (TorchScript's profiling executor specialises
    on the second call) and timed interleaved for ``repeats`` rounds and at least ``min_seconds``.
    ``model`` itself is not modified.
    """
    if not isinstance(model, nn.Module):
        raise UserError(f"optimize expects an nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.ndim != 4:
        raise UserError("example_input must be a 4-D tensor (N, C, H, W)")
    if isinstance(backends, str):
        backends = (backends,)
    backends = tuple(backends or DEFAULT_BACKENDS)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise UserError(f"unknown backend {unknown[0]!r}; choose from {', '.join(BACKENDS)}")
    say = progress or (lambda _msg: None)
    x = example_input.detach().float().contiguous()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = model(x)
        folded = fold_batchnorm(model, example_input=x[:1])
    finally:
        model.train(was_training)

    candidates, rejected, errors = {}, {}, {}
    for name in backends:
        say(f"building {name}")
        try:
            built = _build(name, folded, x, threads)
        except UserError as err:
            rejected[name] = str(err)
            continue
        except Exception as err:  # a backend that cannot handle this model is skipped, with the reason kept
            rejected[name] = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            continue
        for cand in built:
            inp = x.contiguous(memory_format=torch.channels_last) if cand.channels_last else x
            try:
                with torch.no_grad():
                    out = cand.module(inp)
            except Exception as err:
                rejected[cand.name] = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
                continue
            _, _, rel = relative_error(ref, out)
            errors[cand.name] = rel
            if not rel <= rtol:
                rejected[cand.name] = f"logits differ by {rel:.3g} of max|logit| (allowed {rtol:g})"
                continue
            candidates[cand.name] = cand
    if not candidates:
        reasons = "; ".join(f"{k}: {v}" for k, v in rejected.items())
        raise UserError(f"no backend could run this model faithfully ({reasons})")

    say(f"timing {len(candidates)} candidates")
    calls: dict[str, Callable[[], Any]] = {}
    for name, cand in candidates.items():
        inp = x.contiguous(memory_format=torch.channels_last) if cand.channels_last else x
        calls[name] = (lambda m, t: (lambda: m(t)))(cand.module, inp)
    timings: dict[str, Timing] = measure(calls, batch=x.shape[0], warmup=warmup, repeats=repeats, min_seconds=min_seconds,
                                       settle=1 if x.shape[0] <= 4 else 0)  # cheap at small batches
    medians = {k: t.median for k, t in timings.items()}
    best = min(medians, key=medians.get)
    return OptimizedModel(candidates[best], tuple(x.shape), medians, rejected, errors, folded.folded_batchnorms)
