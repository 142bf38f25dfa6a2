"""What the cardinality and family studies share: their default recipe, cost matching, the band over seeds, the
paired comparison of two models (:func:`paired`, the same reading as the demo's), and the report fragments.
They run their jobs through the one runner (:mod:`compscale.jobs`).

Every model a study trains is a concrete spec whose *realized* multiply-adds (for the data's input channels
and classes, at the study's resolution) are reported next to the target it was matched to, so "at equal
cost" is measured, never assumed.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Callable, Iterable

from compscale.compound import realized_cost
from compscale.errors import UserError
from compscale.jobs.runner import Job, JobResult, RunSettings, job_seeds, require_all_finished
from compscale.specs import ModelSpec
from compscale.stats import PairedGap, paired_gap

#: Realized cost within this fraction of the target counts as matched (the acceptance criterion).
MATCH_TOLERANCE = 0.10

#: One recipe for every family (the comparison is of architectures, not of recipes), and one that needs no
#: warm-up in a 1-5 epoch run: SGD with momentum, lr 0.05, cosine.
STUDY_RECIPE = {"optimizer": "sgd", "lr": 0.05, "schedule": "cosine", "warmup_epochs": 0.0, "resolution": 32,
                "seeds": 2}


def study_settings(data: str, out: str | Path, **given: Any) -> RunSettings:
    """Run settings with the studies' recipe as defaults (``given`` values that are None keep the default)."""
    values = {**STUDY_RECIPE, **{k: v for k, v in given.items() if v is not None}}
    if values["resolution"] < 32:
        raise UserError(f"--resolution must be at least 32 (the smallest ResNeXt input), got {values['resolution']}")
    return RunSettings(data=data, out=str(out), **values).validate()


# --- costs -----------------------------------------------------------------------------------------------


def macs_of(spec: ModelSpec) -> int:
    return realized_cost(spec).macs


def closest(candidates: Iterable[tuple[Any, ModelSpec]], target: float,
            prefer: Callable[[Any], float] | None = None) -> tuple[Any, ModelSpec, int]:
    """The candidate whose realized multiply-adds are closest to ``target``. With ``prefer``, every candidate
    within half the tolerance is acceptable and the one with the smallest ``prefer(key)`` wins (e.g. the
    most uniform depth growth); otherwise the smallest deviation wins."""
    scored, seen = [], set()
    for key, spec in candidates:
        if spec not in seen:  # scaling often rounds several multipliers to the same architecture
            seen.add(spec)
            scored.append((key, spec, macs_of(spec)))
    if not scored:
        raise UserError("no candidate architecture to match the target cost")

    def deviation(item: tuple[Any, ModelSpec, int]) -> float:
        return abs(item[2] / target - 1)

    if prefer is not None:
        near = [s for s in scored if deviation(s) <= MATCH_TOLERANCE / 2]
        if near:
            return min(near, key=lambda s: (prefer(s[0]), deviation(s)))
    return min(scored, key=deviation)


def match_record(name: str, spec: ModelSpec, target: float | None, **extra: Any) -> dict[str, Any]:
    """A model's row: its name, realized cost (params, multiply-adds, activations), the target it was matched
    to and the deviation."""
    cost = realized_cost(spec)
    row: dict[str, Any] = {"name": name, "params": cost.params, "macs": cost.macs, "activations": cost.activations,
                           "target_macs": None if target is None else int(round(target))}
    if target is not None:
        row["deviation"] = cost.macs / target - 1
        row["within_tolerance"] = abs(row["deviation"]) <= MATCH_TOLERANCE
    row.update(extra)
    row["spec"] = spec.as_dict()
    return row


# --- jobs and their results ------------------------------------------------------------------------------


def model_jobs(models: list[dict[str, Any]], settings: RunSettings) -> list[Job]:
    """One job per model whose seeds train packed (``settings.pack``), else one per (model, seed); seed k of every
    model is the same seed (paired data order)."""
    from compscale.specs import spec_from_dict

    return [Job(spec_from_dict(m["spec"]), seeds, m["name"], {"model": m["name"]})
            for m in models for seeds in job_seeds(settings)]


def band(values: list[float], seeds: list[int] | None = None) -> dict[str, Any]:
    """Mean ± sample standard deviation over seeds (std 0 with one seed), min, max, the values and which seed
    each came from (``seed_order``, what :func:`paired` pairs by)."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "values": list(values),
            "seeds": len(values), "seed_order": list(range(len(values))) if seeds is None else list(seeds)}


def attach_accuracy(models: list[dict[str, Any]], results: list[JobResult], out: str | Path) -> None:
    """Add each model's accuracy band over seeds (and its mean training time per seed) to its row, in place."""
    require_all_finished(results, out)
    for m in models:
        mine = [r for r in results if r.job.labels["model"] == m["name"]]
        by_seed = {seed: a for r in mine for seed, a in zip(r.job.seeds, r.accuracies)}
        m["accuracy"] = band([by_seed[s] for s in sorted(by_seed)], sorted(by_seed))
        times = [r.train_seconds / len(r.accuracies) for r in mine if r.train_seconds is not None]
        m["train_seconds"] = statistics.fmean(times) if times else None


def paired(a: dict[str, Any], b: dict[str, Any]) -> PairedGap:
    """Model a against model b over the seeds both trained, seed k against seed k (the same data order): the mean
    gap a − b with its 95% Student-t interval; won / tied / lost, or "no noise estimate" with one seed."""
    sb = dict(zip(b["seed_order"], b["values"]))
    pairs = [(x, sb[s]) for s, x in zip(a["seed_order"], a["values"]) if s in sb]
    if not pairs:
        raise UserError("the two models share no seed: they cannot be compared pair by pair")
    return paired_gap([x for x, _ in pairs], [y for _, y in pairs])
