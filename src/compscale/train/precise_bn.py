"""Precise BatchNorm: re-estimate the running statistics with the weights fixed, before evaluating.

During training each BatchNorm keeps an exponential moving average of its batch statistics, which trails the
weights: after a short schedule (a search proxy of a few epochs, a quick fine-tune) the averages still mix in
statistics of much earlier weights, and eval-mode accuracy understates what the network has learned (the
test loss jumps while the training loss falls). Wu & Johnson, "Rethinking 'Batch' in BatchNorm" (2021), and
pycls's ``compute_precise_bn_stats`` recompute them over a few thousand training images instead. Here the
per-batch statistics are averaged with weights proportional to batch size, so the mean is exactly the mean
over all the images seen.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

__all__ = ["recalibrate_batchnorm"]


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace every BatchNorm's running mean and variance by their average over ``batches`` (ready model
    inputs), with dropout and stochastic depth off and no gradient; returns the number of images seen.

    ``model`` is left in eval mode, its momentum values as they were. No batches: nothing is changed.
    """
    # A BatchNorm without running statistics always normalises by the batch: nothing to estimate there.
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    model.eval()  # dropout and stochastic depth off; only the BatchNorm layers gather statistics
    for m in norms:
        m.reset_running_stats()
        m.train()
    seen = 0
    try:
        with torch.no_grad():
            for x in batches:
                seen += len(x)
                for m in norms:  # running ← running + (n_b / seen)·(batch − running): a size-weighted average
                    m.momentum = len(x) / seen
                model(x)
    finally:
        for m, (momentum, mean, var, count) in zip(norms, saved):
            m.momentum = momentum
            if seen == 0:  # nothing to average over: keep what was there
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
        model.eval()
    return seen
