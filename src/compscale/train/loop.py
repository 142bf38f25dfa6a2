"""The training loop: one process or a torchrun job, resumable bit for bit.

:func:`train` runs a :class:`~compscale.train.config.TrainConfig` end to end and leaves in ``cfg.out``:
``model.safetensors`` (final weights; the EMA weights when EMA is on), ``config.yaml`` (the resolved
config), ``metrics.jsonl`` (one record per epoch), ``metrics.png`` and ``checkpoint.safetensors`` (the
resume state). Progress goes to a :data:`~compscale.progress.Progress` callable as events ``train_start``,
``epoch_start``, ``step`` and ``epoch_end``; the library itself never prints. Evaluation lives in
:mod:`compscale.train.evaluate`.

Bit-for-bit resumption (``deterministic=True``) rests on three facts: the checkpoint holds every tensor of
the state (:mod:`compscale.train.checkpoint`), the data order is a function of (seed, epoch)
(:class:`~compscale.train.distributed.GlobalBatchSampler`), and the RNG used by dropout and stochastic depth
is re-seeded at every step from (seed, rank, step), so no RNG state has to be carried across a restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from compscale.data import BatchPreparer, DataBundle, collate, load_dataset
from compscale.errors import Interrupted, UserError
from compscale.io import atomic_write_text
from compscale.locks import output_lock
from compscale.models.registry import model_spec
from compscale.progress import Progress, report, silent
from compscale.specs import is_spec_file
from compscale.train.checkpoint import (
    CHECKPOINT_NAME,
    check_weights_spec,
    load_checkpoint,
    read_weights_spec,
    remove_stale_temporaries,
    save_checkpoint,
)
from compscale.train.config import TrainConfig
from compscale.train.distributed import (
    DistInfo,
    GlobalBatchSampler,
    all_reduce_sum,
    derive_seed,
    init_distributed,
    seed_rng,
    shutdown,
)
from compscale.train.ema import ModelEma
from compscale.train.evaluate import EvalResult, autocast, eval_loader, evaluate
from compscale.train.optim import build_optimizer, lr_factor, param_groups, set_lr

#: Test hook: after this global step (and its checkpoint, if any) the run announces itself on stderr and
#: sleeps, so a test can SIGKILL it at a known point.
PAUSE_ENV = "COMPSCALE_TEST_PAUSE_AT_STEP"
#: Config keys that fix the data order and the optimisation: a resumed run must keep them.
RESUME_KEYS = ("model", "data", "batch_size", "seed", "limit_train", "holdout", "augment", "optimizer", "resolution",
               "weights")


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


def precise_bn_images(data: DataBundle, cfg: TrainConfig) -> Iterator[torch.Tensor]:
    """The uint8 batches precise BatchNorm re-estimates on: ``cfg.precise_bn`` training images, a fixed random
    subset for ``cfg.seed`` (ImageFolder lists images class by class, so the first N would be one class),
    augmented with fixed seeds — the same on every process and every epoch, so a resumed run stays bit-exact."""
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, 0xB7))
    picked = torch.randperm(len(data.train), generator=g)[: cfg.precise_bn].tolist()
    indices = [(i, derive_seed(cfg.seed, 0xB7, i)) for i in picked]
    loader = torch.utils.data.DataLoader(data.train, batch_size=cfg.eval_batch_size, sampler=indices,
                                         num_workers=cfg.workers, collate_fn=collate)
    return (x for x, _ in loader)


# --- training --------------------------------------------------------------------------------------------


def train_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
               criterion: nn.Module, scaler: torch.amp.GradScaler,
               amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """One optimisation step (forward under autocast, scaled backward, optimizer step); returns the loss."""
    with autocast(x.device, amp_dtype):
        loss = criterion(net(x), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def train(cfg: TrainConfig, resume: bool = False, progress: Progress | None = None,
          overwrite: bool = False) -> dict[str, Any]:
    """Run ``cfg`` (resuming from ``cfg.out`` when asked and a checkpoint is there); the final metrics.

    The output folder is locked for the whole run (a second run into it is refused, naming this one's PID);
    a folder that already holds a run (finished or not) is refused unless ``resume`` (continue it) or
    ``overwrite`` (its files are deleted first).

    ``progress`` receives ``train_start`` (``info``: the run's data, model and device), ``epoch_start``
    (``done``/``total``: the step it starts at / steps per epoch; ``info``: ``epoch``, ``epochs``), ``step``
    (``done``/``total``: steps into the epoch; ``info``: ``loss``, a tensor, and ``lr``) and ``epoch_end``
    (``done``/``total``: epochs; ``info``: the epoch's record, as written to ``metrics.jsonl``).
    """
    cfg.validate()
    if cfg.deterministic:
        # cuBLAS needs this before its first use to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    info = init_distributed(cfg.device)
    with process_settings_restored(info), _output_folder(cfg, info, resume, overwrite):
        run = _Run(cfg, info, resume, progress or silent)
        with interruptible(run.stop):
            return run.run()


@contextlib.contextmanager
def process_settings_restored(info: DistInfo) -> Iterator[None]:
    """Put back the process-wide settings a run changes (threads, deterministic kernels, cuDNN benchmark) and
    shut its process group down, however the run ends."""
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        # Only when the run changed it: torch.use_deterministic_algorithms imports torch._inductor (and with it
        # torch._dynamo, ~1.6 s) on every call, even one that changes nothing.
        if torch.are_deterministic_algorithms_enabled() != saved[1]:
            torch.use_deterministic_algorithms(saved[1])
        torch.backends.cudnn.benchmark = saved[2]
        shutdown(info)


#: The files a run leaves in its folder: any of them there means a run was started there.
RUN_FILES = (CHECKPOINT_NAME, "model.safetensors", "metrics.jsonl", "config.yaml", "metrics.png")


@dataclass
class StopRequest:
    """Set by :func:`interruptible`'s signal handler: the signal that asked the run to stop."""

    signal: int | None = None


@contextmanager
def interruptible(stop: StopRequest) -> Iterator[None]:
    """While a run trains, SIGINT (Ctrl-C) and SIGTERM only *ask* it to stop: it finishes the step in hand,
    checkpoints, and raises :class:`~compscale.errors.Interrupted` naming how to resume — no epoch is lost. A
    second signal stops it at once. (Only in the main thread, where Python delivers signals.)"""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask(signum: int, frame: Any) -> None:
        if stop.signal is not None:
            raise KeyboardInterrupt
        stop.signal = signum

    previous = {s: signal.signal(s, ask) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def _output_folder(cfg: TrainConfig, info: DistInfo, resume: bool, overwrite: bool) -> Iterator[None]:
    """The run's folder, locked by the main process while the run lasts; one that holds another run is kept
    unless ``resume`` or ``overwrite`` (its run files deleted, under the lock, before anything is written)."""
    if not info.is_main:
        yield
        return
    out = Path(cfg.resolved(cfg.resolution or 0).out)
    with output_lock(out, "training"):
        present = [name for name in RUN_FILES if (out / name).exists()]
        if present and not resume:
            if not overwrite:
                raise UserError(f"{out} already holds a run ({present[0]}); add --resume to continue it or "
                                "--overwrite to replace it")
            for name in present:
                (out / name).unlink(missing_ok=True)
        yield


def _set_kernels(cfg: TrainConfig, device: torch.device) -> None:
    """The process-wide settings of a run: CPU threads, and deterministic kernels or cuDNN's autotuner."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def without_step_losses(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The epoch records as a checkpoint keeps them: without ``step_loss`` (metrics.jsonl has it), so that the
    checkpoint stays small however long the run."""
    return [{k: v for k, v in r.items() if k != "step_loss"} for r in history]


def with_step_losses(history: list[dict[str, Any]], metrics: Path) -> list[dict[str, Any]]:
    """Checkpointed epoch records with their ``step_loss`` read back from the run's ``metrics.jsonl``, where it has
    them (a missing or unreadable file, or line, leaves them out: they are a log, not the run's state)."""
    try:
        lines = metrics.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return history
    steps: dict[int, list[Any]] = {}
    for line in lines:
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int) and isinstance(record.get("step_loss"),
                                                                                              list):
            steps[record["epoch"]] = record["step_loss"]
    return [{**r, "step_loss": steps[r["epoch"]]} if isinstance(r.get("epoch"), int) and r["epoch"] in steps
            else r for r in history]


def _local_step_losses(epoch: "_Epoch") -> list[Any]:
    """This process's step losses of ``epoch`` so far, as numbers (lists of numbers for a packed run)."""
    resumed = [v for v in epoch.step_losses if not isinstance(v, torch.Tensor)]
    tensors = [v for v in epoch.step_losses if isinstance(v, torch.Tensor)]
    return resumed + (torch.stack(tensors).double().cpu().tolist() if tensors else [])


def _numbers(value: Any, count: int) -> list[Any]:
    """A checkpoint's ``step_losses``: ``count`` numbers (or lists of numbers), else nothing (an older or foreign
    checkpoint: the resumed epoch's record then lacks those steps' losses)."""
    def ok(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) or (
            isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v))

    if isinstance(value, list) and len(value) == count and all(ok(v) for v in value):
        return list(value)
    return []


@dataclass
class _Epoch:
    """One epoch in progress: where it started, and its training loss so far (this process's share)."""

    index: int
    start: int  # the step it starts at (> 0 when resumed mid-epoch)
    lr: float
    loss_sum: torch.Tensor
    seen: int
    seconds: float = 0.0  # time spent training (not evaluating)
    #: Each step's training loss, in order: the steps before a resume (numbers, from the checkpoint), then this
    #: process's loss tensors (turned into numbers once, at the epoch's end: no synchronisation per step).
    step_losses: list[Any] = field(default_factory=list)
    step_loss: list[Any] | None = None  # the same, averaged over processes (:meth:`_Run._step_loss`)


class _Run:
    def __init__(self, cfg: TrainConfig, info: DistInfo, resume: bool, progress: Progress) -> None:
        self.info, self.progress, self.device = info, progress, info.device
        self.stop = StopRequest()
        _set_kernels(cfg, info.device)
        cfg = cfg.resolved(model_spec(cfg.model).resolution)
        self.out = Path(cfg.out)
        self.resume_hint = f"resume with: compscale train --resume --out {shlex.quote(str(self.out))}"
        self.data = load_dataset(cfg.data, cfg.resolution, cfg.augment, cfg.limit_train, cfg.limit_test, cfg.holdout)
        self.cfg = replace(cfg, augment=self.data.augment)
        self._build_model()
        self._build_optimisation()
        self._build_loaders()
        self.start_epoch, self.start_step, self.history = 0, 0, []
        self.resumed_loss: tuple[float, int] = (0.0, 0)
        self.resumed_steps: list[Any] = []  # the interrupted epoch's step losses before the checkpoint
        self.epoch: _Epoch | None = None
        if resume:
            self._resume()
        self.frozen: bool | None = None
        self.net: nn.Module = torch.compile(self.model) if cfg.compile else self.model

    # -- building ---------------------------------------------------------------------------------------

    def _build_model(self) -> None:
        """The model (seeded initial weights, or the pretrained ones) and, when fine-tuning, its new head."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # the initial weights
        self.model = build_for_data(cfg, self.data).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.head = self.model.get_classifier() if cfg.weights is not None else None

    def _build_optimisation(self) -> None:
        """The optimizer, the EMA of the weights, mixed precision and its loss scaler, and the loss."""
        cfg = self.cfg
        head_scale = (cfg.head_lr / cfg.lr) if (cfg.head_lr and self.head is not None) else 1.0
        self.optimizer = build_optimizer(cfg, param_groups(self.model, cfg.weight_decay, self.head, head_scale))
        self.ema = ModelEma(self.model, cfg.ema) if cfg.ema > 0 else None
        self.amp_dtype = None
        if cfg.amp:
            cuda = self.device.type == "cuda"
            self.amp_dtype = torch.bfloat16 if (not cuda or torch.cuda.is_bf16_supported()) else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    def _build_loaders(self) -> None:
        """Batch preparation, the training order (a function of seed and epoch) and both data loaders."""
        cfg, info = self.cfg, self.info
        self.prep = BatchPreparer(self.data, cfg.resolution, self.model.spec.in_chans, self.device, cfg.channels_last)
        self.sampler = GlobalBatchSampler(len(self.data.train), cfg.batch_size, info, cfg.seed,
                                          augment=self.data.augment != "none")
        self.train_loader = torch.utils.data.DataLoader(
            self.data.train, batch_size=self.sampler.local_batch, sampler=self.sampler, num_workers=cfg.workers,
            collate_fn=collate, pin_memory=self.device.type == "cuda", generator=torch.Generator())
        self.test_loader = eval_loader(self.data.test, cfg.eval_batch_size, info, cfg.workers)
        self.steps_per_epoch = self.sampler.steps_per_epoch

    # -- state ------------------------------------------------------------------------------------------

    def _restore(self, path: Path, state: Any, model_state: dict[str, torch.Tensor]) -> None:
        """Load a checkpoint's weights, EMA, optimizer and loss-scaler state, and where in which epoch it was."""
        self.model.load_state_dict(model_state)
        if self.ema is not None:
            ema_state = state.section("ema")
            if not ema_state:
                raise UserError(f"cannot resume {path} with --ema: the run was started without EMA")
            self.ema.load_state_dict(ema_state, state.meta.get("ema_updates", 0))
        state.restore_optimizer(self.optimizer)
        state.restore_scaler(self.scaler)
        self.start_epoch, self.start_step = int(state.meta["epoch"]), int(state.meta["step_in_epoch"])

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

        self._restore(path, state, convert_state_dict(self.model, state.section("model"), "compscale"))
        self.history = with_step_losses(list(state.meta.get("history", [])), self.out / "metrics.jsonl")
        self.resumed_loss = tuple(state.meta.get("epoch_loss", [0.0, 0]))
        self.resumed_steps = _numbers(state.meta.get("step_losses"), self.start_step)

    def _save(self, epoch: int, step_in_epoch: int) -> None:
        if not self.info.is_main:
            return
        meta = {"epoch": epoch, "step_in_epoch": step_in_epoch,
                "global_step": epoch * self.steps_per_epoch + step_in_epoch,
                "config": self.cfg.as_dict(), "history": without_step_losses(self.history),
                "spec": self.model.spec.as_dict(), "ema_updates": self.ema.updates if self.ema else 0,
                # This process's share of the epoch's training loss so far (for the epoch's mean on resume).
                "epoch_loss": [float(self.epoch.loss_sum), self.epoch.seen] if step_in_epoch else [0.0, 0],
                "step_losses": _local_step_losses(self.epoch) if step_in_epoch else []}
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
        """Announce the run, train and evaluate every epoch still to do, then save the final weights."""
        self._announce()
        self.pause_at = int(v) if (v := os.environ.get(PAUSE_ENV, "").strip()).isascii() and v.isdigit() else None
        self.last_save = time.monotonic()
        for index in range(self.start_epoch, self.cfg.epochs):
            self._run_epoch(index)
        return self._finish()

    def _announce(self) -> None:
        """Write the resolved config and report what is about to be trained, on what, from where."""
        cfg, data = self.cfg, self.data
        if self.info.is_main:
            atomic_write_text(self.out / "config.yaml", cfg.to_yaml())
        report(self.progress, "train_start", f"training {cfg.model} on {data.name}", self.start_epoch, cfg.epochs,
               model=cfg.model, data=data.name, train=len(data.train), test=len(data.test), classes=data.num_classes,
               channels=data.channels, notes=data.notes, resumed_epoch=self.start_epoch,
               resumed_step=self.start_step, world_size=self.info.world_size, device=str(self.device),
               resolution=cfg.resolution, lr=cfg.lr, steps_per_epoch=self.steps_per_epoch)

    def _run_epoch(self, index: int) -> None:
        """One epoch: train its (remaining) steps, evaluate, record the metrics and checkpoint."""
        epoch = self._begin_epoch(index)
        self._train_steps(epoch)
        totals = all_reduce_sum(torch.tensor([float(epoch.loss_sum), epoch.seen], dtype=torch.float64,
                                             device=self.device), self.info)
        result = self._evaluate_epoch() if self._evaluates(index) else None
        self._record(self._epoch_record(epoch, totals, result))

    def _evaluates(self, index: int) -> bool:
        """Whether epoch ``index`` (0-based) ends with an evaluation: every ``eval_every``-th and the last."""
        return (index + 1) % self.cfg.eval_every == 0 or index + 1 == self.cfg.epochs

    def _begin_epoch(self, index: int) -> _Epoch:
        """Freeze or unfreeze the backbone, set the epoch's data order, and pick up a resumed epoch's loss."""
        cfg = self.cfg
        self._set_frozen(self.head is not None and (cfg.freeze_backbone or
                                                    (cfg.unfreeze_after is not None and index < cfg.unfreeze_after)))
        self._train_mode()
        start = self.start_step if index == self.start_epoch else 0
        self.sampler.set_epoch(index, start)
        report(self.progress, "epoch_start", done=start, total=self.steps_per_epoch, epoch=index, epochs=cfg.epochs)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        seen = 0
        if start > 0:  # the part of this epoch's training loss summed before the checkpoint
            loss_sum += self.resumed_loss[0]
            seen = self.resumed_loss[1]
        self.epoch = _Epoch(index, start, cfg.lr, loss_sum, seen, step_losses=list(self.resumed_steps) if start else [])
        return self.epoch

    def _train_steps(self, epoch: _Epoch) -> None:
        """The epoch's optimisation steps, each with its own seed and learning rate, checkpointing on the way."""
        cfg, spe = self.cfg, self.steps_per_epoch
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(self.train_loader, start=epoch.start):
            step = epoch.index * spe + i
            seed_rng(derive_seed(cfg.seed, self.info.rank, step), self.device)  # dropout / stochastic depth
            epoch.lr = set_lr(self.optimizer, cfg.lr, lr_factor(step, spe, cfg))
            loss = self._step(self.prep(x), y.to(self.device, non_blocking=True))
            epoch.loss_sum += loss.detach().double() * len(y)
            epoch.seen += len(y)
            epoch.step_losses.append(loss.detach())
            report(self.progress, "step", done=i + 1, total=spe, loss=loss.detach(), lr=epoch.lr)
            if i + 1 < spe and self._checkpoint_due(step):
                self._save(epoch.index, i + 1)
            self._pause_if_asked(step)
            self._stop_if_asked(epoch, i + 1)
        epoch.seconds = time.perf_counter() - t0

    def _stop_if_asked(self, epoch: _Epoch, done: int) -> None:
        """A SIGINT or SIGTERM arrived during the step (see :func:`interruptible`): checkpoint here and stop."""
        if self.stop.signal is None:
            return
        import signal

        self._save(epoch.index, done)
        name = signal.Signals(self.stop.signal).name
        raise Interrupted(f"{name} at step {done} of epoch {epoch.index + 1}; the checkpoint is saved: "
                          f"{self.resume_hint}")

    def _checkpoint_due(self, step: int) -> bool:
        """Whether to checkpoint after global ``step``: every ``checkpoint_steps``, or after ``checkpoint_minutes``."""
        cfg = self.cfg
        return bool((cfg.checkpoint_steps and (step + 1) % cfg.checkpoint_steps == 0)
                    or time.monotonic() - self.last_save > 60 * cfg.checkpoint_minutes)

    def _pause_if_asked(self, step: int) -> None:
        """The test hook of :data:`PAUSE_ENV`."""
        if step == self.pause_at:
            print(f"compscale: paused at step {step}", file=sys.stderr, flush=True)
            end = time.monotonic() + 3600
            while self.stop.signal is None and time.monotonic() < end:  # a stop request ends the pause
                time.sleep(0.05)

    def _evaluate_epoch(self) -> EvalResult:
        """Test accuracy of the weights as they will be saved (the EMA's when on), with every process's
        BatchNorm statistics equal to rank 0's, re-estimated first when ``precise_bn`` asks."""
        self._sync_buffers()
        evaluated = self.ema.module if self.ema else self.model
        if self.cfg.precise_bn and not self.frozen:  # a frozen backbone keeps its statistics: a linear probe
            self._precise_bn(evaluated)
        return evaluate(evaluated, self.test_loader, self.prep, self.data.num_classes, self.info, self.amp_dtype,
                        self.progress)

    def _epoch_record(self, epoch: _Epoch, totals: torch.Tensor, result: EvalResult | None) -> dict[str, Any]:
        """The line of ``metrics.jsonl`` for ``epoch`` (``totals``: the training loss sum and images, all processes;
        ``result``: the evaluation, None for an epoch ``eval_every`` skips, whose test metrics are then null)."""
        record = {"epoch": epoch.index + 1, "step": (epoch.index + 1) * self.steps_per_epoch, "lr": epoch.lr,
                  "train_loss": float(totals[0] / max(1.0, float(totals[1]))),
                  "loss": result.loss if result else None,
                  "top1": result.top1 if result else None, "top5": result.top5 if result else None,
                  "images_per_s": float(totals[1]) / epoch.seconds if epoch.seconds > 0 else None,
                  "epoch_seconds": epoch.seconds, "ema": self.ema is not None}
        if epoch.start > 0:
            record["resumed_at_step"] = epoch.start
        record["step_loss"] = self._step_loss(epoch)  # last: one number per step, the line's longest part
        return record

    def _step_loss(self, epoch: _Epoch) -> list[Any]:
        """The epoch's training loss at each step, averaged over the processes (each a number; a packed run's,
        a list of one number per member). Computed once per epoch: one synchronisation, not one per step."""
        if epoch.step_loss is None:
            values = torch.tensor(_local_step_losses(epoch), dtype=torch.float64, device=self.device)
            if self.info.world_size > 1:
                values = all_reduce_sum(values, self.info) / self.info.world_size
            epoch.step_loss = values.tolist()
        return epoch.step_loss

    def _record(self, record: dict[str, Any]) -> None:
        """Add the epoch to the history and ``metrics.jsonl``, checkpoint at its end, and report it."""
        self.history.append(record)
        if self.info.is_main:
            atomic_write_text(self.out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))
        self._save(record["epoch"], 0)
        report(self.progress, "epoch_end", done=record["epoch"], total=self.cfg.epochs, **record)

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

        with autocast(self.device, self.amp_dtype):
            recalibrate_batchnorm(module, (self.prep(x) for x in precise_bn_images(self.data, self.cfg)))

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
        from compscale.plots import plot_metrics
        from compscale.train.checkpoint import weights_metadata

        final = self.history[-1] if self.history else {}
        if self.info.is_main:
            weights = self.ema.module if self.ema else self.model
            save_weights(weights, self.out / "model.safetensors",
                         metadata=weights_metadata(self.cfg, self.data, final))
            plot_metrics(self.history, self.out / "metrics.png", title=f"{self.cfg.model} on {self.data.name}")
        return {"top1": final.get("top1"), "top5": final.get("top5"), "loss": final.get("loss"),
                "epochs": final.get("epoch", 0), "out": str(self.out)}
