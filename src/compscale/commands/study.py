"""The seed's second question as commands: `compscale study cardinality` and `compscale study families`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from compscale.commands._util import finite_float, int_in, max_threads, positive_int, print_json, render_table
from compscale.errors import UserError

STUDIES = ("cardinality", "families")

#: ``--quick``: the forms the tests run (digits, tiny models, one epoch, two seeds, a few hundred images).
QUICK = {"data": "digits", "epochs": 1, "seeds": 2, "limit_train": 192, "limit_test": 120, "batch_size": 32,
         "latency_repeats": 3}
#: Defaults of a full run.
FULL = {"epochs": 3, "seeds": 2, "limit_train": None, "limit_test": None, "batch_size": 64, "latency_repeats": 20}


#: The largest cost level (a multiple of the smallest model's multiply-adds) a families study may ask for.
MAX_LEVEL = 1000.0


def _levels(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r} (e.g. 1,2)") from None
    if not values or any(not 0 < v <= MAX_LEVEL for v in values) or len(values) > 100:
        raise argparse.ArgumentTypeError(f"levels must be 1 to 100 numbers in (0, {MAX_LEVEL:g}], got {text!r}")
    return values


def _settings(args: argparse.Namespace):
    from compscale.studies import study_settings

    base = dict(QUICK if args.quick else FULL)
    given = {k: getattr(args, k) for k in ("data", "epochs", "seeds", "limit_train", "limit_test", "batch_size",
                                           "latency_repeats", "lr", "optimizer", "resolution")
             if getattr(args, k, None) is not None}
    base.update(given)
    if not base.get("data"):
        raise UserError(f"compscale study {args.study}: give --data DATA (digits, fashion-mnist or an image folder)"
                        " or --quick")
    out = Path(args.out or f"runs/study-{args.study}{'-quick' if args.quick else ''}")
    latency_repeats = base.pop("latency_repeats")
    return study_settings(out=out, workers=args.workers, threads=args.threads, storage=args.storage, pack=args.pack,
                          **base), latency_repeats


def cmd_study(args: argparse.Namespace) -> int:
    from compscale.commands._util import JobProgress

    if args.join:
        from compscale.jobs.runner import join_study

        if not args.storage:
            raise UserError("--join needs --storage URL (the study's database)")
        out = Path(args.out or f"runs/study-{args.study}")
        join_study(args.storage, args.study, out, args.threads or 1)
        return 0
    settings, latency_repeats = _settings(args)
    progress = JobProgress(f"study {args.study}", quiet=args.json)
    try:
        if args.study == "cardinality":
            from compscale.studies.cardinality import run

            payload = run(settings, budget=args.budget, progress=progress)
        else:
            from compscale.studies.families import run

            payload = run(settings, levels=args.levels, progress=progress, latency_repeats=latency_repeats)
    finally:
        progress.close()
    if args.json:
        print_json(payload, indent=2)
        return 0
    _print_summary(payload)
    out = Path(settings.out)
    print(f"\n{args.study}.json, {args.study}.png and section.md in {out} ({payload['seconds']:.0f} s)")
    return 0


def _print_summary(payload: dict[str, Any]) -> None:
    def acc(b: Any) -> str:
        return "-" if not b else f"{100 * b['mean']:.2f} ± {100 * b['std']:.2f}"

    def dev(v: Any) -> str:
        return "-" if v is None else f"{100 * v:+.1f}%"

    def m(v: Any) -> str:
        return f"{v / 1e6:.2f}M"

    if payload["study"] == "cardinality":
        cols = [("dimension", "spent on", str), ("label", "CxD blocks", str), ("macs", "MACs", m),
                ("deviation", "vs target", dev), ("params", "params", lambda v: f"{v / 1e3:.1f}k"),
                ("accuracy", "top-1 % (mean ± std)", acc)]
        print(render_table(payload["models"], cols))
        print(f"\nranking at {payload['budget']:g}x cost: {' > '.join(payload['ranking'])}"
              + ("" if payload["winner_separated"] else " (first two not separated: their paired 95% interval "
                                                        "contains 0, or one seed gives none)"))
    else:
        cols = [("name", "model", str), ("macs", "MACs", m), ("deviation", "vs target", dev),
                ("params", "params", lambda v: f"{v / 1e3:.1f}k"),
                ("activations", "activations", lambda v: f"{v / 1e3:.1f}k"),
                ("latency_ms", "latency ms", lambda v: f"{v:.2f}"), ("accuracy", "top-1 % (mean ± std)", acc)]
        print(render_table(sorted(payload["models"], key=lambda r: (r["level"], r["family"])), cols))
    if not payload["all_within_tolerance"]:
        print(f"warning: some models are more than {100 * payload['tolerance']:.0f}% off their target cost",
              file=sys.stderr)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="digits, fashion-mnist, or an ImageFolder directory")
    p.add_argument("--quick", action="store_true",
                   help="the small form the tests run: digits, 1 epoch, 2 seeds, a few hundred images")
    p.add_argument("--seeds", type=int, help="training seeds per model (default 2)")
    p.add_argument("--epochs", type=int, help="epochs per job (default 3; --quick: 1)")
    p.add_argument("--limit-train", dest="limit_train", type=positive_int, help="train on a fixed subset")
    p.add_argument("--limit-test", dest="limit_test", type=positive_int, help="evaluate on a fixed subset")
    p.add_argument("--batch-size", dest="batch_size", type=positive_int)
    p.add_argument("--lr", type=finite_float, help="learning rate (default 0.05)")
    p.add_argument("--optimizer", choices=("sgd", "rmsproptf", "adamw"), help="default sgd (momentum 0.9), cosine")
    p.add_argument("--resolution", type=int, help="input side of every model (default 32)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="training processes on this machine (each with cores // N threads)")
    p.add_argument("--threads", type=int_in(1, max_threads, "4 per core"), help="torch threads per worker")
    p.add_argument("--storage", help="study database URL (default sqlite:///OUT/study.db; postgresql://... to "
                                     "share the queue with other machines, which run the same command with --join)")
    p.add_argument("--latency-repeats", dest="latency_repeats", type=int_in(1, 10_000), help=argparse.SUPPRESS)
    p.add_argument("--out", help="output folder (default runs/study-NAME)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--join", action="store_true", help="work on an existing study's queue (another machine)")
    p.add_argument("--no-pack", dest="pack", action="store_false",
                   help="train a model's seeds one after the other instead of packed into one module")
    p.set_defaults(func=cmd_study)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="trained comparisons: ResNeXt cardinality vs depth vs width; ResNeXt vs "
                                     "Inception-ResNet at matched cost")
    studies = p.add_subparsers(dest="study", metavar="STUDY", parser_class=type(p))
    studies.required = True
    c = studies.add_parser("cardinality",
                           help="ResNeXt at equal multiply-adds: more paths, wider paths, or more blocks")
    _common(c)
    c.add_argument("--budget", type=finite_float, default=2.0,
                   help="the variants' cost as a multiple of the baseline's (default 2, the paper's Table 4)")
    f = studies.add_parser("families", help="ResNeXt vs Inception-ResNet (and EfficientNet) at matched cost levels")
    _common(f)
    f.add_argument("--levels", type=_levels, default=(1.0, 2.0),
                   help="cost levels as multiples of resnext_tiny's multiply-adds (default 1,2)")
