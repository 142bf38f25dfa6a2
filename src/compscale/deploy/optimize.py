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
* ``openvino`` — the same ONNX graph compiled by OpenVINO for the CPU (static shapes), whole batch or
  micro-batches of 2-4 images on two streams (:mod:`compscale.deploy.openvino_runtime`); skipped, with the
  reason in ``rejected``, where the optional ``openvino`` package is not installed;
* ``compile`` — ``torch.compile`` (inductor); only when asked, since a cold compile costs 20-40 s per input
  shape on a 2-core CPU and recompiles for each new shape.

``precision="bf16"`` (opt-in) tries OpenVINO in bfloat16 only, on CPUs that run it natively: 1.5-2x faster
than fp32 for B0 here, but no longer faithful to 1e-4 — its default tolerance is 0.1 of max|logit| (a sanity
bound) and its real cost must be measured on real images (:func:`compscale.deploy.accuracy.accuracy_cost`).
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
from compscale.deploy.openvino_runtime import OpenVinoModule, default_streams
from compscale.errors import UserError, first_line

__all__ = ["optimize", "OptimizedModel", "BACKENDS", "DEFAULT_BACKENDS", "PRECISIONS"]

BACKENDS = ("eager", "channels_last", "torchscript", "onnxruntime", "openvino", "compile")
DEFAULT_BACKENDS = ("eager", "channels_last", "torchscript", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16")
#: Default tolerance (max|Δ| / max|logit|) per precision: fp32 must be faithful; bf16 keeps ~3 significant
#: digits per operation, so its bound only catches a broken model; its real cost is measured on data.
DEFAULT_RTOL = {"fp32": 1e-4, "bf16": 0.1}
# Micro-batch sizes tried, measured on B0 at 224 px, 2 cores: ONNX Runtime gains most at 8 and 4 (it runs one
# request at a time), OpenVINO at 4 and 2 with two streams in flight (each layer's activations stay in L2).
MICRO_BATCHES = (8, 4, 1)
OPENVINO_MICRO_BATCHES = (4, 2)


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
    ``max_relative_error`` is the winner's max|Δ| / max|logit| against the original model; ``precision`` is
    the arithmetic it runs in ("fp32" unless bf16 was asked for).
    """

    def __init__(self, candidate: _Candidate, input_shape: tuple[int, ...], timings: dict[str, float],
                 rejected: dict[str, str], errors: dict[str, float], folded_batchnorms: int,
                 precision: str = "fp32") -> None:
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
        self.precision = precision

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
        return f"backend={self.backend!r}, precision={self.precision!r}, input_shape={self.input_shape}"


def _build(name: str, folded: nn.Module, example: torch.Tensor, threads: int | None, precision: str = "fp32") -> list[_Candidate]:
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
    if name == "openvino":
        data = onnx_bytes(folded, example[:1], dynamic_batch=True)
        n, streams = example.shape[0], default_streams(threads)
        tag = "" if precision == "fp32" else precision
        out = [_Candidate(f"openvino[{tag}]" if tag else "openvino",
                          OpenVinoModule(data, tuple(example.shape), threads, precision), False, True)]
        for m in (m for m in OPENVINO_MICRO_BATCHES if m < n):
            label = ",".join(filter(None, [tag, f"micro_batch={m}", f"streams={streams}"]))
            out.append(_Candidate(f"openvino[{label}]", OpenVinoModule(data, tuple(example.shape), threads, precision,
                                                                       micro_batch=m, streams=streams), False, True))
        return out
    raise UserError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


def optimize(
    model: nn.Module,
    example_input: torch.Tensor,
    backends: Sequence[str] | str | None = None,
    threads: int | None = None,
    rtol: float | None = None,
    precision: str = "fp32",
    warmup: int = 2,
    repeats: int = 5,
    min_seconds: float = 1.0,
    progress: Callable[[str], None] | None = None,
) -> OptimizedModel:
    """The fastest of ``backends`` for ``model`` on ``example_input`` whose logits match the model's.

    ``backends`` defaults to eager, channels_last, torchscript, onnxruntime and openvino (``"compile"`` is
    opt-in); ``threads`` sets ONNX Runtime's and OpenVINO's threads (PyTorch's own count is left as the caller
    set it: :func:`torch.set_num_threads`). ``precision="bf16"`` tries OpenVINO in bfloat16 only; ``rtol``
    defaults to 1e-4 for fp32 and 0.1 for bf16. The timings are taken at the example's batch size, so pass the batch
    you will serve. Each candidate is warmed up ``warmup`` times (TorchScript's profiling executor specialises
    on the second call) and timed interleaved for ``repeats`` rounds and at least ``min_seconds``; one more
    than twice as slow as the fastest in the first round is not timed further.
    ``model`` itself is not modified.
    """
    if not isinstance(model, nn.Module):
        raise UserError(f"optimize expects an nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.ndim != 4:
        raise UserError("example_input must be a 4-D tensor (N, C, H, W)")
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if isinstance(backends, str):
        backends = (backends,)
    backends = tuple(backends or (DEFAULT_BACKENDS if precision == "fp32" else ("openvino",)))
    if precision != "fp32" and set(backends) != {"openvino"}:
        raise UserError(f"{precision} is offered by the openvino backend only; drop the other backends")
    rtol = DEFAULT_RTOL[precision] if rtol is None else rtol
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
            built = _build(name, folded, x, threads, precision)
        except UserError as err:
            rejected[name] = str(err)
            continue
        except Exception as err:  # a backend that cannot handle this model is skipped, with the reason kept
            rejected[name] = f"{type(err).__name__}: {first_line(err, '')}"
            continue
        for cand in built:
            inp = x.contiguous(memory_format=torch.channels_last) if cand.channels_last else x
            try:
                with torch.no_grad():
                    out = cand.module(inp)
            except Exception as err:
                rejected[cand.name] = f"{type(err).__name__}: {first_line(err, '')}"
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
    # Blocks of calls per candidate (inner="auto") keep one runtime's spinning threads out of the next one's timing.
    timings: dict[str, Timing] = measure(calls, batch=x.shape[0], warmup=warmup, repeats=repeats, min_seconds=min_seconds,
                                       settle=1, inner="auto", prune=2.0)
    medians = {k: t.median for k, t in timings.items()}
    best = min(medians, key=medians.get)
    return OptimizedModel(candidates[best], tuple(x.shape), medians, rejected, errors, folded.folded_batchnorms, precision)
