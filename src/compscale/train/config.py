"""The one description of a training run: :class:`TrainConfig`, read from YAML, checked, written back.

Every run writes its *resolved* config (automatic values such as the learning rate filled in) to
``OUT/config.yaml``; ``compscale train --config OUT/config.yaml`` reproduces it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from compscale.errors import UserError, first_line

OPTIMIZERS = ("rmsproptf", "sgd", "adamw")
SCHEDULES = ("step", "cosine", "constant")

#: The paper's recipe (TF reference code), scaled linearly with the batch: lr = base × batch / 256.
BASE_LR = {"rmsproptf": 0.016, "sgd": 0.1, "adamw": 0.001 * 256 / 1024}
DEFAULT_WEIGHT_DECAY = {"rmsproptf": 1e-5, "sgd": 1e-4, "adamw": 0.05}


@dataclass
class TrainConfig:
    """Everything that decides a run's result. ``None`` means "automatic" (resolved by :meth:`resolved`)."""

    model: str = "efficientnet_b0"
    data: str = "digits"
    out: str | None = None  # default: runs/MODEL-DATA
    epochs: int = 10
    batch_size: int = 64  # global: split across the processes of a torchrun job
    resolution: int | None = None  # default: the model's
    seed: int = 0
    deterministic: bool = False
    limit_train: int | None = None
    limit_test: int | None = None  # evaluate on a fixed subset of the test set
    holdout: int | None = None  # evaluate on images held out of the training set (model selection)
    augment: str = "auto"
    optimizer: str = "rmsproptf"
    lr: float | None = None  # default: BASE_LR[optimizer] × batch_size / 256
    weight_decay: float | None = None  # default: DEFAULT_WEIGHT_DECAY[optimizer]; never on BN and biases
    momentum: float = 0.9
    schedule: str = "step"  # step: × 0.97 every 2.4 epochs (the paper's); cosine; constant
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    ema: float = 0.0  # EMA decay of the weights (the paper: 0.9999); 0 = off
    drop_rate: float | None = None  # dropout before the classifier; default: the model's
    drop_path_rate: float | None = None  # stochastic depth; default: the model's
    channels_last: bool = False
    amp: bool = False  # autocast: bf16 where supported (CUDA, or CPU), else fp16 with loss scaling on CUDA
    workers: int = 0
    device: str = "auto"
    threads: int | None = None
    eval_batch_size: int | None = None
    precise_bn: int = 0  # re-estimate BatchNorm statistics on N training images before each evaluation; 0 = off
    checkpoint_steps: int = 0  # also checkpoint every N steps (0: per epoch and every checkpoint_minutes)
    checkpoint_minutes: float = 10.0
    # transfer learning (compscale finetune)
    weights: str | None = None
    freeze_backbone: bool = False
    unfreeze_after: int | None = None  # epochs with a frozen backbone, then train everything
    head_lr: float | None = None  # default: lr

    def validate(self) -> "TrainConfig":
        if self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.resolution is not None and self.resolution < 8:
            raise UserError(f"--resolution must be at least 8, got {self.resolution}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        for name in ("lr", "head_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")
        checks = [("weight_decay", self.weight_decay is None or self.weight_decay >= 0),
                  ("warmup_epochs", self.warmup_epochs >= 0), ("label_smoothing", 0 <= self.label_smoothing < 1),
                  ("ema", 0 <= self.ema < 1), ("momentum", 0 <= self.momentum < 1),
                  ("workers", self.workers >= 0), ("checkpoint_steps", self.checkpoint_steps >= 0),
                  ("checkpoint_minutes", self.checkpoint_minutes > 0),
                  ("threads", self.threads is None or self.threads >= 1),
                  ("eval_batch_size", self.eval_batch_size is None or self.eval_batch_size >= 1),
                  ("precise_bn", self.precise_bn >= 0),
                  ("unfreeze_after", self.unfreeze_after is None or self.unfreeze_after >= 0)]
        for name, ok in checks:
            if not ok:
                raise UserError(f"invalid --{name.replace('_', '-')}: {getattr(self, name)}")
        if self.freeze_backbone and self.unfreeze_after is not None:
            raise UserError("give --freeze-backbone or --unfreeze-after N, not both")
        return self

    def resolved(self, model_resolution: int) -> "TrainConfig":
        """A copy with every automatic value filled in (what ``config.yaml`` records)."""
        return dataclasses.replace(
            self,
            out=self.out or f"runs/{self.model}-{Path(self.data).name}",
            resolution=self.resolution or model_resolution,
            lr=self.lr if self.lr is not None else BASE_LR[self.optimizer] * self.batch_size / 256,
            weight_decay=self.weight_decay if self.weight_decay is not None else DEFAULT_WEIGHT_DECAY[self.optimizer],
            eval_batch_size=self.eval_batch_size or max(self.batch_size, 64),
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.as_dict(), sort_keys=False)


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    """``value`` if it fits ``annotation`` (ints are accepted for floats), else one-line UserError."""
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None and type(None) in allowed:
        return None
    for t in allowed:
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and not isinstance(value, bool) and isinstance(value, (int, float, str)):
            # PyYAML (YAML 1.1) reads 1e-5 (no dot) as a string; accept it as the number it means.
            try:
                number = float(value)
            except (ValueError, OverflowError):  # OverflowError: an int beyond float range
                number = None
            if number is not None:
                if not math.isfinite(number):  # .nan / .inf: as on the command line (finite_float)
                    raise UserError(f"config key {name!r} must be a finite number, got {value!r}")
                return number
        if t is str and isinstance(value, str):
            return value
    names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
    raise UserError(f"config key {name!r} must be {names}, got {type(value).__name__} {value!r}")


_HINTS: dict[str, Any] | None = None


def config_from_mapping(data: Mapping[str, Any], base: TrainConfig | None = None,
                        source: str = "config") -> TrainConfig:
    """``base`` (default: defaults) updated from ``data``; unknown keys and wrong types are one-line errors."""
    global _HINTS
    if _HINTS is None:
        _HINTS = typing.get_type_hints(TrainConfig)
    if not isinstance(data, Mapping):
        raise UserError(f"{source} must be a mapping of keys to values")
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - names, key=str)  # YAML keys need not be strings (1: x, null: y)
    if unknown:
        import difflib

        close = difflib.get_close_matches(str(unknown[0]), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"{source}: unknown key {unknown[0]!r}{hint}")
    values = {k: _check_type(k, v, _HINTS[k]) for k, v in data.items()}
    return dataclasses.replace(base or TrainConfig(), **values)


def load_config(path: str | Path, base: TrainConfig | None = None) -> TrainConfig:
    """Read a YAML config file (keys are :class:`TrainConfig` fields)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise UserError(f"cannot read config {path}: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {first_line(err)}") from None
    return config_from_mapping(data or {}, base, source=str(path))
