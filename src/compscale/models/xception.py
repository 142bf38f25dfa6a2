"""Xception (Chollet, 2017): depthwise-separable convolutions with residual connections, 299 px.

Entry flow (two convs, three strided residual blocks to 728 channels), middle flow (``repeats[0]`` = 8 blocks
of three ReLU-separable3×3-BN at 728), exit flow (a strided block to 1024, separable 1536 and 2048). Names
follow the Keras/TF reference port (``blockN.rep``, ``skip``/``skipbn``, separable ``conv1``/``pointwise``).
"""

from __future__ import annotations

import torch
from torch import nn

from compscale.models.classic_layers import ClassifierHead
from compscale.models.registry import build_model, register_model
from compscale.models.weights import register_key_map
from compscale.specs._classic import scale_channels
from compscale.specs.inception import XceptionSpec


class SeparableConv2d(nn.Module):
    """Depthwise 3×3 (``conv1``) → pointwise 1×1 (``pointwise``), no bias, no BN between."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1(x))


class XceptionBlock(nn.Module):
    """``reps`` × (ReLU → separable 3×3 → BN), optional max-pool/2, plus the identity or a 1×1 projection.

    ``grow_first``: the first separable conv changes the width (else the last one does);
    ``start_with_relu=False`` drops the leading ReLU (the first block, right after the stem's ReLU).
    """

    def __init__(self, cin: int, cout: int, reps: int, stride: int, eps: float, start_with_relu: bool = True,
                 grow_first: bool = True) -> None:
        super().__init__()
        if cout != cin or stride != 1:
            self.skip = nn.Conv2d(cin, cout, 1, stride, bias=False)
            self.skipbn = nn.BatchNorm2d(cout, eps=eps)
        else:
            self.skip = None
        rep: list[nn.Module] = []
        for i in range(reps):
            a = cin if (i == 0 or not grow_first) else cout
            b = cout if (grow_first or i == reps - 1) else cin
            # The first ReLU must not be in place: the block input also feeds the shortcut.
            rep += [nn.ReLU(inplace=i > 0), SeparableConv2d(a, b), nn.BatchNorm2d(b, eps=eps)]
        if not start_with_relu:
            rep = rep[1:]
        if stride != 1:
            rep.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*rep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.skip is None else self.skipbn(self.skip(x))
        return self.rep(x) + skip


class Xception(nn.Module):
    def __init__(self, spec: XceptionSpec, features_only: bool = False) -> None:
        super().__init__()
        self.spec, self.features_only = spec, features_only
        c = lambda ch: scale_channels(ch, spec.width)  # noqa: E731
        eps = spec.bn_eps
        self.conv1 = nn.Conv2d(spec.in_chans, c(32), 3, 2, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(c(32), eps=eps)
        self.conv2 = nn.Conv2d(c(32), c(64), 3, bias=False)
        self.bn2 = nn.BatchNorm2d(c(64), eps=eps)
        blocks = [XceptionBlock(c(64), c(128), 2, 2, eps, start_with_relu=False),
                  XceptionBlock(c(128), c(256), 2, 2, eps),
                  XceptionBlock(c(256), c(728), 2, 2, eps)]
        blocks += [XceptionBlock(c(728), c(728), 3, 1, eps) for _ in range(spec.repeats[0])]
        blocks.append(XceptionBlock(c(728), c(1024), 2, 2, eps, grow_first=False))
        self.blocks = nn.ModuleList(blocks)
        self.conv3 = SeparableConv2d(c(1024), c(1536))
        self.bn3 = nn.BatchNorm2d(c(1536), eps=eps)
        self.conv4 = SeparableConv2d(c(1536), c(2048))
        self.bn4 = nn.BatchNorm2d(c(2048), eps=eps)
        self.num_features = c(2048)
        if not features_only:
            self.head = ClassifierHead(c(2048), spec.num_classes, spec.dropout)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        maps = [x]
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in (0, 1, last - 1):
                maps.append(x)
        x = torch.relu(self.bn3(self.conv3(x)))
        maps.append(torch.relu(self.bn4(self.conv4(x))))
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        maps = self.forward_stages(x)
        return maps if self.features_only else self.head(maps[-1])


@build_model.register
def _(spec: XceptionSpec, features_only: bool = False) -> nn.Module:
    return Xception(spec, features_only=features_only)


register_model("xception", XceptionSpec, "Xception (299 px)")


@register_key_map(Xception, "timm")
def _timm_keys(model: Xception) -> dict[str, str]:
    """timm ``legacy_xception`` (Cadene's port of the Keras weights): ``block1`` … ``block12``, ``fc``."""
    names = {}
    for key in model.state_dict():
        theirs = key
        if key.startswith("blocks."):
            _, i, rest = key.split(".", 2)
            theirs = f"block{int(i) + 1}.{rest}"
        elif key.startswith("head.fc."):
            theirs = "fc." + key[len("head.fc."):]
        names[key] = theirs
    return names
