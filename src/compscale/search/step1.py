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

KIND = "search"


@dataclass(frozen=True)
class GridSettings:
    alpha: tuple[float, float] = (1.0, 2.0)
    beta: tuple[float, float] = (1.0, 1.5)
    gamma: tuple[float, float] = (1.0, 1.5)
    step: float = 0.05
    target: float = 2.0
    tolerance: float = 0.1


def plan_search(base: str | ModelSpec, settings: RunSettings, grid: GridSettings) -> tuple[ModelSpec, CandidateReport]:
    """The data-aware baseline and its realized candidates (an error when the grid has none)."""
    base_spec = data_aware_base(base, settings.data, settings.resolution)
    report = enumerate_candidates(base_spec, grid.target, grid.tolerance, grid.alpha, grid.beta, grid.gamma,
                                  grid.step)
    if not report.candidates:
        raise UserError(f"no (alpha, beta, gamma) on this grid realizes {grid.target:g} ± {grid.tolerance:g} times "
                        f"the baseline's multiply-adds ({report.grid_points} grid points, {report.nominal_feasible} "
                        "nominally feasible): widen the grid or the tolerance")
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
    if not settings.join:
        atomic_write_text(Path(settings.out) / "search.json", json.dumps(summary, indent=2))
    return summary


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
