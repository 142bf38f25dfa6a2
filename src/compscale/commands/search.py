"""Step 1 and step 2 on the command line: `compscale search` and `compscale sweep`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from compscale.commands._util import (
    JobProgress,
    finite_float,
    int_in,
    integer,
    max_threads,
    print_json,
    render_table,
)
from compscale.errors import UserError


def _add_run_args(p: argparse.ArgumentParser, default_epochs: int) -> None:
    p.add_argument("--base", default="efficientnet_b0",
                   help="baseline: a registered name, a spec file, a weights file saved by compscale, or "
                        "package.module:name (your own family; the workers import it too)")
    p.add_argument("--data", required=True, help="fashion-mnist, digits, or an ImageFolder directory")
    p.add_argument("--resolution", type=integer, help="baseline input side (default: the model's)")
    p.add_argument("--epochs", type=integer, default=default_epochs, help="epochs per job")
    p.add_argument("--seed", type=integer, default=0)
    p.add_argument("--batch-size", type=integer, default=64)
    p.add_argument("--optimizer", choices=("rmsproptf", "sgd", "adamw"),
                   help="default: the paper's TF RMSProp (rmsproptf)")
    p.add_argument("--lr", type=finite_float)
    p.add_argument("--warmup-epochs", type=finite_float, default=0.25)
    p.add_argument("--limit-train", type=integer, help="train on a fixed subset of N images")
    p.add_argument("--limit-test", type=integer, help="evaluate on a fixed subset of N images")
    p.add_argument("--precise-bn", type=integer, default=0, metavar="N",
                   help="re-estimate BatchNorm statistics on N training images before each evaluation: short "
                        "proxies otherwise score the lag of the running averages (default 0: off)")
    p.add_argument("--storage",
                   help="Optuna storage URL (default: sqlite file in OUT); postgresql://... for many machines")
    p.add_argument("--study", help="study name (default: the command's name, e.g. 'search')")
    p.add_argument("--workers", type=integer, default=1, help="local worker processes")
    p.add_argument("--threads", type=integer, help="torch threads per worker (default: cores / workers)")
    p.add_argument("--heartbeat", type=integer, default=10, help="seconds; a silent worker's job is retried after 3")
    p.add_argument("--join", action="store_true", help="only work on an existing study's queue (other machines)")
    p.add_argument("--no-pack", dest="pack", action="store_false",
                   help="train a model's seeds one after the other instead of packed into one module")
    p.add_argument("--out", help="output folder")
    p.add_argument("--json", action="store_true")


def _settings(args: argparse.Namespace, kind: str, holdout: int | None):
    from compscale.jobs.runner import RunSettings
    from compscale.models.registry import reference_label

    out = args.out or f"runs/{kind}-{reference_label(args.base)}-{Path(args.data).name}"
    return RunSettings(data=args.data, out=out, resolution=args.resolution, epochs=args.epochs, seed=args.seed,
                       seeds=getattr(args, "seeds", 1), batch_size=args.batch_size, optimizer=args.optimizer,
                       lr=args.lr, warmup_epochs=args.warmup_epochs, limit_train=args.limit_train,
                       limit_test=args.limit_test, holdout=holdout, precise_bn=args.precise_bn, storage=args.storage,
                       study=args.study, workers=args.workers, threads=args.threads, heartbeat=args.heartbeat,
                       join=args.join, pack=args.pack)


def default_holdout(data: str, limit_train: int | None) -> int | None:
    """Step 1 selects on images held out of the training set: 20 % of it (built-in datasets), at most 5000."""
    from compscale.data import BUILTIN, load_dataset

    if data not in BUILTIN:
        return None
    n = limit_train or len(load_dataset(data, 32, "none").train)
    return max(1, min(5000, n // 5))


def _run_with_progress(kind: str, args: argparse.Namespace, run) -> dict | None:
    """Run a study with its progress on stderr; the result to print as a table, or None when there is nothing
    more to print (a joining worker; ``--json``, printed here)."""
    progress = JobProgress(kind, quiet=args.json)
    try:
        result = run(progress)
    finally:
        progress.close()
    if args.json and not args.join:
        print_json({"model": args.base, **result}, indent=2)
    return None if args.join or args.json else result


def cmd_search(args: argparse.Namespace) -> int:
    from compscale.search.step1 import GridSettings, run_search

    if args.tolerance <= 0:
        raise UserError(f"--tolerance must be > 0, got {args.tolerance:g}")
    grid = GridSettings(alpha=tuple(args.alpha_range), beta=tuple(args.beta_range), gamma=tuple(args.gamma_range),
                        step=args.grid_step, target=args.target, tolerance=args.tolerance)
    holdout = args.holdout if args.holdout is not None else default_holdout(args.data, args.limit_train)
    settings = _settings(args, "search", holdout)
    result = _run_with_progress("search", args, lambda progress: run_search(args.base, settings, grid,
                                                                             args.exhaustive, progress))
    if result is None:
        return 0
    c = result["candidates"]
    print(f"{c['grid_points']} grid points, {c['nominal_feasible']} nominally feasible, {c['realized_feasible']} "
          f"realize {grid.target:g} ± {grid.tolerance:g} after rounding ({c['distinct']} distinct architectures)")
    print(render_table(result["trials"], [
        ("alpha", "alpha", str), ("beta", "beta", str), ("gamma", "gamma", str),
        ("realized_ratio", "FLOPs x", lambda v: f"{v:.3f}"), ("epochs", "epochs", str), ("state", "state", str),
        ("accuracy", "top-1", lambda v: "-" if v is None else f"{v:.4f}")]))
    best = result["best"]
    if best:
        print(f"best: alpha={best['alpha']} beta={best['beta']} gamma={best['gamma']} "
              f"(held-out top-1 {best['accuracy']:.4f}); {result['epochs_used']} of "
              f"{result['epochs_exhaustive']} epochs used; wrote {Path(settings.out) / 'search.json'}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from compscale.scaling import PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA, CompoundScaling
    from compscale.search.step2 import run_sweep

    alpha, beta, gamma = PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA
    enforce = not args.no_constraint
    if args.from_search:
        # Step 1 kept candidates by their *realized* cost, so the nominal constraint does not apply to them.
        enforce = False
        try:
            best = json.loads(Path(args.from_search).read_text(encoding="utf-8"))["best"]
            alpha, beta, gamma = best["alpha"], best["beta"], best["gamma"]
        except (OSError, ValueError, KeyError, TypeError, RecursionError):  # ValueError: not JSON, not UTF-8
            raise UserError(f"{args.from_search} is not a search.json with a best result") from None
    given = [v is not None for v in (args.alpha, args.beta, args.gamma)]
    if any(given) and not all(given):
        raise UserError("give all of --alpha, --beta and --gamma, or none")
    if all(given):
        alpha, beta, gamma = args.alpha, args.beta, args.gamma
    scaling = CompoundScaling(alpha, beta, gamma, tolerance=args.tolerance, enforce_constraint=enforce)
    settings = _settings(args, "sweep", None)
    result = _run_with_progress("sweep", args, lambda progress: run_sweep(args.base, settings, scaling, args.phis,
                                                                           args.strategies, progress))
    if result is None:
        return 0
    print(render_table(result["points"], [
        ("strategy", "strategy", str), ("phi", "phi", lambda v: f"{v:g}"), ("resolution", "res", str),
        ("macs", "MACs", lambda v: f"{v / 1e6:.1f}M"), ("deviation", "vs target", lambda v: f"{v:+.1%}"),
        ("accuracy_mean", "top-1", lambda v: "-" if v is None else f"{v:.4f}"),
        ("accuracy_std", "±", lambda v: "-" if v is None else f"{v:.4f}")]))
    print(result["verdict"]["summary"])
    for line in result["verdict"]["details"]:
        print("  " + line)
    print(f"wrote {Path(settings.out) / 'sweep.json'} and sweep.png")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from compscale.jobs.runner import join_study

    progress = JobProgress("worker")
    try:
        ran = join_study(args.storage, args.study, args.out, args.threads, args.heartbeat, progress)
    finally:
        progress.close()
    print(f"compscale worker: ran {ran} job(s) of study {args.study!r}", flush=True)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="work through an existing study's job queue (search, sweep, study) on this "
                                      "machine; other machines join with the same --storage URL")
    p.add_argument("--storage", required=True, help="the study's database URL (sqlite:///OUT/study.db, postgresql://...)")
    p.add_argument("--study", required=True, help="the study's name (by default its command: search, sweep, "
                                                 "cardinality, families)")
    p.add_argument("--out", default=".", help="folder for this machine's training runs")
    p.add_argument("--threads", type=int_in(1, max_threads, "4 per core"), default=1, help="torch threads")
    p.add_argument("--heartbeat", type=int_in(1, 86_400), default=10)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("search", help="step 1: grid-search alpha, beta, gamma at phi=1 on real data (Optuna)")
    _add_run_args(p, default_epochs=3)
    p.add_argument("--grid-step", type=finite_float, default=0.05)
    p.add_argument("--alpha-range", type=finite_float, nargs=2, default=(1.0, 2.0), metavar=("LO", "HI"))
    p.add_argument("--beta-range", type=finite_float, nargs=2, default=(1.0, 1.5), metavar=("LO", "HI"))
    p.add_argument("--gamma-range", type=finite_float, nargs=2, default=(1.0, 1.5), metavar=("LO", "HI"))
    p.add_argument("--target", type=finite_float, default=2.0, help="realized FLOPs ratio at phi=1")
    p.add_argument("--tolerance", type=finite_float, default=0.1)
    p.add_argument("--holdout", type=integer, help="held-out training images to select on (default 20%%)")
    p.add_argument("--exhaustive", action="store_true", help="train every candidate to the end (no pruning)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("sweep", help="step 2: scale by phi and compare with single-dimension scaling at equal FLOPs")
    _add_run_args(p, default_epochs=3)
    p.add_argument("--alpha", type=finite_float)
    p.add_argument("--beta", type=finite_float)
    p.add_argument("--gamma", type=finite_float)
    p.add_argument("--from-search", help="take alpha, beta, gamma from a search.json")
    p.add_argument("--tolerance", type=finite_float, default=0.1)
    p.add_argument("--no-constraint", action="store_true")
    p.add_argument("--phis", type=finite_float, nargs="+", default=[0.0, 1.0, 2.0])
    p.add_argument("--seeds", type=integer, default=2, help="seeds per model (paired: seed k is the same for all)")
    p.add_argument("--strategies", nargs="+", default=["compound", "depth", "width", "resolution"])
    p.set_defaults(func=cmd_sweep)
