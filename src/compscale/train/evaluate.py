"""Evaluation: top-1/top-5 accuracy, mean loss and the confusion matrix, in one process or across a torchrun job.

:func:`evaluate` measures a model on a loader (each process its shard, sums combined across processes);
:func:`eval_model` does the same for a trained weights file on a dataset's test split.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compscale.data import BatchPreparer, DataBundle, collate, load_dataset
from compscale.errors import UserError
from compscale.models.registry import model_spec
from compscale.progress import Progress, report
from compscale.train.checkpoint import check_weights_spec, read_weights_spec
from compscale.train.distributed import DistInfo, all_reduce_sum, pick_device

__all__ = ["EvalResult", "autocast", "eval_loader", "eval_model", "evaluate", "evaluate_members"]


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


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision in ``dtype`` on ``device`` (nothing when ``dtype`` is None)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


class _Tally:
    """Running sums of one model's evaluation: loss, top-5 hits and the confusion matrix."""

    def __init__(self, num_classes: int, device: torch.device) -> None:
        self.classes, self.k = num_classes, min(5, num_classes)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct5 = torch.zeros((), dtype=torch.int64, device=device)
        self.confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)

    def add(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        logits = logits.float()
        self.loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").double()
        topk = logits.topk(self.k, dim=1).indices
        self.correct5 += (topk == y[:, None]).any(1).sum()
        self.confusion += torch.bincount(y * self.classes + topk[:, 0], minlength=self.classes * self.classes)

    def result(self, info: DistInfo) -> EvalResult:
        for t in (self.loss_sum, self.correct5, self.confusion):
            all_reduce_sum(t, info)
        confusion = self.confusion.view(self.classes, self.classes).cpu()
        count = int(confusion.sum())
        if count == 0:
            raise UserError("the evaluation set is empty")
        return EvalResult(float(self.loss_sum) / count, float(confusion.trace()) / count, int(self.correct5) / count,
                          count, confusion)


@torch.no_grad()
def evaluate(model: nn.Module, loader: torch.utils.data.DataLoader, prep: BatchPreparer, num_classes: int,
             info: DistInfo = DistInfo(), amp_dtype: torch.dtype | None = None,
             progress: Progress | None = None) -> EvalResult:
    """Accuracy of ``model`` over ``loader`` (each process its shard; sums are combined across processes).
    ``progress`` gets an ``eval`` event before the first batch and after each (``done``/``total``: batches)."""
    return evaluate_members(model, loader, prep, num_classes, info, amp_dtype, members=0, progress=progress)[0]


@torch.no_grad()
def evaluate_members(model: nn.Module, loader: torch.utils.data.DataLoader, prep: BatchPreparer, num_classes: int,
                     info: DistInfo = DistInfo(), amp_dtype: torch.dtype | None = None,
                     members: int = 0, progress: Progress | None = None) -> list[EvalResult]:
    """Accuracy of each member of a packed model (``members`` = k: every member sees the same test batch, and
    the model returns logits (B, k, classes)); ``members=0`` evaluates an ordinary model (one result)."""
    model.eval()
    device = prep.device
    tallies = [_Tally(num_classes, device) for _ in range(max(1, members))]
    total = len(loader)
    report(progress, "eval", "evaluating", done=0, total=total)
    for i, (x, y) in enumerate(loader, start=1):
        x, y = prep(x), y.to(device)
        if members:
            x = torch.cat([x] * members, dim=1)  # member m's input in channels m·C..(m+1)·C
        with autocast(device, amp_dtype):
            logits = model(x)
        for m, tally in enumerate(tallies):
            tally.add(logits[:, m] if members else logits, y)
        report(progress, "eval", "evaluating", done=i, total=total)
    return [t.result(info) for t in tallies]


def eval_loader(dataset: torch.utils.data.Dataset, batch_size: int, info: DistInfo, workers: int = 0):
    """Process r evaluates samples r, r+N, r+2N, …: every sample exactly once (no padding)."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size,
                                       sampler=range(info.rank, len(dataset), info.world_size), num_workers=workers,
                                       collate_fn=collate, pin_memory=info.device.type == "cuda")


def eval_model(model_name: str, weights: str | Path, data_name: str, resolution: int | None = None,
               batch_size: int = 128, device: str = "auto", workers: int = 0,
               amp: bool = False, progress: Progress | None = None) -> tuple[EvalResult, DataBundle]:
    """Evaluate a trained weights file on a dataset's test split (the model is built for the data's classes);
    ``progress`` as :func:`evaluate`'s."""
    from compscale.compound import check_model_size
    from compscale.models.registry import build_model, resolve_spec
    from compscale.models.weights import load_weights

    base = model_spec(model_name)
    saved = read_weights_spec(weights)
    res = resolution or (saved or {}).get("resolution") or base.resolution
    check_model_size(resolve_spec(base, resolution=res))  # before any data is read or module built
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
    loader = eval_loader(data.test, batch_size, info, workers)
    return evaluate(model, loader, prep, data.num_classes, info, amp_dtype, progress), data
