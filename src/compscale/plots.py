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
    """A training run's loss (train and test) and test accuracy (top-1, top-5) per epoch, as a PNG.

    ``history`` holds one record per epoch (``epoch``, ``train_loss``, ``loss``, ``top1``, ``top5``); nothing is
    written when it is empty.
    """
    if not history:
        return
    plt = pyplot()
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
    save_figure(fig, path, dpi=100)
