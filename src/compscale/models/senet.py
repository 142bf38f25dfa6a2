"""SENet-154 (Hu et al., 2018): the ILSVRC 2017 winner, the seed table's "SENet" row (measured at 320 px).

Names follow the Caffe reference port (``layer0``, ``layerN``, ``se_module.fc1/fc2``, ``downsample``,
``last_linear``), which timm's ``legacy_senet154`` keeps.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
from torch import nn

from compscale.models.classic_layers import StagePooledClassifier
from compscale.models.registry import build_model, register_model
from compscale.models.weights import register_key_map
from compscale.specs.senet import SENetSpec


class SEModule(nn.Module):
    """Squeeze-and-excitation: x · σ(fc2(ReLU(fc1(GAP(x))))) with 1×1 convs (channels / reduction inside)."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(s)


class SEBottleneck(nn.Module):
    """1×1 (2p) → grouped 3×3 (4p, stride) → 1×1 (4p) → SE, + shortcut, ReLU."""

    def __init__(self, cin: int, planes: int, groups: int, reduction: int, stride: int,
                 downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes * 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes * 2)
        self.conv2 = nn.Conv2d(planes * 2, planes * 4, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(planes * 4)
        self.conv3 = nn.Conv2d(planes * 4, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.se_module = SEModule(planes * 4, reduction)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.se_module(self.bn3(self.conv3(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class SENet(StagePooledClassifier, nn.Module):
    """Stem of three 3×3 convs (64, 64, stem) + max-pool/2 (ceil) → four SE-bottleneck stages → pool → FC."""

    def __init__(self, spec: SENetSpec, features_only: bool = False) -> None:
        super().__init__()
        self.spec, self.features_only = spec, features_only
        s = min(64, spec.stem_channels)
        self.layer0 = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(spec.in_chans, s, 3, 2, 1, bias=False)), ("bn1", nn.BatchNorm2d(s)),
            ("relu1", nn.ReLU(inplace=True)),
            ("conv2", nn.Conv2d(s, s, 3, 1, 1, bias=False)), ("bn2", nn.BatchNorm2d(s)),
            ("relu2", nn.ReLU(inplace=True)),
            ("conv3", nn.Conv2d(s, spec.stem_channels, 3, 1, 1, bias=False)),
            ("bn3", nn.BatchNorm2d(spec.stem_channels)), ("relu3", nn.ReLU(inplace=True)),
        ]))
        self.pool0 = nn.MaxPool2d(3, 2, ceil_mode=True)
        ch, layers = spec.stem_channels, []
        for i, (n, p) in enumerate(zip(spec.layers, spec.planes)):
            stride = 1 if i == 0 else 2
            k = 1 if i == 0 else 3  # SENet-154 projects with a 3×3/2 conv after the first stage
            blocks = []
            for b in range(n):
                down = None
                if b == 0 and (stride != 1 or ch != 4 * p):
                    down = nn.Sequential(nn.Conv2d(ch, 4 * p, k, stride, k // 2, bias=False), nn.BatchNorm2d(4 * p))
                blocks.append(SEBottleneck(ch, p, spec.groups, spec.reduction, stride if b == 0 else 1, down))
                ch = 4 * p
            layers.append(nn.Sequential(*blocks))
        self.layers = nn.ModuleList(layers)
        self.make_head(ch)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.layer0(x)
        maps = [x]
        x = self.pool0(x)
        for layer in self.layers:
            x = layer(x)
            maps.append(x)
        return maps


@build_model.register
def _(spec: SENetSpec, features_only: bool = False) -> nn.Module:
    return SENet(spec, features_only=features_only)


# The seed row's 42B multiply-adds are SENet-154 at 320 px (it was trained at 224; 320 is its test crop).
register_model("senet154", partial(SENetSpec, resolution=320), "SENet-154 (measured at 320 px, the seed row)")


@register_key_map(SENet, "timm")
def _timm_keys(model: SENet) -> dict[str, str]:
    """timm ``legacy_senet154``: stages are ``layer1`` … ``layer4``."""
    names = {}
    for key in model.state_dict():
        if key.startswith("layers."):
            _, i, rest = key.split(".", 2)
            names[key] = f"layer{int(i) + 1}.{rest}"
        else:
            names[key] = key
    return names
