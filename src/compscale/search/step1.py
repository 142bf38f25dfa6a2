"""Step 1 of the paper's method: grid-search α, β, γ at φ = 1 on the baseline, on real data.

Every candidate whose *realized* φ = 1 architecture costs target ± tolerance times the baseline is one job
of the study, trained with a short proxy schedule; successive halving stops the weak ones early
(``exhaustive`` trains all to the end). The best is chosen on images held out of the training set, never the
test set. Result: ``OUT/search.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compscale.errors import UserError
from compscale.io import atomic_write_text
from compscale.jobs.planning import data_aware_base
from compscale.jobs.queue import redact_url
from compscale.jobs.runner import Job, JobResult, RunSettings, run_jobs
from compscale.progress import Progress
from compscale.search.candidates import CandidateReport, enumerate_candidates
from compscale.specs import ModelSpec
from compscale.vocabulary import normalize

KIND = "search"


@dataclass(frozen=True)
class GridSettings:
    alpha: tuple[float, float] = (1.0, 2.0)
    beta: tuple[float, float] = (1.0, 1.5)
    gamma: tuple[float, float] = (1.0, 1.5)
    step: float = 0.05
    target: float = 2.0
    tolerance: float = 0.1
    #: Keep only candidates that stay honest at these φ of a later sweep (the demo: 1, 2, 3); none: no check.
    sweep_phis: tuple[float, ...] = ()
    sweep_tolerance: float = 0.15  # the compound model realizes target^φ within this fraction
    match_tolerance: float = 0.05  # ... and every single-dimension model matches its cost within this fraction


def plan_search(base: str | ModelSpec, settings: RunSettings, grid: GridSettings) -> tuple[ModelSpec, CandidateReport]:
    """The data-aware baseline and its realized candidates (an error when the grid has none)."""
    base_spec = data_aware_base(base, settings.data, settings.resolution)
    report = enumerate_candidates(base_spec, grid.target, grid.tolerance, grid.alpha, grid.beta, grid.gamma,
                                  grid.step, sweep_phis=grid.sweep_phis, sweep_tolerance=grid.sweep_tolerance,
                                  match_tolerance=grid.match_tolerance)
    if not report.candidates:
        swept = (f", {report.sweep_rejected} dropped because a sweep over phi = "
                 f"{', '.join(f'{p:g}' for p in report.sweep_phis)} could not match their cost"
                 if report.sweep_rejected else "")
        raise UserError(f"no (alpha, beta, gamma) on this grid has alpha*beta^2*gamma^2 and a realized cost both "
                        f"{grid.target:g} ± {grid.tolerance:g} times the baseline's ({report.grid_points} grid points, "
                        f"{report.nominal_feasible} nominally feasible, {report.realized_feasible} realized"
                        f"{swept}): widen the grid or the tolerance")
    return base_spec, report


def search_jobs(report: CandidateReport, settings: RunSettings) -> list[Job]:
    """One job per distinct candidate architecture."""
    seeds = tuple(settings.seed + k for k in range(settings.seeds))  # one job, all seeds: one curve to prune on
    return [Job(c.spec, seeds, f"candidate-{i:03d}", {"alpha": c.alpha, "beta": c.beta, "gamma": c.gamma,
                                                       "macs": c.macs})
            for i, c in enumerate(report.candidates)]


def run_search(base: str | ModelSpec, settings: RunSettings, grid: GridSettings = GridSettings(),
               exhaustive: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Run (or resume, or join) the search; returns what ``OUT/search.json`` holds."""
    settings.validate()
    base_spec, report = plan_search(base, settings, grid)
    plan = {"grid": asdict(grid), "base_spec": base_spec.as_dict()}
    results = run_jobs(KIND, settings, search_jobs(report, settings), plan, exhaustive, progress)
    summary = summarize(results, report)
    summary["study"] = {"name": settings.study_name(KIND), "storage": redact_url(settings.storage_url()),
                        "exhaustive": exhaustive, "proxy_epochs": settings.epochs}
    summary["epochs_used"] = sum(t["epochs"] for t in summary["trials"]) * settings.seeds
    summary["epochs_exhaustive"] = len(report.candidates) * settings.epochs * settings.seeds
    summary["baseline"] = {"spec": base_spec.as_dict(), "macs": report.base_macs}
    summary["warnings"] = search_warnings(summary["trials"], report, base_spec.num_classes)
    summary = {"model": base if isinstance(base, str) else base.family, **summary}
    if not settings.join:  # the file in the one vocabulary of compscale's JSON (what `search --json` prints)
        atomic_write_text(Path(settings.out) / "search.json", json.dumps(normalize(summary), indent=2))
    return summary


def search_warnings(trials: list[dict[str, Any]], report: CandidateReport, classes: int) -> list[str]:
    """What makes this search's choice untrustworthy: a baseline too coarse for the grid, candidates (or all of
    them) that scored at chance."""
    from compscale.stats import at_chance

    warnings = [report.warning] if report.warning else []
    scored = [t for t in trials if t["accuracy"] is not None]
    chance = [t for t in scored if at_chance(t["accuracy"], classes)]
    if scored and len(chance) == len(scored):
        warnings.append(f"every candidate scored at chance (about {1 / classes:.0%} for {classes} classes): the proxy "
                        "training learned nothing, so the choice among them is noise; train longer or on more images")
    elif chance:
        warnings.append(f"{len(chance)} of {len(scored)} candidates scored at chance (about {1 / classes:.0%} for "
                        f"{classes} classes)")
    return warnings


def summarize(results: list[JobResult], report: CandidateReport) -> dict[str, Any]:
    """``search.json``: the best (α, β, γ) and every candidate's cost, accuracy, epochs and state."""
    trials = []
    for r in results:
        if r.state == "waiting":
            continue
        cand = report.candidates[r.index]
        trials.append({"alpha": cand.alpha, "beta": cand.beta, "gamma": cand.gamma, "macs": cand.macs,
                       "nominal_ratio": cand.nominal_ratio, "realized_ratio": cand.realized_ratio,
                       "accuracy": r.accuracy, "accuracies": list(r.accuracies), "epochs": r.epochs,
                       "state": r.state, "job": r.index})
    complete = [t for t in trials if t["state"] == "complete" and t["accuracy"] is not None]
    best = max(complete, key=lambda t: (t["accuracy"], -t["macs"])) if complete else None
    return {
        "best": None if best is None else {k: best[k] for k in ("alpha", "beta", "gamma", "accuracy")},
        "trials": trials,
        "candidates": report.as_dict(),
    }
