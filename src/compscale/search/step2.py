"""Step 2 of the paper's method, and the test of its central claim (Figures 3 and 4).

With α, β, γ fixed, the baseline is scaled by each φ; beside every compound model stand depth-only,
width-only and resolution-only models scaled to the *same realized multiply-adds* (within
:data:`MATCH_TOLERANCE`). A single-dimension model that cannot be matched at some φ is reported as such and
not trained: it is never borrowed from another φ, and no trained run counts at two φ. Every model is trained
with the same seeds, so seed k of every strategy saw the same data order and augmentation; the verdict per φ
is the paired comparison of the compound model with the best single-dimension model
(:func:`compscale.stats.paired_gap`: mean gap, Student-t interval, won / tied / lost — or "no noise
estimate" with one seed), whichever way it falls. Result: ``OUT/sweep.json`` and ``OUT/sweep.png``.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from compscale.compound import CostMatch, scale
from compscale.errors import UserError
from compscale.io import atomic_write_text
from compscale.jobs.planning import data_aware_base
from compscale.jobs.runner import Job, JobResult, RunSettings, job_folder, job_seeds, run_jobs
from compscale.plots import pyplot, save_figure
from compscale.progress import Progress
from compscale.scaling import CompoundScaling
from compscale.search.dimensions import SINGLE_DIMENSIONS, match_dimension
from compscale.specs import ModelSpec
from compscale.stats import NO_NOISE, at_chance, paired_gap, t_quantile

KIND = "sweep"
STRATEGIES = ("compound",) + SINGLE_DIMENSIONS
#: A single-dimension model is trained only when its realized multiply-adds are within this fraction of the
#: compound model's.
MATCH_TOLERANCE = 0.05
#: The compound model should realize target^φ (2^φ) within this fraction; the verdict flags it otherwise.
RULE_TOLERANCE = 0.15


@dataclass(frozen=True, kw_only=True)
class SweepPoint(CostMatch):
    """One model of the sweep: a strategy at a φ, its realized cost and how far it is from the target.
    ``matched=False``: a single-dimension model whose cost could not be matched (``note`` says why); it is
    not trained."""

    strategy: str  # "baseline", "compound", "depth", "width" or "resolution"
    phi: float
    multiplier: float | None = None  # the single dimension's multiplier
    matched: bool = True
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "phi": self.phi, **self.cost_dict(), "multiplier": self.multiplier,
                "matched": self.matched, "note": self.note, "stages": self.spec.stage_table()}


def plan_sweep(base: ModelSpec, scaling: CompoundScaling, phis: Sequence[float],
               strategies: Sequence[str] = STRATEGIES, match_tolerance: float = MATCH_TOLERANCE) -> list[SweepPoint]:
    """The models of the sweep: the baseline once, then per φ > 0 the compound model and the single-dimension
    models matched to its realized multiply-adds. One that cannot be matched within ``match_tolerance`` — or
    whose closest network is one another φ already uses — is kept as an unmatched point, not to be trained."""
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        raise UserError(f"unknown strategy {unknown[0]!r}; use {', '.join(STRATEGIES)}")
    if not phis or any(p < 0 for p in phis):
        raise UserError("give one or more phi values >= 0")
    base_cost = scale(base, 0.0, scaling)
    points = [SweepPoint(strategy="baseline", phi=0.0, spec=base, macs=base_cost.macs, params=base_cost.params,
                         target_macs=base_cost.macs)]
    used: dict[ModelSpec, float] = {base: 0.0}
    for phi in sorted({float(p) for p in phis if p > 0}):
        compound = scale(base, phi, scaling)
        if "compound" in strategies:
            points.append(SweepPoint(strategy="compound", phi=phi, spec=compound.spec, macs=compound.macs,
                                     params=compound.params, target_macs=compound.macs))
            used.setdefault(compound.spec, phi)
        for dim in SINGLE_DIMENSIONS:
            if dim not in strategies:
                continue
            m = match_dimension(base, dim, compound.macs)
            note = None
            if abs(m.deviation) > match_tolerance:
                note = (f"cannot be matched within ±{match_tolerance:.0%} of the compound model's multiply-adds "
                        f"(the closest {dim}-only network is {m.deviation:+.1%} off): not trained")
            elif used.get(m.spec, phi) != phi:
                note = f"the same network as at phi={used[m.spec]:g}: not trained twice"
            else:
                used[m.spec] = phi
            points.append(SweepPoint(strategy=dim, phi=phi, spec=m.spec, macs=m.macs, params=m.params,
                                     target_macs=compound.macs, multiplier=m.multiplier, matched=note is None,
                                     note=note))
    return points


def sweep_jobs(points: list[SweepPoint], settings: RunSettings) -> list[Job]:
    """Every matched sweep point with every seed: one job per point whose seeds train packed (``settings.pack``),
    else one job per point and seed. Seed k of every strategy is the same seed, so the strategies are paired:
    they see the same data order and augmentation. An unmatched point has no job. The costliest come first, so
    that parallel workers finish together (the largest φ's models are 2^φ times the baseline). Only the baseline
    is evaluated after every epoch (its learning curve tells whether the budget is past the steep start); the
    others only after the last, which is all the comparison reads (evaluation is ~10 % of a job's time)."""
    order = sorted(range(len(points)), key=lambda i: -points[i].macs)
    return [Job(points[i].spec, seeds, f"{points[i].strategy}-phi{points[i].phi:g}",
                {"point": i, "strategy": points[i].strategy, "phi": points[i].phi, "macs": points[i].macs},
                train={} if i == 0 else {"eval_every": settings.epochs})
            for i in order if points[i].matched for seeds in job_seeds(settings)]


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """The Student-t interval of the mean of ``values`` (None with fewer than two)."""
    if len(values) < 2:
        return None
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    half = t_quantile(0.5 + confidence / 2, len(values) - 1) * sd / math.sqrt(len(values))
    return mean - half, mean + half


def _paired(a: dict[str, Any], b: dict[str, Any]):
    """The paired gap a − b over the seeds both trained (seed k against seed k)."""
    sa, sb = dict(zip(a["seed_order"], a["accuracies"])), dict(zip(b["seed_order"], b["accuracies"]))
    common = [s for s in a["seed_order"] if s in sb]
    return paired_gap([sa[s] for s in common], [sb[s] for s in common]) if common else None


def compare(rows: list[dict[str, Any]], classes: int, target: float = 2.0) -> dict[str, Any]:
    """The verdict: per φ, the compound model against each matched single-dimension model and against the best
    of them (highest mean), paired by seed; plus every warning (unmatched points, a compound model off the
    rule's cost, models at chance)."""
    comparisons, lines, warnings = [], [], []
    counts = {"won": 0, "tied": 0, "lost": 0, NO_NOISE: 0}
    trained = [p for p in rows if p["accuracy_mean"] is not None]
    chance = [p for p in trained if at_chance(p["accuracy_mean"], classes)]
    for phi in sorted({p["phi"] for p in rows if p["phi"] > 0}):
        at = {p["strategy"]: p for p in rows if p["phi"] == phi}
        c = at.get("compound")
        singles = [p for s, p in at.items() if s in SINGLE_DIMENSIONS and p["matched"]
                   and p["accuracy_mean"] is not None]
        if c is None or c["accuracy_mean"] is None or not singles:
            continue
        best = max(singles, key=lambda p: p["accuracy_mean"])
        gaps = {p["strategy"]: _paired(c, p) for p in singles}
        gap = gaps[best["strategy"]]
        if gap is None:
            continue
        word = gap.verdict
        counts[word] += 1
        comparisons.append({"phi": phi, "target_macs": c["macs"], "macs_ratio": c["macs_ratio"],
                            "compound_top1": c["accuracy_mean"], "best_single": best["strategy"],
                            "best_single_top1": best["accuracy_mean"], "paired": gap.as_dict(), "outcome": word,
                            "others": [{"strategy": k, **v.as_dict()} for k, v in gaps.items()
                                       if v is not None and k != best["strategy"]]})
        lines.append(f"phi={phi:g} ({c['macs_ratio']:.2f}x the baseline's multiply-adds): compound "
                     f"{c['accuracy_mean']:.2%} vs the best single dimension, {best['strategy']} "
                     f"{best['accuracy_mean']:.2%}: {gap.describe()}")
    for p in rows:
        if p["phi"] > 0 and p["strategy"] == "compound" and abs(p["rule_deviation"]) > RULE_TOLERANCE:
            warnings.append(f"the compound model at phi={p['phi']:g} realizes {p['macs_ratio']:.2f}x the baseline's "
                            f"multiply-adds, {p['rule_deviation']:+.0%} off the rule's {target:g}^phi = "
                            f"{target ** p['phi']:g}x")
        if p["note"]:
            warnings.append(f"{p['strategy']} at phi={p['phi']:g}: {p['note']}")
    if trained and len(chance) == len(trained):
        warnings.append(f"every model scored at chance (about {1 / classes:.0%} for {classes} classes): they learned "
                        "nothing, so no comparison means anything; train longer or on more images")
    elif chance:
        warnings.append("at chance (about {:.0%}): {}".format(
            1 / classes, ", ".join(f"{p['strategy']} at phi={p['phi']:g} ({p['accuracy_mean']:.1%})" for p in chance)))
    decided = counts["won"] + counts["tied"] + counts["lost"]
    if trained and len(chance) == len(trained):
        summary = "no verdict: every model scored at chance"
    elif not comparisons:
        summary = "not enough results to compare strategies"
    elif not decided:
        ahead = sum(1 for c in comparisons if c["paired"]["gap"] > 0)
        summary = (f"no verdict: one seed per model gives no noise estimate (compound was ahead of the best single "
                   f"dimension at {ahead} of {len(comparisons)} phi values, which says nothing without one)")
    elif counts["won"] == len(comparisons):
        summary = ("compound scaling beat the best single-dimension scaling at every phi, at equal realized FLOPs, "
                   "on this data (paired 95% intervals above 0)")
    elif counts["lost"] == len(comparisons):
        summary = ("compound scaling lost to the best single-dimension scaling at every phi, at equal realized "
                   "FLOPs, on this data (paired 95% intervals below 0)")
    elif counts["tied"] == len(comparisons):
        summary = ("compound scaling tied with the best single-dimension scaling at every phi, at equal realized "
                   "FLOPs, on this data: no paired 95% interval excludes 0")
    else:
        summary = (f"compound scaling won at {counts['won']}, tied at {counts['tied']} and lost at {counts['lost']} "
                   f"of the {decided} phi values against the best single-dimension scaling at equal realized FLOPs "
                   "on this data (paired 95% intervals)")
    return {"summary": summary, "details": lines + warnings, "warnings": warnings, "comparisons": comparisons,
            "wins": counts["won"], "ties": counts["tied"], "losses": counts["lost"], "no_noise": counts[NO_NOISE]}


def degenerate_note(alpha: float, beta: float, gamma: float) -> str | None:
    """When the coefficients grow only one dimension, "compound" is that single-dimension model."""
    grown = [name for name, v in (("depth", alpha), ("width", beta), ("resolution", gamma)) if v > 1.0]
    if len(grown) == 1:
        return (f"alpha={alpha:g}, beta={beta:g}, gamma={gamma:g} grow only {grown[0]}: here the compound model is a "
                f"{grown[0]}-only model, so the comparison with {grown[0]} scaling is of the same architecture.")
    if not grown:
        return "alpha = beta = gamma = 1: nothing is scaled."
    return None


def _seed_scores(results: list[JobResult]) -> dict[int, dict[int, float]]:
    """Per point, each trained seed's top-1."""
    scores: dict[int, dict[int, float]] = {}
    for r in results:
        if r.state == "complete":
            scores.setdefault(r.job.labels["point"], {}).update(zip(r.job.seeds, r.accuracies))
    return scores


def learning_curve(settings: RunSettings, job: Job) -> list[float]:
    """The mean over a job's seeds of the test top-1 after each epoch (from each seed's ``metrics.jsonl``)."""
    per_epoch: dict[int, list[float]] = {}
    for seed in job.seeds:
        path = job_folder(settings.out, settings.study_name(KIND), KIND, job.folder, seed) / "metrics.jsonl"
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                record = json.loads(line)
                per_epoch.setdefault(int(record["epoch"]), []).append(float(record["top1"]))
            except (ValueError, KeyError, TypeError):
                continue
    return [statistics.fmean(per_epoch[e]) for e in sorted(per_epoch) if len(per_epoch[e]) == len(job.seeds)]


def run_sweep(base: str | ModelSpec, settings: RunSettings, scaling: CompoundScaling,
              phis: Sequence[float] = (0, 1, 2), strategies: Sequence[str] = STRATEGIES,
              progress: Progress | None = None) -> dict[str, Any]:
    """Train every matched sweep point with ``settings.seeds`` seeds (resumable, parallel); returns what
    ``sweep.json`` holds."""
    settings.validate()
    base_spec = data_aware_base(base, settings.data, settings.resolution)
    points = plan_sweep(base_spec, scaling, phis, strategies)
    jobs = sweep_jobs(points, settings)
    plan = {"base_spec": base_spec.as_dict(), "scaling": [scaling.alpha, scaling.beta, scaling.gamma],
            "phis": sorted(set(map(float, phis))), "strategies": list(strategies), "match_tolerance": MATCH_TOLERANCE}
    results = run_jobs(KIND, settings, jobs, plan, exhaustive=True, progress=progress)
    scores = _seed_scores(results)
    base_macs = points[0].macs
    rows = []
    for i, point in enumerate(points):
        seeds = sorted(scores.get(i, {}))
        accs = [scores[i][s] for s in seeds]
        interval = mean_interval(accs)
        rows.append({**point.as_dict(), "macs_ratio": point.macs / base_macs,
                     "rule_deviation": point.macs / base_macs / scaling.target ** point.phi - 1,
                     "seed_order": seeds, "accuracies": accs,
                     "accuracy_mean": statistics.fmean(accs) if accs else None,
                     "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else (0.0 if accs else None),
                     "top1_interval": list(interval) if interval else None})
    baseline_job = next((j for j in jobs if j.labels["point"] == 0), None)
    curve = learning_curve(settings, baseline_job) if baseline_job is not None else []
    verdict = compare(rows, base_spec.num_classes, scaling.target)
    note = degenerate_note(scaling.alpha, scaling.beta, scaling.gamma)
    if note:
        verdict["details"].append(note)
    result = {"alpha": scaling.alpha, "beta": scaling.beta, "gamma": scaling.gamma, "phis": plan["phis"],
              "seeds": settings.seeds, "epochs": settings.epochs, "data": settings.data, "points": rows,
              "baseline_curve": curve, "verdict": verdict, "study": {"name": settings.study_name(KIND)}}
    if not settings.join:
        from compscale.vocabulary import normalize

        atomic_write_text(Path(settings.out) / "sweep.json", json.dumps(normalize(result), indent=2))
        plot_sweep(result, Path(settings.out) / "sweep.png")
    return result


COLORS = {"compound": "tab:red", "depth": "tab:blue", "width": "tab:green", "resolution": "tab:orange"}


def plot_sweep(result: dict[str, Any], path: str | Path) -> None:
    """Top-1 against realized multiply-adds per strategy over φ (the paper's Figures 3 and 4): each point the
    mean over seeds with its 95% Student-t interval, each seed a dot; unmatched points are not drawn."""
    plt = pyplot()
    base = next((p for p in result["points"] if p["strategy"] == "baseline"), None)
    fig, ax = plt.subplots(figsize=(7.0, 4.8))
    drawn = False
    for k, (strategy, color) in enumerate(COLORS.items()):
        pts = sorted((p for p in result["points"] if p["strategy"] == strategy and p["accuracy_mean"] is not None),
                     key=lambda p: p["macs"])
        if base is not None and base["accuracy_mean"] is not None:
            pts = [base] + pts
        if len(pts) < 2:
            continue
        drawn = True
        nudge = 1 + 0.012 * (k - 1.5)  # the strategies' bars side by side at (almost) equal cost
        xs = [p["macs"] / 1e6 * nudge for p in pts]
        ys = [100 * p["accuracy_mean"] for p in pts]
        lo = [100 * (p["accuracy_mean"] - p["top1_interval"][0]) if p["top1_interval"] else 0.0 for p in pts]
        hi = [100 * (p["top1_interval"][1] - p["accuracy_mean"]) if p["top1_interval"] else 0.0 for p in pts]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, color=color, label=strategy)
        for x, p in zip(xs, pts):
            ax.scatter([x] * len(p["accuracies"]), [100 * a for a in p["accuracies"]], s=8, color=color, alpha=0.35)
        if strategy == "compound":
            for x, y, p in zip(xs, ys, pts):
                ax.annotate(f"phi={p['phi']:g}", (x, y), textcoords="offset points", xytext=(4, -12), fontsize=7)
    if not drawn and base is not None and base["accuracy_mean"] is not None:
        # Only φ = 0 was run (no strategy has two points to join): show the baseline itself.
        ax.errorbar([base["macs"] / 1e6], [100 * base["accuracy_mean"]], marker="o", capsize=3, color="black",
                    label="baseline")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("realized multiply-adds per image (millions, log scale)")
    seeds = result["seeds"]
    ax.set_ylabel(f"top-1 % on {result['data']} (mean, " + (f"95% interval over {seeds} seeds)" if seeds > 1
                                                             else "one seed: no interval)"))
    ax.set_title(f"Scaling strategies at equal realized FLOPs, phi = 0..{max(result['phis']):g} "
                 f"(alpha={result['alpha']:g}, beta={result['beta']:g}, gamma={result['gamma']:g})", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
