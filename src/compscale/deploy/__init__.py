"""Deployment: BatchNorm folding, the fastest faithful inference path, export, and fair timing.

``compscale.optimize(model, example_input)`` picks a backend by measurement; ``export_onnx`` /
``export_torchscript`` / ``export_openvino`` write validated files; :mod:`compscale.deploy.bench` times paths
side by side; :func:`accuracy_cost` measures what a bf16 path costs on real photos. Everything here that
needs ONNX Runtime or OpenVINO imports it lazily (``pip install 'compscale[deploy]'``).

Layers, lowest first; a module imports only modules of lower layers:

1. ``records`` (result-record base), ``fold`` (BatchNorm folding), ``openvino_runtime``;
2. ``export`` (ONNX / TorchScript / OpenVINO files, ``OnnxRuntimeModule``), ``accuracy``, ``bench`` (timing);
3. ``backends`` (the one backend table: how to build each inference backend);
4. ``optimize`` (build, validate, time, choose);
5. ``paths`` (what ``compscale bench`` times: a backend's plain form, or ``best`` = ``optimize``).
"""

from compscale.deploy.accuracy import AccuracyCost, accuracy_cost, photo_views
from compscale.deploy.export import (
    ExportReport,
    OnnxRuntimeModule,
    export_model,
    export_onnx,
    export_openvino,
    export_torchscript,
)
from compscale.deploy.fold import fold_batchnorm
from compscale.deploy.openvino_runtime import OpenVinoModule
from compscale.deploy.optimize import BACKENDS, DEFAULT_BACKENDS, PRECISIONS, OptimizedModel, optimize

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKENDS",
    "PRECISIONS",
    "AccuracyCost",
    "ExportReport",
    "OnnxRuntimeModule",
    "OpenVinoModule",
    "OptimizedModel",
    "accuracy_cost",
    "export_model",
    "export_onnx",
    "export_openvino",
    "export_torchscript",
    "fold_batchnorm",
    "optimize",
    "photo_views",
]
