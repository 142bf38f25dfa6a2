"""OpenVINO on the CPU: the backend that made B0 fastest here (measured, not assumed).

Why it wins on this kind of machine (AVX-512, 2 cores), measured on B0 batch 32 against ONNX Runtime's
default session on the same ONNX graph: OpenVINO's brgemm 1×1 and depthwise kernels alone give 1.2x; run in
micro-batches of 2-4 images (each layer's activations stay in L2) by two streams of one thread each, 1.4x.
At batch 1 both runtimes are within a few per cent of each other: 65 % of the time is 1×1 convolutions
already running at ~70 % of the cores' fp32 peak, so there is no fp32 headroom left to find there.

Precision is explicit. OpenVINO's *default* on CPUs with AVX512-BF16 or AMX is bfloat16 (``INFERENCE_PRECISION_HINT``),
which silently changes the logits by ~1-5 %; compscale always asks for what the caller chose: ``"fp32"``
(the default, faithful to ≤ 1e-4) or ``"bf16"`` (opt-in, 1.5-2x faster again, with an accuracy cost that
:func:`compscale.deploy.accuracy.accuracy_cost` measures on real images).

Layer: imports nothing from the deploy package (the lowest layer, beside ``records`` and ``fold``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compscale.errors import UserError, first_line

__all__ = [
    "PRECISIONS",
    "OpenVinoModule",
    "available_precisions",
    "default_streams",
    "openvino_available",
    "require_openvino",
    "run_ir",
    "save_ir",
]

#: compscale's precision names → OpenVINO's ``INFERENCE_PRECISION_HINT`` values.
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def require_openvino():
    """The ``openvino`` module, or a UserError saying how to install it (it is an optional dependency)."""
    try:
        import openvino
    except ImportError:
        raise UserError("the OpenVINO backend needs the openvino package: pip install 'compscale[deploy]'") from None
    return openvino


def openvino_available() -> bool:
    """Whether the ``openvino`` package can be imported (it is an optional dependency)."""
    try:
        require_openvino()
    except UserError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _core():
    # One Core per process: creating it loads the CPU plugin (~50 ms) and its caches are shared.
    return require_openvino().Core()


def available_precisions() -> tuple[str, ...]:
    """The precisions this CPU runs natively: always ``"fp32"``; ``"bf16"`` where OpenVINO reports BF16
    (AVX512-BF16 or AMX). bf16 emulated on other CPUs would be slower than fp32, so it is not offered."""
    caps = set(_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return ("fp32", "bf16") if "BF16" in caps else ("fp32",)


class OpenVinoModule(nn.Module):
    """An ONNX model compiled by OpenVINO for the CPU, behind an ``nn.Module`` interface (inference only).

    One compiled model per batch size met (static shapes, so every convolution is planned for its size).
    With ``micro_batch`` set, a larger batch is cut into slices of that many images, run by ``streams``
    inference requests in flight at once (OpenVINO gives each stream its share of ``threads``); the last,
    shorter slice runs on its own compiled model. ``precision`` is ``"fp32"`` or ``"bf16"``.
    """

    def __init__(self, data: bytes, input_shape: tuple[int, ...], threads: int | None = None,
                 precision: str = "fp32", micro_batch: int | None = None, streams: int = 1) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if precision not in available_precisions():
            raise UserError(f"this CPU has no native {precision} support (OpenVINO reports "
                            f"{', '.join(_core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))})")
        if micro_batch is not None and micro_batch < 1 or streams < 1:
            raise UserError("micro_batch and streams must be positive")
        self.data, self.input_shape = data, tuple(input_shape)
        self.threads, self.precision = threads, precision
        self.micro_batch, self.streams = micro_batch, int(streams)
        self._compiled: dict[int, Any] = {}
        self._requests: dict[int, Any] = {}
        self._queues: dict[int, Any] = {}

    def _config(self, streams: int) -> dict[str, Any]:
        cfg: dict[str, Any] = {"INFERENCE_PRECISION_HINT": PRECISIONS[self.precision], "NUM_STREAMS": streams,
                               "PERFORMANCE_HINT": "THROUGHPUT" if streams > 1 else "LATENCY"}
        if self.threads is not None:
            cfg["INFERENCE_NUM_THREADS"] = int(self.threads)
        return cfg

    def compiled(self, batch: int, streams: int = 1):
        """The model compiled for inputs of ``batch`` images (cached)."""
        if batch not in self._compiled:
            core = _core()
            try:
                model = core.read_model(self.data)
                model.reshape([batch, *self.input_shape[1:]])
                self._compiled[batch] = core.compile_model(model, "CPU", self._config(streams))
            except UserError:
                raise
            except Exception as err:  # OpenVINO raises RuntimeError with multi-line C++ messages
                raise UserError(f"OpenVINO cannot compile the model: {first_line(err)}") from None
        return self._compiled[batch]

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if n not in self._requests:
            self._requests[n] = self.compiled(n).create_infer_request()
        # .copy(): the request owns its output buffer and overwrites it on the next call.
        return self._requests[n].infer({0: batch})[0].copy()

    def _infer_streamed(self, arr: np.ndarray, step: int) -> np.ndarray:
        ov = require_openvino()
        full = (len(arr) // step) * step
        if step not in self._queues:
            self._queues[step] = ov.AsyncInferQueue(self.compiled(step, self.streams), self.streams)
        queue = self._queues[step]
        chunks: dict[int, np.ndarray] = {}

        def done(request, index: int) -> None:
            chunks[index] = request.get_output_tensor(0).data.copy()

        queue.set_callback(done)
        for i in range(0, full, step):
            queue.start_async({0: arr[i:i + step]}, i)
        queue.wait_all()
        outs = [chunks[i] for i in range(0, full, step)]
        if full < len(arr):
            outs.append(self._infer(arr[full:]))
        return np.concatenate(outs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape[1:]:
            raise UserError("this model was compiled for inputs of shape "
                            f"(N, {', '.join(map(str, self.input_shape[1:]))}), got {tuple(x.shape)}")
        arr = np.ascontiguousarray(x.detach().to(torch.float32).numpy())
        step = self.micro_batch or len(arr)
        if step >= len(arr):
            return torch.from_numpy(self._infer(arr))
        return torch.from_numpy(self._infer_streamed(arr, step))

    def extra_repr(self) -> str:
        return (f"input_shape={self.input_shape}, precision={self.precision!r}, threads={self.threads}, "
                f"micro_batch={self.micro_batch}, streams={self.streams}")


def default_streams(threads: int | None) -> int:
    """Two streams when there are at least two threads to share (measured best for micro-batches here)."""
    total = threads if threads is not None else (os.cpu_count() or 1)
    return 2 if total >= 2 else 1


def save_ir(data: bytes, xml_path: Path, input_shape: tuple[int, ...], dynamic_batch: bool) -> None:
    """Write the ONNX model ``data`` as OpenVINO IR (``NAME.xml`` + ``NAME.bin``, fp32 weights)."""
    ov = require_openvino()
    model = _core().read_model(data)
    if not dynamic_batch:
        model.reshape(list(input_shape))
    # compress_to_fp16=False: the IR must hold the weights compscale validated, not a half-precision copy.
    ov.save_model(model, str(xml_path), compress_to_fp16=False)


def run_ir(xml_path: Path, x: torch.Tensor) -> torch.Tensor:
    """Load an IR file back and run it in fp32 (what validation of an export compares)."""
    core = _core()
    try:
        compiled = core.compile_model(core.read_model(str(xml_path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    except Exception as err:
        raise UserError(f"OpenVINO cannot load {xml_path.name}: {first_line(err)}") from None
    return torch.from_numpy(compiled.create_infer_request().infer({0: x.numpy()})[0].copy())
