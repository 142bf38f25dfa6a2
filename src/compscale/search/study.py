"""Optuna studies as resumable, parallel job queues: step 1's candidates and step 2's sweep points.

The jobs are fixed in advance (the realized candidates of :mod:`compscale.search.candidates`, or the sweep's
models × seeds), so they are *enqueued* and each worker pops the next waiting one; nothing is sampled, and
no job is trained twice. Step 1 prunes with successive halving; the sweep runs every job to the end. The storage is an
RDB (SQLite file by default, PostgreSQL for many machines) with heartbeats: a worker killed mid-trial
leaves a stale RUNNING trial, which the next worker (or the next run of the command) marks failed, and a
retry callback enqueues it again. Re-running the command therefore resumes the study; finished trials are
never re-run.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from compscale.errors import UserError, first_line
from compscale.search.candidates import CandidateReport

PARAM = "job"


@dataclass(frozen=True)
class StudyOptions:
    storage: str
    study_name: str
    exhaustive: bool = False
    heartbeat: int = 10  # seconds between heartbeats; a trial is stale after 3 of them
    min_resource: int = 1  # successive halving: first rung (epochs)
    reduction_factor: int = 3  # successive halving: keep the top 1/η at each rung


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("the search needs optuna: pip install optuna") from None
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats and stale-trial retries are marked experimental; they are what makes workers killable.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def open_storage(url: str, heartbeat: int = 10):
    """An RDB storage with heartbeats and retry of failed (killed) trials; one clear line if unreachable."""
    _optuna()
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several local workers share the file: wait for the lock instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif url.startswith("postgresql"):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    try:
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat,
            grace_period=3 * heartbeat,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
        )
    except ImportError as err:
        missing = getattr(err.__cause__, "name", None) or err.name or "a database driver"
        raise UserError(f"storage {url.split(':', 1)[0]!r} needs {missing}, which is not installed "
                        "(for PostgreSQL: pip install 'psycopg[binary]')") from None
    except Exception as err:  # SQLAlchemy raises many kinds (OperationalError, ArgumentError, ...)
        first = first_line(err)
        raise UserError(f"cannot open the study storage {_redact(url)}: {first}") from None


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def open_study(options: StudyOptions, fingerprint: dict[str, Any]):
    """Create or join the study; joining one made with other settings is refused."""
    optuna = _optuna()
    storage = open_storage(options.storage, options.heartbeat)
    pruner = (optuna.pruners.NopPruner() if options.exhaustive else
              optuna.pruners.SuccessiveHalvingPruner(min_resource=options.min_resource,
                                                     reduction_factor=options.reduction_factor))
    study = optuna.create_study(study_name=options.study_name, storage=storage, direction="maximize",
                                pruner=pruner, load_if_exists=True)
    saved = study.user_attrs.get("fingerprint")
    wanted = json.loads(json.dumps(fingerprint))
    if saved is None:
        study.set_user_attr("fingerprint", wanted)
    elif saved != wanted:
        changed = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        raise UserError(f"study {options.study_name!r} exists with other settings ({', '.join(changed)}); "
                        "use another --study name or the same settings")
    return study


def _job_of(trial) -> int | None:
    if PARAM in trial.params:
        return int(trial.params[PARAM])
    fixed = trial.system_attrs.get("fixed_params") or {}
    return int(fixed[PARAM]) if PARAM in fixed else None


def enqueue_jobs(study, jobs: list[dict[str, Any]]) -> int:
    """Enqueue every job (described by its user attributes) not already in the study; returns how many."""
    present = {_job_of(t) for t in study.get_trials(deepcopy=False)}
    added = 0
    for index, attrs in enumerate(jobs):
        if index not in present:
            study.enqueue_trial({PARAM: index}, user_attrs=attrs)
            added += 1
    return added


def enqueue_candidates(study, report: CandidateReport) -> int:
    """Step 1: one job per realized candidate."""
    return enqueue_jobs(study, [{"alpha": c.alpha, "beta": c.beta, "gamma": c.gamma, "macs": c.macs}
                                for c in report.candidates])


class _Heartbeat:
    """Records a heartbeat for one trial every ``interval`` seconds until stopped."""

    def __init__(self, storage, trial_id: int, interval: int) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(storage, trial_id, interval), daemon=True)

    def _beat(self, storage, trial_id: int, interval: int) -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if self._stop.wait(interval):
                return

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _pop_waiting(study):
    """Claim the next waiting trial atomically (the storage refuses a second claimant), or None."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import Trial, TrialState

    storage = study._storage  # the public storage object the study was opened with
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                return Trial(study, frozen._trial_id)
        except UpdateFinishedTrialError:
            continue
    return None


Evaluate = Callable[[int, Callable[[float, int], None]], float]


def run_worker(study, num_jobs: int, evaluate: Evaluate, heartbeat: int = 10,
               on_trial: Callable[[dict[str, Any]], None] | None = None, wait_for_running: bool = True) -> int:
    """Work through the queue until it is empty; returns the number of trials this worker ran.

    ``evaluate(job_index, report_epoch)`` trains one job and returns its final accuracy; it must call
    ``report_epoch(accuracy, epoch)`` after each epoch, which raises ``optuna.TrialPruned`` when the
    study's pruner (successive halving in step 1) stops the trial. With ``wait_for_running`` the worker
    does not leave while other workers' trials run: it waits until they finish, or go stale (their worker
    died) and come back to the queue — so the study is complete when this returns.
    """
    optuna = _optuna()
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    ran = 0
    while True:
        fail_stale_trials(study)  # a killed worker's trial goes back to the queue
        trial = _pop_waiting(study)
        if trial is None:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running or not wait_for_running:
                return ran
            time.sleep(heartbeat)
            continue
        index = trial.suggest_categorical(PARAM, list(range(num_jobs)))

        last: dict[str, float] = {}

        def report_epoch(accuracy: float, epoch: int, trial=trial, last=last) -> None:
            last["accuracy"] = accuracy
            trial.report(accuracy, epoch)
            trial.set_user_attr("epochs", epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        state, value = TrialState.COMPLETE, None
        with _Heartbeat(study._storage, trial._trial_id, heartbeat):
            try:
                value = float(evaluate(index, report_epoch))
            except optuna.TrialPruned:
                state = TrialState.PRUNED
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        ran += 1
        if on_trial is not None:
            on_trial({"job": index, **trial.user_attrs, "state": state.name.lower(),
                      "accuracy": value if value is not None else last.get("accuracy")})


def job_results(study) -> list[dict[str, Any]]:
    """Every finished or running trial: job index, state, accuracy (final, else last reported), epochs."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False):
        index = _job_of(t)
        if index is None or t.state == TrialState.WAITING:
            continue
        values = t.intermediate_values
        accuracy = t.value if t.state == TrialState.COMPLETE else (values[max(values)] if values else None)
        rows.append({"job": index, "trial": t.number, "state": t.state.name.lower(), "accuracy": accuracy,
                     "epochs": max(values) if values else 0})
    return rows


def summarize(study, report: CandidateReport) -> dict[str, Any]:
    """``search.json``: the best (α, β, γ) and every trial with its cost, accuracy, epochs and state."""
    trials = []
    for row in job_results(study):
        cand = report.candidates[row["job"]]
        trials.append({"alpha": cand.alpha, "beta": cand.beta, "gamma": cand.gamma, "macs": cand.macs,
                       "realized_ratio": cand.realized_ratio, "accuracy": row["accuracy"], "epochs": row["epochs"],
                       "state": row["state"], "trial": row["trial"]})
    complete = [t for t in trials if t["state"] == "complete" and t["accuracy"] is not None]
    best = max(complete, key=lambda t: (t["accuracy"], -t["macs"])) if complete else None
    return {
        "best": None if best is None else {k: best[k] for k in ("alpha", "beta", "gamma", "accuracy")},
        "trials": sorted(trials, key=lambda t: t["trial"]),
        "candidates": report.as_dict(),
    }
