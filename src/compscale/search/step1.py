"""Step 1 of the paper's method: grid-search α, β, γ at φ = 1 on the baseline, on real data.

Every candidate whose *realized* φ = 1 architecture costs target ± tolerance times the baseline is trained
with a short proxy schedule as one trial; successive halving stops the weak ones early (``exhaustive``
trains all to the end). The best is chosen on images held out of the training set, never the test set.
Result: ``OUT/search.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from compscale.errors import UserError
from compscale.io import atomic_write_text
from compscale.search.candidates import CandidateReport, enumerate_candidates
from compscale.search.objective import train_spec
from compscale.search.runner import RunSettings, data_aware_base, open_run, settings_dict, spawn_workers, work
from compscale.search.study import summarize
from compscale.specs import ModelSpec


@dataclass(frozen=True)
class GridSettings:
    alpha: tuple[float, float] = (1.0, 2.0)
    beta: tuple[float, float] = (1.0, 1.5)
    gamma: tuple[float, float] = (1.0, 1.5)
    step: float = 0.05
    target: float = 2.0
    tolerance: float = 0.1


def plan_search(settings: RunSettings, grid: GridSettings) -> tuple[ModelSpec, CandidateReport]:
    """The data-aware baseline and its realized candidates (an error when the grid has none)."""
    base = data_aware_base(settings.base, settings.data, settings.resolution)
    report = enumerate_candidates(base, grid.target, grid.tolerance, grid.alpha, grid.beta, grid.gamma, grid.step)
    if not report.candidates:
        raise UserError(f"no (alpha, beta, gamma) on this grid realizes {grid.target:g} ± {grid.tolerance:g} times "
                        f"the baseline's multiply-adds ({report.grid_points} grid points, {report.nominal_feasible} "
                        "nominally feasible): widen the grid or the tolerance")
    return base, report


def run_search(
    settings: RunSettings,
    grid: GridSettings = GridSettings(),
    exhaustive: bool = False,
    argv: Sequence[str] = (),
    on_trial: Callable[[dict[str, Any], int, int], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume, or join) the search; returns what ``OUT/search.json`` holds."""
    settings.validate()
    base, report = plan_search(settings, grid)
    fingerprint = {"kind": "search", **settings_dict(settings), "grid": grid.__dict__, "exhaustive": exhaustive,
                   "base_spec": base.as_dict(), "candidates": [[c.alpha, c.beta, c.gamma] for c in report.candidates]}
    study, options = open_run("search", settings, fingerprint,
                              [{"alpha": c.alpha, "beta": c.beta, "gamma": c.gamma, "macs": c.macs}
                               for c in report.candidates], exhaustive)
    out = Path(settings.out)
    extra = [] if settings.join else spawn_workers(argv, settings.workers - 1, options.study_name,
                                                   settings.worker_threads()) if argv else []
    total = len(report.candidates)

    def evaluate(index: int, report_epoch) -> float:
        cand = report.candidates[index]
        result = train_spec(cand.spec, settings.data, out / "trials" / f"job-{index:03d}", settings.epochs,
                            settings.seed, report_epoch, **settings.train_options())
        return float(result["top1"])

    def trial_done(info: dict[str, Any]) -> None:
        if on_trial is not None:
            done = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())
            on_trial(info, done, total)

    work(study, total, evaluate, settings, trial_done, extra)
    result = summarize(study, report)
    result["study"] = {"name": options.study_name, "storage": _redacted(options.storage),
                       "exhaustive": exhaustive, "proxy_epochs": settings.epochs}
    result["epochs_used"] = sum(t["epochs"] for t in result["trials"])
    result["epochs_exhaustive"] = total * settings.epochs
    result["baseline"] = {"spec": base.as_dict(), "macs": report.base_macs}
    if not settings.join:
        atomic_write_text(out / "search.json", json.dumps(result, indent=2))
    return result


def _redacted(url: str) -> str:
    from compscale.search.study import _redact

    return _redact(url)
