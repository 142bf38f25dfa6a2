"""Several seeds of one architecture trained as ONE packed module (:mod:`compscale.models.packing`).

A study trains every model with k seeds. Trained one after the other, a small network leaves the cores
mostly idle and pays the engine's per-step costs k times; packed, the k members are one wider network whose
layers stay block diagonal, so each member is still exactly its own network:

* member m is initialised exactly as seed m's separate model (``torch.manual_seed(seed_m)`` then the builder);
* member m is fed its own batches: its own data order and augmentation, from its own
  :class:`~compscale.train.distributed.GlobalBatchSampler` (stacked along the channels);
* the loss is the SUM of the members' mean losses, so member m's gradient is its separate run's; the
  optimizers, weight decay and EMA are elementwise and the learning-rate schedule a function of the step, so
  nothing couples the members (dropout masks are per element and stochastic depth per member; the engine
  has no global gradient clipping);
* evaluation, precise BatchNorm and the records are per member, and at the end the packed module is unpacked
  into k ordinary models: each seed's folder gets its ``model.safetensors``, ``config.yaml`` and
  ``metrics.jsonl`` exactly as a separate run writes them. The pack's own folder holds the checkpoint (a
  killed packed run resumes, bit for bit in deterministic mode, like a single one) and ONE ``metrics.png``
  with every seed's curves (:func:`~compscale.plots.plot_runs`): the seeds' spread in one picture, for a
  third of the drawing time of k figures (matplotlib spends ~0.2 s on each, a few % of a small job).

:func:`train_packed` refuses what packing cannot do (fine-tuning from weights, torchrun, an architecture that
mixes channels outside its convolutions): the caller trains the seeds separately then.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch

from compscale.data import BatchPreparer, collate
from compscale.errors import UserError
from compscale.io import atomic_write_text
from compscale.locks import output_lock
from compscale.models.registry import model_spec
from compscale.progress import Progress, report, silent
from compscale.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, remove_stale_temporaries, save_checkpoint
from compscale.train.config import TrainConfig
from compscale.train.distributed import GlobalBatchSampler, derive_seed, init_distributed, seed_rng
from compscale.train.evaluate import EvalResult, autocast, evaluate_members
from compscale.train.loop import (
    RESUME_KEYS,
    StopRequest,
    _Epoch,
    _local_step_losses,
    _numbers,
    _Run,
    _set_kernels,
    build_for_data,
    interruptible,
    precise_bn_images,
    process_settings_restored,
    with_step_losses,
    without_step_losses,
)

#: The settings that may differ between the members of a pack (everything else must be equal).
MEMBER_KEYS = ("seed", "out")


def train_packed(cfgs: Sequence[TrainConfig], out: str | Path, resume: bool = False,
                 progress: Progress | None = None) -> list[dict[str, Any]]:
    """Train the runs ``cfgs`` — the same architecture, data and recipe, one seed and output folder each — as
    one packed module whose checkpoint lives in ``out``; returns each run's final metrics (as :func:`train`),
    plus its ``history``.

    ``progress`` receives ``train_start``, ``epoch_start`` and ``step`` for the pack, and one ``epoch_end``
    per member and epoch (``info``: the member's record, with ``member``: its index).
    """
    cfgs = [c.validate() for c in cfgs]
    _check_members(cfgs)
    info = init_distributed(cfgs[0].device)
    with process_settings_restored(info):
        if info.distributed:
            raise UserError("packed seeds train in one process; under torchrun train the seeds separately")
        with output_lock(Path(out), "packed training"):
            run = _PackedRun(cfgs, Path(out), info, resume, progress or silent)
            with interruptible(run.stop):
                return run.run()


def _check_members(cfgs: Sequence[TrainConfig]) -> None:
    if not cfgs:
        raise UserError("train_packed needs at least one run")
    first = {k: v for k, v in cfgs[0].as_dict().items() if k not in MEMBER_KEYS}
    for cfg in cfgs[1:]:
        other = {k: v for k, v in cfg.as_dict().items() if k not in MEMBER_KEYS}
        differing = sorted(k for k in first if first[k] != other.get(k))
        if differing:
            raise UserError(f"packed runs must differ only in seed and output folder, not in {differing[0]}")
    if len({c.seed for c in cfgs}) != len(cfgs) or len({str(c.out) for c in cfgs}) != len(cfgs):
        raise UserError("packed runs need distinct seeds and distinct output folders")
    if cfgs[0].weights is not None:
        raise UserError("packed seeds train from scratch; fine-tuning from --weights trains one run at a time")


class _PackedRun(_Run):
    """The engine's run (:class:`~compscale.train.loop._Run`) with k members: what differs is how the model is
    built, fed, stepped, evaluated, recorded, saved and finished."""

    def __init__(self, cfgs: list[TrainConfig], out: Path, info, resume: bool, progress: Progress) -> None:
        from compscale.data import load_dataset

        self.info, self.progress, self.device = info, progress, info.device
        self.stop = StopRequest()
        self.resume_hint = "run the same command again to resume"
        _set_kernels(cfgs[0], info.device)
        resolution = model_spec(cfgs[0].model).resolution
        cfgs = [c.resolved(resolution) for c in cfgs]
        self.out, self.k = out, len(cfgs)
        first = cfgs[0]
        self.data = load_dataset(first.data, first.resolution, first.augment, first.limit_train, first.limit_test,
                                 first.holdout)
        self.members = [replace(c, augment=self.data.augment) for c in cfgs]
        self.cfg = self.members[0]
        self._build_model()
        self._build_optimisation()
        self._build_loaders()
        self.start_epoch, self.start_step = 0, 0
        self.histories: list[list[dict[str, Any]]] = [[] for _ in range(self.k)]
        self.history = self.histories[0]
        self.resumed_loss: tuple[list[float], int] = ([0.0] * self.k, 0)
        self.resumed_steps: list[Any] = []
        self.epoch: _Epoch | None = None
        if resume:
            self._resume()
        self.frozen = None
        self.net = torch.compile(self.model) if self.cfg.compile else self.model

    # -- building ---------------------------------------------------------------------------------------

    def _build_model(self) -> None:
        """Each member built as its seed's separate model would be, then packed (and checked)."""
        from compscale.models.packing import pack

        models = []
        for cfg in self.members:
            torch.manual_seed(cfg.seed)  # the member's initial weights: exactly its separate run's
            models.append(build_for_data(cfg, self.data))
        self.model = pack(models).to(self.device)
        if self.cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.head = None

    def _build_loaders(self) -> None:
        """One sampler and loader per member (its own data order and augmentation), one test loader."""
        from compscale.train.evaluate import eval_loader

        cfg, info = self.cfg, self.info
        self.prep = BatchPreparer(self.data, cfg.resolution, self.model.in_chans, self.device, cfg.channels_last)
        augment = self.data.augment != "none"
        self.samplers = [GlobalBatchSampler(len(self.data.train), cfg.batch_size, info, m.seed, augment=augment)
                         for m in self.members]
        self.sampler = self.samplers[0]
        self.loaders = [torch.utils.data.DataLoader(
            self.data.train, batch_size=s.local_batch, sampler=s, num_workers=cfg.workers, collate_fn=collate,
            pin_memory=self.device.type == "cuda", generator=torch.Generator()) for s in self.samplers]
        self.test_loader = eval_loader(self.data.test, cfg.eval_batch_size, info, cfg.workers)
        self.steps_per_epoch = self.sampler.steps_per_epoch

    # -- state ------------------------------------------------------------------------------------------

    def _save(self, epoch: int, step_in_epoch: int) -> None:
        loss = self.epoch.loss_sum.tolist() if (step_in_epoch and self.epoch is not None) else [0.0] * self.k
        seen = self.epoch.seen if (step_in_epoch and self.epoch is not None) else 0
        meta = {"epoch": epoch, "step_in_epoch": step_in_epoch,
                "global_step": epoch * self.steps_per_epoch + step_in_epoch,
                "config": self.cfg.as_dict(), "history": without_step_losses(self.histories[0]),
                "spec": self.model.spec.as_dict(), "ema_updates": self.ema.updates if self.ema else 0,
                "epoch_loss": [float(sum(loss)), seen],
                "step_losses": _local_step_losses(self.epoch) if (step_in_epoch and self.epoch is not None) else [],
                "packed": {"configs": [c.as_dict() for c in self.members],
                           "histories": [without_step_losses(h) for h in self.histories], "epoch_loss": loss}}
        save_checkpoint(self.out / CHECKPOINT_NAME, model=self.model, optimizer=self.optimizer,
                        ema=self.ema.module if self.ema else None, scaler=self.scaler, meta=meta)
        self.last_save = time.monotonic()

    def _resume(self) -> None:
        path = self.out / CHECKPOINT_NAME
        remove_stale_temporaries(self.out)
        if not path.is_file():
            return
        state = load_checkpoint(path)
        packed = state.meta.get("packed")
        if not isinstance(packed, dict) or len(packed.get("configs") or []) != self.k:
            raise UserError(f"cannot resume {path}: it is not a checkpoint of {self.k} packed runs")
        for saved, cfg in zip(packed["configs"], self.members):
            for key in RESUME_KEYS:
                if key in saved and saved[key] != getattr(cfg, key) and key != "model":
                    raise UserError(f"cannot resume {path}: {key} was {saved[key]!r}, now {getattr(cfg, key)!r}")
        self._restore(path, state, state.section("model"))
        self.histories = [with_step_losses(list(h), Path(cfg.out) / "metrics.jsonl")
                          for h, cfg in zip(packed["histories"], self.members)]
        self.history = self.histories[0]
        self.resumed_loss = ([float(v) for v in packed["epoch_loss"]], int(state.meta["epoch_loss"][1]))
        self.resumed_steps = _numbers(state.meta.get("step_losses"), self.start_step)

    # -- the loop ---------------------------------------------------------------------------------------

    def _announce(self) -> None:
        for cfg in self.members:
            atomic_write_text(Path(cfg.out) / "config.yaml", cfg.to_yaml())
        cfg, data = self.cfg, self.data
        report(self.progress, "train_start", f"training {self.k} packed seeds of {cfg.model} on {data.name}",
               self.start_epoch, cfg.epochs, model=cfg.model, data=data.name, train=len(data.train),
               test=len(data.test), classes=data.num_classes, channels=data.channels, notes=data.notes,
               resumed_epoch=self.start_epoch, resumed_step=self.start_step, world_size=1, device=str(self.device),
               resolution=cfg.resolution, lr=cfg.lr, steps_per_epoch=self.steps_per_epoch, members=self.k,
               seeds=[c.seed for c in self.members])

    def _begin_epoch(self, index: int) -> _Epoch:
        self.model.train()
        start = self.start_step if index == self.start_epoch else 0
        for sampler in self.samplers:
            sampler.set_epoch(index, start)
        report(self.progress, "epoch_start", done=start, total=self.steps_per_epoch, epoch=index,
               epochs=self.cfg.epochs)
        loss_sum = torch.zeros(self.k, dtype=torch.float64, device=self.device)
        seen = 0
        if start > 0:
            loss_sum += torch.tensor(self.resumed_loss[0], dtype=torch.float64, device=self.device)
            seen = self.resumed_loss[1]
        resumed = list(self.resumed_steps) if start else []
        self.epoch = _Epoch(index, start, self.cfg.lr, loss_sum, seen, step_losses=resumed)
        return self.epoch

    def _train_steps(self, epoch: _Epoch) -> None:
        from compscale.models.packing import stack_inputs
        from compscale.train.optim import lr_factor, set_lr

        cfg, spe = self.cfg, self.steps_per_epoch
        t0 = time.perf_counter()
        for i, batches in enumerate(zip(*self.loaders), start=epoch.start):
            step = epoch.index * spe + i
            seed_rng(derive_seed(cfg.seed, 0, step), self.device)  # dropout / stochastic depth (per element)
            epoch.lr = set_lr(self.optimizer, cfg.lr, lr_factor(step, spe, cfg))
            x = stack_inputs([self.prep(x) for x, _ in batches])
            y = torch.stack([y for _, y in batches], dim=1).to(self.device, non_blocking=True)
            losses = self._step(x, y)
            epoch.loss_sum += losses.double() * len(y)
            epoch.seen += len(y)
            epoch.step_losses.append(losses)
            report(self.progress, "step", done=i + 1, total=spe, loss=losses.sum(), lr=epoch.lr)
            if i + 1 < spe and self._checkpoint_due(step):
                self._save(epoch.index, i + 1)
            self._pause_if_asked(step)
            self._stop_if_asked(epoch, i + 1)
        epoch.seconds = time.perf_counter() - t0

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One step of every member: the sum of their losses, so each gets its separate run's gradient."""
        from compscale.models.packing import member_losses

        with autocast(x.device, self.amp_dtype):
            losses = member_losses(self.net(x), y, self.criterion)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses.sum()).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        losses = losses.detach()
        if not torch.isfinite(losses).all():
            bad = next(m for m in range(self.k) if not torch.isfinite(losses[m]))
            raise UserError(f"the loss of seed {self.members[bad].seed} became {float(losses[bad])}; lower --lr "
                            f"(now {self.cfg.lr:g}) or use --warmup-epochs")
        if self.ema is not None:
            self.ema.update(self.model)
        return losses

    def _run_epoch(self, index: int) -> None:
        epoch = self._begin_epoch(index)
        self._train_steps(epoch)
        results = self._evaluate_epoch() if self._evaluates(index) else [None] * self.k
        for m, result in enumerate(results):
            self._record_member(m, self._member_record(epoch, m, result))
        self._save(index + 1, 0)

    def _evaluate_epoch(self) -> list[EvalResult]:
        evaluated = self.ema.module if self.ema else self.model
        if self.cfg.precise_bn:
            self._precise_bn(evaluated)
        return evaluate_members(evaluated, self.test_loader, self.prep, self.data.num_classes, self.info,
                                self.amp_dtype, members=self.k)

    def _precise_bn(self, module) -> None:
        """Each member's BatchNorm statistics re-estimated on its own fixed subset (its separate run's)."""
        from compscale.models.packing import stack_inputs
        from compscale.train.precise_bn import recalibrate_batchnorm

        streams = [precise_bn_images(self.data, cfg) for cfg in self.members]
        with autocast(self.device, self.amp_dtype):
            recalibrate_batchnorm(module, (stack_inputs([self.prep(x) for x in xs]) for xs in zip(*streams)))

    def _member_record(self, epoch: _Epoch, m: int, result: EvalResult | None) -> dict[str, Any]:
        totals = torch.tensor([float(epoch.loss_sum[m]), epoch.seen], dtype=torch.float64)
        record = self._epoch_record(epoch, totals, result)
        # One loop trained every member: each member's img/s is the images IT saw over the loop's time.
        record["step_loss"] = [losses[m] for losses in record["step_loss"]]  # the member's own, not the pack's
        return record

    def _record_member(self, m: int, record: dict[str, Any]) -> None:
        history = self.histories[m]
        history.append(record)
        out = Path(self.members[m].out)
        atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        report(self.progress, "epoch_end", done=record["epoch"], total=self.cfg.epochs, member=m, **record)

    def _finish(self) -> list[dict[str, Any]]:
        from compscale.models.packing import unpack
        from compscale.models.weights import save_weights
        from compscale.plots import plot_runs
        from compscale.train.checkpoint import weights_metadata

        results = []
        members = unpack(self.ema.module if self.ema else self.model)
        for cfg, model, history in zip(self.members, members, self.histories):
            final = history[-1] if history else {}
            out = Path(cfg.out)
            save_weights(model, out / "model.safetensors",
                         metadata={**weights_metadata(cfg, self.data, final), "packed_with": str(self.k)})
            results.append({"top1": final.get("top1"), "top5": final.get("top5"), "loss": final.get("loss"),
                            "epochs": final.get("epoch", 0), "out": str(out), "history": list(history)})
        seeds = ", ".join(str(c.seed) for c in self.members)
        plot_runs({f"seed {c.seed}": h for c, h in zip(self.members, self.histories)}, self.out / "metrics.png",
                  title=f"{self.cfg.model} on {self.data.name} (seeds {seeds}, packed)")
        return results
