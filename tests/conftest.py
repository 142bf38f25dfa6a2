"""Shared test set-up: one thread (the machines are shared), and helpers to make peer comparisons honest."""

from __future__ import annotations

import torch
import pytest

torch.set_num_threads(1)


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
