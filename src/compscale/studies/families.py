"""ResNeXt vs Inception-ResNet (and EfficientNet for reference) at matched cost: the seed's "accuracy versus
computational cost" comparison, measured on your data.

The seed contrasts the Inception family, which aims at accuracy *with* low compute, and ResNeXt, which aims
at accuracy by growing dimensions. Here each family's small member (``resnext_tiny``,
``inception_resnet_tiny``, and a small EfficientNet) is scaled to the same cost levels — multiples of
``resnext_tiny``'s realized multiply-adds — and trained with several seeds. Each family is scaled by its own
spec's rule (:meth:`~compscale.specs.ModelSpec.scaled`), at the study's fixed input side: depth d = α^φ and
width w = β^φ with the paper's α = 1.2, β = 1.1 (γ = 1: the data's resolution is not a free dimension here),
φ chosen so the realized cost is closest to the level. When the rounding of a tiny model's channels (to
multiples of 8) leaves that more than 5 % off, depth alone or width alone is used if it comes closer; the
rule used and the deviation are reported for every model (a (d, w) grid is the last resort).

Reported per model: top-1 accuracy (mean ± std over seeds), params, multiply-adds, activations, and batch-1
CPU latency measured interleaved (:func:`compscale.deploy.bench.measure`) in one process.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from compscale.errors import UserError
from compscale.jobs.planning import data_info, for_data
from compscale.jobs.runner import RunSettings, run_jobs
from compscale.monotone import boundary, grow_bracket
from compscale.plots import pyplot, save_figure
from compscale.progress import Progress, report
from compscale.scaling import PAPER_ALPHA, PAPER_BETA, ScaleFactors
from compscale.specs import EfficientNetSpec, MBConvStage, ModelSpec
from compscale.studies.common import (
    MATCH_TOLERANCE,
    attach_accuracy,
    closest,
    macs_of,
    match_record,
    model_jobs,
    paired,
)
from compscale.studies.report import fmt_band, fmt_dev, fmt_k, fmt_m, markdown_table, write_study

KIND = "families"
REFERENCE = "resnext_tiny"
FAMILY_LABELS = {"resnext": "ResNeXt", "inception_resnet": "Inception-ResNet", "efficientnet": "EfficientNet"}


def efficientnet_tiny_spec() -> EfficientNetSpec:
    """A four-stage EfficientNet (MBConv1 k3 16, MBConv6 k3 24/2, k5 40/2, k3 80/2; stem 16, head 256) for
    32-pixel inputs, no dropout or stochastic depth: the reference family's small member."""
    return EfficientNetSpec(stages=(MBConvStage(1, 3, 1, 16, 1), MBConvStage(6, 3, 2, 24, 1),
                                    MBConvStage(6, 5, 2, 40, 1), MBConvStage(6, 3, 2, 80, 1)),
                            stem_channels=16, head_channels=256, resolution=32, dropout=0.0, drop_path_rate=0.0)


def family_bases() -> dict[str, ModelSpec]:
    from compscale.models import model_spec

    return {"resnext": model_spec("resnext_tiny"), "inception_resnet": model_spec("inception_resnet_tiny"),
            "efficientnet": efficientnet_tiny_spec()}


def _scaled(base: ModelSpec, depth: float, width: float) -> ModelSpec:
    # The resolution is fixed by the study: the scaled spec keeps the base's side.
    return base.scaled(ScaleFactors(depth=depth, width=width)).replace(resolution=base.resolution)


def _bracket(make, start: float, step: float, low: float, high: float, target: float,
             iterations: int = 24) -> list[tuple[float, ModelSpec]]:
    """The last model under ``target`` and the first over it, for a multiplier m whose realized cost never
    decreases (or the end of [low, high] that is closest). The bracket grows from ``start`` by ``step`` so that
    no huge model is ever built just to bound the search."""

    def under(m: float) -> bool:
        return macs_of(make(m)) < target

    lo, hi = grow_bracket(under, start, step, low, high)
    if lo == hi:
        return [(lo, make(lo))]
    lo, hi = boundary(under, lo, hi, tol=(hi - lo) / 2**iterations)
    return [(lo, make(lo)), (hi, make(hi))]


def match_cost(base: ModelSpec, target: float) -> tuple[ModelSpec, dict[str, Any]]:
    """The scaled ``base`` whose realized multiply-adds are closest to ``target``, and how it was found.

    First the compound rule d = α^φ, w = β^φ (bisection on φ). A tiny model's channels round to multiples
    of 8, so its cost moves in coarse steps; when the compound rule lands more than half the tolerance from
    the target, depth alone (d) and width alone (w) are tried too and the closest of all wins.
    """
    compound = [(0.0, base)] + _bracket(lambda p: _scaled(base, PAPER_ALPHA**p, PAPER_BETA**p), 0.0, 1.0, -8.0, 24.0,
                                        target)
    phi, spec, macs = closest(compound, target)
    if abs(macs / target - 1) <= MATCH_TOLERANCE / 2:
        return spec, {"rule": "compound", "phi": phi, "depth": PAPER_ALPHA**phi, "width": PAPER_BETA**phi}
    options = [(("compound", PAPER_ALPHA**phi, PAPER_BETA**phi), spec)]
    options += [(("depth", d, 1.0), s) for d, s in _bracket(lambda d: _scaled(base, d, 1.0), 1.0, 1.0, 1.0, 16.0,
                                                             target)]
    options += [(("width", 1.0, w), s) for w, s in _bracket(lambda w: _scaled(base, 1.0, w), 1.0, 0.5, 0.25, 8.0,
                                                             target)]
    (rule, d, w), spec, macs = closest(options, target)
    if abs(macs / target - 1) > MATCH_TOLERANCE / 2:
        # Still coarse: a grid over (d, w), keeping the balance of the compound rule (d/w near α/β) among
        # the points within half the tolerance.
        best = ((rule, d, w), spec)
        grid = []
        for d in (1, 1.5, 2, 3, 4, 6):
            for w in (0.5, 0.75, 1, 1.25, 1.5, 2, 3):
                candidate = _scaled(base, d, w)
                grid.append((("grid", d, w), candidate))
                if macs_of(candidate) > (1 + MATCH_TOLERANCE) * target:
                    break  # cost grows with w (and with d): the rest of this row is further off
            if w == 0.5 and macs_of(grid[-1][1]) > (1 + MATCH_TOLERANCE) * target:
                break
        (rule, d, w), spec, macs = closest(
            [best] + grid, target,
            prefer=lambda k: abs(math.log(k[1] / k[2]) - math.log(PAPER_ALPHA / PAPER_BETA)))
    return spec, {"rule": rule, "phi": phi if rule == "compound" else None, "depth": d, "width": w}


def plan(settings: RunSettings, levels: tuple[float, ...] = (1.0, 2.0)) -> dict[str, Any]:
    """Every family at every cost level: the matched specs with their costs and deviations (no training)."""
    if not levels or any(not (lv > 0) for lv in levels):
        raise UserError(f"--levels must be positive multiples of the reference cost, got {levels}")
    levels = tuple(sorted(set(levels)))
    info = data_info(settings.data, settings.resolution, settings.limit_train, settings.limit_test)
    bases = {f: for_data(s, info, settings.resolution) for f, s in family_bases().items()}
    reference = macs_of(bases["resnext"])
    models = []
    for family, base in bases.items():
        for k, level in enumerate(levels, start=1):
            target = level * reference
            spec, how = match_cost(base, target)
            models.append(match_record(f"{family}-L{k}", spec, target, family=family, level=level,
                                       level_index=k, base_macs=macs_of(base), scaling=how))
    return {"data": info.__dict__, "levels": list(levels), "reference_macs": reference, "models": models}


def measure_latency(models: list[dict[str, Any]], repeats: int, threads: int = 1) -> None:
    """Batch-1 CPU latency of every model (median of interleaved rounds, ``threads`` torch threads), in place."""
    import torch

    from compscale.deploy.bench import measure, set_threads
    from compscale.models import build_model
    from compscale.specs import spec_from_dict

    previous = torch.get_num_threads()
    set_threads(threads)
    try:
        calls = {}
        for m in models:
            spec = spec_from_dict(m["spec"])
            net = build_model(spec).eval()
            x = torch.randn(1, spec.in_chans, spec.resolution, spec.resolution)
            calls[m["name"]] = (lambda net=net, x=x: net(x))
        timings = measure(calls, batch=1, warmup=3, repeats=repeats)
    finally:
        torch.set_num_threads(previous)
    for m in models:
        t = timings[m["name"]]
        m["latency_ms"] = t.latency_ms
        m["latency_spread"] = t.spread
    return None


def run(settings: RunSettings, levels: tuple[float, ...] = (1.0, 2.0), progress: Progress | None = None,
        latency_repeats: int = 20) -> dict[str, Any]:
    """Plan, train every model × seed through the job queue, time each model, and write ``families.json``,
    ``families.png`` and ``section.md`` into ``settings.out``; returns the JSON payload."""
    t0 = time.perf_counter()
    out = Path(settings.out)
    planned = plan(settings, levels)
    models = planned["models"]
    results = run_jobs(KIND, settings, model_jobs(models, settings), {"levels": planned["levels"]},
                       progress=progress)
    attach_accuracy(models, results, out)
    report(progress, "stage", f"timing {len(models)} models (batch 1, one thread)")
    measure_latency(models, latency_repeats)
    comparison = []
    for k, level in enumerate(planned["levels"], start=1):
        at = {m["family"]: m for m in models if m["level_index"] == k}
        r, i = at["resnext"], at["inception_resnet"]
        gap = paired(r["accuracy"], i["accuracy"])  # seed k against seed k
        comparison.append({"level": level, "target_macs": r["target_macs"],
                           "resnext_minus_inception": r["accuracy"]["mean"] - i["accuracy"]["mean"],
                           "separated": gap.verdict in ("won", "lost"), "paired": gap.as_dict(),
                           "best": max(at.values(), key=lambda m: m["accuracy"]["mean"])["family"]})
    payload = {
        "study": KIND,
        "question": "ResNeXt vs Inception-ResNet (EfficientNet for reference): accuracy versus computational cost",
        "settings": settings.as_dict(),
        **{k: planned[k] for k in ("data", "levels", "reference_macs")},
        "tolerance": MATCH_TOLERANCE,
        "all_within_tolerance": all(m["within_tolerance"] for m in models),
        "models": models,
        "comparison": comparison,
        "seconds": time.perf_counter() - t0,
    }
    return write_study(out, KIND, payload, _plot, section)


def _plot(payload: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.2), sharey=True)
    colors = {"resnext": "tab:red", "inception_resnet": "tab:blue", "efficientnet": "tab:green"}
    for family in FAMILY_LABELS:
        rows = sorted((m for m in payload["models"] if m["family"] == family), key=lambda m: m["macs"])
        if not rows:
            continue
        mean = [100 * m["accuracy"]["mean"] for m in rows]
        std = [100 * m["accuracy"]["std"] for m in rows]
        for ax, key, scale in ((axes[0], "macs", 1e-6), (axes[1], "latency_ms", 1.0)):
            xs = [m[key] * scale for m in rows]
            ax.errorbar(xs, mean, yerr=std, fmt="-o", capsize=4, color=colors[family], label=FAMILY_LABELS[family])
            ax.fill_between(xs, [a - s for a, s in zip(mean, std)], [a + s for a, s in zip(mean, std)],
                            color=colors[family], alpha=0.12)
    axes[0].set_xlabel("multiply-adds per image (M, realized)")
    axes[1].set_xlabel("CPU latency, batch 1, 1 thread (ms)")
    axes[0].set_ylabel("top-1 accuracy (%): mean ± std over seeds")
    s = payload["settings"]
    fig.suptitle(f"Accuracy versus cost: {s['data']}, {s['epochs']} epochs, {s['seeds']} seeds", fontsize=10)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path)


COLUMNS = [("family_label", "family", str), ("level", "level", lambda v: f"{v:g}×"),
           ("macs", "MACs", fmt_m), ("deviation", "vs target", fmt_dev), ("params", "params", fmt_k),
           ("activations", "activations", fmt_k), ("latency_ms", "latency ms", lambda v: f"{v:.2f}"),
           ("accuracy", "top-1 % (mean ± std)", fmt_band)]


def section(payload: dict[str, Any]) -> str:
    """A markdown fragment for the HTML report."""
    s = payload["settings"]
    rows = [{**m, "family_label": FAMILY_LABELS[m["family"]]} for m in
            sorted(payload["models"], key=lambda m: (m["level"], m["family"]))]
    lines = []
    for c in payload["comparison"]:
        diff = 100 * c["resnext_minus_inception"]
        who = "ResNeXt" if diff > 0 else "Inception-ResNet"
        g = c["paired"]
        reading = (" (one seed: no noise estimate)" if g["gap_low"] is None else
                   f" (paired 95% interval [{100 * g['gap_low']:+.2f}, {100 * g['gap_high']:+.2f}] points over "
                   f"{g['pairs']} seeds"
                   + ("" if c["separated"] else ": contains 0, a tie") + ")")
        lines.append(f"- at {c['level']:g}× ({c['target_macs'] / 1e6:.2f}M MACs): {who} ahead by {abs(diff):.2f} points"
                     + reading
                     + f"; best of the three: {FAMILY_LABELS[c['best']]}")
    limits = f", {s['limit_train']} training images" if s.get("limit_train") else ""
    return "\n".join([
        "## ResNeXt vs Inception-ResNet at matched cost",
        "",
        f"Each family's small member scaled (depth α^φ, width β^φ; resolution fixed at {s['resolution']} px) to "
        f"{', '.join(f'{lv:g}×' for lv in payload['levels'])} the multiply-adds of `resnext_tiny` "
        f"({payload['reference_macs'] / 1e6:.2f}M); every model within ±{100 * payload['tolerance']:.0f}% of its "
        f"level: {'yes' if payload['all_within_tolerance'] else 'NO'}. Data `{s['data']}`{limits}; {s['epochs']} "
        f"epochs, {s['seeds']} seeds per model, {s['optimizer']} lr {s['lr']:g} {s['schedule']}. Latency: batch 1, "
        "one thread, median of interleaved runs.",
        "",
        markdown_table(rows, COLUMNS),
        "",
        *lines,
        "",
        "![accuracy versus cost](families.png)",
        "",
    ])
