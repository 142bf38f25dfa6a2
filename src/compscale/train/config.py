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

from compscale.errors import UserError, echo, first_line

OPTIMIZERS = ("rmsproptf", "sgd", "adamw")
SCHEDULES = ("step", "cosine", "constant")

#: Bounds on a run's counts (TrainConfig.validate; the study settings and the commands use the same).
MAX_EPOCHS = 100_000
MAX_BATCH = 65_536
#: Seeds seed torch's generator: 0 <= seed < 2**63.
MAX_SEED = 2**63 - 1
#: Images (--limit-train, --limit-test, --holdout, --precise-bn) and steps (--checkpoint-steps).
MAX_COUNT = 10**9
MAX_CHECKPOINT_MINUTES = 10**6
#: The most seeds per model a study trains (each one a full training run).
MAX_SEEDS = 1_000
#: The most local workers of a study whose storage is a database server shared with other machines (with a
#: local SQLite file: the cores).
MAX_REMOTE_WORKERS = 256
MAX_WEIGHT_DECAY = 1e3


def check_device(name: Any) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``: the devices the engine trains and evaluates on (``meta``, ``mps``
    and the like are refused here, not half way through a run)."""
    import re

    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|cuda(:[0-9]{1,3})?", name):
        raise UserError(f"unknown device {echo(name)}; use auto, cpu, cuda or cuda:N")
    return name


def cpu_count() -> int:
    """The cores this process may run on."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def max_threads() -> int:
    """The most torch threads per process: 4 per core (at least 16), at most 1024."""
    return min(1024, max(16, 4 * cpu_count()))


def max_processes() -> int:
    """The most data-loader (or local worker) processes one command may start: 4 per core, at least 8."""
    return min(1024, max(8, 4 * cpu_count()))


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
    channels_last: bool = True  # NHWC: measured 1.2-1.5x faster training on CPUs (benchmarks/bench_trials.py)
    amp: bool = False  # autocast: bf16 where supported (CUDA, or CPU), else fp16 with loss scaling on CUDA
    workers: int = 0
    device: str = "auto"
    threads: int | None = None
    eval_batch_size: int | None = None
    # Re-estimate BatchNorm statistics on N training images before each evaluation (0 = off). On by default: after a
    # short run the running averages lag the weights (EfficientNet-B0, digits, 32 px, 4 epochs: 69.7 % top-1
    # without, 80.6 % with 500 images, 80.8 % with 1000), and it costs one forward pass over N images per
    # evaluation (+20-30 % CPU there, 1,437 training images; under 1 % of an epoch on Fashion-MNIST's 60,000).
    # Studies (compscale.jobs) set their own: off unless --precise-bn.
    precise_bn: int = 500
    # Evaluate after every N-th epoch and always after the last (1: every epoch). The epochs in between are recorded
    # without test metrics (top1/top5/loss null); the weights and the final result are the same (evaluation never
    # touches the training: precise BN re-estimates from scratch and each step re-seeds). Studies use it for jobs
    # whose intermediate accuracy nothing reads: evaluation is ~10 % of a demo trial's time.
    eval_every: int = 1
    checkpoint_steps: int = 0  # also checkpoint every N steps (0: per epoch and every checkpoint_minutes)
    checkpoint_minutes: float = 10.0
    # torch.compile the training forward/backward: 20-60 s to compile per input shape on a CPU, so only worth it
    # for long runs (benchmarks/bench_train.py --compile measures both sides); off by default
    compile: bool = False
    # transfer learning (compscale finetune)
    weights: str | None = None
    freeze_backbone: bool = False
    unfreeze_after: int | None = None  # epochs with a frozen backbone, then train everything
    head_lr: float | None = None  # default: lr

    def validate(self) -> "TrainConfig":
        """Every field checked (type, range, finite), each count bounded (:data:`MAX_EPOCHS`, :data:`MAX_BATCH`,
        :data:`MAX_SEED`, :func:`max_threads`, :func:`max_processes`...), before anything is loaded or built."""
        global _HINTS
        if _HINTS is None:
            _HINTS = typing.get_type_hints(TrainConfig)
        for f in fields(self):  # the API may hand any value to any field: the types first (ints become floats)
            setattr(self, f.name, _check_type(f.name, getattr(self, f.name), _HINTS[f.name]))
        if self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.resolution is not None and self.resolution < 8:
            raise UserError(f"--resolution must be at least 8, got {self.resolution}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {echo(self.optimizer)}; use one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule {echo(self.schedule)}; use one of {', '.join(SCHEDULES)}")
        for name in ("lr", "head_lr"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")
        for name, value, hi in (("model", self.model, 4096), ("data", self.data, 4096)):
            if not value or len(value) > hi or "\x00" in value:
                raise UserError(f"--{name} must be a name or path of 1 to {hi} characters, got {echo(value)}")
        check_device(self.device)
        checks = [("weight_decay", self.weight_decay is None or 0 <= self.weight_decay <= MAX_WEIGHT_DECAY),
                  ("warmup_epochs", 0 <= self.warmup_epochs <= MAX_EPOCHS),
                  ("label_smoothing", 0 <= self.label_smoothing < 1),
                  ("ema", 0 <= self.ema < 1), ("momentum", 0 <= self.momentum < 1),
                  ("workers", self.workers >= 0), ("checkpoint_steps", 0 <= self.checkpoint_steps <= MAX_COUNT),
                  ("checkpoint_minutes", 0 < self.checkpoint_minutes <= MAX_CHECKPOINT_MINUTES),
                  ("threads", self.threads is None or self.threads >= 1),
                  ("eval_batch_size", self.eval_batch_size is None or self.eval_batch_size >= 1),
                  ("precise_bn", 0 <= self.precise_bn <= MAX_COUNT),
                  ("eval_every", 1 <= self.eval_every <= MAX_EPOCHS),
                  ("unfreeze_after", self.unfreeze_after is None or 0 <= self.unfreeze_after <= MAX_EPOCHS),
                  ("drop_rate", self.drop_rate is None or 0 <= self.drop_rate < 1),
                  ("drop_path_rate", self.drop_path_rate is None or 0 <= self.drop_path_rate < 1)]
        for name, ok in checks:
            if not ok:
                raise UserError(f"invalid --{name.replace('_', '-')}: {getattr(self, name)}")
        self._check_counts()
        if self.freeze_backbone and self.unfreeze_after is not None:
            raise UserError("give --freeze-backbone or --unfreeze-after N, not both")
        return self

    def _check_counts(self) -> None:
        """The bounds that keep a run from asking for more than any machine has: one line naming the flag, the
        bound and how to stay within it."""
        from compscale.scaling import MAX_RESOLUTION

        bounds = [("epochs", self.epochs, MAX_EPOCHS), ("batch_size", self.batch_size, MAX_BATCH),
                  ("eval_batch_size", self.eval_batch_size, MAX_BATCH), ("resolution", self.resolution, MAX_RESOLUTION),
                  ("seed", self.seed, MAX_SEED), ("threads", self.threads, max_threads()),
                  ("workers", self.workers, max_processes()), ("limit_train", self.limit_train, MAX_COUNT),
                  ("limit_test", self.limit_test, MAX_COUNT), ("holdout", self.holdout, MAX_COUNT)]
        for name, value, hi in bounds:
            if value is not None and value > hi:
                raise UserError(f"--{name.replace('_', '-')} must be at most {hi:,}, got {echo(value)}")
        if self.seed < 0:
            raise UserError(f"--seed must be from 0 to {MAX_SEED:,} (2**63 - 1), got {self.seed}")
        for name in ("limit_train", "limit_test", "holdout"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a positive number of images, got {value}")

    def resolved(self, model_resolution: int) -> "TrainConfig":
        """A copy with every automatic value filled in (what ``config.yaml`` records)."""
        return dataclasses.replace(
            self,
            out=self.out or default_out(self.model, self.data),
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
                    raise UserError(f"config key {name!r} must be a finite number, got {echo(value)}")
                return number
        if t is str and isinstance(value, str):
            return value
    names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
    raise UserError(f"config key {name!r} must be {names}, got {type(value).__name__} {echo(value)}")


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
        raise UserError(f"{source}: unknown key {echo(unknown[0])}{hint}")
    values = {k: _check_type(k, v, _HINTS[k]) for k, v in data.items()}
    return dataclasses.replace(base or TrainConfig(), **values)


#: A config file larger than this is refused unread (real ones are under 2 kB).
MAX_CONFIG_BYTES = 1 << 20


def load_config(path: str | Path, base: TrainConfig | None = None) -> TrainConfig:
    """Read a YAML config file (keys are :class:`TrainConfig` fields)."""
    import yaml

    path = Path(path)
    try:
        if path.exists() and not path.is_file():  # a FIFO would block the read; a folder is no config
            raise UserError(f"cannot read config {path}: not a regular file")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:  # PyYAML takes minutes over megabytes; a config is a few hundred bytes
            raise UserError(f"config {path} is larger than {MAX_CONFIG_BYTES // 1024} kB: not a config file")
        text = raw.decode("utf-8")
    except OSError as err:
        raise UserError(f"cannot read config {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise UserError(f"config {path} is not UTF-8 text ({first_line(err)})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {first_line(err)}") from None
    except RecursionError:
        raise UserError(f"{path} is nested too deeply to be a config") from None
    try:
        return config_from_mapping(data or {}, base, source=str(path))
    except RecursionError:  # a value nested too deeply for Python to handle
        raise UserError(f"{path} holds a value nested too deeply to read") from None


def default_out(model: str, data: str) -> str:
    """A run's default output folder: ``runs/MODEL-DATA``, MODEL the reference's label (a registered name, a spec
    or weights file's name, the ``name`` of ``module:name``)."""
    from compscale.models.registry import reference_label

    return f"runs/{reference_label(model)}-{Path(data).name}"
