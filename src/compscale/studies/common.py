"""What the cardinality and family studies share: settings, cost measurement and matching, the job queue
(models × seeds, resumable, parallel workers), the noise band over seeds, and the outputs.

Every model a study trains is a concrete spec whose *realized* multiply-adds (counted on the meta device,
for the data's input channels and classes, at the study's resolution) are reported next to the target it
was matched to, so "at equal cost" is measured, never assumed.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from compscale.errors import UserError
from compscale.io import atomic_path, atomic_write_text
from compscale.specs import ModelSpec

#: Realized cost within this fraction of the target counts as matched (the acceptance criterion).
MATCH_TOLERANCE = 0.10

Progress = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class StudySettings:
    """One study run: the data, the training schedule shared by every job, seeds and workers.

    The optimizer defaults to SGD with momentum and a cosine schedule: one recipe for every family (the
    comparison is of architectures, not of recipes), and one that needs no warm-up in a 1-5 epoch run.
    """

    data: str
    out: Path
    seeds: int = 2
    epochs: int = 3
    resolution: int = 32
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    limit_train: int | None = None
    limit_test: int | None = None
    workers: int = 1
    threads: int | None = None
    storage: str | None = None
    latency_repeats: int = 20
    quick: bool = False

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise UserError(f"--seeds must be at least 1, got {self.seeds}")
        if self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}")
        if self.workers < 1:
            raise UserError(f"--workers must be at least 1, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.threads}")
        if self.resolution < 32:
            raise UserError(f"--resolution must be at least 32 (the smallest ResNeXt input), got {self.resolution}")

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.out).resolve() / 'study.db'}"

    @property
    def worker_threads(self) -> int:
        """Torch threads per worker: the two cores of the reference machine shared among the workers."""
        return self.threads or max(1, 2 // self.workers)

    def train_options(self) -> dict[str, Any]:
        """The :class:`~compscale.train.config.TrainConfig` fields every job of the study shares."""
        return {"batch_size": self.batch_size, "optimizer": self.optimizer, "lr": self.lr,
                "schedule": self.schedule, "warmup_epochs": self.warmup_epochs, "limit_train": self.limit_train,
                "limit_test": self.limit_test}

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        d.pop("storage")  # may hold a password; the URL is not part of the result
        return d


# --- data and costs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataInfo:
    name: str
    channels: int
    num_classes: int
    train: int
    test: int


def data_info(settings: StudySettings) -> DataInfo:
    """Channels and classes of the study's data (so costs are those of the models actually trained);
    an unknown dataset is one clear error here, before anything is planned."""
    from compscale.data import load_dataset

    bundle = load_dataset(settings.data, settings.resolution, augment="none", limit_train=settings.limit_train,
                          limit_test=settings.limit_test)
    return DataInfo(settings.data, bundle.channels, bundle.num_classes, len(bundle.train), len(bundle.test))


def for_data(spec: ModelSpec, info: DataInfo, resolution: int) -> ModelSpec:
    """The spec as the training engine will build it for this data: its channels, classes and side."""
    return spec.replace(in_chans=info.channels, num_classes=info.num_classes, resolution=resolution)


def macs_of(spec: ModelSpec) -> int:
    from compscale.compound import realized_cost

    return realized_cost(spec)[0]


def cost_of(spec: ModelSpec) -> dict[str, int]:
    """Params, multiply-adds and activations (elements written per image) of ``spec``, on the meta device."""
    import torch

    from compscale.models import build_model
    from compscale.profiler import profile

    with torch.device("meta"):
        model = build_model(spec)
    p = profile(model, spec.resolution)
    return {"params": int(p.params), "macs": int(p.macs), "activations": int(p.activations)}


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
    """A model's row: its name, realized cost, the target it was matched to and the deviation."""
    cost = cost_of(spec)
    row: dict[str, Any] = {"name": name, **cost, "target_macs": None if target is None else int(round(target))}
    if target is not None:
        row["deviation"] = cost["macs"] / target - 1
        row["within_tolerance"] = abs(row["deviation"]) <= MATCH_TOLERANCE
    row.update(extra)
    row["spec"] = spec.as_dict()
    return row


# --- the job queue: models × seeds ------------------------------------------------------------------------


def make_jobs(models: list[dict[str, Any]], seeds: int) -> list[dict[str, Any]]:
    """One job per (model, seed), with everything a worker needs to train it (the spec itself)."""
    return [{"model": m["name"], "seed": seed, "spec": m["spec"], "macs": m["macs"]}
            for m in models for seed in range(seeds)]


def _run_dir(out: Path, job: dict[str, Any]) -> Path:
    return Path(out) / "runs" / job["model"] / f"seed{job['seed']}"


def _evaluate_for(jobs: list[dict[str, Any]], fingerprint: dict[str, Any], out: Path, threads: int):
    from compscale.search.objective import train_spec
    from compscale.specs import spec_from_dict

    def evaluate(index: int, report_epoch: Callable[[float, int], None]) -> float:
        job = jobs[index]
        result = train_spec(spec_from_dict(job["spec"]), fingerprint["data"], _run_dir(out, job),
                            fingerprint["epochs"], seed=job["seed"], report_epoch=report_epoch, threads=threads,
                            **fingerprint["train"])
        return float(result["top1"])

    return evaluate


def _load_study(storage_url: str, study_name: str):
    """Join an existing study (its jobs and settings live in the storage)."""
    from compscale.search.study import _optuna, open_storage

    optuna = _optuna()
    storage = open_storage(storage_url)
    try:
        return optuna.load_study(study_name=study_name, storage=storage, pruner=optuna.pruners.NopPruner())
    except KeyError:
        raise UserError(f"no study {study_name!r} in {storage_url}; start it without --join first") from None


def _jobs_in(study) -> list[dict[str, Any]]:
    from compscale.search.study import _job_of

    found: dict[int, dict[str, Any]] = {}
    for t in study.get_trials(deepcopy=False):
        index = _job_of(t)
        if index is not None and "spec" in t.user_attrs:
            found[index] = dict(t.user_attrs)
    return [found[i] for i in sorted(found)]


def _requeue_failed(study, jobs: list[dict[str, Any]]) -> int:
    """A job whose every trial failed (an exception, not a kill) is queued once more on a new run."""
    from compscale.search.study import PARAM, _job_of
    from optuna.trial import TrialState

    states: dict[int, set] = {}
    for t in study.get_trials(deepcopy=False):
        index = _job_of(t)
        if index is not None:
            states.setdefault(index, set()).add(t.state)
    added = 0
    for index, seen in states.items():
        if seen <= {TrialState.FAIL}:
            study.enqueue_trial({PARAM: index}, user_attrs=jobs[index])
            added += 1
    return added


def join_worker(kind: str, storage_url: str, out: Path, threads: int) -> int:
    """``--join``: work through an existing study's queue (another process or machine started it)."""
    from compscale.search.study import run_worker

    study = _load_study(storage_url, kind)
    fingerprint = study.user_attrs.get("fingerprint")
    if not fingerprint:
        raise UserError(f"study {kind!r} in {storage_url} has no settings; start it without --join first")
    jobs = _jobs_in(study)
    return run_worker(study, fingerprint["num_jobs"], _evaluate_for(jobs, fingerprint, out, threads))


def run_jobs(kind: str, settings: StudySettings, jobs: list[dict[str, Any]], fingerprint: dict[str, Any],
             progress: Progress | None = None) -> dict[int, dict[str, Any]]:
    """Train every job (resuming a previous run of the same study), with ``settings.workers`` processes;
    returns job index → {accuracy, state, epochs} for the finished ones.

    The jobs and settings are stored in the study itself, so the extra workers (``python -m compscale study
    KIND --join``) and workers on other machines (same ``--storage`` URL) need nothing else.
    """
    from compscale.search.study import StudyOptions, enqueue_jobs, job_results, open_study, run_worker

    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = {**fingerprint, "data": settings.data, "epochs": settings.epochs, "train": settings.train_options(),
                   "num_jobs": len(jobs), "jobs": [[j["model"], j["seed"], j["macs"]] for j in jobs]}
    study = open_study(StudyOptions(settings.storage_url, kind, exhaustive=True), fingerprint)
    enqueue_jobs(study, jobs)
    _requeue_failed(study, jobs)

    def done() -> int:
        return sum(1 for r in job_results(study) if r["state"] == "complete")

    if progress:
        progress("start", {"jobs": len(jobs), "done": done(), "workers": settings.workers})
    procs = []
    for k in range(1, settings.workers):
        cmd = [sys.executable, "-m", "compscale", "study", kind, "--join", "--storage", settings.storage_url,
               "--out", str(out), "--threads", str(settings.worker_threads)]
        log = open(out / f"worker{k}.log", "w")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ}), log))
    evaluate = _evaluate_for(jobs, fingerprint, out, settings.worker_threads)

    def on_trial(row: dict[str, Any]) -> None:
        if progress:
            progress("job", {**{k: row.get(k) for k in ("model", "seed", "accuracy", "state")}, "done": done(),
                             "jobs": len(jobs)})

    try:
        run_worker(study, len(jobs), evaluate, on_trial=on_trial)
    finally:
        for proc, log in procs:
            proc.wait()
            log.close()
    # A worker killed mid-job leaves a RUNNING trial; once it is stale it is queued again: finish it here.
    if done() < len(jobs):
        run_worker(study, len(jobs), evaluate, on_trial=on_trial)
    failed = [k for k, (p, _) in enumerate(procs, start=1) if p.returncode not in (0, None)]
    results = {r["job"]: r for r in job_results(study) if r["state"] == "complete"}
    missing = [i for i in range(len(jobs)) if i not in results]
    if missing:
        logs = ", ".join(f"worker{k}.log" for k in failed) or "the messages above"
        raise UserError(f"{len(missing)} of {len(jobs)} jobs did not finish (see {logs} in {out}); "
                        "run the same command again to resume")
    return results


def train_seconds(out: Path, job: dict[str, Any]) -> float | None:
    """Training time of a finished job from its metrics (None when it ran on another machine)."""
    path = _run_dir(out, job) / "metrics.jsonl"
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return float(sum(r.get("epoch_time_s") or 0.0 for r in records))


# --- the noise band --------------------------------------------------------------------------------------


def band(values: list[float]) -> dict[str, Any]:
    """Mean ± sample standard deviation over seeds (std 0 with one seed), min, max and the values."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "values": list(values),
            "seeds": len(values)}


def attach_accuracy(models: list[dict[str, Any]], jobs: list[dict[str, Any]], results: dict[int, dict[str, Any]],
                    out: Path) -> None:
    """Add each model's accuracy band over seeds (and its mean training time) to its row, in place."""
    for m in models:
        idx = [i for i, j in enumerate(jobs) if j["model"] == m["name"]]
        m["accuracy"] = band([float(results[i]["accuracy"]) for i in idx])
        times = [t for t in (train_seconds(out, jobs[i]) for i in idx) if t is not None]
        m["train_seconds"] = statistics.fmean(times) if times else None


def separated(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when two accuracy bands do not overlap (mean ± std): a difference larger than the seed noise."""
    return abs(a["mean"] - b["mean"]) > a["std"] + b["std"]


# --- outputs ---------------------------------------------------------------------------------------------


def write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, Callable[[Any], str]]]) -> str:
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"
    body = ["| " + " | ".join(fmt(r.get(k)) for k, _, fmt in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def elapsed_since(t0: float) -> float:
    return time.perf_counter() - t0


def fmt_m(n: Any) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M"


def fmt_k(n: Any) -> str:
    return "-" if n is None else f"{n / 1e3:.1f}k"


def fmt_dev(x: Any) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


def fmt_band(b: Any) -> str:
    return "-" if not b else f"{100 * b['mean']:.2f} ± {100 * b['std']:.2f}"


def finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x
