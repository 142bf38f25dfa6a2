"""The core commands: models, profile, scale, demo."""

from __future__ import annotations

import argparse

from compscale.commands import _util as u
from compscale.commands._util import JobProgress, finite_float, fmt_count, int_in, parse_budget, render_table
from compscale.errors import UserError


def cmd_models(args: argparse.Namespace) -> int:
    from compscale.compound import realized_cost
    from compscale.models import list_models, model_spec
    from compscale.models.registry import model_entry

    rows = []
    names = list_models(args.pattern)
    bar = u.progress_bar(len(names), "counting", "model") if len(names) > 1 else None  # every model: ~30 s
    for name in names:
        if bar is not None:
            bar.set_description_str(name, refresh=False)
            bar.update(1)
        spec = model_spec(name)
        cost = realized_cost(spec)
        macs, params = cost.macs, cost.params
        rows.append({"model": name, "family": spec.family, "resolution": spec.resolution, "params": params,
                     "macs": macs, "description": model_entry(name).description})
    if bar is not None:
        bar.close()
    if args.pattern and not rows:
        raise UserError(f"no model matches {args.pattern!r}")
    if args.json:
        u.print_json(rows, indent=2)
    else:
        print(render_table(rows, [("model", "model", str), ("family", "family", str), ("resolution", "res", str),
                                  ("params", "params", fmt_count),
                                  ("macs", "MACs", lambda v: fmt_count(v, 1e9, 3, "G"))]))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    import torch

    from compscale.models import create_model
    from compscale.profiler import profile

    with torch.device("meta"):
        model = create_model(args.model)
    p = profile(model, args.resolution, per_layer=args.per_layer)
    out = {"model": args.model, **p.as_dict()}
    if args.per_layer:
        out["layers"] = [vars(layer) for layer in p.layers]
    if args.json:
        u.print_json(out, indent=2 if args.per_layer else None)
        return 0
    print(f"{args.model} at {p.resolution}px: {p.params:,} params, {p.macs:,} multiply-adds "
          f"({p.macs / 1e9:.3f}G), {p.activations:,} activations")
    if args.per_layer:
        print(render_table([vars(layer) for layer in p.layers], [("name", "layer", str), ("kind", "kind", str),
              ("params", "params", lambda v: f"{v:,}"), ("macs", "MACs", lambda v: f"{v:,}"),
              ("activations", "acts", lambda v: f"{v:,}")]))
    return 0


def _scaling_from_args(args: argparse.Namespace):
    from compscale.scaling import PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA, CompoundScaling

    given = [v is not None for v in (args.alpha, args.beta, args.gamma)]
    if any(given) and not all(given):
        raise UserError("give all of --alpha, --beta and --gamma, or none (the paper's 1.2/1.1/1.15)")
    return CompoundScaling(
        alpha=PAPER_ALPHA if args.alpha is None else args.alpha,
        beta=PAPER_BETA if args.beta is None else args.beta,
        gamma=PAPER_GAMMA if args.gamma is None else args.gamma,
        tolerance=args.tolerance,
        enforce_constraint=not args.no_constraint,
        delta=1.0 if getattr(args, "delta", None) is None else args.delta,
    )


def cmd_scale(args: argparse.Namespace) -> int:
    from compscale.compound import scale, scale_to_budget

    has_target = args.target_macs is not None or args.target_params is not None or args.target_latency is not None
    if (args.phi is None) == (not has_target):
        raise UserError("give either --phi or a budget (--target-macs, --target-params and/or --target-latency)")
    timing = [flag for flag, value in (("--batch", args.batch), ("--threads", args.threads),
                                       ("--backend", args.backend)) if value is not None]
    if timing and args.target_latency is None:
        raise UserError(f"{', '.join(timing)} set(s) how --target-latency is timed: give --target-latency too")
    scaling = _scaling_from_args(args)
    choice = None
    if args.phi is not None:
        result = scale(args.base, args.phi, scaling, args.depth_rounding)
    elif args.target_latency is not None:
        from compscale.commands.deploy import scale_to_latency_budget

        choice = scale_to_latency_budget(args, scaling)
        result = choice.scaled
    else:
        result = scale_to_budget(args.base, args.target_macs, args.target_params, scaling, args.depth_rounding)
    out = {"model": args.base, **(choice or result).as_dict()}  # the baseline scaled
    if args.json:
        u.print_json(out, indent=2)
        return 0
    s = result.scaling
    delta = f" delta={s.delta:g}" if s.delta != 1.0 else ""
    print(f"{args.base} scaled with alpha={s.alpha:g} beta={s.beta:g} gamma={s.gamma:g}{delta} "
          f"({s.constraint_name} = {s.flops_factor:.4f}), phi = {result.phi:.4f}")
    cardinality = f"  cardinality x{result.factors.cardinality:.4f}" if s.delta != 1.0 else ""
    print(f"depth x{result.factors.depth:.4f}  width x{result.factors.width:.4f}  "
          f"resolution x{result.factors.resolution_mult:.4f} -> {result.spec.resolution}px{cardinality}")
    print(render_table(result.spec.stage_table(), [("name", "stage", str), ("op", "op", str), ("kernel", "k", str),
                                                   ("stride", "s", str), ("repeats", "repeats", str),
                                                   ("channels", "channels", str)]))
    print(f"params {result.params:,}   multiply-adds {result.macs:,} ({result.macs / 1e9:.3f}G)")
    print(f"multiply-adds vs baseline: realized {result.macs_ratio:.3f}x, nominal ({s.constraint_name})^phi "
          f"{s.nominal_flops_ratio(result.phi):.3f}x")
    if choice is not None:
        from compscale.commands.deploy import latency_choice_lines

        print("\n".join(latency_choice_lines(choice)))
    return 0


def cmd_family(args: argparse.Namespace) -> int:
    from compscale.analysis.family import formula_rows, official_rows

    official, formula = official_rows(), formula_rows()
    if args.json:
        u.print_json({"official": official, "formula": formula}, indent=2)
        return 0
    pct = lambda v: f"{v * 100:+.1f}%"  # noqa: E731
    print("EfficientNet B0..B7, official coefficients, measured here vs the paper (FLOPs = multiply-adds)\n")
    print(render_table(official, [
        ("model", "model", str), ("width", "w", str), ("depth", "d", str), ("resolution", "res", str),
        ("dropout", "drop", str), ("blocks", "blocks", str), ("params", "params", fmt_count),
        ("paper_params", "paper", lambda v: fmt_count(v, 1e6, 1)), ("params_dev", "dev", pct),
        ("macs", "MACs", lambda v: fmt_count(v, 1e9, 3, "G")),
        ("paper_macs", "paper", lambda v: fmt_count(v, 1e9, 2, "B")),
        ("macs_dev", "dev", pct), ("macs_ratio", "x B0", lambda v: f"{v:.2f}x")]))
    print("\nFormula mode: B0 scaled by phi with alpha=1.2 beta=1.1 gamma=1.15 (nominal FLOPs ratio 1.92^phi)\n")
    print(render_table(formula, [
        ("phi", "phi", lambda v: f"{v:g}"), ("depth_multiplier", "d", lambda v: f"{v:.3f}"),
        ("width_multiplier", "w", lambda v: f"{v:.3f}"), ("resolution", "res", str), ("blocks", "blocks", str),
        ("params", "params", fmt_count), ("macs", "MACs", lambda v: fmt_count(v, 1e9, 3, "G")),
        ("nominal_ratio", "nominal", lambda v: f"{v:.2f}x"), ("realized_ratio", "realized", lambda v: f"{v:.2f}x")]))
    print("\nThe released B1..B7 are not alpha^phi for integer phi; and ceil rounding of the repeats makes the realized"
          "\nFLOPs ratio differ from the nominal one (at phi=1: 16 blocks become 23).")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered models with their params and multiply-adds")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'efficientnet_b*'")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("profile", help="count params, multiply-adds and activations of a model")
    p.add_argument("model")
    p.add_argument("--resolution", type=int, help="input side in pixels (default: the model's)")
    p.add_argument("--per-layer", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_profile)

    _register_scale(sub)

    p = sub.add_parser("family", help="the EfficientNet family table: official coefficients and formula mode")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_family)

    p = sub.add_parser("demo", help="the main job: step 1 and step 2 on Fashion-MNIST, and a report")
    p.add_argument("--quick", action="store_true", help="a smoke-test sized run (a few minutes)")
    p.add_argument("--out", default="report", help="report folder (default: report)")
    p.add_argument("--data", help="dataset (default: fashion-mnist)")
    p.add_argument("--workers", type=int_in(1, u.local_workers, "the cores"), default=2,
                   help="local worker processes (default 2)")
    p.add_argument("--threads", type=int_in(1, u.max_threads, "4 per core"),
                   help="torch threads per worker (default: cores / workers)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)


def _register_scale(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scale", help="compound-scale a baseline by phi or to a budget")
    p.add_argument("--base", default="efficientnet_b0")
    p.add_argument("--alpha", type=finite_float)
    p.add_argument("--beta", type=finite_float)
    p.add_argument("--gamma", type=finite_float)
    p.add_argument("--delta", type=finite_float,
                   help="cardinality coefficient (ResNeXt): C x delta^phi; the constraint becomes "
                        "alpha*beta^2*gamma^2*delta ~ 2 (grouped-conv FLOPs are linear in C at a fixed group width)")
    p.add_argument("--tolerance", type=finite_float, default=0.1, help="allowed |alpha*beta^2*gamma^2 - 2|")
    p.add_argument("--no-constraint", action="store_true", help="do not require alpha*beta^2*gamma^2 ~ 2")
    p.add_argument("--depth-rounding", choices=("ceil", "round"), default="ceil")
    p.add_argument("--phi", type=finite_float, help="compound coefficient (any real; negative shrinks)")
    p.add_argument("--target-macs", type=parse_budget,
                   help="budget in multiply-adds, e.g. 1G, or a multiple of the baseline's, e.g. 4x")
    p.add_argument("--target-params", type=parse_budget,
                   help="budget in parameters, e.g. 10M, or a multiple of the baseline's, e.g. 2x")
    p.add_argument("--target-latency", type=u.duration_ms,
                   help="latency budget on this machine, e.g. 10ms or 0.01s: the largest phi whose model, timed here "
                        "and re-timed in fresh processes, answers within it (combinable with the other budgets)")
    p.add_argument("--batch", type=int_in(1, u.max_batch), help="--target-latency: images per call (default 1)")
    p.add_argument("--threads", type=int_in(1, u.max_threads, "4 per core"),
                   help="--target-latency: intra-op threads (default: torch's, the cores)")
    p.add_argument("--backend", choices=("eager", "best"),
                   help="--target-latency: the inference path timed: eager PyTorch (default) or compscale.optimize")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_scale)


def cmd_demo(args: argparse.Namespace) -> int:
    from compscale.analysis.demo import run_demo

    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    progress = JobProgress("demo", quiet=args.json)
    try:
        summary = run_demo(args.out, args.quick, args.data, args.workers, args.threads, progress)
    finally:
        progress.close()
    if args.json:
        u.print_json(summary, indent=2)
        return 0
    print(summary["verdict"]["summary"])
    for line in summary["verdict"]["details"]:
        print("  " + line)
    if summary["plan"]["seeds"] < 2:
        print("  (one seed per model: no noise estimate, so no model won, tied or lost; run without --quick)")
    print(f"report: {summary['report']} ({summary['seconds'] / 60:.1f} min wall, {summary['cpu_seconds'] / 60:.1f} min "
          "CPU)")
    return 0
