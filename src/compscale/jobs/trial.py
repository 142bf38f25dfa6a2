"""Train one concrete architecture with the training engine and report its accuracy epoch by epoch.

This is the unit of work of every study (step 1's candidates, step 2's sweep, the cardinality and family
studies): a spec, a dataset and a short schedule in, a top-1 accuracy out. Each job trains in its own
folder and resumes from its checkpoint there, so a killed worker's job restarts where it stopped when the
same machine picks it up again.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from compscale.io import atomic_write_text
from compscale.progress import Event
from compscale.specs import ModelSpec

ReportEpoch = Callable[[float, int], None]

#: Settings that do not shape a trial's result (where and how it runs), and those the training engine itself
#: compares when it resumes (``RESUME_KEYS``, e.g. the model, the data, the batch, the seed).
_NOT_COMPARED = frozenset({"out", "workers", "device", "threads", "eval_batch_size", "eval_every", "checkpoint_steps",
                           "checkpoint_minutes", "model", "data", "batch_size", "seed", "limit_train", "holdout",
                           "augment", "optimizer", "resolution", "weights"})


def check_earlier_try(out: Path, cfg: Any) -> None:
    """A job folder's checkpoint must come from a try with this study's settings (``cfg``, resolved): a study
    re-run with another learning rate, schedule, epochs or evaluation subset into the same folder (a new
    storage, the same ``--out``) would otherwise resume the old run and report its accuracy as this study's.
    One line naming the first setting that differs."""
    from compscale.errors import UserError, echo
    from compscale.train.checkpoint import CHECKPOINT_NAME, read_checkpoint_config

    saved = read_checkpoint_config(out / CHECKPOINT_NAME)
    if saved is None:
        return
    current = cfg.as_dict()
    for key in sorted(current):
        if key in _NOT_COMPARED or key not in saved or saved[key] == current[key]:
            continue
        raise UserError(f"{out} holds a run trained with {key} = {echo(saved[key])}, but this study asks for "
                        f"{echo(current[key])}: its result is not this study's; use another --out")


def _metrics(path: Path) -> list[dict[str, Any]]:
    """The epoch records of a job's ``metrics.jsonl`` (one line naming the file when one is not a record)."""
    from compscale.errors import UserError

    records = []
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        try:
            record = json.loads(line)
            # top1 null: an epoch that eval_every did not evaluate
            ok = (isinstance(record, dict) and isinstance(record.get("epoch"), int)
                  and not isinstance(record["epoch"], bool) and "top1" in record
                  and (record["top1"] is None or isinstance(record["top1"], (int, float))))
        except (ValueError, RecursionError):
            ok = False
        if not ok:
            raise UserError(f"{path}: line {i} is not an epoch record (epoch, top1); remove the job's folder")
        records.append(record)
    return records


def train_spec(
    spec: ModelSpec,
    data: str,
    out: str | Path,
    epochs: int,
    seed: int = 0,
    report_epoch: ReportEpoch | None = None,
    **train_options: Any,
) -> dict[str, Any]:
    """Train ``spec`` on ``data`` for ``epochs`` into ``out``; returns the engine's final metrics
    (``top1``, ``top5``, ``loss``, ``epochs``, ``out``) plus ``history`` (one record per epoch).

    ``train_options`` are further :class:`~compscale.train.config.TrainConfig` fields (batch_size, lr,
    limit_train, holdout, threads, ...). ``report_epoch(top1, epoch)`` is called after every epoch; it may
    raise (e.g. ``optuna.TrialPruned``) to stop the job early.
    """
    from compscale.compound import check_model_size
    from compscale.train.config import TrainConfig
    from compscale.train.loop import train

    check_model_size(spec)  # a study's spec (from a user's baseline) is refused before anything is built
    out = Path(out)
    spec_path = out / "spec.json"
    atomic_write_text(spec_path, spec.to_json())
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(train_options) - known)
    if unknown:
        raise TypeError(f"unknown training option(s): {', '.join(unknown)}")
    cfg = TrainConfig(model=str(spec_path), data=data, out=str(out), epochs=epochs, seed=seed,
                      resolution=spec.resolution, **train_options)
    history: list[dict[str, Any]] = []

    def epoch_done(record: dict[str, Any]) -> None:
        history.append(record)
        if report_epoch is not None and record["top1"] is not None:  # None: an epoch eval_every skipped
            report_epoch(float(record["top1"]), int(record["epoch"]))

    def on_event(event: Event) -> None:
        if event.kind == "epoch_end":
            epoch_done(dict(event.info))

    resume = (out / "checkpoint.safetensors").exists()
    if resume:
        check_earlier_try(out, cfg.validate().resolved(spec.resolution))
    if resume and (out / "metrics.jsonl").exists():
        # A resumed job re-reports the epochs it already has, so its trial records them (and can be pruned).
        for record in _metrics(out / "metrics.jsonl"):
            if record["epoch"] <= epochs:
                epoch_done(record)
    # A job's folder is the study's: files of a try that never checkpointed are replaced, not refused.
    result = train(cfg.validate(), resume=resume, progress=on_event, overwrite=True)
    return {**result, "history": history}


def train_specs_packed(
    spec: ModelSpec,
    data: str,
    outs: Sequence[str | Path],
    pack_out: str | Path,
    epochs: int,
    seeds: Sequence[int],
    report_epoch: ReportEpoch | None = None,
    **train_options: Any,
) -> list[dict[str, Any]]:
    """Train ``spec`` once per seed in ``seeds`` — all seeds packed into one module (:mod:`compscale.train.packed`)
    — each seed's run written to its folder in ``outs`` exactly as :func:`train_spec` writes it; the pack's
    checkpoint lives in ``pack_out`` (a killed pack resumes from it). Returns each seed's final metrics with its
    ``history``. ``report_epoch(mean top-1 over the seeds, epoch)`` is called after every epoch (it may raise to
    stop the job). Raises :class:`~compscale.errors.UserError` when the architecture cannot be packed: the
    caller then trains the seeds one by one."""
    from compscale.compound import check_model_size
    from compscale.train.config import TrainConfig
    from compscale.train.packed import train_packed

    check_model_size(spec)
    pack_out = Path(pack_out)
    spec_path = pack_out / "spec.json"
    atomic_write_text(spec_path, spec.to_json())
    cfgs = [TrainConfig(model=str(spec_path), data=data, out=str(out), epochs=epochs, seed=seed,
                        resolution=spec.resolution, **train_options).validate() for out, seed in zip(outs, seeds)]
    histories: list[list[dict[str, Any]]] = [[] for _ in cfgs]

    def epoch_done(member: int, record: dict[str, Any]) -> None:
        histories[member].append(record)
        epoch = int(record["epoch"])
        if report_epoch is not None and all(any(r["epoch"] == epoch for r in h) for h in histories):
            top1 = [next(r for r in h if r["epoch"] == epoch)["top1"] for h in histories]
            if None not in top1:  # an epoch eval_every skipped has no accuracy to report
                report_epoch(float(sum(top1) / len(top1)), epoch)

    def on_event(event: Event) -> None:
        if event.kind == "epoch_end":
            info = dict(event.info)
            epoch_done(int(info.pop("member")), info)

    resume = (pack_out / "checkpoint.safetensors").exists()
    if resume:
        check_earlier_try(pack_out, cfgs[0].resolved(spec.resolution))
        for m, cfg in enumerate(cfgs):
            metrics = Path(cfg.out) / "metrics.jsonl"
            for record in _metrics(metrics) if metrics.exists() else []:
                if record["epoch"] <= epochs:
                    epoch_done(m, record)
    results = train_packed(cfgs, pack_out, resume=resume, progress=on_event)
    return [{**r, "history": h} for r, h in zip(results, histories)]
