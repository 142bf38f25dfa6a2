"""Running a study's jobs: the shared set-up of step 1 (search) and step 2 (sweep).

A run is described by a :class:`RunSettings`; the jobs live in an Optuna study (SQLite file in the output
folder by default, any RDB URL to share it between machines). ``workers > 1`` starts extra local worker
processes that join the same study; remote machines join with the same command and ``--join``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from compscale.errors import UserError
from compscale.search.study import StudyOptions, enqueue_jobs, open_study, run_worker
from compscale.specs import ModelSpec


@dataclass(frozen=True)
class RunSettings:
    """What every study job shares: data, schedule, storage, parallelism."""

    base: str
    data: str
    out: str
    resolution: int | None = None
    epochs: int = 3
    seed: int = 0
    batch_size: int = 64
    lr: float | None = None
    warmup_epochs: float = 0.25  # short proxy schedules cannot spend a whole epoch warming up
    limit_train: int | None = None
    limit_test: int | None = None
    holdout: int | None = None
    precise_bn: int = 0  # training images for precise BatchNorm statistics before each evaluation (0: off)
    storage: str | None = None
    study: str | None = None
    workers: int = 1
    threads: int | None = None
    heartbeat: int = 10
    join: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "RunSettings":
        if self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}")
        if self.workers < 1:
            raise UserError(f"--workers must be at least 1, got {self.workers}")
        if self.heartbeat < 1:
            raise UserError(f"--heartbeat must be at least 1 second, got {self.heartbeat}")
        if self.precise_bn < 0:
            raise UserError(f"--precise-bn must be 0 (off) or a number of images, got {self.precise_bn}")
        return self

    def worker_threads(self) -> int:
        """Threads per worker: the cores shared among the local workers (2 threads on a busy core are slow)."""
        return self.threads or max(1, (os.cpu_count() or 1) // self.workers)

    def train_options(self) -> dict[str, Any]:
        threads = self.worker_threads()
        opts = {"batch_size": self.batch_size, "lr": self.lr, "warmup_epochs": self.warmup_epochs,
                "limit_train": self.limit_train,
                "limit_test": self.limit_test, "holdout": self.holdout, "threads": threads,
                "precise_bn": self.precise_bn or None}
        return {k: v for k, v in opts.items() if v is not None}

    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        path = Path(self.out).resolve() / "study.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"


def data_aware_base(base: str | ModelSpec, data: str, resolution: int | None) -> ModelSpec:
    """The baseline spec with the classes and input channels of ``data`` (costs are counted on the model
    that is actually trained) and the requested resolution."""
    from compscale.data import load_dataset
    from compscale.models.registry import resolve_spec
    from compscale.models.registry import model_spec

    spec = model_spec(base)
    bundle = load_dataset(data, resolution or spec.resolution, "none")
    return resolve_spec(spec, bundle.num_classes, bundle.channels, resolution=resolution)


def study_name(kind: str, fingerprint: dict[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:10]
    return f"{kind}-{digest}"


def open_run(kind: str, settings: RunSettings, fingerprint: dict[str, Any], jobs: list[dict[str, Any]],
             exhaustive: bool):
    """Create or join the study of this run and (unless joining) enqueue its jobs."""
    options = StudyOptions(storage=settings.storage_url(), study_name=settings.study or study_name(kind, fingerprint),
                           exhaustive=exhaustive, heartbeat=settings.heartbeat)
    study = open_study(options, fingerprint)
    if not settings.join:
        enqueue_jobs(study, jobs)
    elif not study.get_trials(deepcopy=False):
        raise UserError(f"study {options.study_name!r} has no jobs yet: start it without --join first")
    return study, options


def spawn_workers(argv: Sequence[str], count: int, study: str, threads: int) -> list[subprocess.Popen]:
    """Start ``count`` extra local workers: the same command with ``--join``, one study, fixed threads."""
    args = list(argv)
    procs = []
    for _ in range(count):
        cmd = [sys.executable, "-m", "compscale", *args, "--join", "--study", study, "--workers", "1",
               "--threads", str(threads)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      env={**os.environ, "COMPSCALE_WORKER": "1"}))
    return procs


def work(study, num_jobs: int, evaluate: Callable[[int, Callable[[float, int], None]], float],
         settings: RunSettings, on_trial: Callable[[dict[str, Any]], None] | None = None,
         extra_workers: list[subprocess.Popen] | None = None) -> int:
    """Run jobs here until the queue is empty, then wait for the local extra workers.

    The first worker stays until every job is done, waiting out the stale trials of workers that died (they
    go back to the queue), so a killed extra worker costs only its current job; joiners leave early.
    """
    try:
        ran = run_worker(study, num_jobs, evaluate, settings.heartbeat, on_trial, wait_for_running=not settings.join)
    except BaseException:
        for proc in extra_workers or []:
            proc.kill()
        raise
    for proc in extra_workers or []:
        proc.wait()
    return ran


def settings_dict(settings: RunSettings) -> dict[str, Any]:
    d = asdict(settings)
    for key in ("out", "storage", "study", "workers", "threads", "heartbeat", "join"):
        d.pop(key)
    if not d["precise_bn"]:
        d.pop("precise_bn")  # off: the fingerprint (and so the default study name) of earlier studies is unchanged
    return d


def settings_argv(kind: str, settings: RunSettings, *extra: str) -> list[str]:
    """The ``compscale KIND ...`` arguments that reproduce ``settings`` (for spawning local workers)."""
    argv = [kind, "--base", settings.base, "--data", settings.data, "--out", settings.out,
            "--epochs", str(settings.epochs), "--seed", str(settings.seed), "--batch-size", str(settings.batch_size),
            "--warmup-epochs", repr(settings.warmup_epochs), "--heartbeat", str(settings.heartbeat)]
    for flag, value in (("--resolution", settings.resolution), ("--lr", settings.lr),
                        ("--limit-train", settings.limit_train), ("--limit-test", settings.limit_test),
                        ("--storage", settings.storage)):
        if value is not None:
            argv += [flag, str(value)]
    if settings.holdout is not None and kind == "search":
        argv += ["--holdout", str(settings.holdout)]
    if settings.precise_bn:
        argv += ["--precise-bn", str(settings.precise_bn)]
    return argv + list(extra)
