"""The user's own Figure 5 for their machine: φ against multiply-adds, parameters and *measured* latency.

The paper plots accuracy against FLOPs; what a deployment decides on is latency here, on this CPU, on the
inference path it will use. :func:`latency_pareto` scales a baseline over a list of φ, times each realized
architecture (eager PyTorch and :func:`compscale.optimize`'s best path) with :func:`compscale.deploy.latency.
model_latency` (the median's interval, the spread and the machine's state beside every number), and, for
EfficientNet-B0, places the released B0..B7 beside the formula's models: timed when they are no larger than the
largest φ swept (the others would take minutes each on a small machine), their multiply-adds marked otherwise.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

from compscale.plots import pyplot, save_figure
from compscale.progress import Progress, report

__all__ = ["OFFICIAL", "latency_pareto", "plot_pareto"]

#: The released EfficientNets, marked when the baseline is B0.
OFFICIAL = tuple(f"efficientnet_b{i}" for i in range(8))
#: An official model is timed when its multiply-adds are at most this multiple of the largest φ's.
OFFICIAL_TIMED_UP_TO = 1.1


def latency_pareto(base: str, phis: Sequence[float], batch: int = 1, threads: int | None = None,
                   paths: Sequence[str] = ("eager", "best"), official: bool = True, max_seconds: float = 5.0,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Each φ of ``phis``: the baseline ``base`` scaled, its realized cost, and its latency on each of ``paths``
    (one row per φ and path; an architecture two φ share is timed once). With ``official`` and a B0 baseline,
    the released B0..B7 too (``official``: timed on the eager path when no larger than the largest φ's model,
    else ``timed: false`` with their costs only)."""
    from compscale.compound import realized_cost, scale
    from compscale.deploy.latency import model_latency
    from compscale.models import model_spec
    from compscale.models.registry import reference_label, registered_name

    started = time.perf_counter()
    label = base if isinstance(base, str) else reference_label(base)
    base_spec = model_spec(base)
    scaled = [scale(base_spec, phi) for phi in phis]
    is_b0 = registered_name(base_spec) == "efficientnet_b0" and base_spec == model_spec("efficientnet_b0")
    officials = [(name, model_spec(name)) for name in OFFICIAL] if official and is_b0 else []
    largest = max(s.macs for s in scaled)
    to_time = [(s.spec, path) for s in scaled for path in paths]
    to_time += [(spec, "eager") for _, spec in officials if realized_cost(spec).macs <= OFFICIAL_TIMED_UP_TO * largest]
    distinct = list(dict.fromkeys(to_time))
    timings: dict[tuple[Any, str], Any] = {}
    for i, (spec, path) in enumerate(distinct):
        report(progress, "stage", f"timing {spec.resolution}px ({path})", done=i, total=len(distinct))
        timings[(spec, path)] = model_latency(spec, batch, threads, path, max_seconds=max_seconds)
    report(progress, "stage", "timed", done=len(distinct), total=len(distinct))
    rows = []
    for s in scaled:
        for path in paths:
            lat = timings[(s.spec, path)]
            rows.append({"model": f"{label}@phi={s.phi:g}", "phi": s.phi, "macs": s.macs, "params": s.params,
                         "resolution": s.spec.resolution, "macs_ratio": s.macs_ratio, "backend": path,
                         "runtime": lat.extra.get("backend"), **lat.fields()})
    marks = []
    for name, spec in officials:
        cost, lat = realized_cost(spec), timings.get((spec, "eager"))
        marks.append({"model": name, "macs": cost.macs, "params": cost.params, "resolution": spec.resolution,
                      "timed": lat is not None, "backend": "eager" if lat is not None else None,
                      **(lat.fields() if lat is not None else {})})
    threads_used = next(iter(timings.values())).extra.get("threads") if timings else threads
    return {"model": label, "batch": batch, "threads": threads_used, "phis": [float(p) for p in phis],
            "rows": rows, "official": marks, "distinct": len(distinct), "seconds": time.perf_counter() - started}


def plot_pareto(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Two panels: latency against φ (one line per path, the median's interval as error bars), and latency
    against multiply-adds (log-log: the formula's models, the released B0..B7 timed as stars, the untimed ones'
    multiply-adds as dotted lines on the axis)."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    paths = list(dict.fromkeys(r["backend"] for r in result["rows"]))
    colors = dict(zip(paths, ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    for p in paths:
        rows = [r for r in result["rows"] if r["backend"] == p]
        ms = [r["latency_ms"] for r in rows]
        err = [[max(0.0, r["latency_ms"] - r["latency_low_ms"]) for r in rows],
               [max(0.0, r["latency_high_ms"] - r["latency_ms"]) for r in rows]]
        name = p if p == "eager" else f"{p} ({rows[0]['runtime']})" if rows[0].get("runtime") else p
        ax1.errorbar([r["phi"] for r in rows], ms, yerr=err, fmt="o-", capsize=3, color=colors[p], label=name)
        ax2.errorbar([r["macs"] / 1e9 for r in rows], ms, yerr=err, fmt="o-", capsize=3, color=colors[p], label=name)
        for r in (rows if p == paths[0] else []):
            ax2.annotate(f"φ={r['phi']:g}", (r["macs"] / 1e9, r["latency_ms"]), textcoords="offset points",
                         xytext=(4, -10), fontsize=7, color=colors[p])
    timed = [m for m in result["official"] if m["timed"]]
    if timed:
        ax2.plot([m["macs"] / 1e9 for m in timed], [m["latency_ms"] for m in timed], "*", ms=11, color="tab:red",
                 zorder=5, label="released B0..B7 (eager)")
        for m in timed:
            ax2.annotate(m["model"].replace("efficientnet_", "").upper(), (m["macs"] / 1e9, m["latency_ms"]),
                         textcoords="offset points", xytext=(4, 4), fontsize=8, color="tab:red")
    untimed = [m for m in result["official"] if not m["timed"]]
    for m in untimed:
        ax2.axvline(m["macs"] / 1e9, ls=":", lw=0.8, color="tab:red")
        ax2.annotate(m["model"].replace("efficientnet_", "").upper() + " (not timed)", (m["macs"] / 1e9, 0.02),
                     xycoords=("data", "axes fraction"), rotation=90, fontsize=7, color="tab:red")
    ax1.set_xlabel("phi")
    ax1.set_ylabel(f"latency (ms, batch {result['batch']}, {result['threads']} threads)")
    ax1.set_yscale("log")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("multiply-adds (billions, realized)")
    ax2.set_ylabel("latency (ms)")
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{result['model']} scaled by phi, timed on this machine (median and its 95 % interval)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
