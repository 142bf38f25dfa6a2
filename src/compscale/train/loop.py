"""The training and evaluation loops: one process or a torchrun job, resumable bit for bit.

:func:`train` runs a :class:`~compscale.train.config.TrainConfig` end to end and leaves in ``cfg.out``:
``model.safetensors`` (final weights; the EMA weights when EMA is on), ``config.yaml`` (the resolved
config), ``metrics.jsonl`` (one record per epoch), ``metrics.png`` and ``checkpoint.safetensors`` (the
resume state). Progress goes through a :class:`TrainCallback`; the library itself never prints.

Bit-for-bit resumption (``deterministic=True``) rests on three facts: the checkpoint holds every tensor of
the state (:mod:`compscale.train.checkpoint`), the data order is a function of (seed, epoch)
(:class:`~compscale.train.distributed.GlobalBatchSampler`), and the RNG used by dropout and stochastic depth
is re-seeded at every step from (seed, rank, step), so no RNG state has to be carried across a restart.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compscale.data import BatchPreparer, DataBundle, collate, load_dataset
from compscale.errors import UserError, first_line
from compscale.io import atomic_path, atomic_write_text
from compscale.models.registry import model_spec
from compscale.specs import is_spec_file
from compscale.train.checkpoint import (CHECKPOINT_NAME, load_checkpoint, read_weights_spec,
                                        remove_stale_temporaries, save_checkpoint, spec_mismatch)
from compscale.train.config import TrainConfig
from compscale.train.distributed import (DistInfo, GlobalBatchSampler, all_reduce_sum, derive_seed,
                                         init_distributed, shutdown)
from compscale.train.ema import ModelEma
from compscale.train.optim import build_optimizer, lr_factor, param_groups, set_lr

#: Test hook: after this global step (and its checkpoint, if any) the run announces itself on stderr and
#: sleeps, so a test can SIGKILL it at a known point.
PAUSE_ENV = "COMPSCALE_TEST_PAUSE_AT_STEP"
#: Config keys that fix the data order and the optimisation: a resumed run must keep them.
RESUME_KEYS = ("model", "data", "batch_size", "seed", "limit_train", "holdout", "augment", "optimizer", "resolution",
               "weights")


class TrainCallback:
    """Hooks for progress reporting (the CLI draws progress bars with them). All no-ops here."""

    def on_start(self, info: dict[str, Any]) -> None: ...

    def on_epoch_start(self, epoch: int, epochs: int, steps: int, start_step: int) -> None: ...

    def on_step(self, step: int, loss: torch.Tensor, lr: float) -> None: ...

    def on_epoch_end(self, record: dict[str, Any]) -> None: ...


# --- evaluation ------------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    """Top-1/top-5 accuracy (fractions), mean loss, and the confusion matrix (rows: true, columns: predicted)."""

    loss: float
    top1: float
    top5: float
    count: int
    confusion: torch.Tensor

    @property
    def per_class(self) -> list[float | None]:
        totals = self.confusion.sum(1)
        return [None if t == 0 else float(self.confusion[i, i] / t) for i, t in enumerate(totals.tolist())]

    def as_dict(self) -> dict[str, Any]:
        return {"loss": self.loss, "top1": self.top1, "top5": self.top5, "count": self.count}


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, loader: torch.utils.data.DataLoader, prep: BatchPreparer, num_classes: int,
             info: DistInfo = DistInfo(), amp_dtype: torch.dtype | None = None) -> EvalResult:
    """Accuracy of ``model`` over ``loader`` (each process its shard; sums are combined across processes)."""
    model.eval()
    device = prep.device
    k = min(5, num_classes)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct5 = torch.zeros((), dtype=torch.int64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    for x, y in loader:
        x, y = prep(x), y.to(device)
        with _autocast(device, amp_dtype):
            logits = model(x)
        logits = logits.float()
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").double()
        topk = logits.topk(k, dim=1).indices
        correct5 += (topk == y[:, None]).any(1).sum()
        confusion += torch.bincount(y * num_classes + topk[:, 0], minlength=num_classes * num_classes)
    for t in (loss_sum, correct5, confusion):
        all_reduce_sum(t, info)
    confusion = confusion.view(num_classes, num_classes).cpu()
    count = int(confusion.sum())
    if count == 0:
        raise UserError("the evaluation set is empty")
    return EvalResult(float(loss_sum) / count, float(confusion.trace()) / count, int(correct5) / count, count, confusion)


def eval_loader(dataset: torch.utils.data.Dataset, batch_size: int, info: DistInfo, workers: int = 0):
    """Process r evaluates samples r, r+N, r+2N, …: every sample exactly once (no padding)."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=range(info.rank, len(dataset), info.world_size),
                                       num_workers=workers, collate_fn=collate, pin_memory=info.device.type == "cuda")


# --- building the model ----------------------------------------------------------------------------------


def build_for_data(cfg: TrainConfig, data: DataBundle) -> nn.Module:
    """The model of ``cfg`` for ``data``: from scratch (classes and input channels of the data), or, when
    ``cfg.weights`` is given, the pretrained model with a new classifier for the data's classes."""
    from compscale.models.registry import build_model, resolve_spec
    from compscale.models.weights import load_weights

    base = model_spec(cfg.model)
    if cfg.weights is None:
        spec = resolve_spec(base, data.num_classes, data.channels, cfg.drop_rate, cfg.drop_path_rate, cfg.resolution)
        return build_model(spec)
    saved = read_weights_spec(cfg.weights)
    spec = resolve_spec(base, saved.get("num_classes", base.num_classes) if saved else None,
                        saved.get("in_chans", base.in_chans) if saved else None, cfg.drop_rate, cfg.drop_path_rate,
                        cfg.resolution)
    check_weights_spec(cfg.weights, saved, spec.as_dict(), cfg.model)
    model = build_model(spec)
    load_weights(model, cfg.weights)
    if not hasattr(model, "reset_classifier"):
        raise UserError(f"{cfg.model} has no classifier to replace")
    model.reset_classifier(data.num_classes)
    model.spec = spec.replace(num_classes=data.num_classes)
    return model


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


# --- training --------------------------------------------------------------------------------------------


def train_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
               criterion: nn.Module, scaler: torch.amp.GradScaler, amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """One optimisation step (forward under autocast, scaled backward, optimizer step); returns the loss."""
    with _autocast(x.device, amp_dtype):
        loss = criterion(net(x), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def train(cfg: TrainConfig, resume: bool = False, callback: TrainCallback | None = None) -> dict[str, Any]:
    """Run ``cfg`` (resuming from ``cfg.out`` when asked and a checkpoint is there); the final metrics."""
    cfg.validate()
    if cfg.deterministic:
        # cuBLAS needs this before its first use to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    info = init_distributed(cfg.device)
    # Process-wide settings a run changes (threads, deterministic kernels) are put back afterwards.
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    try:
        return _Run(cfg, info, resume, callback or TrainCallback()).run()
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])
        torch.backends.cudnn.benchmark = saved[2]
        shutdown(info)


class _Run:
    def __init__(self, cfg: TrainConfig, info: DistInfo, resume: bool, cb: TrainCallback) -> None:
        self.info, self.cb = info, cb
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif info.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.cfg = cfg = cfg.resolved(model_spec(cfg.model).resolution)
        self.out = Path(cfg.out)
        self.device = info.device
        self.data = load_dataset(cfg.data, cfg.resolution, cfg.augment, cfg.limit_train, cfg.limit_test, cfg.holdout)
        self.cfg = cfg = replace(cfg, augment=self.data.augment)

        torch.manual_seed(cfg.seed)  # the initial weights
        self.model = build_for_data(cfg, self.data).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.head = self.model.get_classifier() if cfg.weights is not None else None
        head_scale = (cfg.head_lr / cfg.lr) if (cfg.head_lr and self.head is not None) else 1.0
        self.optimizer = build_optimizer(cfg, param_groups(self.model, cfg.weight_decay, self.head, head_scale))
        self.ema = ModelEma(self.model, cfg.ema) if cfg.ema > 0 else None
        self.amp_dtype = None
        if cfg.amp:
            cuda = self.device.type == "cuda"
            self.amp_dtype = torch.bfloat16 if (not cuda or torch.cuda.is_bf16_supported()) else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.prep = BatchPreparer(self.data, cfg.resolution, self.model.spec.in_chans, self.device, cfg.channels_last)

        self.sampler = GlobalBatchSampler(len(self.data.train), cfg.batch_size, info, cfg.seed,
                                          augment=self.data.augment != "none")
        self.train_loader = torch.utils.data.DataLoader(
            self.data.train, batch_size=self.sampler.local_batch, sampler=self.sampler, num_workers=cfg.workers,
            collate_fn=collate, pin_memory=self.device.type == "cuda", generator=torch.Generator())
        self.test_loader = eval_loader(self.data.test, cfg.eval_batch_size, info, cfg.workers)
        self.steps_per_epoch = self.sampler.steps_per_epoch

        self.start_epoch, self.start_step, self.history = 0, 0, []
        self.resumed_loss: tuple[float, int] = (0.0, 0)
        self.epoch_loss: tuple[torch.Tensor | float, int] = (0.0, 0)
        if resume:
            self._resume()
        self.frozen: bool | None = None
        self.net: nn.Module = self.model

    # -- state ------------------------------------------------------------------------------------------

    def _resume(self) -> None:
        path = self.out / CHECKPOINT_NAME
        if self.info.is_main:
            remove_stale_temporaries(self.out)  # a run killed while checkpointing leaves its unrenamed file
        if not path.is_file():
            return  # nothing saved yet (killed before the first checkpoint): start from the beginning
        state = load_checkpoint(path)
        check_weights_spec(path, state.meta.get("spec"), self.model.spec.as_dict(), self.cfg.model)
        saved_cfg = state.meta.get("config", {})
        for key in RESUME_KEYS:
            if key == "model" and is_spec_file(saved_cfg.get(key)) and is_spec_file(self.cfg.model):
                continue  # a spec file may move with its study folder: its architecture was compared just above
            if key in saved_cfg and saved_cfg[key] != getattr(self.cfg, key):
                raise UserError(f"cannot resume {path}: {key} was {saved_cfg[key]!r}, now {getattr(self.cfg, key)!r}")
        from compscale.models.weights import convert_state_dict

        self.model.load_state_dict(convert_state_dict(self.model, state.section("model"), "compscale"))
        if self.ema is not None:
            ema_state = state.section("ema")
            if not ema_state:
                raise UserError(f"cannot resume {path} with --ema: the run was started without EMA")
            self.ema.load_state_dict(ema_state, state.meta.get("ema_updates", 0))
        state.restore_optimizer(self.optimizer)
        state.restore_scaler(self.scaler)
        self.start_epoch, self.start_step = int(state.meta["epoch"]), int(state.meta["step_in_epoch"])
        self.history = list(state.meta.get("history", []))
        self.resumed_loss = tuple(state.meta.get("epoch_loss", [0.0, 0]))

    def _save(self, epoch: int, step_in_epoch: int) -> None:
        if not self.info.is_main:
            return
        meta = {"epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": epoch * self.steps_per_epoch + step_in_epoch,
                "config": self.cfg.as_dict(), "history": self.history, "spec": self.model.spec.as_dict(),
                "ema_updates": self.ema.updates if self.ema else 0,
                # This process's share of the epoch's training loss so far (for the epoch's mean on resume).
                "epoch_loss": [float(self.epoch_loss[0]), self.epoch_loss[1]] if step_in_epoch else [0.0, 0]}
        save_checkpoint(self.out / CHECKPOINT_NAME, model=self.model, optimizer=self.optimizer,
                        ema=self.ema.module if self.ema else None, scaler=self.scaler, meta=meta)
        self.last_save = time.monotonic()

    # -- freezing (transfer learning) -------------------------------------------------------------------

    def _set_frozen(self, frozen: bool) -> None:
        """Train only the head (``frozen``) or everything; (re)wrap in DDP since its hooks follow requires_grad."""
        if frozen == self.frozen:
            return
        self.frozen = frozen
        head_ids = {id(p) for p in self.head.parameters()} if self.head is not None else set()
        for p in self.model.parameters():
            p.requires_grad_(not frozen or id(p) in head_ids)
        if self.info.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device] if self.device.type == "cuda" else None
            self.net = DDP(self.model, device_ids=ids)

    def _train_mode(self) -> None:
        if self.frozen:
            # A frozen backbone keeps its BatchNorm statistics (and dropout off): a linear probe.
            self.model.eval()
            self.head.train()
        else:
            self.model.train()

    # -- the loop ---------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        cfg, info = self.cfg, self.info
        if info.is_main:
            atomic_write_text(self.out / "config.yaml", cfg.to_yaml())
        self.cb.on_start({"model": cfg.model, "data": self.data.name, "train": len(self.data.train),
                          "test": len(self.data.test), "classes": self.data.num_classes,
                          "channels": self.data.channels, "notes": self.data.notes, "resumed_epoch": self.start_epoch,
                          "resumed_step": self.start_step, "world_size": info.world_size, "device": str(self.device),
                          "resolution": cfg.resolution, "lr": cfg.lr, "steps_per_epoch": self.steps_per_epoch})
        pause_at = int(os.environ.get(PAUSE_ENV, "-1"))
        self.last_save = time.monotonic()
        spe = self.steps_per_epoch
        for epoch in range(self.start_epoch, cfg.epochs):
            frozen = self.head is not None and (cfg.freeze_backbone or
                                                (cfg.unfreeze_after is not None and epoch < cfg.unfreeze_after))
            self._set_frozen(frozen)
            self._train_mode()
            start = self.start_step if epoch == self.start_epoch else 0
            self.sampler.set_epoch(epoch, start)
            self.cb.on_epoch_start(epoch, cfg.epochs, spe, start)
            loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
            seen, lr, t0 = 0, cfg.lr, time.perf_counter()
            if start > 0:  # the part of this epoch's training loss summed before the checkpoint
                loss_sum += self.resumed_loss[0]
                seen = self.resumed_loss[1]
            self.epoch_loss = (loss_sum, 0)
            for i, (x, y) in enumerate(self.train_loader, start=start):
                step = epoch * spe + i
                torch.manual_seed(derive_seed(cfg.seed, info.rank, step))  # dropout / stochastic depth
                lr = set_lr(self.optimizer, cfg.lr, lr_factor(step, spe, cfg))
                loss = self._step(self.prep(x), y.to(self.device, non_blocking=True))
                loss_sum += loss.detach().double() * len(y)
                seen += len(y)
                self.epoch_loss = (loss_sum, seen)
                self.cb.on_step(i + 1, loss.detach(), lr)
                if i + 1 < spe and ((cfg.checkpoint_steps and (step + 1) % cfg.checkpoint_steps == 0)
                                    or time.monotonic() - self.last_save > 60 * cfg.checkpoint_minutes):
                    self._save(epoch, i + 1)
                if step == pause_at:
                    print(f"compscale: paused at step {step}", file=sys.stderr, flush=True)
                    time.sleep(3600)
            train_time = time.perf_counter() - t0
            totals = all_reduce_sum(torch.tensor([float(loss_sum), seen], dtype=torch.float64, device=self.device), info)
            self._sync_buffers()
            evaluated = self.ema.module if self.ema else self.model
            if cfg.precise_bn:
                self._precise_bn(evaluated)
            result = evaluate(evaluated, self.test_loader, self.prep, self.data.num_classes, info, self.amp_dtype)
            record = {"epoch": epoch + 1, "step": (epoch + 1) * spe, "lr": lr,
                      "train_loss": float(totals[0] / max(1.0, float(totals[1]))), "loss": result.loss,
                      "top1": result.top1, "top5": result.top5,
                      "img_s": float(totals[1]) / train_time if train_time > 0 else None,
                      "epoch_time_s": train_time, "ema": self.ema is not None}
            if start > 0:
                record["resumed_at_step"] = start
            self.history.append(record)
            if info.is_main:
                atomic_write_text(self.out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))
            self._save(epoch + 1, 0)
            self.cb.on_epoch_end(record)
        return self._finish()

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = train_step(self.net, x, y, self.optimizer, self.criterion, self.scaler, self.amp_dtype)
        if not torch.isfinite(loss):
            raise UserError(f"the loss became {float(loss)}; lower --lr (now {self.cfg.lr:g}) or use --warmup-epochs")
        if self.ema is not None:
            self.ema.update(self.model)
        return loss

    def _precise_bn(self, module: nn.Module) -> None:
        """BatchNorm statistics of ``module`` re-estimated on ``cfg.precise_bn`` training images: a fixed random
        subset (ImageFolder lists images class by class, so the first N would be one class), augmented with
        fixed seeds; the same on every process and every epoch, so a resumed run stays bit-exact."""
        from compscale.train.precise_bn import recalibrate_batchnorm

        cfg = self.cfg
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, 0xB7))
        picked = torch.randperm(len(self.data.train), generator=g)[: cfg.precise_bn].tolist()
        indices = [(i, derive_seed(cfg.seed, 0xB7, i)) for i in picked]
        loader = torch.utils.data.DataLoader(self.data.train, batch_size=cfg.eval_batch_size, sampler=indices,
                                             num_workers=cfg.workers, collate_fn=collate)
        with _autocast(self.device, self.amp_dtype):
            recalibrate_batchnorm(module, (self.prep(x) for x, _ in loader))

    def _sync_buffers(self) -> None:
        """Give every process rank 0's BatchNorm statistics (DDP syncs them only at the next forward)."""
        if not self.info.distributed:
            return
        import torch.distributed as dist

        modules = [self.model] + ([self.ema.module] if self.ema else [])
        for m in modules:
            for b in m.buffers():
                dist.broadcast(b, 0)

    def _finish(self) -> dict[str, Any]:
        from compscale.models.weights import save_weights

        final = self.history[-1] if self.history else {}
        if self.info.is_main:
            weights = self.ema.module if self.ema else self.model
            save_weights(weights, self.out / "model.safetensors",
                         metadata={"top1": str(final.get("top1")), "data": self.cfg.data})
            plot_metrics(self.history, self.out / "metrics.png", title=f"{self.cfg.model} on {self.data.name}")
        return {"top1": final.get("top1"), "top5": final.get("top5"), "loss": final.get("loss"),
                "epochs": final.get("epoch", 0), "out": str(self.out)}


def plot_metrics(history: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Loss and accuracy per epoch, as a PNG (matplotlib's Agg backend: no display needed)."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax1.plot(epochs, [r["loss"] for r in history], "s-", label="test")
    ax1.set_xlabel("epoch"), ax1.set_ylabel("loss"), ax1.legend()
    ax2.plot(epochs, [100 * r["top1"] for r in history], "o-", label="top-1")
    ax2.plot(epochs, [100 * r["top5"] for r in history], "s-", label="top-5")
    ax2.set_xlabel("epoch"), ax2.set_ylabel("test accuracy (%)"), ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def eval_model(model_name: str, weights: str, data_name: str, resolution: int | None = None, batch_size: int = 128,
               device: str = "auto", workers: int = 0, amp: bool = False) -> tuple[EvalResult, DataBundle]:
    """Evaluate a trained weights file on a dataset's test split (the model is built for the data's classes)."""
    from compscale.models.registry import build_model, resolve_spec
    from compscale.models.weights import load_weights
    from compscale.train.distributed import pick_device

    base = model_spec(model_name)
    saved = read_weights_spec(weights)
    res = resolution or (saved or {}).get("resolution") or base.resolution
    data = load_dataset(data_name, res, "none")
    in_chans = (saved or {}).get("in_chans", data.channels)
    spec = resolve_spec(base, data.num_classes, in_chans, resolution=res)
    check_weights_spec(weights, saved, spec.as_dict(), model_name)
    model = load_weights(build_model(spec), weights)
    dev = pick_device(device)
    model.to(dev)
    prep = BatchPreparer(data, res, in_chans, dev)
    info = DistInfo(device=dev)
    amp_dtype = torch.bfloat16 if amp else None
    return evaluate(model, eval_loader(data.test, batch_size, info, workers), prep, data.num_classes, info, amp_dtype), data
