"""compscale: compound model scaling of convolutional networks (EfficientNet, ResNeXt, Inception-ResNet).

The core is three steps: a scaling rule maps (baseline spec, α, β, γ, φ) to a concrete spec
(:mod:`compscale.scaling`, :mod:`compscale.compound`); a builder turns a spec into an ``nn.Module``
(:func:`create_model`); a profiler counts params, multiply-adds and activations (:func:`profile`).

Names are loaded lazily so that the pure scaling rule can be used without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "UserError": "compscale.errors",
    "CompoundScaling": "compscale.scaling",
    "ScaleFactors": "compscale.scaling",
    "round_filters": "compscale.scaling",
    "round_repeats": "compscale.scaling",
    "EFFICIENTNET_COEFFICIENTS": "compscale.scaling",
    "create_model": "compscale.models",
    "list_models": "compscale.models",
    "model_spec": "compscale.models",
    "register_model": "compscale.models",
    "resolve_reference": "compscale.models.registry",
    "model_from_weights": "compscale.models.weights",
    "build_model": "compscale.models",
    "profile": "compscale.profiler",
    "Profile": "compscale.profiler",
    "scale": "compscale.compound",
    "scale_to_budget": "compscale.deploy.latency",
    "ScaledModel": "compscale.compound",
    "load_weights": "compscale.models.weights",
    "load_state_dict": "compscale.models.weights",
    "save_weights": "compscale.models.weights",
    "spec_from_dict": "compscale.specs",
    "optimize": "compscale.deploy",
    "fold_batchnorm": "compscale.deploy",
    "export_onnx": "compscale.deploy",
    "export_torchscript": "compscale.deploy",
    "export_openvino": "compscale.deploy",
    "accuracy_cost": "compscale.deploy",
    "photo_views": "compscale.deploy",
    "pretrained": "compscale.pretrained",
    "activation_map": "compscale.analysis.cam",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'compscale' has no attribute {name!r}")
