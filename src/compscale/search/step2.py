"""Step 2 of the paper's method, and the test of its central claim (Figures 3 and 4).

With α, β, γ fixed, the baseline is scaled by each φ; beside every compound model stand depth-only,
width-only and resolution-only models scaled to the *same realized multiply-adds*. Each is trained with
several seeds; the result is accuracy against cost per strategy, with its noise, and a plain verdict of
whether compound scaling won on this data — whichever way it falls. Result: ``OUT/sweep.json``.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from compscale.compound import CostMatch, scale
from compscale.errors import UserError
from compscale.io import atomic_write_text
from compscale.jobs.planning import data_aware_base
from compscale.jobs.runner import Job, RunSettings, job_seeds, run_jobs
from compscale.plots import pyplot, save_figure
from compscale.progress import Progress
from compscale.scaling import CompoundScaling
from compscale.search.dimensions import SINGLE_DIMENSIONS, match_dimension
from compscale.specs import ModelSpec

KIND = "sweep"
STRATEGIES = ("compound",) + SINGLE_DIMENSIONS


@dataclass(frozen=True, kw_only=True)
class SweepPoint(CostMatch):
    """One model of the sweep: a strategy at a φ, its realized cost and how far it is from the target."""

    strategy: str  # "baseline", "compound", "depth", "width" or "resolution"
    phi: float
    multiplier: float | None = None  # the single dimension's multiplier

    def as_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "phi": self.phi, **self.cost_dict(), "multiplier": self.multiplier,
                "stages": self.spec.stage_table()}


def plan_sweep(base: ModelSpec, scaling: CompoundScaling, phis: Sequence[float],
               strategies: Sequence[str] = STRATEGIES) -> list[SweepPoint]:
    """The models of the sweep: the baseline once, then per φ > 0 the compound model and the
    single-dimension models matched to its realized multiply-adds."""
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        raise UserError(f"unknown strategy {unknown[0]!r}; use {', '.join(STRATEGIES)}")
    if not phis or any(p < 0 for p in phis):
        raise UserError("give one or more phi values >= 0")
    base_cost = scale(base, 0.0, scaling)
    points = [SweepPoint(strategy="baseline", phi=0.0, spec=base, macs=base_cost.macs, params=base_cost.params,
                         target_macs=base_cost.macs)]
    for phi in sorted({float(p) for p in phis if p > 0}):
        compound = scale(base, phi, scaling)
        if "compound" in strategies:
            points.append(SweepPoint(strategy="compound", phi=phi, spec=compound.spec, macs=compound.macs,
                                     params=compound.params, target_macs=compound.macs))
        for dim in SINGLE_DIMENSIONS:
            if dim in strategies:
                m = match_dimension(base, dim, compound.macs)
                points.append(SweepPoint(strategy=dim, phi=phi, spec=m.spec, macs=m.macs, params=m.params,
                                         target_macs=compound.macs, multiplier=m.multiplier))
    return points


def _verdict(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Per φ: did the compound model beat the best single-dimension model by more than the noise?"""
    lines, wins, losses, ties = [], 0, 0, 0
    for phi in sorted({p["phi"] for p in points if p["phi"] > 0}):
        at = {p["strategy"]: p for p in points if p["phi"] == phi and p["accuracy_mean"] is not None}
        if "compound" not in at or len(at) < 2:
            continue
        c = at["compound"]
        best = max((p for s, p in at.items() if s != "compound"), key=lambda p: p["accuracy_mean"])
        gap = c["accuracy_mean"] - best["accuracy_mean"]
        noise = max(c["accuracy_std"] or 0.0, best["accuracy_std"] or 0.0)
        if min(len(c["accuracies"]), len(best["accuracies"])) < 2:
            # One seed gives no noise estimate: say which was higher, but call it a tie.
            word = f"{'ahead' if gap > 0 else 'behind'} with one seed (no noise estimate: not a result)"
            ties += 1
        elif gap > noise:
            wins += 1
            word = "won"
        elif -gap > noise:
            losses += 1
            word = "lost"
        else:
            word = "tied (within the seed noise)"
            ties += 1
        lines.append(f"phi={phi:g}: compound {c['accuracy_mean']:.2%} vs best single dimension "
                     f"({best['strategy']}) {best['accuracy_mean']:.2%}: {word}, gap {gap:+.2%}, noise ±{noise:.2%}")
    off = [f"{p['strategy']} at phi={p['phi']:g} ({p['deviation']:+.0%})" for p in points
           if p["phi"] > 0 and abs(p["deviation"]) > 0.10]
    if off:
        # Rounding can leave no single-dimension model near the target: say so rather than hide it.
        lines.append("not matched within 10% of the compound model's multiply-adds (rounding leaves no closer "
                     "model): " + ", ".join(off))
    if not lines:
        summary = "not enough results to compare strategies"
    elif wins and not losses and not ties:
        summary = "compound scaling beat every single-dimension scaling at equal realized FLOPs on this data"
    elif losses and not wins and not ties:
        summary = "compound scaling lost to single-dimension scaling at equal realized FLOPs on this data"
    else:
        summary = (f"compound scaling won at {wins}, tied at {ties} and lost at {losses} of the {wins + ties + losses} "
                   "phi values against the best single-dimension scaling at equal realized FLOPs on this data")
    return {"summary": summary, "details": lines, "wins": wins, "losses": losses, "ties": ties}


def degenerate_note(alpha: float, beta: float, gamma: float) -> str | None:
    """When the coefficients grow only one dimension, "compound" is that single-dimension model."""
    grown = [name for name, v in (("depth", alpha), ("width", beta), ("resolution", gamma)) if v > 1.0]
    if len(grown) == 1:
        return (f"alpha={alpha:g}, beta={beta:g}, gamma={gamma:g} grow only {grown[0]}: here the compound model is a "
                f"{grown[0]}-only model, so the comparison with {grown[0]} scaling is of the same architecture.")
    if not grown:
        return "alpha = beta = gamma = 1: nothing is scaled."
    return None


def sweep_jobs(points: list[SweepPoint], settings: RunSettings) -> list[Job]:
    """Every sweep point with every seed: one job per point whose seeds train packed (``settings.pack``), else
    one job per point and seed. Seed k of every strategy is the same seed, so the strategies are paired: they
    see the same data order and augmentation."""
    return [Job(p.spec, seeds, f"{p.strategy}-phi{p.phi:g}", {"point": i, "strategy": p.strategy, "phi": p.phi})
            for i, p in enumerate(points) for seeds in job_seeds(settings)]


def run_sweep(base: str | ModelSpec, settings: RunSettings, scaling: CompoundScaling,
              phis: Sequence[float] = (0, 1, 2), strategies: Sequence[str] = STRATEGIES,
              progress: Progress | None = None) -> dict[str, Any]:
    """Train every sweep point with ``settings.seeds`` seeds (resumable, parallel); returns what ``sweep.json``
    holds."""
    settings.validate()
    base_spec = data_aware_base(base, settings.data, settings.resolution)
    points = plan_sweep(base_spec, scaling, phis, strategies)
    jobs = sweep_jobs(points, settings)
    plan = {"base_spec": base_spec.as_dict(), "scaling": [scaling.alpha, scaling.beta, scaling.gamma],
            "phis": sorted(set(map(float, phis))), "strategies": list(strategies)}
    results = run_jobs(KIND, settings, jobs, plan, exhaustive=True, progress=progress)
    accuracies: dict[int, list[float]] = {}
    for r in results:
        if r.state == "complete":
            accuracies.setdefault(r.job.labels["point"], []).extend(r.accuracies)
    rows = []
    for i, point in enumerate(points):
        accs = accuracies.get(i, [])
        rows.append({**point.as_dict(), "accuracies": accs,
                     "accuracy_mean": statistics.fmean(accs) if accs else None,
                     "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else (0.0 if accs else None)})
    verdict = _verdict(rows)
    note = degenerate_note(scaling.alpha, scaling.beta, scaling.gamma)
    if note:
        verdict["details"].append(note)
    result = {"alpha": scaling.alpha, "beta": scaling.beta, "gamma": scaling.gamma, "phis": plan["phis"],
              "seeds": settings.seeds, "epochs": settings.epochs, "data": settings.data, "points": rows,
              "verdict": verdict, "study": {"name": settings.study_name(KIND)}}
    if not settings.join:
        atomic_write_text(Path(settings.out) / "sweep.json", json.dumps(result, indent=2))
        plot_sweep(result, Path(settings.out) / "sweep.png")
    return result


def plot_sweep(result: dict[str, Any], path: str | Path) -> None:
    """Accuracy against realized multiply-adds per strategy (the data of the paper's Figures 3 and 4)."""
    plt = pyplot()
    colors = {"compound": "tab:red", "depth": "tab:blue", "width": "tab:green", "resolution": "tab:orange"}
    base = next((p for p in result["points"] if p["strategy"] == "baseline"), None)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for strategy, color in colors.items():
        pts = sorted((p for p in result["points"] if p["strategy"] == strategy and p["accuracy_mean"] is not None),
                     key=lambda p: p["macs"])
        if base is not None and base["accuracy_mean"] is not None:
            pts = [base] + pts
        if len(pts) < 2:
            continue
        xs = [p["macs"] / 1e6 for p in pts]
        ys = [100 * p["accuracy_mean"] for p in pts]
        es = [100 * (p["accuracy_std"] or 0.0) for p in pts]
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=color, label=strategy)
    ax.set_xlabel("realized multiply-adds (millions)")
    ax.set_ylabel(f"top-1 % on {result['data']} (mean ± std, {result['seeds']} seeds)")
    ax.set_title(f"Scaling strategies at equal FLOPs (alpha={result['alpha']:g}, beta={result['beta']:g}, "
                 f"gamma={result['gamma']:g})", fontsize=9)
    ax.grid(alpha=0.3)
    if not ax.get_legend_handles_labels()[0] and base is not None and base["accuracy_mean"] is not None:
        # Only φ = 0 was run (no strategy has two points to join): show the baseline itself.
        ax.errorbar([base["macs"] / 1e6], [100 * base["accuracy_mean"]], yerr=[100 * (base["accuracy_std"] or 0.0)],
                    marker="o", capsize=3, color="black", label="baseline")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
