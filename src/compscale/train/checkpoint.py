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
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compscale.errors import UserError
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
    """Delete the temporary files a killed run left beside its checkpoint (``.checkpoint.safetensors.*.tmp``:
    written, never renamed, so never part of the state); returns how many. Only the one running process of an
    output folder may call this."""
    removed = 0
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
        except (ValueError, KeyError, RuntimeError) as err:
            raise UserError(f"{self.path}: cannot restore the optimizer state: {err}") from None

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
    meta = {k: json.loads(v) for k, v in raw_meta.items() if k != "format"}
    return TrainState(path, tensors, meta)


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


def read_weights_spec(path: str | Path) -> dict[str, Any] | None:
    """The model spec recorded in a safetensors weights file's metadata (None when absent or not safetensors)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable safetensors file: {err}") from None
    try:
        return json.loads(meta["spec"]) if "spec" in meta else None
    except json.JSONDecodeError:
        return None
