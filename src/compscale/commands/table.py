"""The seed's efficiency table and the paper's CPU latency claims: `compscale table`, `compscale latency`."""

from __future__ import annotations

import argparse
import csv
import io

from compscale.commands._util import (
    BarProgress,
    finite_float,
    fmt_count,
    int_in,
    max_batch,
    max_threads,
    print_json,
    render_table,
)
from compscale.errors import UserError

#: The paper's Table 4 (CPU, batch 1): the EfficientNet is this many times faster than the peer.
PAPER_SPEEDUPS = {("efficientnet_b1", "resnet152"): 5.7, ("efficientnet_b7", "gpipe_amoebanet_b"): 6.1}
ALIASES = {f"b{i}": f"efficientnet_b{i}" for i in range(8)} | {"gpipe": "gpipe_amoebanet_b"}

COLUMNS = ["model", "paper_model", "paper_params", "paper_macs", "params", "macs", "resolution", "params_ratio",
           "macs_ratio", "note"]


def _pct(v) -> str:
    return "-" if v is None else f"{v * 100:+.1f}%"


def cmd_table(args: argparse.Namespace) -> int:
    from compscale.analysis.table import plot_figures, seed_table

    bar = BarProgress("model")  # counting every row takes about a minute; timing them, more
    try:
        rows = seed_table(latency=args.latency, threads=args.threads, progress=bar)
    finally:
        bar.close()
    plots = plot_figures(rows, args.out) if args.plot else []
    if args.json:
        print_json({"rows": rows, "plots": plots}, indent=2)
    elif args.csv:
        _print_csv(rows, args.latency)
    else:
        _print_table(rows, args.latency, args.markdown)
        for p in plots:
            print(f"wrote {p}")
    return 0


def _print_csv(rows: list[dict], latency: bool) -> None:
    buf = io.StringIO()
    keys = COLUMNS + (["latency_ms", "latency_low_ms", "latency_high_ms", "latency_spread", "latency_note"]
                      if latency else [])
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    print(buf.getvalue(), end="")


def _print_table(rows: list[dict], latency: bool, markdown: bool) -> None:
    """The table as aligned text (then the rows' notes) or as Markdown."""
    cols = [("paper_model", "model", str), ("resolution", "res", str),
            ("paper_top1", "top-1", lambda v: f"{100 * v:.1f}"),
            ("params", "params", fmt_count), ("paper_params", "paper", lambda v: fmt_count(v, 1e6, 1)),
            ("params_dev", "dev", _pct), ("params_ratio", "ratio", lambda v: f"{v:.1f}x"),
            ("macs", "MACs", lambda v: fmt_count(v, 1e9, 2, "B")),
            ("paper_macs", "paper", lambda v: fmt_count(v, 1e9, 1, "B")), ("macs_dev", "dev", _pct),
            ("macs_ratio", "ratio", lambda v: f"{v:.1f}x")]
    if latency:
        cols.append(("latency_ms", "ms", lambda v: "-" if v is None else f"{v:.3g}"))
        cols.append(("latency_low_ms", "95% interval", lambda v: "-" if v is None else f"{v[0]:.3g}-{v[1]:.3g}"))
        cols.append(("latency_spread", "spread", lambda v: "-" if v is None else f"{v * 100:.0f}%"))
        rows = [{**r, "latency_low_ms": None if r.get("latency_low_ms") is None else
                 (r["latency_low_ms"], r["latency_high_ms"])} for r in rows]
    text = render_table(rows, cols)
    if markdown:
        lines = text.splitlines()
        text = "\n".join(["| " + " | ".join(c for c in lines[0].split("  ") if c.strip()) + " |",
                          "|" + "---|" * len(cols)] +
                         ["| " + " | ".join(_markdown_cells(r, cols)) + " |" for r in rows])
    print(text)
    notes = [(r["paper_model"], "; ".join(filter(None, (r["note"], r.get("latency_note"))))) for r in rows
             if r["note"] or r.get("latency_note")]
    if notes and not markdown:
        print("\nnotes:")
        for model, note in notes:
            print(f"  {model}: {note}")


def _markdown_cells(row, cols) -> list[str]:
    return [fmt(row.get(key)) for key, _, fmt in cols]


def _resolve(name: str) -> str:
    """An alias (b1, gpipe) or any model reference (a name, a spec or weights file, module:name), checked: an
    unknown one, or one over the size ceiling, fails here with one line."""
    from compscale.compound import check_model_size
    from compscale.models import model_spec

    name = ALIASES.get(name.lower(), name)
    check_model_size(model_spec(name), what=name)
    return name


def cmd_latency(args: argparse.Namespace) -> int:
    from compscale.commands.deploy import with_phi

    model = _resolve(with_phi(ALIASES.get(args.model.lower(), args.model), args.phi))
    if args.peer is None:
        return _one_latency(args, model)
    if args.backend != "eager":
        raise UserError("latency MODEL PEER compares eager PyTorch, as the paper's Table 4 does: drop --backend, "
                        "or time one model")
    return _two_latencies(args, model, _resolve(args.peer))


def _one_latency(args: argparse.Namespace, name: str) -> int:
    """``latency MODEL``: one model timed until its median is known to 5 % (or ``--max-seconds``)."""
    from compscale.compound import realized_cost
    from compscale.deploy.latency import model_latency
    from compscale.models import model_spec

    if not 0 < args.max_seconds <= 3600:
        raise UserError(f"--max-seconds must be from 0 to 3600, got {args.max_seconds:g}")
    spec = model_spec(name)
    lat = model_latency(spec, args.batch, args.threads, args.backend, max_seconds=args.max_seconds)
    cost = realized_cost(spec)
    out = {"model": name, "backend": args.backend, "runtime": lat.extra["backend"], "batch": args.batch,
           "threads": lat.extra["threads"],
           "resolution": spec.resolution, "macs": cost.macs, "params": cost.params, **lat.fields()}
    if args.json:
        print_json(out)
        return 0
    threads = lat.extra["threads"]
    print(f"{name}: {lat.describe()}   ({lat.extra['backend']}, batch {args.batch}, {threads} "
          f"thread{'s' * (threads != 1)}, {spec.resolution}px; median of {lat.samples} samples with its 95 % "
          "interval and the p90 - p10 spread)")
    return 0


def _two_latencies(args: argparse.Namespace, fast: str, slow: str) -> int:
    """``latency MODEL PEER``: both timed interleaved, their ratio beside the paper's (Table 4)."""
    from compscale.deploy.latency import compare_latency
    from compscale.models import model_spec

    bar = BarProgress("round", kinds=("message",))
    try:
        times = compare_latency({fast: model_spec(fast), slow: model_spec(slow)}, batch=args.batch,
                                threads=args.threads, repeats=args.repeats, progress=bar)
    finally:
        bar.close()
    a, b = times[fast], times[slow]
    ratio = b.median_ms / a.median_ms
    paper = PAPER_SPEEDUPS.get((fast, slow))
    out = {"model": fast, "peer": slow, **a.fields(), "peer_latency_ms": b.median_ms,
           "peer_latency_low_ms": b.low_ms, "peer_latency_high_ms": b.high_ms, "peer_latency_spread": b.spread,
           "speedup_vs_peer": ratio, "paper_speedup_vs_peer": paper, "batch": args.batch,
           "threads": a.extra["threads"], "repeats": args.repeats}
    out["latency_note"] = "; ".join(dict.fromkeys(n for n in (a.note, b.note) if n))
    out["busy"] = a.busy or b.busy
    if args.json:
        print_json(out)
        return 0
    threads = a.extra["threads"]
    print(f"{fast}: {a.describe()}")
    print(f"{slow}: {b.describe()}")
    print(f"(batch {args.batch}, {threads} thread{'s' * (threads != 1)}, medians of {args.repeats} interleaved "
          "repetitions with their 95 % intervals)")
    print(f"{fast} is {ratio:.2f}x faster" + (f" (paper: {paper}x)" if paper else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("table", help="the seed's efficiency table, every row measured")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    fmt.add_argument("--markdown", action="store_true")
    p.add_argument("--latency", action="store_true", help="add a measured CPU batch-1 latency column (slow)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--plot", action="store_true", help="draw the paper's Figures 1 and 5 from our counts")
    p.add_argument("--out", default=".", help="folder for the figures (default: here)")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("latency", help="CPU latency of a model (its median, interval and spread), or of a model "
                                       "against a peer beside the paper's ratio")
    p.add_argument("model", help="e.g. B1 or efficientnet_b1; any model reference (a spec or weights file, "
                                 "module:name, NAME@phi=1.5)")
    p.add_argument("peer", nargs="?", help="e.g. resnet152, or gpipe: timed interleaved with MODEL (eager)")
    p.add_argument("--phi", type=finite_float, help="time MODEL compound-scaled by phi (as MODEL@phi=X)")
    p.add_argument("--batch", type=int_in(1, max_batch), default=1)
    p.add_argument("--threads", type=int_in(1, max_threads, "4 per core"), default=2)
    p.add_argument("--backend", choices=("eager", "best"), default="eager",
                   help="one model: eager PyTorch (default) or compscale.optimize's path")
    p.add_argument("--repeats", type=int_in(1, 10_000), default=10, help="with a peer: interleaved repetitions")
    p.add_argument("--max-seconds", type=finite_float, default=10.0,
                   help="one model: the longest it is timed (it stops sooner once its median is known to 5 %%)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_latency)
