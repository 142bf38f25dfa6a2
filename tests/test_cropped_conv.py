"""Convolutions that skip the kernel taps which only ever read padding (``blocks.reached_taps``): the same
function and gradients as the whole kernel, the papers' multiply-add counts, and timm's outputs."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compscale import load_state_dict, profile
from compscale.models import build_model
from compscale.models.blocks import Conv2dSame, CroppedConv2d, reached_taps, same_padding
from compscale.scaling import ScaleFactors
from compscale.specs import EfficientNetSpec


def test_reached_taps_of_small_maps():
    # 5x5 kernel, padding 2, on 2x2 maps: stride 1 reads the middle 3x3 taps, stride 2 (one output) the 2x2
    # around the centre, without padding; 3x3 on a 1x1 map is its centre tap: a per-channel scale.
    assert reached_taps(2, 5, 1, (2, 2)) == (slice(1, 4), (1, 1))
    assert reached_taps(2, 5, 2, (2, 2)) == (slice(2, 4), (0, 0))
    assert reached_taps(1, 3, 1, (1, 1)) == (slice(1, 2), (0, 0))
    assert reached_taps(2, 7, 1, (3, 3)) == (slice(2, 5), (1, 1))
    assert reached_taps(4, 5, 2, (2, 2)) == (slice(0, 5), (2, 2))  # output 1 reads with tap 0, output 0 with 4
    # Maps at least as large as the kernel's reach keep the whole kernel and padding.
    assert reached_taps(7, 5, 1, (2, 2)) == (slice(0, 5), (2, 2))
    assert reached_taps(16, 3, 2, (1, 1)) == (slice(0, 3), (1, 1))
    # TF "SAME", asymmetric: 3x3 stride 2 on 2 pixels pads (0, 1); the last tap reads only padding.
    assert reached_taps(2, 3, 2, same_padding(2, 3, 2)) == (slice(0, 2), (0, 0))


def _grads(conv: nn.Conv2d, x: torch.Tensor, full: bool) -> tuple[torch.Tensor, ...]:
    x = x.clone().requires_grad_()
    conv.zero_grad(set_to_none=True)
    y = nn.Conv2d.forward(conv, x) if full else conv(x)
    (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
    return y.detach(), x.grad, conv.weight.grad.clone(), conv.bias.grad.clone()


def test_cropped_conv_is_the_whole_kernel_function():
    """Outputs and gradients (input, weight, bias) equal the whole-kernel convolution's in float64, over map
    sizes 1-8, kernels 1-7, strides 1-3, every padding below the kernel and grouped/depthwise; the skipped taps
    get exactly zero gradient."""
    torch.manual_seed(0)
    cropped = 0
    for size, k, s, groups in itertools.product(range(1, 9), (1, 2, 3, 5, 7), (1, 2, 3), (1, 4)):
        for pad in range(k):
            if size + 2 * pad < k:
                continue  # no output at all: PyTorch refuses the whole kernel too
            conv = CroppedConv2d(4, 4, k, s, padding=pad, groups=groups, bias=True).double()
            x = torch.randn(2, 4, size, size + 1, dtype=torch.float64)
            ours, full = _grads(conv, x, full=False), _grads(conv, x, full=True)
            for a, b in zip(ours, full):
                assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-12, atol=1e-12), (size, k, s, pad)
            rows = reached_taps(size, k, s, (pad, pad))[0]
            cols = reached_taps(size + 1, k, s, (pad, pad))[0]
            if (rows.stop - rows.start, cols.stop - cols.start) != (k, k):
                cropped += 1
                outside = torch.ones(k, k, dtype=torch.bool)
                outside[rows, cols] = False
                assert torch.count_nonzero(ours[2][:, :, outside]) == 0
    assert cropped > 100  # the comparison did exercise the cropped path


def test_conv2d_same_crops_with_asymmetric_padding():
    torch.manual_seed(1)
    for size, k, s in itertools.product(range(1, 8), (1, 3, 5), (1, 2)):
        conv = Conv2dSame(3, 6, (k, max(1, k - 2)), s, padding=0, groups=3, bias=False).double()
        x = torch.randn(2, 3, size, size + 2, dtype=torch.float64)
        ph = same_padding(size, k, s)
        pw = same_padding(size + 2, max(1, k - 2), s)
        want = F.conv2d(F.pad(x, (pw[0], pw[1], ph[0], ph[1])), conv.weight, None, s, 0, 1, 3)
        got = conv(x)
        assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-12, atol=1e-12), (size, k, s)


def _quarter_b0() -> EfficientNetSpec:
    """B0's table at a quarter of its depth and width on 32 px grayscale: its last stages run 5x5 and 3x3
    kernels on 2x2 and 1x1 maps, where the taps are cropped."""
    return EfficientNetSpec(in_chans=1, num_classes=10, dropout=0.0, drop_path_rate=0.0).scaled(
        ScaleFactors(depth=0.25, width=0.25, resolution=32))


def test_small_network_counts_and_outputs_equal_timm():
    """On 32 px, where many kernels are cropped: the paper's multiply-adds (whole kernels, as timm counts) and,
    after the same initialisation, timm's outputs and gradients."""
    timm_efficientnet = pytest.importorskip("timm.models.efficientnet")
    spec = _quarter_b0()
    torch.manual_seed(0)
    theirs = timm_efficientnet._gen_efficientnet("efficientnet_b0", channel_multiplier=0.25,
                                                 depth_multiplier=0.25, pretrained=False, in_chans=1,
                                                 num_classes=10)
    ours = build_model(spec)
    a, b = profile(ours, 32, in_chans=1), profile(theirs, 32, in_chans=1)
    assert (a.params, a.macs) == (b.params, b.macs) == (126_678, 463_488)
    load_state_dict(ours, theirs.state_dict())
    ours, theirs = ours.double().train(), theirs.double().train()
    shapes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_pre_hook(lambda m, i: shapes.append((m.kernel_size[0], *i[0].shape[-2:])))
             for m in ours.modules() if isinstance(m, CroppedConv2d)]
    x = torch.randn(4, 1, 32, 32, dtype=torch.float64)
    y_ours, y_theirs = ours(x), theirs(x)
    for h in hooks:
        h.remove()
    assert any(k > h for k, h, _ in shapes)  # some kernels were larger than their maps
    assert torch.allclose(y_ours, y_theirs, rtol=1e-10, atol=1e-10)
    y_ours.square().sum().backward()
    y_theirs.square().sum().backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-8, atol=1e-10), name
