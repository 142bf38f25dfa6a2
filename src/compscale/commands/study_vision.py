"""Studies that look at trained models: cam-study (the paper's Figure 7, scored) and transfer-demo."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from compscale.commands._util import finite_float, positive_int, print_json, render_table
from compscale.progress import Event


def _seeds(text: str) -> tuple[int, ...]:
    """``0,1,2`` or ``3`` (meaning seeds 0, 1, 2)."""
    try:
        parts = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a seed list: {text!r} (e.g. 0,1,2 or 3)") from None
    if len(parts) == 1 and "," not in text:
        if parts[0] < 1:
            raise argparse.ArgumentTypeError(f"a seed count must be at least 1, got {text!r} "
                                             "(for the single seed 0 write '0,')")
        return tuple(range(parts[0]))
    if not parts:
        raise argparse.ArgumentTypeError(f"not a seed list: {text!r}")
    return tuple(parts)


class _Bar:
    """One tqdm bar over the study's epochs (stderr), with a line per finished model."""

    def __init__(self, total: int, unit: str = "epoch") -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)

    def close(self) -> None:
        self.bar.close()


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def cmd_cam_study(args: argparse.Namespace) -> int:
    from compscale.analysis.cam_study import QUICK, CamStudyConfig, run_cam_study

    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    values.update(_given(args, ("data", "out", "epochs", "seeds", "limit_train", "limit_test", "images",
                                "figure_images", "method", "phi", "alpha", "beta", "gamma", "threshold",
                                "recalibrate_bn", "batch_size", "lr", "warmup_epochs", "threads")))
    if args.quick and args.out is None:
        values["out"] = "runs/cam-study-quick"
    cfg = CamStudyConfig(**values).validate()
    bar: _Bar | None = None

    def progress(event: Event) -> None:
        nonlocal bar
        info = event.info
        if event.kind == "stage" and bar is None:  # the study starts: its jobs are known
            bar = _Bar(event.total * cfg.epochs)
        elif event.kind == "stage":  # a model starts training
            bar.bar.set_description(event.message)
        elif event.kind == "epoch_end" and bar is not None:
            bar.bar.update(1)
            bar.bar.set_postfix(top1=f"{100 * info['top1']:.1f}%")
        elif event.kind == "trial" and not args.json:
            line = (f"seed {info['seed']} {info['model']:<10} top-1 {100 * info['top1']:5.1f}%  energy in mask "
                    f"{100 * info['energy']:5.1f}%  pointing {100 * info['pointing']:5.1f}%")
            (bar.bar.write if bar is not None else print)(line, file=sys.stderr)

    try:
        result = run_cam_study(cfg, progress)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print_json({k: result[k] for k in ("summary", "models", "chance", "max_abs_deviation", "files")})
        return 0
    _print_cam_study(result)
    return 0


def _print_cam_study(result: dict[str, Any]) -> None:
    """The models and their scores (mean ± std over seeds) as tables, then the reading and the files."""
    models = {m["name"]: m for m in result["models"]}
    rows = [{**r, "res": models[r["model"]]["resolution"], "macs": models[r["model"]]["macs"],
             "dev": None if r["model"] == "baseline" else models[r["model"]]["deviation"]} for r in result["summary"]]

    def pm(key: str):
        def fmt(r: dict[str, Any]) -> str:
            std = r[key + "_std"]
            return f"{100 * r[key + '_mean']:.1f}" + ("" if std is None else f"±{100 * std:.1f}")

        return fmt

    cols = [("model", "model", str), ("res", "res", str), ("macs", "MACs", lambda v: f"{v / 1e6:.2f}M"),
            ("dev", "vs target", lambda v: "-" if v is None else f"{100 * v:+.1f}%")]
    table = render_table(rows, cols)
    score_rows = [{"model": r["model"], "top1": pm("top1")(r), "scored": pm("scored_top1")(r),
                   "energy": pm("energy")(r), "pointing": pm("pointing")(r)} for r in rows]
    print(table)
    print()
    print(render_table(score_rows, [("model", "model", str), ("top1", "top-1 %", str),
                                    ("scored", "scored top-1 %", str), ("energy", "energy in mask %", str),
                                    ("pointing", "pointing %", str)]))
    print(f"\nflat-map chance: {100 * result['chance']['mask_area']:.1f}% energy in mask")
    print(result["reading"])
    print(f"wrote {', '.join(result['files'].values())}")


def cmd_transfer_demo(args: argparse.Namespace) -> int:
    from compscale.analysis.transfer import QUICK, TransferConfig, run_transfer

    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    values.update(_given(args, ("model", "data", "out", "resolution", "epochs", "limit_train", "limit_test", "seed",
                                "batch_size", "lr", "head_lr", "unfreeze_after", "bn_momentum", "threads")))
    if args.quick and args.out is None:
        values["out"] = "runs/transfer-demo-quick"
    cfg = TransferConfig(**values).validate()
    bar = _Bar(2 * cfg.epochs)

    def progress(event: Event) -> None:
        info = event.info
        if event.kind == "stage":
            bar.bar.set_description(info["run"])
        elif event.kind == "epoch_end":
            bar.bar.update(1)
            if not args.json:
                line = f"{info['run']:<10} epoch {info['epoch']}: top-1 {100 * info['top1']:.1f}%"
                bar.bar.write(line, file=sys.stderr)

    try:
        result = run_transfer(cfg, progress)
    finally:
        bar.close()
    if args.json:
        print_json({"model": cfg.model, **{k: result[k] for k in ("runs", "gain_top1", "files")}})
        return 0
    pre, scr = result["runs"]["pretrained"]["history"], result["runs"]["scratch"]["history"]
    rows = [{"epoch": a["epoch"], "pre": a["top1"], "scr": b["top1"]} for a, b in zip(pre, scr)]
    print(render_table(rows, [("epoch", "epoch", str), ("pre", "pretrained top-1", lambda v: f"{100 * v:.1f}%"),
                              ("scr", "scratch top-1", lambda v: f"{100 * v:.1f}%")]))
    print(f"pretrained - scratch: {100 * result['gain_top1']:+.1f} points; wrote {', '.join(result['files'].values())}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    _register_cam_study(sub)
    _register_transfer_demo(sub)


def _register_cam_study(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cam-study", help="the paper's Figure 7: CAMs of equal-cost deeper/wider/higher-res/compound "
                                         "models, scored against object masks over seeds")
    p.add_argument("--data", help="fashion-mnist (default) or digits")
    p.add_argument("--out", help="output folder (default runs/cam-study); re-running resumes the trained models")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--seeds", type=_seeds, help="a list (0,1,2) or a count (3 = seeds 0,1,2); default 3")
    p.add_argument("--limit-train", type=positive_int, help="training images (a fixed subset; default 4000)")
    p.add_argument("--limit-test", type=positive_int, help="test images for the accuracy (default 2000)")
    p.add_argument("--images", type=positive_int, help="test images scored (a fixed subset; default 500)")
    p.add_argument("--figure-images", type=positive_int, help="rows of the figure (default 4)")
    p.add_argument("--method", choices=("cam", "gradcam", "gradcam++"))
    p.add_argument("--phi", type=finite_float, help="compound coefficient of the cost target (default 2)")
    p.add_argument("--alpha", type=finite_float)
    p.add_argument("--beta", type=finite_float)
    p.add_argument("--gamma", type=finite_float)
    p.add_argument("--threshold", type=finite_float, help="object mask: pixels above this fraction of white (0.1)")
    p.add_argument("--no-recalibrate-bn", dest="recalibrate_bn", action="store_false", default=None,
                   help="score with the engine's BatchNorm statistics (default: re-estimate them, precise BN)")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=finite_float)
    p.add_argument("--warmup-epochs", type=finite_float, help="learning-rate warm-up (default 1 epoch)")
    p.add_argument("--threads", type=positive_int)
    p.add_argument("--quick", action="store_true", help="digits, 1 epoch, 2 seeds, 320 images, phi 1: seconds (tests)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cam_study)


def _register_transfer_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transfer-demo", help="fine-tune pretrained EfficientNet-Lite0 vs the same model from scratch, "
                                             "same budget; both learning curves")
    p.add_argument("--model", help="efficientnet_lite0 (default), lite1 or lite2: packaged ImageNet weights")
    p.add_argument("--data", help="fashion-mnist (default), digits, or an image folder")
    p.add_argument("--out", help="output folder (default runs/transfer-demo); re-running resumes")
    p.add_argument("--resolution", type=positive_int, help="input side in pixels for both runs (default 64)")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--limit-train", type=positive_int, help="training images (default 1000)")
    p.add_argument("--limit-test", type=positive_int, help="test images (default 500)")
    p.add_argument("--seed", type=int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=finite_float, help="learning rate of both runs (default: the engine's)")
    p.add_argument("--head-lr", type=finite_float, help="fine-tuning: the new classifier's learning rate")
    p.add_argument("--unfreeze-after", type=int, help="fine-tuning: epochs with a frozen backbone first")
    p.add_argument("--bn-momentum", type=finite_float, help="BatchNorm momentum of both runs (default 0.1)")
    p.add_argument("--threads", type=positive_int)
    p.add_argument("--quick", action="store_true", help="digits at 32 px, 1 epoch, 256 images (tests)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_transfer_demo)
