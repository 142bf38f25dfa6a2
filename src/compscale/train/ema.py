"""Exponential moving average of the weights (the paper evaluates with EMA decay 0.9999).

    θ_ema ← d·θ_ema + (1 − d)·θ,   d = min(decay, (1 + n) / (10 + n))

where n counts the updates: TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` warm-up, which lets a
short run's average follow the weights instead of staying at the random initialisation. BatchNorm running
statistics are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """A frozen copy of a model whose weights trail the trained ones."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = float(decay)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        self.updates += 1
        ema_params = [p for p in self.module.parameters()]
        params = [p.detach() for p in model.parameters()]
        # θ_ema ← θ_ema + (1 − d)(θ − θ_ema)
        torch._foreach_lerp_(ema_params, params, 1.0 - d)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        self.module.load_state_dict(state, strict=True)
        self.updates = int(updates)
