"""Shared test set-up: one thread (the machines are shared), the tests' tiny EfficientNet, and helpers to make
peer comparisons honest."""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from compscale.specs import EfficientNetSpec, MBConvStage

torch.set_num_threads(1)

#: The tiny EfficientNet's stages; ``tiny_spec(stages=N)`` keeps the first N.
TINY_STAGES = (
    MBConvStage(expand_ratio=1, kernel=3, stride=1, out_channels=8, repeats=1),
    MBConvStage(expand_ratio=4, kernel=3, stride=2, out_channels=16, repeats=1),
    MBConvStage(expand_ratio=4, kernel=3, stride=2, out_channels=24, repeats=1),
)


def tiny_spec(stages: int = 3, **overrides: Any) -> EfficientNetSpec:
    """The tests' tiny EfficientNet: three MBConv stages (8, 16, 24 channels), stem 8, head 64, 32 px, no dropout
    or stochastic depth: seconds per epoch on digits, one thread. ``stages`` keeps the first N stages; any other
    keyword replaces that spec field (e.g. ``head_channels=96``)."""
    fields: dict[str, Any] = dict(stages=TINY_STAGES[:stages], stem_channels=8, head_channels=64, resolution=32,
                                  dropout=0.0, drop_path_rate=0.0)
    return EfficientNetSpec(**{**fields, **overrides})


def tiny_spec_file(path: str | Path, stages: int = 3, **overrides: Any) -> str:
    """:func:`tiny_spec` written as a JSON spec file at ``path`` (what ``compscale train SPEC.json`` takes)."""
    Path(path).write_text(json.dumps(tiny_spec(stages, **overrides).as_dict()))
    return str(path)


@pytest.fixture(name="tiny_spec")
def tiny_spec_fixture():
    """:func:`tiny_spec`, for a test that takes it as a fixture."""
    return tiny_spec


def calibrate_batchnorm(*models: torch.nn.Module, seed: int = 0, resolution: int = 64) -> None:
    """Give BatchNorm layers non-trivial affine parameters and running statistics, identical across models.

    A freshly initialised EfficientNet in eval mode collapses its activations (logits ~1e-5), which makes any
    tolerance meaningless. Random affine parameters, then running statistics calibrated on a few random
    batches, keep the activations O(1) so a relative tolerance means something.
    """
    for model in models:
        g = torch.Generator().manual_seed(seed)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.data.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batches
        model.train()
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for _ in range(2):
                model(torch.randn(4, 3, resolution, resolution, generator=g))
        model.eval()


@pytest.fixture
def calibrate():
    return calibrate_batchnorm


def timm_counts(name: str, resolution: int) -> tuple[int, int]:
    """(parameters, multiply-adds) of timm's model ``name`` at ``resolution``, counted on the meta device."""
    import timm
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = timm.create_model(name).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.empty(1, 3, resolution, resolution))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2


@contextlib.contextmanager
def time_limit(seconds: int):
    """Fail, instead of hanging the suite, when the block runs longer than ``seconds`` (a FIFO opened by
    mistake blocks forever)."""

    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def assert_same_logits(peer: torch.nn.Module, model: torch.nn.Module, rtol: float = 1e-5) -> None:
    """``model`` (weights loaded from ``peer``) gives ``peer``'s logits on a random 64×72 batch, within ``rtol``
    of their largest magnitude; collapsed logits (everything near 0) would make that meaningless and fail."""
    peer.eval()
    model.eval()
    x = torch.randn(2, 3, 64, 72)
    with torch.no_grad():
        theirs, mine = peer(x), model(x)
    scale = theirs.abs().max().item()
    assert scale > 0.1, "logits collapsed: the comparison would be meaningless"
    assert (mine - theirs).abs().max().item() <= rtol * scale
