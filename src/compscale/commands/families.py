"""Side-by-side comparison of registered models: ``compscale compare NAME[@RES]... [--resolution R] [--json]``.

Each model is built on the meta device and profiled (params, multiply-adds, activations); ratios are to the
first model. ``NAME@RES`` sets one model's input side (the seed table's ResNeXt-101 row is at 320 px,
Inception-ResNet-v2 at 299), ``--resolution`` every model's that has none of its own. Where the
EfficientNet paper's Table 2 (the seed table) has the model, its reported top-1, params and FLOPs are
shown beside the measurement, never mixed with it.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Sequence

from compscale.commands._util import BarProgress, fmt_count, print_json, render_table
from compscale.errors import UserError

#: Registered name → the row of the seed table (compscale.paper.SEED_TABLE) that reports the same network.
#: A name that is not registered (yet) is simply never looked up.
PAPER_NAMES: dict[str, str] = {
    "resnet50": "ResNet-50",
    "resnet152": "ResNet-152",
    "resnext101_64x4d": "ResNeXt-101",
    "inception_resnet_v2": "Inception-ResNet-v2",
    "densenet169": "DenseNet-169",
    "densenet264": "DenseNet-264",
    "inception_v3": "Inception-v3",
    "inception_v4": "Inception-v4",
    "xception": "Xception",
    "polynet": "PolyNet",
    "senet154": "SENet",
    "nasnet_a_large": "NASNet-A",
    "amoebanet_a": "AmoebaNet-A",
    "amoebanet_c": "AmoebaNet-C",
    "pnasnet5_large": "PNASNet",
    "gpipe_amoebanet_b": "GPipe",
    **{f"efficientnet_b{i}": f"EfficientNet-B{i}" for i in range(8)},
}


def _split_resolution(item: str) -> tuple[str, int | None]:
    """``"resnext101_64x4d@320"`` → (``"resnext101_64x4d"``, 320); a bare name → (name, None)."""
    name, sep, res = item.rpartition("@")
    if not sep:
        return item, None
    try:
        return name, int(res)
    except ValueError:
        raise UserError(f"{item!r}: the part after '@' must be an input side in pixels, e.g. {name}@320") from None


def compare_rows(names: Sequence[str], resolution: int | None = None,
                 progress: Callable[[Any], None] | None = None) -> list[dict[str, Any]]:
    """One row per model: its measured params, multiply-adds and activations at ``resolution`` (default:
    each model's own), the ratios to the first row, and the paper's figures where the seed table has them
    (``paper_top1`` a fraction). Every reference is resolved (and a bad one refused) before any is profiled;
    ``progress`` then gets a ``stage`` per model (``done``/``total``)."""
    import torch

    from compscale.models import build_model
    from compscale.models.registry import resolve_spec
    from compscale.paper import SEED_TABLE
    from compscale.profiler import profile

    if not names:
        raise UserError("name at least one model to compare")
    paper = {row.model: row for row in SEED_TABLE}
    from compscale.progress import report

    rows: list[dict[str, Any]] = []
    resolved = []
    for item in names:
        name, own = _split_resolution(item)
        resolved.append((item, name, resolve_spec(name, resolution=resolution if own is None else own)))
    for i, (item, name, spec) in enumerate(resolved):
        report(progress, "stage", item, done=i, total=len(resolved))
        with torch.device("meta"):
            model = build_model(spec)
        p = profile(model, spec.resolution)
        ref = paper.get(PAPER_NAMES.get(name, ""))
        rows.append({
            "model": name,
            "family": spec.family,
            "resolution": p.resolution,
            "params": p.params,
            "macs": p.macs,
            "activations": p.activations,
            "paper_model": ref.model if ref else None,
            "paper_top1": round(ref.top1 / 100, 4) if ref else None,  # a fraction, as every accuracy compscale prints
            "paper_params": ref.params if ref else None,
            "paper_macs": ref.macs if ref else None,
        })
    first = rows[0]
    for row in rows:
        for key in ("params", "macs", "activations"):
            row[f"{key}_ratio"] = row[key] / first[key]
    return rows


def cmd_compare(args: argparse.Namespace) -> int:
    bar = BarProgress("model")  # large models take seconds each to build and count
    try:
        rows = compare_rows(args.models, args.resolution, bar)
    finally:
        bar.close()
    if args.json:
        print_json(rows, indent=2)
        return 0
    ratio = lambda v: f"{v:.2f}x"  # noqa: E731
    print(render_table(rows, [
        ("model", "model", str), ("resolution", "res", str),
        ("params", "params", fmt_count), ("params_ratio", "x", ratio),
        ("macs", "MACs", lambda v: fmt_count(v, 1e9, 2, "G")), ("macs_ratio", "x", ratio),
        ("activations", "acts", fmt_count), ("activations_ratio", "x", ratio),
        ("paper_macs", "paper MACs", lambda v: fmt_count(v, 1e9, 1, "G")),
        ("paper_top1", "paper top-1", lambda v: "-" if v is None else f"{100 * v:.1f}%"),
    ]))
    print(f"\nMeasured on the meta device; ratios are to {rows[0]['model']}. MACs = multiply-adds (the paper's FLOPs);"
          "\nacts = elements written by conv/linear layers; paper MACs and top-1: the EfficientNet paper's Table 2.")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare models side by side: params, multiply-adds, activations")
    p.add_argument("models", nargs="+", metavar="NAME[@RES]",
                   help="model references (registered names, spec or weights files, module:name), optionally "
                        "with an input side (resnext101_64x4d@320); ratios are to the first")
    p.add_argument("--resolution", type=int, help="input side for every model (default: each model's own)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare)
