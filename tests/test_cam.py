"""Class activation maps: the analytic case, Grad-CAM agreement, and the CLI figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compscale import create_model
from compscale.analysis.cam import activation_map
from compscale.errors import UserError


class HandBuilt(nn.Module):
    """Features are the input itself (K = 3 maps); the head is GAP → linear with chosen weights."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        # A unit gain as a parameter, so the feature maps are part of the autograd graph (Grad-CAM needs it).
        self.gain = nn.Parameter(torch.ones(()))
        self.classifier = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.classifier.weight.copy_(weight)
            self.classifier.bias.zero_()

    def forward_features(self, x):
        return x * self.gain

    def forward_head(self, f):
        return self.classifier(f.mean((2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self):
        return self.classifier


def _minmax(a):
    return (a - a.min()) / (a.max() - a.min())


def test_cam_equals_analytic_map():
    torch.manual_seed(0)
    w = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    x = torch.rand(1, 3, 12, 10)
    model = HandBuilt(w)
    for target in (0, 1):
        expected = _minmax((w[target][:, None, None] * x[0]).sum(0)).numpy()
        got = activation_map(model, x, target, "cam")
        assert got.target == target
        np.testing.assert_allclose(got.map, expected, atol=1e-6)


def test_gradcam_equals_relu_cam_for_a_linear_head():
    # d logit_c / d f_k = w_ck / (h·w) everywhere, so Grad-CAM's map is ReLU(Σ_k w_ck f_k), normalised.
    w = torch.tensor([[1.0, 2.0, 0.5]])
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    model = HandBuilt(w)
    expected = _minmax(torch.relu((w[0][:, None, None] * x[0]).sum(0))).numpy()
    got = activation_map(model, x, 0, "gradcam")
    np.testing.assert_allclose(got.map, expected, atol=1e-5)


def test_cam_on_efficientnet_is_input_sized_and_bad_input_is_refused():
    torch.manual_seed(0)
    model = create_model("efficientnet_b0", num_classes=4)
    x = torch.randn(1, 3, 64, 64)
    for method in ("cam", "gradcam++"):
        result = activation_map(model, x, method=method)
        assert result.map.shape == (64, 64) and 0 <= result.map.min() and result.map.max() <= 1
    assert model.training  # restored
    with pytest.raises(UserError, match="unknown CAM method"):
        activation_map(model, x, method="scorecam")
    with pytest.raises(UserError, match="out of range"):
        activation_map(model, x, target=9)
    with pytest.raises(UserError, match="one image"):
        activation_map(model, torch.randn(2, 3, 64, 64))
