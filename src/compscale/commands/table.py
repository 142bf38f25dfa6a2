"""The seed's efficiency table and the paper's CPU latency claims: `compscale table`, `compscale latency`."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys

from compscale.commands._util import fmt_count, render_table

#: The paper's Table 4 (CPU, batch 1): the EfficientNet is this many times faster than the peer.
PAPER_SPEEDUPS = {("efficientnet_b1", "resnet152"): 5.7, ("efficientnet_b7", "gpipe_amoebanet_b"): 6.1}
ALIASES = {f"b{i}": f"efficientnet_b{i}" for i in range(8)} | {"gpipe": "gpipe_amoebanet_b"}

COLUMNS = ["model", "paper_params", "paper_macs", "params", "macs", "resolution", "ratio_params", "ratio_macs", "note"]


def _pct(v) -> str:
    return "-" if v is None else f"{v * 100:+.1f}%"


def cmd_table(args: argparse.Namespace) -> int:
    from compscale.analysis.table import plot_figures, seed_table

    progress = None
    if not (args.json or args.csv or args.markdown):
        progress = lambda event: print(f"  measuring {event.message} ...", file=sys.stderr)  # noqa: E731
    rows = seed_table(latency=args.latency, threads=args.threads, progress=progress if args.latency else None)
    plots = plot_figures(rows, args.out) if args.plot else []
    if args.json:
        print(json.dumps({"rows": rows, "plots": plots}, indent=2))
    elif args.csv:
        _print_csv(rows, args.latency)
    else:
        _print_table(rows, args.latency, args.markdown)
        for p in plots:
            print(f"wrote {p}")
    return 0


def _print_csv(rows: list[dict], latency: bool) -> None:
    buf = io.StringIO()
    keys = COLUMNS + (["latency_ms"] if latency else [])
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    print(buf.getvalue(), end="")


def _print_table(rows: list[dict], latency: bool, markdown: bool) -> None:
    """The table as aligned text (then the rows' notes) or as Markdown."""
    cols = [("model", "model", str), ("resolution", "res", str), ("top1", "top-1", lambda v: f"{v:.1f}"),
            ("params", "params", fmt_count), ("paper_params", "paper", lambda v: fmt_count(v, 1e6, 1)),
            ("params_dev", "dev", _pct), ("ratio_params", "ratio", lambda v: f"{v:.1f}x"),
            ("macs", "MACs", lambda v: fmt_count(v, 1e9, 2, "B")),
            ("paper_macs", "paper", lambda v: fmt_count(v, 1e9, 1, "B")), ("macs_dev", "dev", _pct),
            ("ratio_macs", "ratio", lambda v: f"{v:.1f}x")]
    if latency:
        cols.append(("latency_ms", "ms", lambda v: "-" if v is None else f"{v:.0f}"))
    text = render_table(rows, cols)
    if markdown:
        lines = text.splitlines()
        text = "\n".join(["| " + " | ".join(c for c in lines[0].split("  ") if c.strip()) + " |",
                          "|" + "---|" * len(cols)] +
                         ["| " + " | ".join(_markdown_cells(r, cols)) + " |" for r in rows])
    print(text)
    notes = [(r["model"], r["note"]) for r in rows if r["note"]]
    if notes and not markdown:
        print("\nnotes:")
        for model, note in notes:
            print(f"  {model}: {note}")


def _markdown_cells(row, cols) -> list[str]:
    return [fmt(row.get(key)) for key, _, fmt in cols]


def _resolve(name: str) -> str:
    from compscale.models import model_spec

    name = ALIASES.get(name.lower(), name)
    model_spec(name)  # unknown names fail here with one line
    return name


def cmd_latency(args: argparse.Namespace) -> int:
    from compscale.analysis.table import batch1_latency

    fast, slow = _resolve(args.model), _resolve(args.peer)
    times = batch1_latency([fast, slow], threads=args.threads, repeats=args.repeats)
    ratio = times[slow] / times[fast]
    paper = PAPER_SPEEDUPS.get((fast, slow))
    out = {"model": fast, "peer": slow, "latency_ms": times, "speedup": ratio, "paper_speedup": paper,
           "threads": args.threads, "repeats": args.repeats}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{fast}: {times[fast]:.1f} ms   {slow}: {times[slow]:.1f} ms   (batch 1, {args.threads} threads, "
              f"median of {args.repeats}, interleaved)")
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

    p = sub.add_parser("latency", help="batch-1 CPU latency of a model against a peer, beside the paper's ratio")
    p.add_argument("model", help="e.g. B1 or efficientnet_b1")
    p.add_argument("peer", help="e.g. resnet152, or gpipe")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_latency)
