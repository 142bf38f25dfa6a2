"""Deployment: BatchNorm folding, the fastest faithful inference path, export, and fair timing.

``compscale.optimize(model, example_input)`` picks a backend by measurement; ``export_onnx`` /
``export_torchscript`` write validated files; :mod:`compscale.deploy.bench` times paths side by side.
Everything here that needs ONNX Runtime imports it lazily (``pip install 'compscale[deploy]'``).
"""

from compscale.deploy.export import ExportReport, OnnxRuntimeModule, export_model, export_onnx, export_torchscript
from compscale.deploy.fold import fold_batchnorm
from compscale.deploy.optimize import BACKENDS, DEFAULT_BACKENDS, OptimizedModel, optimize

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKENDS",
    "ExportReport",
    "OnnxRuntimeModule",
    "OptimizedModel",
    "export_model",
    "export_onnx",
    "export_torchscript",
    "fold_batchnorm",
    "optimize",
]
