"""What ``compscale bench`` times: a model, compscale's or a peer library's, run the way a named path says.

Each path but ``best`` is one backend of :data:`compscale.deploy.backends.BACKEND_TABLE` in its plain form;
``best`` is :func:`compscale.optimize`. Layer: the top of the deploy package: imports
:mod:`~compscale.deploy.backends` and :mod:`~compscale.deploy.optimize`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch import nn

from compscale.deploy.backends import BACKEND_TABLE, BuildOptions
from compscale.deploy.optimize import optimize
from compscale.errors import UserError

__all__ = ["PATHS", "PEERS", "build_path", "peer_model", "settle_batchnorm"]

PEERS = ("timm", "torchvision")
#: The inference paths ``build_path`` knows. ``onnxruntime_default`` is what a well-informed user of another
#: library gets (a static-shape export, ONNX Runtime's default session); ``best`` is :func:`compscale.optimize`.
PATHS = ("eager", "channels_last", "torchscript", "onnxruntime_default", "onnxruntime", "openvino", "best")


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
    if path not in PATHS:
        raise UserError(f"unknown path {path!r}; choose from {', '.join(PATHS)}")
    model = model.eval()
    if path == "best":
        best = optimize(model, example, threads=threads, precision=precision)
        return functools.partial(best, example), f"compscale.optimize -> {best.backend}"
    backend = BACKEND_TABLE[path]
    backend.require()
    built = backend.build(model, example, BuildOptions(threads, precision, variants=False))[0]
    inp = built.input(example)
    if backend.lazy:
        built.module(inp)  # the session is created (the model compiled) now, not in the first timed call
    return functools.partial(built.module, inp), built.what
