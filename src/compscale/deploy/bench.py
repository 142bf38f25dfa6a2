"""Timing done so that two paths can be compared: warm-up, interleaved repetitions, medians.

Timings on a shared machine drift (batch-1 latency varies ±20 % between processes here). Measuring every
candidate once per round, round after round, exposes all of them to the same drift, and the median of the
rounds ignores the outliers; the ratio of two medians from the same run is the figure to report.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from compscale.errors import UserError

__all__ = ["PATHS", "PEERS", "Timing", "build_path", "measure", "peer_model", "set_threads", "settle_batchnorm"]

PEERS = ("timm", "torchvision")
#: Target duration of one timed block of calls when ``measure(inner="auto")``.
BLOCK_SECONDS = 0.08


@dataclass
class Timing:
    """Seconds per call of one candidate: every repetition, and their median."""

    name: str
    batch: int
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def latency_ms(self) -> float:
        return self.median * 1e3

    @property
    def images_per_s(self) -> float:
        return self.batch / self.median

    @property
    def spread(self) -> float:
        """(max − min) / median of the repetitions: how noisy the machine was."""
        return (max(self.times) - min(self.times)) / self.median

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(median_s=self.median, latency_ms=self.latency_ms, images_per_s=self.images_per_s, spread=self.spread)
        return d


def set_threads(threads: int | None) -> int:
    """Fix PyTorch's intra-op thread count (``None`` keeps it); returns the count in force."""
    if threads is not None:
        if int(threads) != threads or threads < 1:
            raise UserError(f"threads must be a positive integer, got {threads!r}")
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def measure(
    candidates: Mapping[str, Callable[[], Any]],
    batch: int,
    warmup: int = 2,
    repeats: int = 10,
    min_seconds: float = 0.0,
    settle: int = 0,
    progress: Callable[[int, int], None] | None = None,
    inner: int | str = 1,
    prune: float | None = None,
) -> dict[str, Timing]:
    """Time each zero-argument callable: ``warmup`` calls each, then rounds in which every candidate runs
    once (interleaved, the order rotated each round), for ``repeats`` rounds and at least ``min_seconds`` in all.

    ``settle`` untimed calls precede each timed one. Use it when candidates use different runtimes: ONNX
    Runtime's and PyTorch's OpenMP worker threads keep spinning for a while after a call, and on a small
    machine the next candidate's first call pays for the other runtime's spinning (measured here: batch-1
    eager calls 10-100x slower right after an ONNX Runtime call). ``inner`` timed calls in a row make one
    repetition, their median: for millisecond calls, where one call's time is mostly its neighbours' noise
    and the first calls after another runtime still share the cores with that runtime's spinning threads.
    ``inner="auto"`` sizes each candidate's block to about :data:`BLOCK_SECONDS` (1 to 20 calls) from its last
    warm-up call, and then uses at least 3 settling calls for candidates that get more than one call
    (measured for B0 at batch 1: one call each gave 8-15 ms with 30-300 % spread for paths that run in 4.2-4.6 ms
    with 40 % spread in blocks of 20). With ``prune``, a candidate more than ``prune`` times slower than the
    fastest in the first round is not timed again (its one timing stands): choosing the fastest needs no
    precise figure for a path that is already out of the race, and at batch 32 eager B0 alone would cost
    most of the timing budget."""
    auto = inner == "auto"
    if repeats < 1 or warmup < 0 or not (auto or (isinstance(inner, int) and inner >= 1)):
        raise UserError("repeats must be >= 1, warmup >= 0 and inner a positive integer or 'auto'")
    with torch.inference_mode():
        blocks: dict[str, tuple[int, int]] = {}
        for name, fn in candidates.items():
            for _ in range(max(warmup, 1 if auto else 0)):
                t0 = time.perf_counter()
                fn()
                last = time.perf_counter() - t0
            if auto:
                n = max(1, min(20, int(BLOCK_SECONDS / max(last, 1e-6))))
                blocks[name] = (max(settle, 3) if n > 1 else settle, n)
            else:
                blocks[name] = (settle, int(inner))
        timings = {name: Timing(name, batch) for name in candidates}
        start, rounds = time.perf_counter(), 0
        active = list(candidates)
        while rounds < repeats or time.perf_counter() - start < min_seconds:
            if prune is not None and rounds == 1:
                fastest = min(timings[n].times[0] for n in active)
                active = [n for n in active if timings[n].times[0] <= prune * fastest]
                if len(active) == 1:
                    break  # one candidate left: nothing to compare it with
            names = active
            shift = rounds % len(names)  # rotate the order: no candidate always follows the same neighbour
            for name in names[shift:] + names[:shift]:
                fn = candidates[name]
                n_settle, n_inner = blocks[name]
                for _ in range(n_settle):
                    fn()
                times = []
                for _ in range(n_inner):
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
                timings[name].times.append(statistics.median(times))
            rounds += 1
            if progress is not None:
                progress(rounds, repeats)
    return timings


def peer_model(peer: str, name: str) -> nn.Module:
    """The peer library's model of the same name, randomly initialised (timing only; nothing downloaded).

    timm and torchvision are optional: imported here, on demand, never by the rest of compscale.
    """
    if peer == "timm":
        try:
            import timm
        except ImportError:
            raise UserError("--vs timm needs timm installed (pip install timm)") from None
        if name not in timm.list_models():
            raise UserError(f"timm has no model named {name!r}")
        return timm.create_model(name, pretrained=False).eval()
    if peer == "torchvision":
        try:
            import torchvision
        except ImportError:
            raise UserError("--vs torchvision needs torchvision installed (pip install torchvision)") from None
        try:
            return torchvision.models.get_model(name, weights=None).eval()
        except ValueError:
            raise UserError(f"torchvision has no model named {name!r}") from None
    raise UserError(f"unknown peer {peer!r}; choose one of {', '.join(PEERS)}")


#: The inference paths ``build_path`` knows. ``onnxruntime_default`` is what a well-informed user of another
#: library gets (a static-shape export, ONNX Runtime's default session); ``best`` is :func:`compscale.optimize`.
PATHS = ("eager", "channels_last", "torchscript", "onnxruntime_default", "onnxruntime", "openvino", "best")


@torch.no_grad()
def settle_batchnorm(model: nn.Module, example: torch.Tensor, seed: int = 0) -> nn.Module:
    """Give a randomly initialised model realistic BatchNorm statistics (two train-mode passes on random
    images, cumulative averages), then eval mode.

    Without it a random EfficientNet's activations collapse towards zero, where subnormal floats make the CPU
    slow for reasons that have nothing to do with the model; timing both sides after this is fair.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    n = min(4, example.shape[0]) if example.shape[0] > 1 else 2
    for _ in range(2):
        model(torch.randn((n,) + tuple(example.shape[1:]), generator=g))
    for m in bns:
        m.momentum = 0.1
    return model.eval()


def build_path(model: nn.Module, path: str, example: torch.Tensor, threads: int | None = None,
               precision: str = "fp32") -> tuple[Callable[[], Any], str]:
    """A zero-argument callable running ``model`` on ``example`` the way ``path`` says, and a description.

    ``precision`` applies to the paths that offer bf16 (``openvino`` and ``best``); the others are fp32."""
    from compscale.deploy.export import OnnxRuntimeModule, onnx_bytes, trace_frozen

    model = model.eval()
    cl = example.contiguous(memory_format=torch.channels_last)
    if path == "eager":
        return (lambda: model(example)), "eager, NCHW"
    if path == "channels_last":
        m = copy.deepcopy(model).to(memory_format=torch.channels_last)
        return (lambda: m(cl)), "eager, channels_last"
    if path == "torchscript":
        m = trace_frozen(copy.deepcopy(model).to(memory_format=torch.channels_last), cl)
        return (lambda: m(cl)), "TorchScript trace+freeze, channels_last"
    if path in ("onnxruntime_default", "onnxruntime"):
        tuned = path == "onnxruntime"
        data = onnx_bytes(model, example, dynamic_batch=False, optimize_graph=tuned)
        m = OnnxRuntimeModule(data, tuple(example.shape), threads=threads if tuned else None, tuned=tuned)
        m(example)
        what = f"ONNX Runtime, tuned session ({threads or 'default'} threads)" if tuned else "ONNX Runtime, default session"
        return (lambda: m(example)), what
    if path == "openvino":
        from compscale.deploy.openvino_runtime import OpenVinoModule

        m = OpenVinoModule(onnx_bytes(model, example[:1]), tuple(example.shape), threads, precision)
        m(example)
        return (lambda: m(example)), f"OpenVINO {precision}, whole batch"
    if path == "best":
        from compscale.deploy.optimize import optimize

        m = optimize(model, example, threads=threads, precision=precision)
        return (lambda: m(example)), f"compscale.optimize -> {m.backend}"
    raise UserError(f"unknown path {path!r}; choose from {', '.join(PATHS)}")
