"""Training commands: train, eval, finetune (the seed's "applied to other datasets")."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from compscale.commands._util import BarProgress, finite_float, integer, print_json, progress_bar, render_table
from compscale.errors import UserError
from compscale.progress import Event

# Flags default to SUPPRESS so that only the ones given on the command line override the config file.
_S = argparse.SUPPRESS


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


class _ProgressBars:
    """The training engine's :data:`~compscale.progress.Progress`: a tqdm bar per epoch on stderr (rank 0
    only), and one summary line per epoch."""

    def __init__(self) -> None:
        self.bar = None
        self.enabled = _is_main()

    def __call__(self, event: Event) -> None:
        handler = {"train_start": self.started, "epoch_start": self.epoch_started, "step": self.stepped,
                   "eval": self.evaluating, "epoch_end": self.epoch_ended}.get(event.kind)
        if handler is not None:
            handler(event)

    def started(self, event: Event) -> None:
        if not self.enabled:
            return
        info = event.info
        for note in info["notes"]:
            print(f"compscale: {info['data']}: {note}", file=sys.stderr)
        resumed = (f", resuming at epoch {info['resumed_epoch'] + 1} step {info['resumed_step']}"
                   if info["resumed_epoch"] or info["resumed_step"] else "")
        procs = f" x {info['world_size']} processes" if info["world_size"] > 1 else ""
        print(f"compscale: training {info['model']} on {info['data']} ({info['train']} train / {info['test']} test "
              f"images, {info['classes']} classes, {info['channels']} channel(s), {info['resolution']} px) on "
              f"{info['device']}{procs}, lr {info['lr']:.4g}{resumed}", file=sys.stderr)

    def epoch_started(self, event: Event) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        epoch, epochs = event.info["epoch"], event.info["epochs"]
        self.bar = tqdm(total=event.total, initial=event.done, desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                        file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=0.5)

    def stepped(self, event: Event) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if event.done % 10 == 0:
            self.bar.set_postfix(loss=f"{float(event.info['loss']):.3f}", lr=f"{event.info['lr']:.3g}", refresh=False)

    def evaluating(self, event: Event) -> None:
        """The epoch's evaluation: a bar over the test batches in place of the epoch's."""
        if not self.enabled:
            return
        if event.done == 0:
            desc = self.bar.desc if self.bar is not None else "epoch"
            self.close()
            self.bar = progress_bar(event.total, f"{desc}: test", "batch")
        elif self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        """Take the bar off the terminal, so that an error message gets a line of its own."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def epoch_ended(self, event: Event) -> None:
        self.close()
        if self.enabled:
            record = event.info
            test = ("not evaluated (--eval-every)" if record["top1"] is None else
                    f"test loss {record['loss']:.4f}  top-1 {100 * record['top1']:.2f}%  "
                    f"top-5 {100 * record['top5']:.2f}%")
            print(f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}  {test}  "
                  f"{record['images_per_s']:.0f} img/s", file=sys.stderr)


class _TensorBoard:
    """``--tensorboard DIR``: the run's scalars as TensorBoard event files in DIR (rank 0), against the global step:
    ``train/loss`` and ``train/lr`` at every step; ``test/top1``, ``test/top5`` (fractions), ``test/loss`` and
    ``train/epoch_loss`` (the epoch's mean) at each epoch's last step. A resumed run continues the curves (what an
    interrupted run logged past the checkpoint is dropped)."""

    #: Steps whose losses are kept as tensors before they are written (one synchronisation per flush).
    FLUSH_STEPS = 50

    def __init__(self, folder: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard "
                            "(or pip install 'compscale[tensorboard]')") from None
        if Path(folder).exists() and not Path(folder).is_dir():
            raise UserError(f"--tensorboard {folder}: not a folder")
        self.folder, self.writer, self.steps_per_epoch, self.epoch = folder, None, 1, 0
        self.pending: list[tuple[int, Any, float]] = []

    def __call__(self, event: Event) -> None:
        if event.kind == "train_start":
            from torch.utils.tensorboard import SummaryWriter

            info = event.info
            self.steps_per_epoch = info["steps_per_epoch"]
            start = info["resumed_epoch"] * self.steps_per_epoch + info["resumed_step"]
            try:
                self.writer = SummaryWriter(self.folder, purge_step=start or None)
            except OSError as err:
                raise UserError(f"--tensorboard {self.folder}: cannot write there ({err.strerror})") from None
        elif self.writer is None:
            return
        elif event.kind == "epoch_start":
            self.epoch = event.info["epoch"]
        elif event.kind == "step":
            self.pending.append((self.epoch * self.steps_per_epoch + event.done, event.info["loss"], event.info["lr"]))
            if len(self.pending) >= self.FLUSH_STEPS:
                self.flush()
        elif event.kind == "epoch_end":
            self.flush()
            record = event.info
            for tag, key in (("test/top1", "top1"), ("test/top5", "top5"), ("test/loss", "loss"),
                             ("train/epoch_loss", "train_loss")):
                if record.get(key) is not None:
                    self.writer.add_scalar(tag, record[key], record["step"])
            self.writer.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        import torch

        losses = torch.stack([torch.as_tensor(loss).float().reshape(()) for _, loss, _ in self.pending]).tolist()
        for (step, _, lr), loss in zip(self.pending, losses):
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)
        self.pending = []

    def close(self) -> None:
        if self.writer is not None:
            self.flush()
            self.writer.close()
            self.writer = None


def _both(*consumers: Any) -> Any:
    """One :data:`~compscale.progress.Progress` that hands every event to each of ``consumers``."""

    def progress(event: Event) -> None:
        for consumer in consumers:
            consumer(event)

    return progress


def _config_from_args(args: argparse.Namespace, finetune: bool):
    from compscale.train.config import TrainConfig, config_from_mapping, load_config

    # Private attributes (e.g. ``_argv``, set by compscale.cli.main) are not config keys.
    given = {k: v for k, v in vars(args).items()
             if k not in ("func", "command", "config", "resume", "overwrite", "json", "tensorboard")
             and not k.startswith("_")}
    if given.get("model") is None:
        given.pop("model", None)
    if getattr(args, "resume", False) and not args.config and "model" not in given and given.get("out"):
        # `train --resume --out DIR`: the run's own config (model, data, recipe) is in DIR.
        saved = Path(given["out"]) / "config.yaml"
        if not saved.is_file():
            raise UserError(f"--resume --out {given['out']}: there is no config.yaml there (give MODEL and --data "
                            "to start a run)")
        return config_from_mapping(given, load_config(saved), source="command line").validate()
    cfg = load_config(args.config) if getattr(args, "config", None) else TrainConfig()
    cfg = config_from_mapping(given, cfg, source="command line")
    if not args.config and "model" not in given:
        raise UserError("give a MODEL (e.g. efficientnet_b0) or --config FILE.yaml")
    if finetune and not cfg.weights:
        from compscale.models.registry import is_weights_file

        if not is_weights_file(cfg.model):
            raise UserError("finetune needs --weights FILE (the pretrained model), or a weights file as MODEL")
        import dataclasses

        cfg = dataclasses.replace(cfg, weights=cfg.model)  # MODEL is the trained model: start from its weights
    if args.resume:
        # Resume with the run's own resolved config; flags given now (e.g. more --epochs) still override.
        from compscale.train.config import default_out

        out = Path(cfg.out or default_out(cfg.model, cfg.data))
        saved = out / "config.yaml"
        if saved.is_file():
            base = load_config(saved)
            if args.config:
                base = load_config(args.config, base)
            cfg = config_from_mapping(given, base, source="command line")
    return cfg.validate()


def _check_model_size(cfg) -> None:
    """The model the run would build (its spec at the run's resolution) within the size ceiling, before any
    data is read or module built: one line, naming the ceiling and how to lift it."""
    from compscale.compound import check_model_size
    from compscale.models.registry import resolve_spec

    check_model_size(resolve_spec(cfg.model, resolution=cfg.resolution))


def cmd_train(args: argparse.Namespace, finetune: bool = False) -> int:
    cfg = _config_from_args(args, finetune)
    _check_model_size(cfg)
    from compscale.models.registry import is_weights_file

    if not finetune and not cfg.weights and is_weights_file(cfg.model) and _is_main():
        print(f"compscale: training the architecture recorded in {cfg.model} from scratch (`compscale finetune "
              f"{cfg.model} --data ...` starts from its weights)", file=sys.stderr)
    from compscale.train.loop import train

    bars = _ProgressBars()
    board = _TensorBoard(args.tensorboard) if args.tensorboard and _is_main() else None
    try:
        result = train(cfg, resume=args.resume, progress=bars if board is None else _both(bars, board),
                       overwrite=args.overwrite)
    finally:
        bars.close()
        if board is not None:
            board.close()
    if not _is_main():
        return 0
    if args.json:
        print_json({"model": cfg.model, "top1": result["top1"], "top5": result["top5"], "epochs": result["epochs"],
                    "loss": result["loss"], "out": result["out"]})
    else:
        print(f"{cfg.model}: top-1 {100 * result['top1']:.2f}%  top-5 {100 * result['top5']:.2f}% after "
              f"{result['epochs']} epoch(s); weights, config.yaml, metrics.jsonl and metrics.png in {result['out']}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    return cmd_train(args, finetune=True)


def cmd_eval(args: argparse.Namespace) -> int:
    from compscale.train.config import MAX_BATCH, check_device, max_processes
    from compscale.train.evaluate import eval_model

    check_device(args.device)
    if not 1 <= args.batch_size <= MAX_BATCH:
        raise UserError(f"--batch-size must be from 1 to {MAX_BATCH:,}, got {args.batch_size}")
    if not 0 <= args.workers <= max_processes():
        raise UserError(f"--workers must be from 0 to {max_processes():,} (4 per core), got {args.workers}")
    weights = args.weights or _weights_of(args.model)
    bar = BarProgress("batch", kinds=("eval",))  # 10,000 images take minutes on a CPU
    try:
        result, data = eval_model(args.model, weights, args.data, args.resolution, args.batch_size, args.device,
                                  args.workers, args.amp, progress=bar)
    finally:
        bar.close()
    _check_class_names(weights, data)
    per_class = result.per_class
    if args.json:
        print_json({"model": args.model, "top1": result.top1, "top5": result.top5, "loss": result.loss,
                    "count": result.count, "classes": list(data.classes), "per_class": per_class,
                    "confusion": result.confusion.tolist()})
        return 0
    for note in data.notes:
        print(f"compscale: {data.name}: {note}", file=sys.stderr)
    print(f"{args.model} on {data.name} ({result.count} test images): top-1 {100 * result.top1:.2f}%  "
          f"top-5 {100 * result.top5:.2f}%  loss {result.loss:.4f}\n")
    rows = [{"class": c, "n": int(result.confusion[i].sum()), "acc": a}
            for i, (c, a) in enumerate(zip(data.classes, per_class))]
    print(render_table(rows, [("class", "class", str), ("n", "images", str),
                              ("acc", "accuracy", lambda v: "-" if v is None else f"{100 * v:.1f}%")]))
    if len(data.classes) <= 20:
        print("\nconfusion matrix (rows: true class, columns: predicted)")
        cm = result.confusion.tolist()
        width = max(len(str(v)) for row in cm for v in row) + 1
        print("     " + "".join(f"{j:>{width}}" for j in range(len(cm))))
        for i, row in enumerate(cm):
            print(f"{i:>4} " + "".join(f"{v:>{width}}" for v in row))
    return 0


def _weights_of(model: str) -> str:
    """The weights file of a model reference that is one (eval and finetune take it as MODEL); one line when
    MODEL has no weights."""
    from compscale.models.registry import resolve_reference

    ref = resolve_reference(model)
    if ref.weights is None:
        raise UserError(f"{model} is not a weights file: pass --weights FILE (trained weights)")
    return ref.weights


def _check_class_names(weights: str, data) -> None:
    """A note when the weights record other class names than the data's (another class order scores nonsense)."""
    from compscale.models.registry import read_metadata, recorded_classes

    try:
        recorded = recorded_classes(weights, read_metadata(weights), data.num_classes)
    except UserError:
        recorded = None  # other class count or unreadable names: eval_model has already checked the shapes
    if recorded is not None and tuple(recorded) != tuple(data.classes):
        print(f"compscale: warning: {weights} was trained on classes {', '.join(recorded[:5])}"
              f"{'...' if len(recorded) > 5 else ''}, the data has {', '.join(data.classes[:5])}"
              f"{'...' if len(data.classes) > 5 else ''}", file=sys.stderr)


def _add_training_flags(p: argparse.ArgumentParser, finetune: bool) -> None:
    _add_run_flags(p)
    _add_optimisation_flags(p)
    _add_engine_flags(p)
    if finetune:
        _add_finetune_flags(p)


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """What to train, on which data, for how long, and where to."""
    from compscale.data import AUGMENTS

    p.add_argument("model", nargs="?", default=_S, help="a registered name (see `compscale models`), a spec file, a "
                                                         "weights file saved by compscale, or module:name")
    p.add_argument("--data", default=_S, help="fashion-mnist, digits, or an ImageFolder directory")
    p.add_argument("--config", help="YAML file of TrainConfig keys (flags given here override it)")
    p.add_argument("--out", default=_S, help="output directory (default runs/MODEL-DATA)")
    p.add_argument("--epochs", type=integer, default=_S)
    p.add_argument("--batch-size", dest="batch_size", type=integer, default=_S, help="global batch (all processes)")
    p.add_argument("--resolution", type=integer, default=_S, help="input side in pixels (default: the model's)")
    p.add_argument("--seed", type=integer, default=_S)
    p.add_argument("--deterministic", action="store_true", default=_S, help="deterministic kernels (bit-exact resume)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors if present")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in OUT (without it, and without --resume, such an OUT is refused)")
    p.add_argument("--limit-train", dest="limit_train", type=integer, default=_S,
                   help="train on a fixed subset of N images")
    p.add_argument("--limit-test", dest="limit_test", type=integer, default=_S,
                   help="evaluate on a fixed subset of N images")
    p.add_argument("--holdout", type=integer, default=_S,
                   help="evaluate on N images held out of the training set instead of the test set")
    p.add_argument("--augment", default=_S, help=f"one of {', '.join(AUGMENTS)}")


def _add_optimisation_flags(p: argparse.ArgumentParser) -> None:
    """The optimizer, its schedule and the regularisation."""
    from compscale.train.config import OPTIMIZERS, SCHEDULES

    p.add_argument("--optimizer", default=_S, help=f"one of {', '.join(OPTIMIZERS)} (rmsproptf: the paper's)")
    p.add_argument("--lr", type=finite_float, default=_S, help="peak learning rate (default: scaled by batch/256)")
    p.add_argument("--weight-decay", dest="weight_decay", type=finite_float, default=_S)
    p.add_argument("--momentum", type=finite_float, default=_S)
    p.add_argument("--schedule", default=_S, help=f"one of {', '.join(SCHEDULES)} (step: x0.97 every 2.4 epochs)")
    p.add_argument("--warmup-epochs", dest="warmup_epochs", type=finite_float, default=_S)
    p.add_argument("--label-smoothing", dest="label_smoothing", type=finite_float, default=_S)
    p.add_argument("--ema", type=finite_float, nargs="?", const=0.9999, default=_S,
                   help="keep an EMA of the weights (decay, default 0.9999) and evaluate/save it")
    p.add_argument("--drop-rate", dest="drop_rate", type=finite_float, default=_S, help="dropout before the classifier")
    p.add_argument("--drop-path-rate", dest="drop_path_rate", type=finite_float, default=_S, help="stochastic depth")


def _add_engine_flags(p: argparse.ArgumentParser) -> None:
    """How the engine runs: memory layout, precision, processes, evaluation, checkpoints, output."""
    p.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction, default=_S,
                   help="NHWC memory layout (the default: measured faster for training on CPUs)")
    p.add_argument("--amp", action="store_true", default=_S, help="mixed precision (bf16, or fp16 on older GPUs)")
    p.add_argument("--compile", action="store_true", default=_S,
                   help="torch.compile the model for training (pays off only on long runs: compiling takes 20-60 s)")
    p.add_argument("--workers", type=integer, default=_S, help="data loader processes")
    p.add_argument("--device", default=_S, help="auto, cpu, cuda")
    p.add_argument("--threads", type=integer, default=_S, help="CPU threads per process")
    p.add_argument("--eval-batch-size", dest="eval_batch_size", type=integer, default=_S)
    p.add_argument("--precise-bn", dest="precise_bn", type=integer, default=_S, metavar="N",
                   help="re-estimate BatchNorm statistics on N training images before each evaluation (0: off)")
    p.add_argument("--eval-every", dest="eval_every", type=integer, default=_S, metavar="N",
                   help="evaluate after every N-th epoch and after the last (default 1); the weights are the same")
    p.add_argument("--checkpoint-steps", dest="checkpoint_steps", type=integer, default=_S,
                   help="also checkpoint every N steps (always at each epoch's end)")
    p.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    p.add_argument("--tensorboard", metavar="DIR",
                   help="also write TensorBoard scalars to DIR: the loss and lr of every step, each epoch's test "
                        "top-1, top-5 and loss (needs `pip install tensorboard`; view with `tensorboard --logdir DIR`)")


def _add_finetune_flags(p: argparse.ArgumentParser) -> None:
    """The pretrained weights, and which parts of the model train when."""
    p.add_argument("--weights", default=_S, help="pretrained weights (.safetensors or a tensors-only .pth)")
    p.add_argument("--freeze-backbone", dest="freeze_backbone", action="store_true", default=_S,
                   help="train only the new classifier")
    p.add_argument("--unfreeze-after", dest="unfreeze_after", type=integer, default=_S,
                   help="train only the classifier for N epochs, then everything")
    p.add_argument("--head-lr", dest="head_lr", type=finite_float, default=_S, help="classifier lr (default: --lr)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on fashion-mnist, digits or an image folder")
    _add_training_flags(p, finetune=False)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finetune", help="transfer a trained model to another dataset (new classifier)")
    _add_training_flags(p, finetune=True)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("eval", help="top-1/top-5, per-class accuracy and confusion matrix of trained weights")
    p.add_argument("model", help="a weights file saved by compscale (its spec and class names), or a registered "
                                 "name, spec file or module:name with --weights")
    p.add_argument("--weights", help="the trained weights (default: MODEL, when it is a weights file)")
    p.add_argument("--data", required=True, help="fashion-mnist, digits, or an ImageFolder directory")
    p.add_argument("--resolution", type=integer,
                   help="default: the resolution recorded in the weights, else the model's")
    p.add_argument("--batch-size", dest="batch_size", type=integer, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=integer, default=0)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)
