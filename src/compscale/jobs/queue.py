"""Optuna studies as resumable, parallel job queues.

The jobs of a study are fixed in advance, so they are *enqueued* (their description in the trial's user
attributes) and each worker pops the next waiting one; nothing is sampled, and no job is trained twice.
Step 1 prunes with successive halving; every other study runs each job to the end. The storage is an RDB
(SQLite file by default, PostgreSQL for many machines) with heartbeats: a worker killed mid-trial leaves a
stale RUNNING trial, which the next worker (or the next run of the command) marks failed, and a retry
callback enqueues it again. Re-running the command therefore resumes the study; finished trials are never
re-run. The study's settings (its *fingerprint*) are stored with it, so a worker on another machine needs
only the storage URL and the study's name.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable

from compscale.errors import UserError, first_line, shorten

#: The trial parameter that holds a job's index.
PARAM = "job"
#: Successive halving (step 1): first rung in epochs, and keep the top 1/η at each rung.
MIN_RESOURCE = 1
REDUCTION_FACTOR = 3


def load_optuna():
    """The optuna module, quiet, or one clear line when it is missing."""
    try:
        import optuna
    except ImportError:
        raise UserError("studies need optuna: pip install optuna") from None
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats and stale-trial retries are marked experimental; they are what makes workers killable.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def open_storage(url: str, heartbeat: int = 10):
    """An RDB storage with heartbeats and retry of failed (killed) trials; one clear line if unreachable."""
    load_optuna()
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several local workers share the file: wait for the lock instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif url.startswith("postgresql"):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    _refuse_foreign_database(url, engine_kwargs)
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
        raise UserError(f"cannot open the study storage {redact_url(url)}: {first_line(err)}") from None


#: Two of the tables Optuna's storage creates: a database with tables but not these is another program's.
OPTUNA_TABLES = frozenset({"studies", "version_info"})


def _sqlite_tables(url: str) -> set[str] | None:
    """The tables of a SQLite storage's file, read without changing it (None: no file yet, or in memory)."""
    import os
    import sqlite3
    import stat
    from urllib.parse import quote

    from sqlalchemy.engine import make_url

    try:
        database = make_url(url).database
    except Exception:  # SQLAlchemy's ArgumentError: RDBStorage says so below
        return None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    try:
        st = os.stat(database)
    except OSError:
        return None  # no file yet (or no folder: RDBStorage says so)
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"storage {redact_url(url)} is not a regular file; give a .db file")
    try:
        with sqlite3.connect(f"file:{quote(database)}?mode=ro", uri=True) as conn:
            return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as err:
        raise UserError(f"storage {redact_url(url)} is not a SQLite database ({first_line(err)}); "
                        "give a new file or a compscale study's") from None


def _server_tables(url: str, engine_kwargs: dict[str, Any]) -> set[str] | None:
    """The tables of a database server's storage (None when it cannot be inspected: RDBStorage reports why)."""
    try:
        from sqlalchemy import create_engine, inspect

        engine = create_engine(url, **engine_kwargs)
        try:
            return set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
    except Exception:
        return None


def _refuse_foreign_database(url: str, engine_kwargs: dict[str, Any]) -> None:
    """Refuse, before Optuna creates its schema, a database that holds another program's tables: nothing is
    added to it (Optuna would add its eleven tables)."""
    tables = _sqlite_tables(url) if url.startswith("sqlite") else _server_tables(url, engine_kwargs)
    if tables and not OPTUNA_TABLES <= tables:
        raise UserError(f"storage {redact_url(url)} is another program's database ({len(tables)} table(s), no "
                        "study); it was left untouched: give a new file or an empty database")


def redact_url(url: str) -> str:
    """The URL without its password, for messages and reports."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def _pruner(optuna, exhaustive: bool):
    if exhaustive:
        return optuna.pruners.NopPruner()
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=MIN_RESOURCE, reduction_factor=REDUCTION_FACTOR)


def _differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The settings two fingerprints disagree on, each as ``name: saved -> wanted`` (nested keys dotted)."""
    changed = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += [f"{key}.{d}" for d in _differences(a, b)]
        elif a != b:
            changed.append(f"{key}: {shorten(json.dumps(a), 40)} -> {shorten(json.dumps(b), 40)}")
    return changed


def open_study(storage_url: str, name: str, fingerprint: dict[str, Any], heartbeat: int = 10):
    """Create or resume the study ``name``; one made with other settings is refused, naming the first setting
    that differs (its trials were shaped by those settings and must not be reported as this run's)."""
    optuna = load_optuna()
    storage = open_storage(storage_url, heartbeat)
    wanted = json.loads(json.dumps(fingerprint))
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                pruner=_pruner(optuna, bool(wanted.get("exhaustive", True))), load_if_exists=True)
    saved = study.user_attrs.get("fingerprint")
    if saved is None:
        study.set_user_attr("fingerprint", wanted)
    elif saved != wanted:
        # A named setting first; the jobs' digest (which every change of plan also moves) last.
        changed = sorted(_differences(saved, wanted), key=lambda c: c.startswith(("jobs:", "num_jobs:")))
        raise UserError(f"study {name!r} in {redact_url(storage_url)} was run with other settings "
                        f"({changed[0]}{f' and {len(changed) - 1} more' if len(changed) > 1 else ''}); "
                        "use another --out (or --study NAME), or the same settings to resume it")
    return study


def load_study(storage_url: str, name: str, heartbeat: int = 10):
    """Join an existing study (another process or machine created it); its fingerprint says how to run it."""
    optuna = load_optuna()
    storage = open_storage(storage_url, heartbeat)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise UserError(f"no study {name!r} in {redact_url(storage_url)}; start it without --join first") from None
    fingerprint = study.user_attrs.get("fingerprint")
    if not fingerprint:
        raise UserError(f"study {name!r} in {redact_url(storage_url)} was not made by compscale (no settings)")
    study.pruner = _pruner(optuna, bool(fingerprint.get("exhaustive", True)))
    return study


def job_index(trial) -> int | None:
    """The job a trial runs (set when it was enqueued), or None for a trial that is not one of ours."""
    if PARAM in trial.params:
        return int(trial.params[PARAM])
    fixed = trial.system_attrs.get("fixed_params") or {}
    return int(fixed[PARAM]) if PARAM in fixed else None


def enqueue_jobs(study, jobs: list[dict[str, Any]]) -> int:
    """Enqueue every job (described by its user attributes) not already in the study, and once more every job
    whose every trial failed (an exception, not a kill); returns how many were enqueued."""
    from optuna.trial import TrialState

    states: dict[int, set] = {}
    for t in study.get_trials(deepcopy=False):
        index = job_index(t)
        if index is not None:
            states.setdefault(index, set()).add(t.state)
    added = 0
    for index, attrs in enumerate(jobs):
        seen = states.get(index)
        if seen is None or seen <= {TrialState.FAIL}:
            study.enqueue_trial({PARAM: index}, user_attrs=attrs)
            added += 1
    return added


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


#: ``evaluate(job_attrs, report_epoch)`` trains one job and returns its result: at least ``{"accuracy": float}``;
#: everything else is stored with the trial. ``report_epoch(accuracy, epoch)`` may raise ``optuna.TrialPruned``.
Evaluate = Callable[[dict[str, Any], Callable[[float, int], None]], dict[str, Any]]


def run_worker(study, num_jobs: int, evaluate: Evaluate, heartbeat: int = 10,
               on_trial: Callable[[dict[str, Any]], None] | None = None, wait_for_running: bool = True) -> int:
    """Work through the queue until it is empty; returns the number of trials this worker ran.

    With ``wait_for_running`` the worker does not leave while other workers' trials run: it waits until they
    finish, or go stale (their worker died) and come back to the queue — so the study is complete when this
    returns.
    """
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
        row = _run_trial(study, trial, evaluate, heartbeat)
        ran += 1
        if on_trial is not None:
            on_trial({"job": index, **trial.user_attrs, **row})


def _run_trial(study, trial, evaluate: Evaluate, heartbeat: int) -> dict[str, Any]:
    """Train one claimed trial under a heartbeat and tell the study how it ended."""
    optuna = load_optuna()
    from optuna.trial import TrialState

    last: dict[str, float] = {}

    def report_epoch(accuracy: float, epoch: int) -> None:
        last["accuracy"] = accuracy
        trial.report(accuracy, epoch)
        trial.set_user_attr("epochs", epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()

    state, result = TrialState.COMPLETE, {}
    with _Heartbeat(study._storage, trial._trial_id, heartbeat):
        try:
            result = evaluate(dict(trial.user_attrs), report_epoch)
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
    for key, value in result.items():
        if key != "accuracy":
            trial.set_user_attr(f"result_{key}", value)
    value = float(result["accuracy"]) if state == TrialState.COMPLETE else None
    study.tell(trial, value, state=state)
    return {"state": state.name.lower(), "accuracy": value if value is not None else last.get("accuracy")}


def job_results(study) -> list[dict[str, Any]]:
    """Every started trial: job index, trial number, state, accuracy (final, else last reported), epochs, and
    what the job's evaluation returned besides its accuracy (``result_*`` attributes, prefix dropped)."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False):
        index = job_index(t)
        if index is None or t.state == TrialState.WAITING:
            continue
        values = t.intermediate_values
        accuracy = t.value if t.state == TrialState.COMPLETE else (values[max(values)] if values else None)
        extra = {k[len("result_"):]: v for k, v in t.user_attrs.items() if k.startswith("result_")}
        rows.append({**extra, "job": index, "trial": t.number, "state": t.state.name.lower(), "accuracy": accuracy,
                     "epochs": max(values) if values else 0})
    return rows
