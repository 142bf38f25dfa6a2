"""The one job runner: settings, the study's fingerprint, the queue, local workers and progress.

A study is a list of :class:`Job` s. :func:`run_jobs` stores them (with every setting that shapes a trial,
the *fingerprint*) in an Optuna study, starts ``workers - 1`` extra local worker processes
(``compscale worker``), works through the queue itself, and returns one :class:`JobResult` per job. Workers
on other machines join with ``compscale worker --storage URL --study NAME``: the storage holds everything
they need. Re-running the same command resumes; a re-run with any setting changed is refused, naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compscale.errors import UserError
from compscale.jobs.queue import enqueue_jobs, job_results, load_study, open_study, redact_url, run_worker
from compscale.locks import output_lock
from compscale.progress import Progress, report
from compscale.specs import ModelSpec, spec_from_dict


@dataclass(frozen=True)
class RunSettings:
    """What every job of a study shares (data, schedule, seeds) and how the study runs (storage, workers).

    ``None`` means the training engine's default (e.g. the optimizer: TF RMSProp; the lr: 0.016 × batch/256).
    """

    data: str
    out: str
    epochs: int = 3
    seed: int = 0  # the first seed; seed k of every model is seed + k
    seeds: int = 1
    batch_size: int = 64
    optimizer: str | None = None
    lr: float | None = None
    schedule: str | None = None
    warmup_epochs: float | None = None
    limit_train: int | None = None
    limit_test: int | None = None
    holdout: int | None = None  # select on training images held out of training (step 1), never the test set
    precise_bn: int = 0  # training images for precise BatchNorm statistics before each evaluation (0: off)
    resolution: int | None = None
    storage: str | None = None
    study: str | None = None
    workers: int = 1
    threads: int | None = None
    heartbeat: int = 10
    join: bool = False
    pack: bool = True  # train a job's seeds packed into one module (compscale.train.packed) where it can be

    def validate(self) -> "RunSettings":
        """Every count bounded before anything is planned: seeds (at most 1,000), the seed range (torch's
        generator), epochs, batch, images, threads, and local workers (the cores, unless the storage is a
        database server that other machines share)."""
        from compscale.errors import echo
        from compscale.scaling import MAX_RESOLUTION
        from compscale.train import config as b

        counts = {"epochs": (1, b.MAX_EPOCHS), "seeds": (1, b.MAX_SEEDS), "workers": (1, None),
                  "heartbeat": (1, 86_400), "batch_size": (1, b.MAX_BATCH), "seed": (0, b.MAX_SEED),
                  "precise_bn": (0, b.MAX_COUNT), "threads": (1, b.max_threads()), "limit_train": (1, b.MAX_COUNT),
                  "limit_test": (1, b.MAX_COUNT), "holdout": (1, b.MAX_COUNT), "resolution": (8, MAX_RESOLUTION)}
        for name, (low, high) in counts.items():
            value, flag = getattr(self, name), f"--{name.replace('_', '-')}"
            if value is None and name in ("threads", "limit_train", "limit_test", "holdout", "resolution"):
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserError(f"{flag} must be an integer, got {echo(value)}")
            if value < low:
                if name == "precise_bn":
                    raise UserError(f"--precise-bn must be 0 (off) or a number of images, got {value}")
                raise UserError(f"{flag} must be at least {low}, got {value}")
            if high is not None and value > high:
                raise UserError(f"{flag} must be at most {high:,}, got {echo(value)}")
        if self.seed + self.seeds - 1 > b.MAX_SEED:
            raise UserError(f"--seed {self.seed} with {self.seeds} seeds passes {b.MAX_SEED:,} (2**63 - 1), the "
                            "largest seed torch's generator takes")
        remote = bool(self.storage) and not str(self.storage).startswith("sqlite")
        most = b.MAX_REMOTE_WORKERS if remote else max(2, b.cpu_count())
        if self.workers > most:
            where = ("per machine" if remote else
                     f"on this machine's {b.cpu_count()} core(s); more machines join with `compscale worker`")
            raise UserError(f"--workers must be at most {most:,} {where}, got {self.workers:,}")
        for name, value in (("lr", self.lr), ("warmup_epochs", self.warmup_epochs)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 <= value < float("inf") or (name == "lr" and value == 0)):
                raise UserError(f"--{name.replace('_', '-')} must be a finite positive number, got {echo(value)}")
        return self

    def worker_threads(self) -> int:
        """Torch threads per local worker: the cores shared among the workers (2 threads on a busy core are slow)."""
        return self.threads or max(1, (os.cpu_count() or 1) // self.workers)

    def train_options(self) -> dict[str, Any]:
        """The :class:`~compscale.train.config.TrainConfig` fields every job shares (engine defaults left out)."""
        opts = {"batch_size": self.batch_size, "optimizer": self.optimizer, "lr": self.lr, "schedule": self.schedule,
                "warmup_epochs": self.warmup_epochs, "limit_train": self.limit_train, "limit_test": self.limit_test,
                "holdout": self.holdout, "precise_bn": self.precise_bn or None}
        return {k: v for k, v in opts.items() if v is not None}

    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        path = Path(self.out).resolve() / "study.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"

    def study_name(self, kind: str) -> str:
        return self.study or kind

    def as_dict(self) -> dict[str, Any]:
        """The settings for a report (the storage URL may hold a password: redacted)."""
        d = asdict(self)
        d["storage"] = redact_url(self.storage) if self.storage else None
        return d


@dataclass(frozen=True)
class Job:
    """One unit of work: train ``spec`` with each of ``seeds`` into ``folder`` (relative to the study's output
    folder, one subfolder per seed); ``labels`` say what it is in the study (strategy, φ, α, β, γ, model...);
    ``train``: training options of this job alone, over the study's (only those that leave the result as it is,
    e.g. ``eval_every``: a sweep evaluates its baseline every epoch for the learning curve, the rest at the end)."""

    spec: ModelSpec
    seeds: tuple[int, ...]
    folder: str
    labels: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        described = {"spec": self.spec.as_dict(), "seeds": list(self.seeds), "folder": self.folder,
                     "labels": self.labels}
        return {**described, "train": self.train} if self.train else described  # studies made before keep their digest


@dataclass(frozen=True)
class JobResult:
    """How a job ended: state (complete, pruned, fail, running), the accuracy the study ranks it by (mean over
    its seeds), each seed's accuracy, the epochs it reached, and its training time."""

    index: int
    job: Job
    state: str
    accuracy: float | None
    accuracies: tuple[float, ...]
    epochs: int
    train_seconds: float | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("complete", "pruned")


def job_seeds(settings: RunSettings) -> list[tuple[int, ...]]:
    """How a model's seeds are split into jobs: all in one job when they train packed, else one job each (so
    local workers can share them)."""
    seeds = tuple(settings.seed + k for k in range(settings.seeds))
    return [seeds] if settings.pack and len(seeds) > 1 else [(s,) for s in seeds]


def job_folder(out: str | Path, study: str, kind: str, folder: str, seed: int) -> Path:
    """Where a job's seed trains: ``OUT/runs/FOLDER/seedK`` (``OUT/runs-STUDY/...`` for a study given its own
    name, so two studies in one folder never share a run)."""
    runs = "runs" if study == kind else f"runs-{study}"
    return Path(out) / runs / folder / f"seed{seed}"


def _evaluator(fingerprint: dict[str, Any], out: str | Path, study: str, threads: int):
    """How a worker trains a job: everything comes from the study's fingerprint and the job's attributes. A
    job's seeds train packed into one module when the study says so and the architecture allows it (else one
    after the other, with the same result up to floating-point summation order)."""
    from compscale.jobs.trial import train_spec, train_specs_packed
    from compscale.models.packing import NotPackable
    from compscale.models.registry import import_modules

    import_modules(fingerprint.get("imports", []))  # the study's own families (its fingerprint names them)

    def evaluate(attrs: dict[str, Any], report_epoch) -> dict[str, Any]:
        spec, seeds = spec_from_dict(attrs["spec"]), list(attrs["seeds"])
        folders = [job_folder(out, study, fingerprint["kind"], attrs["folder"], seed) for seed in seeds]
        # A study's precise BN is what its settings say (absent: off), never the engine's default.
        data, epochs = fingerprint["data"], fingerprint["epochs"]
        train = {"precise_bn": 0, **fingerprint["train"], **_job_options(attrs)}
        if fingerprint.get("pack") and len(seeds) > 1:
            try:
                results = train_specs_packed(spec, data, folders, folders[0].parent / "packed", epochs, seeds,
                                             report_epoch, threads=threads, **train)
                seconds = sum(_epoch_seconds(r) for r in results[0]["history"])
                return _outcome([float(r["top1"]) for r in results], seconds, packed=True)
            except NotPackable:
                pass  # this architecture mixes channels outside its convolutions: one seed at a time
        accuracies, seconds = [], 0.0
        for seed, folder in zip(seeds, folders):
            only = report_epoch if len(seeds) == 1 else None  # pruning needs one curve per trial
            result = train_spec(spec, data, folder, epochs, seed, only, threads=threads, **train)
            accuracies.append(float(result["top1"]))
            seconds += sum(_epoch_seconds(r) for r in result["history"])
        return _outcome(accuracies, seconds, packed=False)

    return evaluate


#: The training options a job may set for itself (:attr:`Job.train`): none of them changes its result.
JOB_OPTIONS = frozenset({"eval_every"})


def _job_options(attrs: dict[str, Any]) -> dict[str, Any]:
    """A job's own training options, from its stored attributes; anything else there is refused in one line (a
    study's storage is a file a user may hand us)."""
    options = attrs.get("train") or {}
    if not isinstance(options, dict) or not set(options) <= JOB_OPTIONS:
        raise UserError(f"a job's training options must be among {sorted(JOB_OPTIONS)}, got {str(options)[:80]}")
    return options


def _epoch_seconds(record: dict[str, Any]) -> float:
    """An epoch record's training time (``epoch_time_s`` in records written before the one vocabulary)."""
    return float(record.get("epoch_seconds") or record.get("epoch_time_s") or 0.0)


def _outcome(accuracies: list[float], seconds: float, packed: bool) -> dict[str, Any]:
    return {"accuracy": statistics.fmean(accuracies), "accuracies": accuracies, "train_seconds": seconds,
            "packed": packed}


def spawn_workers(settings: RunSettings, study: str, count: int) -> list[tuple[subprocess.Popen, Any]]:
    """Start ``count`` extra local workers on the same study (``compscale worker``), each logging to
    ``OUT/workerK.log``."""
    out = Path(settings.out)
    procs = []
    for k in range(1, count + 1):
        cmd = [sys.executable, "-m", "compscale", "worker", "--storage", settings.storage_url(), "--study", study,
               "--out", str(out), "--threads", str(settings.worker_threads()), "--heartbeat", str(settings.heartbeat)]
        log = open(out / f"worker{k}.log", "w")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                       env={**os.environ, "COMPSCALE_WORKER": "1"}), log))
    return procs


def run_jobs(kind: str, settings: RunSettings, jobs: list[Job], plan: dict[str, Any], exhaustive: bool = True,
             progress: Progress | None = None) -> list[JobResult]:
    """Train every job (resuming an earlier run of the same study) with ``settings.workers`` local processes,
    and return one result per job. ``plan`` is what the study decided besides the jobs (grid, φ values,
    budget...): with the settings and the jobs it makes the fingerprint a re-run must match. ``exhaustive=False``
    prunes weak jobs by successive halving (step 1).

    The output folder is locked while the study runs here (a second run into it is refused with one line);
    the extra local workers and ``--join`` runs work in it beside the holder, so they do not take the lock."""
    settings.validate()
    if settings.join:
        return _run_jobs(kind, settings, jobs, plan, exhaustive, progress)
    with output_lock(settings.out, kind):
        return _run_jobs(kind, settings, jobs, plan, exhaustive, progress)


def _run_jobs(kind: str, settings: RunSettings, jobs: list[Job], plan: dict[str, Any], exhaustive: bool,
              progress: Progress | None) -> list[JobResult]:
    name = settings.study_name(kind)
    described = [j.as_dict() for j in jobs]
    fingerprint = {"kind": kind, "data": settings.data, "epochs": settings.epochs, "train": settings.train_options(),
                   "resolution": settings.resolution, "exhaustive": exhaustive, "num_jobs": len(jobs),
                   "pack": settings.pack, "seed": settings.seed, "seeds": settings.seeds, **plan,
                   # The jobs themselves (specs, seeds, folders) by digest: the plan above says what made them.
                   "jobs": hashlib.sha1(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]}
    imports = study_imports(jobs, settings)
    if imports:  # a family of your own (--base package.module:name): every worker imports it before building
        fingerprint["imports"] = imports
    Path(settings.out).mkdir(parents=True, exist_ok=True)
    study = open_study(settings.storage_url(), name, fingerprint, settings.heartbeat)
    if settings.join:
        if not study.get_trials(deepcopy=False):
            raise UserError(f"study {name!r} has no jobs yet: start it without --join first")
    else:
        enqueue_jobs(study, described)
    _work(study, name, fingerprint, settings, progress, [job_work(j, settings) for j in jobs])
    return collect(study, jobs)


def job_work(job: Job, settings: RunSettings) -> float:
    """A job's cost per epoch, for the progress's ETA: its multiply-adds (``labels["macs"]``, 1 when the study does
    not say) × its seeds × the training images (``limit_train``; 1 when all)."""
    return float(job.labels.get("macs") or 1) * len(job.seeds) * (settings.limit_train or 1)


def _work_done(study, per_epoch: list[float], epochs: int) -> float:
    """The work of the study's finished (complete or pruned) trials: each job's cost per epoch × epochs reached."""
    from optuna.trial import TrialState

    from compscale.jobs.queue import job_index

    done = 0.0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        index = job_index(t)
        if index is not None and 0 <= index < len(per_epoch):
            reached = t.user_attrs.get("epochs")
            done += per_epoch[index] * (reached if isinstance(reached, int) and reached > 0 else epochs)
    return done


def study_imports(jobs: list[Job], settings: RunSettings) -> list[str]:
    """The modules outside compscale that define the jobs' families: the study records them in its fingerprint
    and every worker (``compscale worker``, here or on another machine) imports them before it rebuilds a spec.
    A family defined in a script (``__main__``) cannot be imported by another process: one line."""
    from compscale.models.registry import family_modules

    modules = family_modules(job.spec for job in jobs)
    if "__main__" in modules and (settings.workers > 1 or settings.storage):
        raise UserError("the model family is defined in the running script (__main__), which the study's workers "
                        "cannot import: move it into a module and pass --base package.module:name")
    return [m for m in modules if m != "__main__"]


def _work(study, name: str, fingerprint: dict[str, Any], settings: RunSettings, progress: Progress | None,
          per_epoch: list[float] | None = None) -> None:
    """Run jobs here until the queue is empty, with the extra local workers; the first worker stays until every
    job is done (waiting out the stale trials of workers that died), so a killed extra worker costs only its
    current job; a joiner leaves as soon as the queue is empty."""
    total = fingerprint["num_jobs"]
    done = sum(1 for r in job_results(study) if r["state"] in ("complete", "pruned"))
    per_epoch = per_epoch or [1.0] * total
    work = sum(per_epoch) * settings.epochs  # what every job to the end costs (pruning stops some earlier)
    report(progress, "start", f"{total} jobs, {done} already done, {settings.workers} worker(s)", done, total,
           work=work, work_done=_work_done(study, per_epoch, settings.epochs), workers=settings.workers)
    procs = [] if settings.join else spawn_workers(settings, name, settings.workers - 1)
    evaluate = _evaluator(fingerprint, settings.out, name, settings.worker_threads())

    def line(row: dict[str, Any], finished: int) -> None:
        report(progress, "trial", "", min(finished, total), total, **row.get("labels", {}),
               seeds=row.get("seeds"), state=row["state"], accuracy=row["accuracy"], work=work,
               work_done=_work_done(watch.study, per_epoch, settings.epochs))

    from compscale.jobs.watch import TrialWatch

    try:
        # One line per job that ends, whichever worker ran it (this process only learns of its own otherwise).
        with TrialWatch(study, line) as watch:
            run_worker(study, total, evaluate, settings.heartbeat, lambda row: watch.nudge(),
                       wait_for_running=not settings.join)
    except BaseException:
        for proc, _ in procs:
            proc.kill()
        raise
    finally:
        for proc, log in procs:
            proc.wait()
            log.close()


def collect(study, jobs: list[Job]) -> list[JobResult]:
    """One result per job: its finished trial when there is one, else its latest."""
    rows: dict[int, dict[str, Any]] = {}
    for row in job_results(study):
        old = rows.get(row["job"])
        if old is None or old["state"] not in ("complete", "pruned"):
            rows[row["job"]] = row
    results = []
    for i, job in enumerate(jobs):
        row = rows.get(i, {"state": "waiting", "accuracy": None, "epochs": 0})
        results.append(JobResult(i, job, row["state"], row["accuracy"], tuple(row.get("accuracies") or ()),
                                 row["epochs"], row.get("train_seconds")))
    return results


def require_all_finished(results: list[JobResult], out: str | Path) -> None:
    """One line when some jobs did not finish (their workers failed): the command can be run again to resume."""
    missing = [r for r in results if not r.finished]
    if missing:
        raise UserError(f"{len(missing)} of {len(results)} jobs did not finish (see worker*.log in {out}); "
                        "run the same command again to resume")


def join_study(storage: str, study: str, out: str | Path, threads: int = 1, heartbeat: int = 10,
               progress: Progress | None = None) -> int:
    """``compscale worker``: work through an existing study's queue (started here or on another machine) until
    it is empty; returns the number of jobs this worker ran."""
    handle = load_study(storage, study, heartbeat)
    fingerprint = handle.user_attrs["fingerprint"]
    evaluate = _evaluator(fingerprint, out, study, threads)

    def on_trial(row: dict[str, Any]) -> None:
        report(progress, "trial", "", None, fingerprint["num_jobs"], **row.get("labels", {}), state=row["state"],
               accuracy=row["accuracy"])

    return run_worker(handle, fingerprint["num_jobs"], evaluate, heartbeat, on_trial, wait_for_running=False)
