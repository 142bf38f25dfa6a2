"""Figures: matplotlib without a display, written atomically. Every PNG compscale draws goes through here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed; safe in worker processes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 110, tight: bool = False) -> None:
    """Write ``fig`` as a PNG at ``path`` (atomically: a reader never sees half a file) and close it."""
    from compscale.io import atomic_path

    plt = pyplot()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    finally:
        plt.close(fig)


def plot_metrics(history: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> None:
    """A training run's loss and test accuracy (top-1, top-5) as a PNG: the training loss of every step (a curve
    even for one epoch), its mean per epoch, and the test loss per epoch, against the epoch (fractional).

    ``history`` holds one record per epoch (``epoch``, ``train_loss``, ``loss``, ``top1``, ``top5`` and, where
    recorded, ``step`` and ``step_loss``); nothing is written when it is empty.
    """
    plot_runs({"": history}, path, title)


def plot_runs(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path, title: str = "") -> None:
    """Several runs of one recipe in one figure (the seeds of a packed job, labelled by the keys), each in its
    colour, drawn as :func:`plot_metrics` draws one: the spread between seeds is visible at a glance, and one
    figure costs a third of three. Runs without records are left out; nothing is written if none has any."""
    runs = {label: h for label, h in histories.items() if h}
    if not runs:
        return
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    single = len(runs) == 1
    for i, (label, history) in enumerate(runs.items()):
        colour = "tab:blue" if single else f"C{i}"
        name = "" if single else f"{label} "
        epochs = [r["epoch"] for r in history]
        xs, ys = _step_curve(history)
        if xs:
            ax1.plot(xs, ys, "-", lw=0.8, alpha=0.6, color=colour, label=f"{name}train (each step)")
        ax1.plot(epochs, [r["train_loss"] for r in history], "o-", color=colour,
                 label="train (epoch mean)" if single else None)
        tested = [r for r in history if r.get("top1") is not None]  # epochs an ``eval_every`` run evaluated
        ax1.plot([r["epoch"] for r in tested], [r["loss"] for r in tested], "s-",
                 color="tab:orange" if single else colour, label="test" if single else None)
        ax2.plot([r["epoch"] for r in tested], [100 * r["top1"] for r in tested], "o-",
                 color=None if single else colour, label=f"{name}top-1")
        if single:
            ax2.plot([r["epoch"] for r in tested], [100 * r["top5"] for r in tested], "s-", label="top-5")
    ax1.set_xlabel("epoch"), ax1.set_ylabel("loss" if single else "loss (dots: epoch mean, squares: test)")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("epoch"), ax2.set_ylabel("test accuracy (%)"), ax2.legend(fontsize=None if single else 8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def _step_curve(history: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float]]:
    """The per-step training losses of ``history`` (``step_loss``) against the epoch, fractional: the last loss
    of an epoch's record is its ``step``, at x = its ``epoch``."""
    xs: list[float] = []
    ys: list[float] = []
    for r in history:
        losses, step, epoch = r.get("step_loss"), r.get("step"), r.get("epoch")
        if not losses or not step or not epoch:
            continue
        per_epoch = step / epoch
        n = len(losses)
        xs.extend((step - (n - 1 - j)) / per_epoch for j in range(n))
        ys.extend(float(v) for v in losses)
    return xs, ys
