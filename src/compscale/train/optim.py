"""Optimizers and the learning-rate schedule of the paper's recipe.

``rmsproptf`` is RMSProp as TensorFlow implements it (the EfficientNet reference code: decay ρ = 0.9,
momentum μ = 0.9, ε = 1e-3):

    ms ← ρ·ms + (1 − ρ)·g²          (ms starts at 1, not 0)
    m  ← μ·m + lr·g / √(ms + ε)     (ε inside the square root; lr inside the momentum)
    θ  ← θ − m

Weight decay is TF's L2 term ``wd·Σ‖θ‖²/2`` added to the loss, i.e. ``g ← g + wd·θ`` (coupled), and, as in
the reference code, never applied to BatchNorm parameters or biases. PyTorch's ``RMSprop`` differs on all
three points (ms starts at 0, ε outside the root, lr outside the momentum), which matters with ε = 1e-3.

The schedule is a pure function of the global step (:func:`lr_factor`), so its whole state is the step.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from compscale.train.config import TrainConfig


class RMSpropTF(torch.optim.Optimizer):
    """TensorFlow-style RMSProp (see the module docstring); ``alpha`` is the decay ρ."""

    def __init__(self, params: Iterable, lr: float = 0.016, alpha: float = 0.9, eps: float = 1e-3,
                 momentum: float = 0.9, weight_decay: float = 0.0) -> None:
        if lr <= 0 or not 0 <= alpha < 1 or eps < 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError("invalid RMSpropTF hyper-parameter")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            for p in params:
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.ones_like(p, memory_format=torch.preserve_format)
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            square_avg = [self.state[p]["square_avg"] for p in params]
            buf = [self.state[p]["momentum_buffer"] for p in params]
            # ms ← ρ·ms + (1 − ρ)·g²
            torch._foreach_mul_(square_avg, group["alpha"])
            torch._foreach_addcmul_(square_avg, grads, grads, value=1.0 - group["alpha"])
            # m ← μ·m + lr·g/√(ms + ε);  θ ← θ − m
            denom = torch._foreach_add(square_avg, group["eps"])
            torch._foreach_sqrt_(denom)
            torch._foreach_mul_(buf, group["momentum"])
            torch._foreach_addcdiv_(buf, grads, denom, value=group["lr"])
            torch._foreach_sub_(params, buf)
        return loss


def param_groups(model: nn.Module, weight_decay: float, head: nn.Module | None = None,
                 head_lr_scale: float = 1.0) -> list[dict]:
    """Parameters split by (body/head, decayed/not): weight decay only on conv/linear weights (ndim > 1).

    Each group carries ``lr_scale`` (the head's learning rate relative to the body's).
    """
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        groups.setdefault((id(p) in head_ids, p.ndim > 1), []).append(p)
    out = []
    for (is_head, decay), params in sorted(groups.items()):
        out.append({"params": params, "weight_decay": weight_decay if decay else 0.0,
                    "lr_scale": head_lr_scale if is_head else 1.0, "name": ("head" if is_head else "body") +
                    ("" if decay else "_no_decay")})
    return out


def build_optimizer(cfg: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """The optimizer of ``cfg`` over ``groups`` (from :func:`param_groups`); ``cfg`` must be resolved."""
    lr = float(cfg.lr)
    if cfg.optimizer == "rmsproptf":
        return RMSpropTF(groups, lr=lr, alpha=0.9, eps=1e-3, momentum=cfg.momentum)
    if cfg.optimizer == "sgd":
        # foreach: one kernel per group instead of one per parameter (torch's CPU default is the per-tensor loop)
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, foreach=True)
    return torch.optim.AdamW(groups, lr=lr, foreach=True)


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate at global ``step``: linear warm-up, then the schedule.

    ``step``: lr × 0.97^⌊epoch / 2.4⌋ (the paper's); ``cosine``: half a cosine down to 0 at the last step.
    """
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "step":
        return 0.97 ** math.floor(step / steps_per_epoch / 2.4)
    if cfg.schedule == "cosine":
        total = cfg.epochs * steps_per_epoch
        progress = min(1.0, (step - warmup) / max(1.0, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> float:
    lr = base_lr * factor
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr
