"""Training, evaluation and transfer learning: the loop, TF-style RMSProp, EMA, resumable checkpoints, torchrun.

``train(TrainConfig(...))`` runs a configuration end to end; ``evaluate`` / ``eval_model`` measure top-1/top-5
and the confusion matrix. Names load lazily so that ``compscale.train.config`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "compscale.train.config",
    "load_config": "compscale.train.config",
    "train": "compscale.train.loop",
    "evaluate": "compscale.train.evaluate",
    "eval_model": "compscale.train.evaluate",
    "EvalResult": "compscale.train.evaluate",
    "RMSpropTF": "compscale.train.optim",
    "ModelEma": "compscale.train.ema",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'compscale.train' has no attribute {name!r}")
