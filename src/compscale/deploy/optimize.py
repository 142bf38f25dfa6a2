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

How each backend is built is :data:`compscale.deploy.backends.BACKEND_TABLE`, shared with ``compscale bench``.
Layer: imports only :mod:`~compscale.deploy.backends`, :mod:`~compscale.deploy.bench`,
:mod:`~compscale.deploy.export` and :mod:`~compscale.deploy.fold` from the deploy package.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from compscale.deploy.backends import BACKEND_TABLE, Backend, BuildOptions, Built
from compscale.deploy.bench import measure
from compscale.deploy.export import relative_error
from compscale.deploy.fold import fold_batchnorm
from compscale.errors import UserError, first_line
from compscale.progress import Progress, report

__all__ = ["optimize", "OptimizedModel", "BACKENDS", "DEFAULT_BACKENDS", "PRECISIONS"]

#: The backends ``optimize`` may choose from, and those it tries unless told (``compile`` is opt-in).
BACKENDS = tuple(name for name, b in BACKEND_TABLE.items() if b.optimizable)
DEFAULT_BACKENDS = tuple(name for name, b in BACKEND_TABLE.items() if b.optimizable and b.default)
PRECISIONS = ("fp32", "bf16")
#: Default tolerance (max|Δ| / max|logit|) per precision: fp32 must be faithful; bf16 keeps ~3 significant
#: digits per operation, so its bound only catches a broken model; its real cost is measured on data.
DEFAULT_RTOL = {"fp32": 1e-4, "bf16": 0.1}


class OptimizedModel(nn.Module):
    """The chosen inference path behind an ``nn.Module`` interface (eval only, no gradients).

    ``backend`` names the winner, ``timings`` maps each candidate measured to its median seconds per call
    on the example input, ``rejected`` maps a candidate that could not be built or did not match to why,
    ``max_relative_error`` is the winner's max|Δ| / max|logit| against the original model; ``precision`` is
    the arithmetic it runs in ("fp32" unless bf16 was asked for).
    """

    def __init__(self, candidate: Built, input_shape: tuple[int, ...], timings: dict[str, float],
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
            raise UserError(f"optimized ({self.backend}) for inputs (N, {', '.join(map(str, self.input_shape[1:]))}"
                            f"), got {tuple(x.shape)}; optimize again for this size")
        with torch.no_grad():
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.runner(x)

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}, precision={self.precision!r}, input_shape={self.input_shape}"


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
    progress: Progress | None = None,
) -> OptimizedModel:
    """The fastest of ``backends`` for ``model`` on ``example_input`` whose logits match the model's.

    ``backends`` defaults to eager, channels_last, torchscript, onnxruntime and openvino (``"compile"`` is
    opt-in); ``threads`` sets ONNX Runtime's and OpenVINO's threads (PyTorch's own count is left as the caller
    set it: :func:`torch.set_num_threads`). ``precision="bf16"`` tries OpenVINO in bfloat16 only; ``rtol``
    defaults to 1e-4 for fp32 and 0.1 for bf16. The timings are taken at the example's batch size, so pass the
    batch you will serve. Each candidate is warmed up ``warmup`` times (TorchScript's profiling executor
    specialises on the second call) and timed interleaved for ``repeats`` rounds and at least ``min_seconds``;
    one more than twice as slow as the fastest in the first round is not timed further. ``progress`` gets a
    ``"stage"`` event as each backend is built and as timing starts. ``model`` itself is not modified.
    """
    names, rtol = _checked_arguments(model, example_input, backends, precision, rtol)
    x = example_input.detach().float().contiguous()
    reference, folded = _reference_and_folded(model, x)
    race = _Race(reference, rtol)
    for name in names:
        report(progress, "stage", f"building {name}")
        for built in race.build(BACKEND_TABLE[name], folded, x, BuildOptions(threads, precision)):
            race.validate(built, x)
    if not race.entrants:
        reasons = "; ".join(f"{k}: {v}" for k, v in race.rejected.items())
        raise UserError(f"no backend could run this model faithfully ({reasons})")
    report(progress, "stage", f"timing {len(race.entrants)} candidates")
    medians = race.time_in_rounds(x, warmup, repeats, min_seconds)
    best = min(medians, key=medians.get)
    return OptimizedModel(race.entrants[best], tuple(x.shape), medians, race.rejected, race.errors,
                          folded.folded_batchnorms, precision)


def _checked_arguments(model: nn.Module, example_input: torch.Tensor, backends: Sequence[str] | str | None,
                       precision: str, rtol: float | None) -> tuple[tuple[str, ...], float]:
    """The backends to try and the tolerance, or a UserError for a bad argument."""
    if not isinstance(model, nn.Module):
        raise UserError(f"optimize expects an nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.ndim != 4:
        raise UserError("example_input must be a 4-D tensor (N, C, H, W)")
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if isinstance(backends, str):
        backends = (backends,)
    names = tuple(backends or (DEFAULT_BACKENDS if precision == "fp32" else ("openvino",)))
    if precision != "fp32" and set(names) != {"openvino"}:
        raise UserError(f"{precision} is offered by the openvino backend only; drop the other backends")
    unknown = [b for b in names if b not in BACKENDS]
    if unknown:
        raise UserError(f"unknown backend {unknown[0]!r}; choose from {', '.join(BACKENDS)}")
    return names, DEFAULT_RTOL[precision] if rtol is None else rtol


def _reference_and_folded(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, nn.Module]:
    """The unoptimized model's logits on ``x`` (what every candidate must reproduce) and the BatchNorm-folded
    copy every candidate is built from; ``model`` is left in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            reference = model(x)
        return reference, fold_batchnorm(model, example_input=x[:1])
    finally:
        model.train(was_training)


def _reason(err: Exception) -> str:
    return f"{type(err).__name__}: {first_line(err, '')}"


@dataclass
class _Race:
    """The candidates that run and reproduce the ``reference`` logits to ``rtol`` (``entrants``), each one's
    relative error (``errors``), and why each backend or candidate left out was (``rejected``)."""

    reference: torch.Tensor
    rtol: float
    entrants: dict[str, Built] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)

    def build(self, backend: Backend, folded: nn.Module, x: torch.Tensor, options: BuildOptions) -> list[Built]:
        """``backend``'s variants; none, with the reason kept, where it cannot be built for this model."""
        try:
            backend.require()
            return backend.build(folded, x, options)
        except UserError as err:
            self.rejected[backend.name] = str(err)
        except Exception as err:  # a backend that cannot handle this model is skipped, with the reason kept
            self.rejected[backend.name] = _reason(err)
        return []

    def validate(self, built: Built, x: torch.Tensor) -> None:
        """Run ``built`` on ``x``; it enters the race if its logits are within ``rtol`` of the reference."""
        try:
            with torch.no_grad():
                out = built.module(built.input(x))
        except Exception as err:
            self.rejected[built.name] = _reason(err)
            return
        _, _, rel = relative_error(self.reference, out)
        self.errors[built.name] = rel
        if not rel <= self.rtol:
            self.rejected[built.name] = f"logits differ by {rel:.3g} of max|logit| (allowed {self.rtol:g})"
            return
        self.entrants[built.name] = built

    def time_in_rounds(self, x: torch.Tensor, warmup: int, repeats: int, min_seconds: float) -> dict[str, float]:
        """Each entrant's median seconds per call on ``x``, timed in rotated rounds; one more than twice as slow
        as the fastest in the first round is pruned (its one timing stands)."""
        calls = {name: functools.partial(b.module, b.input(x)) for name, b in self.entrants.items()}
        # Blocks of calls per candidate (inner="auto") keep one runtime's spinning threads out of the next one's.
        timings = measure(calls, batch=x.shape[0], warmup=warmup, repeats=repeats, min_seconds=min_seconds,
                          settle=1, inner="auto", prune=2.0)
        return {k: t.median for k, t in timings.items()}
