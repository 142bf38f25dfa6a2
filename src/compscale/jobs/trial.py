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
from typing import Any, Callable

from compscale.io import atomic_write_text
from compscale.progress import Event
from compscale.specs import ModelSpec

ReportEpoch = Callable[[float, int], None]


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
    from compscale.train.config import TrainConfig
    from compscale.train.loop import train

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
        if report_epoch is not None:
            report_epoch(float(record["top1"]), int(record["epoch"]))

    def on_event(event: Event) -> None:
        if event.kind == "epoch_end":
            epoch_done(dict(event.info))

    resume = (out / "checkpoint.safetensors").exists()
    if resume and (out / "metrics.jsonl").exists():
        # A resumed job re-reports the epochs it already has, so its trial records them (and can be pruned).
        for line in (out / "metrics.jsonl").read_text().splitlines():
            record = json.loads(line)
            if int(record["epoch"]) <= epochs:
                epoch_done(record)
    result = train(cfg.validate(), resume=resume, progress=on_event)
    return {**result, "history": history}
