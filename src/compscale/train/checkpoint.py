"""Resumable training state in one safetensors file, written atomically.

``OUT/checkpoint.safetensors`` holds every tensor a run needs to continue: the model (``model/…``), its
EMA (``ema/…``), the optimizer state (``optim/<param index>/<name>``) and the loss scaler (``scaler/…``).
Everything else (epoch, step within the epoch, global step, the optimizer's hyper-parameters, the config,
the metrics history, the model's spec) is JSON in the safetensors metadata. One file written through
:func:`compscale.io.atomic_path` means a kill at any moment leaves either the previous checkpoint or the new
one, never a mix; reading it never unpickles anything.

The data order and the random state need no tensors: the sample order of an epoch is a function of
(seed, epoch), each sample's augmentation of (seed, epoch, index), and the RNG of each training step is
re-seeded from (seed, rank, step). So (epoch, step) *is* the data-order and RNG state.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compscale.errors import UserError, echo, first_line
from compscale.io import atomic_path

FORMAT = "compscale-train-state/1"
CHECKPOINT_NAME = "checkpoint.safetensors"
#: Test hook: while writing the checkpoint of this global step, after the data is in the temporary file and
#: before the atomic rename, announce it on stderr and sleep, so a test can SIGKILL the run mid-write.
PAUSE_SAVE_ENV = "COMPSCALE_TEST_PAUSE_IN_CHECKPOINT"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{pid}/{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(path: str | Path, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                    ema: nn.Module | None, scaler: torch.amp.GradScaler | None, meta: dict[str, Any]) -> None:
    """Write the training state; ``meta`` (JSON-able: epoch, step, config, history, spec) goes to metadata."""
    from compscale.models.weights import save_safetensors

    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema/{k}": v for k, v in ema.state_dict().items()})
    optim_tensors, optim_meta = _optimizer_tensors(optimizer)
    tensors.update(optim_tensors)
    if scaler is not None and scaler.is_enabled():
        sd = scaler.state_dict()
        tensors["scaler/scale"] = torch.tensor(float(sd.get("scale", 1.0)), dtype=torch.float64)
        meta = {**meta, "scaler": {k: v for k, v in sd.items() if k != "scale"}}
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}
    metadata = {"format": FORMAT, "optimizer": json.dumps(optim_meta),
                **{k: json.dumps(v) for k, v in meta.items()}}
    with atomic_path(path) as tmp:
        save_safetensors(tensors, tmp, metadata, path)
        if os.environ.get(PAUSE_SAVE_ENV) == str(meta.get("global_step")):
            print(f"compscale: paused writing the checkpoint of step {meta.get('global_step')}", file=sys.stderr,
                  flush=True)
            time.sleep(3600)


def remove_stale_temporaries(out: str | Path) -> int:
    """Delete the temporary files a killed run left beside its checkpoint (``.cs-*.tmp`` and staging folders,
    and ``.checkpoint.safetensors.*.tmp`` of older versions: written, never renamed, so never part of the
    state); returns how many. Only the one running process of an output folder may call this."""
    from compscale.io import remove_stale_temporaries as remove_orphans

    removed = remove_orphans(out)
    for tmp in Path(out).glob(f".{CHECKPOINT_NAME}.*.tmp"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


class TrainState:
    """A loaded checkpoint: the tensors by section and the decoded metadata."""

    def __init__(self, path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.path, self.tensors, self.meta = path, tensors, meta

    def section(self, prefix: str) -> dict[str, torch.Tensor]:
        n = len(prefix) + 1
        return {k[n:]: v for k, v in self.tensors.items() if k.startswith(prefix + "/")}

    def restore_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        optim_meta = self.meta["optimizer"]
        state: dict[int, dict[str, Any]] = {}
        for key, value in self.section("optim").items():
            pid, name = key.split("/", 1)
            state.setdefault(int(pid), {})[name] = value
        for pid, scalars in optim_meta["scalars"].items():
            state.setdefault(int(pid), {}).update(scalars)
        groups = optim_meta["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in optimizer.param_groups]:
            raise UserError(f"{self.path}: the optimizer state does not fit this model and optimizer")
        try:
            optimizer.load_state_dict({"state": state, "param_groups": groups})
        except (ValueError, KeyError, RuntimeError, TypeError, IndexError) as err:
            raise UserError(f"{self.path}: cannot restore the optimizer state: {first_line(err)}") from None

    def restore_scaler(self, scaler: torch.amp.GradScaler | None) -> None:
        if scaler is None or not scaler.is_enabled() or "scaler/scale" not in self.tensors:
            return
        scaler.load_state_dict({"scale": float(self.tensors["scaler/scale"]), **self.meta.get("scaler", {})})


def load_checkpoint(path: str | Path) -> TrainState:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors and JSON only; nothing is unpickled)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            raw_meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable checkpoint: {err}") from None
    if raw_meta.get("format") != FORMAT:
        raise UserError(f"{path} is not a compscale training checkpoint")
    meta = {}
    for key, text in raw_meta.items():
        if key == "format":
            continue
        try:
            meta[key] = json.loads(text)
        except (ValueError, RecursionError) as err:  # JSONDecodeError, an int of 5,000 digits, nesting
            raise UserError(f"{path}: its {echo(key)} entry is not valid JSON ({first_line(err)})") from None
    try:
        _check_meta(meta)
        _check_tensors(tensors)
    except UserError as err:
        raise UserError(f"{path} is not a valid checkpoint: {err}") from None
    return TrainState(path, tensors, meta)


#: The most epochs a run (and so a checkpoint) may have: TrainConfig's own bound.
MAX_CHECKPOINT_EPOCHS = 100_000
#: The most optimisation steps one epoch may have in a checkpoint.
MAX_STEPS_PER_EPOCH = 10**9


def _count(name: str, value: Any, hi: int, lo: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise UserError(f"{name} must be an integer from {lo} to {hi:,}, got {echo(value)}")
    return value


def _finite(name: str, value: Any, lo: float = -math.inf, hi: float = math.inf) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not lo <= value <= hi):
        raise UserError(f"{name} must be a finite number in [{lo:g}, {hi:g}], got {echo(value)}")
    return float(value)


def _check_history(history: Any, epoch: int) -> None:
    """One record per finished epoch: epoch k+1 at index k, its losses finite, its accuracies in [0, 1]."""
    if not isinstance(history, list) or len(history) > epoch:
        raise UserError(f"history must be a list of at most {epoch} epoch records, got {echo(history)}")
    for i, record in enumerate(history):
        if not isinstance(record, dict) or record.get("epoch") != i + 1 or isinstance(record.get("epoch"), bool):
            raise UserError(f"history[{i}] must be the record of epoch {i + 1}, got {echo(record)}")
        for key in ("train_loss", "loss"):  # a test loss may be NaN (a diverged evaluation), never negative
            value = record.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise UserError(f"history[{i}].{key} must be a loss (a number >= 0), got {echo(value)}")
        for key in ("top1", "top5"):
            _finite(f"history[{i}].{key}", record.get(key), 0.0, 1.0)


def _check_optimizer(optim: Any) -> None:
    """The optimizer's JSON part: its parameter groups (parameter indices, finite hyper-parameters) and
    per-parameter scalars."""
    if not isinstance(optim, dict) or not isinstance(optim.get("param_groups"), list) \
            or not isinstance(optim.get("scalars"), dict):
        raise UserError(f"optimizer must be a mapping of param_groups and scalars, got {echo(optim)}")
    for i, group in enumerate(optim["param_groups"]):
        if not isinstance(group, dict) or not isinstance(group.get("params"), list):
            raise UserError(f"optimizer param_groups[{i}] must be a mapping with params, got {echo(group)}")
        for p in group["params"]:
            _count(f"optimizer param_groups[{i}].params", p, 10**9)
        for key, value in group.items():
            if key == "params" or value is None or isinstance(value, (bool, str)):
                continue
            values = value if isinstance(value, list) else [value]
            for v in values:
                _finite(f"optimizer param_groups[{i}].{key}", v)
    for pid, scalars in optim["scalars"].items():
        if not pid.isdecimal() or not isinstance(scalars, dict):
            raise UserError(f"optimizer scalars must map parameter indices to mappings, got {echo(pid)}")
        for key, value in scalars.items():
            if value is not None and not isinstance(value, bool):
                _finite(f"optimizer scalars[{pid}].{key}", value)


def _check_meta(meta: dict[str, Any]) -> None:
    """Every entry the engine reads back, checked: a hostile or damaged file is one line, never a traceback,
    a negative epoch or a loop that never ends."""
    for key in ("epoch", "step_in_epoch", "optimizer"):
        if key not in meta:
            raise UserError(f"it has no {key!r} entry")
    epoch = _count("epoch", meta["epoch"], MAX_CHECKPOINT_EPOCHS)
    _count("step_in_epoch", meta["step_in_epoch"], MAX_STEPS_PER_EPOCH)
    if "global_step" in meta:
        _count("global_step", meta["global_step"], MAX_CHECKPOINT_EPOCHS * MAX_STEPS_PER_EPOCH)
    _check_history(meta.get("history", []), epoch)
    _count("ema_updates", meta.get("ema_updates", 0), 10**15)
    loss = meta.get("epoch_loss", [0.0, 0])
    if not isinstance(loss, list) or len(loss) != 2:
        raise UserError(f"epoch_loss must be [loss sum, images], got {echo(loss)}")
    _finite("epoch_loss[0]", loss[0], 0.0)
    _count("epoch_loss[1]", loss[1], 10**15)
    _check_optimizer(meta["optimizer"])
    for key in ("config", "scaler"):
        if key in meta and not isinstance(meta[key], dict):
            raise UserError(f"{key} must be a mapping, got {echo(meta[key])}")
    for key, value in meta.get("scaler", {}).items():
        if value is not None and not isinstance(value, bool):
            _finite(f"scaler.{key}", value)
    if "spec" in meta:
        from compscale.specs import spec_from_dict

        try:
            spec_from_dict(meta["spec"])
        except RecursionError:
            raise UserError("its spec is nested too deeply") from None
        except UserError as err:
            raise UserError(f"its spec is invalid: {err}") from None


def _check_tensors(tensors: dict[str, torch.Tensor]) -> None:
    """No NaN or infinite value anywhere; the EMA's tensors of the model's kinds (float or integer); the
    optimizer's keys ``optim/<parameter index>/<name>``."""
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(f"{echo(key)} holds NaN or infinite values")
        if tensor.is_complex():
            raise UserError(f"{echo(key)} holds complex values")
        if key.startswith("ema/") and f"model/{key[4:]}" in tensors:
            if tensor.is_floating_point() != tensors[f"model/{key[4:]}"].is_floating_point():
                kind = str(tensor.dtype).replace("torch.", "")
                raise UserError(f"{echo(key)} holds {kind} values, unlike the model's")
        if key.startswith("optim/"):
            parts = key.split("/")
            if len(parts) != 3 or not parts[1].isdecimal() or not parts[2]:
                raise UserError(f"{echo(key)} is not an optimizer state key (optim/<index>/<name>)")
        if key.startswith("model/") and tensor.dtype == torch.bool:
            raise UserError(f"{echo(key)} holds bool values")


def spec_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The first architecture field on which two spec dicts differ (resolution and dropout rates may differ)."""
    loose = {"resolution", "dropout", "drop_path_rate"}
    saved, current = json.loads(json.dumps(saved)), json.loads(json.dumps(current))  # tuples become lists
    for key in sorted(set(saved) | set(current)):
        if key in loose:
            continue
        if saved.get(key) != current.get(key):
            return key
    return None


def check_weights_spec(path: str | Path, saved: dict[str, Any] | None, current: dict[str, Any], name: str) -> None:
    """One line when a file records a different architecture than ``name`` (same shapes are not enough:
    e.g. SAME vs symmetric padding)."""
    if saved is None:
        return
    field = spec_mismatch(saved, current)
    if field is not None:
        def short(v: Any) -> str:
            text = json.dumps(v)
            return text if len(text) <= 40 else text[:37] + "..."

        raise UserError(f"{path} holds weights of another model than {name} ({field}: {short(saved.get(field))} "
                        f"there, {short(current.get(field))} here)")


def read_checkpoint_config(path: str | Path) -> dict[str, Any] | None:
    """The resolved config a checkpoint was trained with, read from its metadata alone (no tensor is loaded);
    None when the file is absent or unreadable (resuming it then says why)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
        config = json.loads(meta.get("config", "null"))
    except (SafetensorError, OSError, ValueError, RecursionError):
        return None
    return config if isinstance(config, dict) else None


def read_weights_spec(path: str | Path) -> dict[str, Any] | None:
    """The model spec recorded in a safetensors weights file's metadata, every field checked (None when absent
    or not safetensors; one line naming the file when it is not a valid spec)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable safetensors file: {err}") from None
    if "spec" not in meta:
        return None
    from compscale.specs import spec_from_json

    try:
        return spec_from_json(meta["spec"]).as_dict()
    except UserError as err:
        raise UserError(f"{path} records an invalid model spec in its metadata: {err}") from None
    except RecursionError:
        raise UserError(f"{path} records an invalid model spec in its metadata: nested too deeply") from None


def weights_metadata(cfg: Any, data: Any, final: dict[str, Any]) -> dict[str, str]:
    """What a trained ``model.safetensors`` records beside its spec (``cfg``: the run's resolved config; ``data``:
    its :class:`~compscale.data.DataBundle`): the model's name (``model``: the label of its reference), the data
    it was trained on, its final top-1, the class names (``classes``: the
    ImageFolder's class folders or the built-in dataset's names, shown by predict, eval and cam) and the
    preprocessing the training used (``preprocess``: side and normalisation, so that predict and cam feed the
    model what it was trained on)."""
    from compscale.models.registry import MAX_LABEL, reference_label
    from compscale.pretrained import Preprocess

    meta = {"top1": str(final.get("top1")), "data": cfg.data, "model": reference_label(cfg.model)[:MAX_LABEL]}
    if all(isinstance(c, str) and 0 < len(c) <= MAX_LABEL and c.isprintable() for c in data.classes):
        meta["classes"] = json.dumps(list(data.classes))
    if data.channels in (1, 3):
        meta["preprocess"] = Preprocess(resolution=cfg.resolution, crop_pct=1.0, in_chans=data.channels,
                                        mean=tuple(255.0 * m for m in data.mean),
                                        std=tuple(255.0 * s for s in data.std)).to_json()
    return meta
