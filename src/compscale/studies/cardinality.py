"""Cardinality vs depth vs width at equal cost: the ResNeXt paper's Table 4 comparison, on your data.

Xie et al. (2017) double the complexity of a ResNeXt three ways and find that raising the cardinality C
(more paths of the same group width d) beats going deeper or wider. Starting from a small ResNeXt
(``resnext_tiny``, C×d = 4×4d at 32 px) this study builds, for a budget b (default 2× its realized
multiply-adds):

* **cardinality** — C' paths at the same group width d (``base_width`` kept): the paper's "2×64d → 64×4d";
* **width** — the same C with wider paths d' (``base_width`` raised): the paper's "wider" ResNet (1×128d);
* **depth** — more blocks per stage, same C and d: the paper's deeper ResNet-200;

each the integer choice whose *realized* multiply-adds (meta-device count, for the data's channels and
classes) are closest to b × the baseline's, and trains every model with several seeds. The block's input
and output planes stay fixed in all three, as in the paper, so only the dimension under test changes.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

from compscale.errors import UserError
from compscale.jobs.planning import data_info, for_data
from compscale.jobs.runner import RunSettings, run_jobs
from compscale.monotone import closest_to_target
from compscale.plots import pyplot, save_figure
from compscale.progress import Progress
from compscale.specs.resnet import ResNetSpec, ResNetStage
from compscale.studies.common import MATCH_TOLERANCE, attach_accuracy, macs_of, match_record, model_jobs, paired
from compscale.studies.report import fmt_band, fmt_dev, fmt_k, fmt_m, markdown_table, write_study

KIND = "cardinality"
BASE_MODEL = "resnext_tiny"
DIMENSIONS = ("cardinality", "width", "depth")


def _describe(spec: ResNetSpec) -> dict[str, Any]:
    return {"cardinality": spec.cardinality, "base_width": spec.base_width, "layers": list(spec.layers),
            "group_widths": [spec.group_width(s) for s in spec.stages],
            "bottleneck_widths": [spec.bottleneck_width(s) for s in spec.stages],
            "label": f"{spec.cardinality}x{spec.group_width(spec.stages[0])}d {'-'.join(map(str, spec.layers))}"}


def _scan(base: ResNetSpec, field: str, target: float, max_factor: int) -> ResNetSpec:
    """The integer ``field`` (cost never decreases with it) whose realized cost is closest to ``target``."""
    start = getattr(base, field)

    def at(value: float) -> ResNetSpec:
        return base.replace(**{field: int(value)})

    if macs_of(at(start * max_factor)) < target:
        raise UserError(f"raising {field} {max_factor}x does not reach {target:,.0f} multiply-adds")
    value, _ = closest_to_target(lambda v: macs_of(at(v)), target, start, start * max_factor, integer=True)
    return at(value)


def match_cardinality(base: ResNetSpec, target: float, max_factor: int = 16) -> ResNetSpec:
    """C' ≥ C at the same base width (group width d) with realized multiply-adds closest to ``target``."""
    return _scan(base, "cardinality", target, max_factor)


def match_width(base: ResNetSpec, target: float, max_factor: int = 16) -> ResNetSpec:
    """The base width (hence d = ⌊p·base_width/64⌋ in every stage) at the same C closest to ``target``."""
    return _scan(base, "base_width", target, max_factor)


def match_depth(base: ResNetSpec, target: float, max_extra: int = 8) -> ResNetSpec:
    """More blocks per stage (same C, d) closest to ``target``; among the depths within half the tolerance,
    the most uniform growth of the stages (the repeats ratios closest to each other) wins.

    A stage's blocks after its first are identical, so the cost is additive: base + Σ extra_i · block_i.
    Each stage's block cost is measured once and the repeats are enumerated exactly from it; the winner is
    then counted again as a whole (the reported cost is always the realized one).
    """
    base_macs = macs_of(base)
    per_block = []
    for i, stage in enumerate(base.stages):
        grown = list(base.stages)
        grown[i] = ResNetStage(stage.repeats + 1, stage.planes, stage.stride)
        per_block.append(macs_of(base.replace(stages=tuple(grown))) - base_macs)
    best: tuple[float, float, tuple[int, ...]] | None = None
    for extra in itertools.product(range(max_extra + 1), repeat=len(base.stages)):
        macs = base_macs + sum(e * c for e, c in zip(extra, per_block))
        deviation = abs(macs / target - 1)
        ratios = [(s.repeats + e) / s.repeats for s, e in zip(base.stages, extra)]
        spread = max(ratios) / min(ratios)
        key = (0.0 if deviation <= MATCH_TOLERANCE / 2 else deviation, spread, deviation)
        if best is None or key < best[:3]:
            best = (*key, extra)  # type: ignore[assignment]
    assert best is not None
    extra = best[3]
    stages = tuple(ResNetStage(s.repeats + e, s.planes, s.stride) for s, e in zip(base.stages, extra))
    return base.replace(stages=stages)


def plan(settings: RunSettings, budget: float = 2.0, base: str | ResNetSpec = BASE_MODEL) -> dict[str, Any]:
    """The baseline and its three variants at ``budget`` × its realized cost, each with its cost and
    deviation from the target (no training)."""
    from compscale.models import model_spec

    if not budget > 1.0:
        raise UserError(f"--budget must be more than 1 (a multiple of the baseline's cost), got {budget}")
    info = data_info(settings.data, settings.resolution, settings.limit_train, settings.limit_test)
    spec = for_data(model_spec(base), info, settings.resolution)
    if not isinstance(spec, ResNetSpec):
        raise UserError(f"the cardinality study needs a ResNeXt baseline, got a {spec.family} model")
    base_macs = macs_of(spec)
    target = budget * base_macs
    variants = {"cardinality": match_cardinality(spec, target), "width": match_width(spec, target),
                "depth": match_depth(spec, target)}
    models = [match_record("baseline", spec, None, dimension="baseline", **_describe(spec))]
    models += [match_record(f"{dim}", s, target, dimension=dim, **_describe(s)) for dim, s in variants.items()]
    return {"data": info.__dict__, "budget": budget, "base_macs": base_macs, "target_macs": int(round(target)),
            "models": models}


def run(settings: RunSettings, budget: float = 2.0, base: str | ResNetSpec = BASE_MODEL,
        progress: Progress | None = None) -> dict[str, Any]:
    """Plan, train every model × seed through the job queue, and write ``cardinality.json``,
    ``cardinality.png`` and ``section.md`` into ``settings.out``; returns the JSON payload."""
    t0 = time.perf_counter()
    out = Path(settings.out)
    planned = plan(settings, budget, base)
    models = planned["models"]
    results = run_jobs(KIND, settings, model_jobs(models, settings), {"budget": budget}, progress=progress)
    attach_accuracy(models, results, out)
    variants = [m for m in models if m["dimension"] != "baseline"]
    ranked = sorted(variants, key=lambda m: -m["accuracy"]["mean"])
    lead = paired(ranked[0]["accuracy"], ranked[1]["accuracy"])  # the winner's lead, seed k against seed k
    payload = {
        "study": KIND,
        "question": "At equal multiply-adds, does more cardinality beat more depth or more width? "
                    "(ResNeXt paper, Table 4)",
        "settings": settings.as_dict(),
        **{k: planned[k] for k in ("data", "budget", "base_macs", "target_macs")},
        "tolerance": MATCH_TOLERANCE,
        "all_within_tolerance": all(m["within_tolerance"] for m in variants),
        "models": models,
        "ranking": [m["dimension"] for m in ranked],
        "winner": ranked[0]["dimension"],
        "winner_separated": lead.verdict == "won",
        "winner_paired": lead.as_dict(),
        "seconds": time.perf_counter() - t0,
    }
    return write_study(out, KIND, payload, _plot, section)


def _plot(payload: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = {"baseline": "0.4", "cardinality": "tab:red", "width": "tab:blue", "depth": "tab:green"}
    for m in payload["models"]:
        a = m["accuracy"]
        x = m["macs"] / 1e6
        ax.errorbar([x], [100 * a["mean"]], yerr=[100 * a["std"]], fmt="o", capsize=4,
                    color=colors.get(m["dimension"], "k"), label=f"{m['dimension']} ({m['label']})")
        ax.scatter([x] * len(a["values"]), [100 * v for v in a["values"]], s=10, color=colors.get(m["dimension"], "k"),
                   alpha=0.4)
    ax.axvspan(payload["target_macs"] * (1 - MATCH_TOLERANCE) / 1e6,
               payload["target_macs"] * (1 + MATCH_TOLERANCE) / 1e6,
               color="0.9", zorder=0, label=f"target ±{100 * MATCH_TOLERANCE:.0f}%")
    ax.set_xlabel("multiply-adds per image (M, realized)")
    ax.set_ylabel("top-1 accuracy (%): mean ± std over seeds")
    s = payload["settings"]
    ax.set_title(f"ResNeXt: cardinality vs width vs depth at {payload['budget']:g}x cost\n"
                 f"{s['data']}, {s['epochs']} epochs, {s['seeds']} seeds", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


COLUMNS = [("dimension", "spent on", str), ("label", "C×d, blocks", str), ("macs", "MACs", fmt_m),
           ("deviation", "vs target", fmt_dev), ("params", "params", fmt_k), ("activations", "activations", fmt_k),
           ("accuracy", "top-1 % (mean ± std)", fmt_band)]


def section(payload: dict[str, Any]) -> str:
    """A markdown fragment for the HTML report."""
    s = payload["settings"]
    lead = payload["models"][1:]
    by = {m["dimension"]: m for m in lead}
    winner = by[payload["winner"]]
    runner = by[payload["ranking"][1]]
    gap = 100 * (winner["accuracy"]["mean"] - runner["accuracy"]["mean"])
    lead = payload["winner_paired"]
    if lead["gap_low"] is None:
        reading = " — one seed gives no noise estimate, so this run does not separate them"
    elif payload["winner_separated"]:
        reading = (f" (paired 95% interval of the lead over {lead['pairs']} seeds: [{100 * lead['gap_low']:+.2f}, "
                   f"{100 * lead['gap_high']:+.2f}] points, above 0)")
    else:
        reading = (f" — a tie: the paired 95% interval of the lead over {lead['pairs']} seeds, "
                   f"[{100 * lead['gap_low']:+.2f}, {100 * lead['gap_high']:+.2f}] points, contains 0")
    verdict = f"**{payload['winner']}** ranks first, {gap:.2f} points above {runner['dimension']}" + reading
    limits = []
    if s.get("limit_train"):
        limits.append(f"{s['limit_train']} training images")
    return "\n".join([
        "## Cardinality vs depth vs width (ResNeXt, equal multiply-adds)",
        "",
        f"Baseline `resnext_tiny` ({payload['models'][0]['label']}, {payload['base_macs'] / 1e6:.2f}M MACs) and "
        f"three ways to spend {payload['budget']:g}× its cost (target {payload['target_macs'] / 1e6:.2f}M MACs, "
        f"every variant within ±{100 * payload['tolerance']:.0f}%: "
        f"{'yes' if payload['all_within_tolerance'] else 'NO'}). "
        f"Data `{s['data']}` at {s['resolution']} px{', ' + ', '.join(limits) if limits else ''}; "
        f"{s['epochs']} epochs, "
        f"{s['seeds']} seeds per model, {s['optimizer']} lr {s['lr']:g} {s['schedule']}.",
        "",
        markdown_table(payload["models"], COLUMNS),
        "",
        verdict + ". The ResNeXt paper's ImageNet result (its Table 4) is that cardinality wins.",
        "",
        "![accuracy vs multiply-adds](cardinality.png)",
        "",
    ])
