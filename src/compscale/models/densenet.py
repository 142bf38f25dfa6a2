"""DenseNet-BC (Huang et al., 2017): DenseNet-169 and DenseNet-264, the seed table's DenseNet rows."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from compscale.models.classic_layers import ClassifierHead, renamed_keys
from compscale.models.registry import build_model, register_model
from compscale.models.weights import register_key_map
from compscale.specs.densenet import DenseNetSpec


class DenseLayer(nn.Module):
    """BN-ReLU-conv1×1 (bn_size·k) → BN-ReLU-conv3×3 (k): the k new feature maps of one layer."""

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        mid = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(torch.relu(self.norm1(x)))
        return self.conv2(torch.relu(self.norm2(x)))


class DenseBlock(nn.ModuleList):
    """Each layer sees the concatenation of the block input and every earlier layer's output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class Transition(nn.Module):
    """BN-ReLU-conv1×1 (compression θ = 0.5) → avg-pool 2×2/2 between dense blocks."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(torch.relu(self.norm(x))))


class DenseNet(nn.Module):
    def __init__(self, spec: DenseNetSpec, features_only: bool = False) -> None:
        super().__init__()
        self.spec, self.features_only = spec, features_only
        k = spec.growth_rate
        ch = 2 * k
        self.stem_conv = nn.Conv2d(spec.in_chans, ch, 7, 2, 3, bias=False)
        self.stem_norm = nn.BatchNorm2d(ch)
        self.stem_pool = nn.MaxPool2d(3, 2, 1)
        blocks, transitions = [], []
        self.feature_info: list[dict] = []
        for i, layers in enumerate(spec.blocks):
            blocks.append(DenseBlock([DenseLayer(ch + j * k, k, spec.bn_size) for j in range(layers)]))
            ch += layers * k
            self.feature_info.append({"module": f"blocks.{i}", "num_chs": ch, "reduction": 4 * 2**i})
            if i < len(spec.blocks) - 1:
                transitions.append(Transition(ch, ch // 2))
                ch //= 2
        self.blocks = nn.ModuleList(blocks)
        self.transitions = nn.ModuleList(transitions)
        self.norm = nn.BatchNorm2d(ch)
        self.num_features = ch
        if not features_only:
            self.head = ClassifierHead(ch, spec.num_classes, spec.dropout)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem_pool(torch.relu(self.stem_norm(self.stem_conv(x))))
        maps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            maps.append(x)
            if i < len(self.transitions):
                x = self.transitions[i](x)
        return maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.forward_stages(x)[-1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_stages(x)
        return self.head(self.forward_features(x))


@build_model.register
def _(spec: DenseNetSpec, features_only: bool = False) -> nn.Module:
    return DenseNet(spec, features_only=features_only)


register_model("densenet169", partial(DenseNetSpec, blocks=(6, 12, 32, 32)), "DenseNet-169 (k=32, 6-12-32-32)")
register_model("densenet264", partial(DenseNetSpec, blocks=(6, 12, 64, 48)), "DenseNet-264 (k=32, 6-12-64-48)")


@register_key_map(DenseNet, "timm")
def _timm_keys(model: DenseNet) -> dict[str, str]:
    """timm / torchvision ``DenseNet``: everything under ``features`` (``conv0``, ``denseblockN.denselayerM``)."""
    rules = [("stem_conv.", "features.conv0."), ("stem_norm.", "features.norm0."), ("norm.", "features.norm5."),
             ("head.fc.", "classifier.")]
    for i, block in enumerate(model.blocks):
        rules += [(f"blocks.{i}.{j}.", f"features.denseblock{i + 1}.denselayer{j + 1}.") for j in range(len(block))]
    rules += [(f"transitions.{i}.", f"features.transition{i + 1}.") for i in range(len(model.transitions))]
    return renamed_keys(model, rules)
