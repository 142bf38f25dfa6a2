"""A model family of your own, in one file: compscale's extension point, worked through.

A family is three things:

1. a **spec**: a frozen dataclass subclassing ``compscale.specs.ModelSpec`` with a unique ``family`` name —
   what one concrete network is, as data (JSON/YAML round-trip, every field checked when it is made);
2. its **scaling rule**: ``scaled(factors, depth_rounding)``, how the depth, width and resolution multipliers
   (``ScaleFactors``) apply to this baseline, with its rounding (here: ``round_repeats`` and ``round_filters``,
   as EfficientNet rounds);
3. a **builder**: a function registered with ``@build_model.register`` that turns the spec into an
   ``nn.Module`` carrying it as ``model.spec``.

Importing the module registers all three (and, optionally, names with ``register_model``). Any command takes
a baseline defined here as ``package.module:name`` — ``name`` is a spec, or a function returning one — and a
study's worker processes (``compscale worker``) import the module named in the study before they build a
model, so the working folder (or an installed package) must hold it. From the repository root:

    compscale profile examples.my_family:plain_tiny
    compscale scale --base examples.my_family:plain_tiny --target-macs 4x
    compscale train examples.my_family:plain_tiny --data digits --epochs 2 --out runs/plain
    compscale search --base examples.my_family:plain_tiny --data digits --epochs 1 --workers 2

Training, search, sweep, export, CAM and profiling need nothing else: they work from the spec and the module.
(The head API below — ``forward_features``, ``forward_head``, ``get_classifier``, ``reset_classifier`` —
is what class activation maps and fine-tuning use; ``PooledClassifier`` provides it from ``pool``,
``dropout`` and ``classifier``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compscale.errors import UserError
from compscale.models import build_model, register_model
from compscale.models.blocks import PooledClassifier
from compscale.scaling import ScaleFactors, round_filters, round_repeats
from compscale.specs import ModelSpec, checks


@dataclass(frozen=True, kw_only=True)
class PlainNetSpec(ModelSpec):
    """A plain VGG-style CNN: per stage, ``depths[i]`` conv3×3 → BN → ReLU layers of ``widths[i]`` channels (the
    first of every stage after the first with stride 2), then global average pool → dropout → linear."""

    family = "plainnet"  # unique across families: it names the spec class in JSON, files and studies

    widths: tuple[int, ...] = (16, 32, 64)
    depths: tuple[int, ...] = (1, 1, 1)
    resolution: int = 32
    dropout: float = 0.0

    def __post_init__(self) -> None:
        # Every field checked, with compscale's helpers (one line naming the field): a spec may come from a file.
        checks.common(self)
        widths = checks.integers("widths", self.widths)
        depths = checks.integers("depths", self.depths, 1, checks.MAX_BLOCKS, length=len(widths))
        if not widths:
            raise UserError("a PlainNet needs at least one stage")
        checks.blocks(self.family, sum(depths))
        object.__setattr__(self, "widths", widths)  # lists from JSON become tuples: specs are hashable
        object.__setattr__(self, "depths", depths)

    def scaled(self, factors: ScaleFactors, depth_rounding: str = "ceil") -> "PlainNetSpec":
        """The scaling rule: layers per stage ×d (ceil), channels ×w (to multiples of 8), side ×r."""
        return self.replace(
            widths=tuple(round_filters(w, factors.width) for w in self.widths),
            depths=tuple(round_repeats(d, factors.depth, depth_rounding) for d in self.depths),
            resolution=factors.resolve_resolution(self.resolution),
            dropout=self.dropout if factors.dropout is None else factors.dropout,
        )

    def stage_table(self) -> list[dict[str, Any]]:
        return [{"name": f"stage{i + 1}", "op": "conv3x3", "kernel": 3, "stride": 1 if i == 0 else 2,
                 "repeats": d, "channels": w} for i, (w, d) in enumerate(zip(self.widths, self.depths))]


class PlainNet(PooledClassifier, nn.Module):
    def __init__(self, spec: PlainNetSpec, features_only: bool = False) -> None:
        super().__init__()
        self.spec, self.features_only = spec, features_only
        stages, c_in = [], spec.in_chans
        for i, (width, depth) in enumerate(zip(spec.widths, spec.depths)):
            layers: list[nn.Module] = []
            for b in range(depth):
                stride = 2 if i > 0 and b == 0 else 1
                layers += [nn.Conv2d(c_in, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True)]
                c_in = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.num_features = c_in
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(spec.dropout)
        self.classifier = nn.Linear(c_in, spec.num_classes)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[-1]


@build_model.register
def _(spec: PlainNetSpec, features_only: bool = False) -> nn.Module:
    return PlainNet(spec, features_only)


def plain_tiny() -> PlainNetSpec:
    """The baseline: three stages of one layer (16, 32, 64 channels) at 32 px."""
    return PlainNetSpec()


# Optional: a name, for `compscale.create_model("plainnet_tiny")` in a process that imported this module.
register_model("plainnet_tiny", plain_tiny, "examples/my_family.py: plain CNN, 3 stages of 1 conv, 32 px")
