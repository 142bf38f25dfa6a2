"""One progress line per finished job of a study, whichever worker ran it.

The process that starts a study is itself a worker: it trains a job in its own thread and only returns to its
loop when that job ends. Reporting from that loop would print only its own jobs (with two local workers, every
other line was missing, and the counter jumped). :class:`TrialWatch` instead polls the study's storage from a
thread — the same storage the other workers (local processes or other machines) tell when they finish — and
reports each job that completed or was pruned, once, as it ends.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from optuna.trial import TrialState

from compscale.jobs.queue import job_index

#: How often the storage is read while no job of this process ends (seconds). A local job that ends wakes it.
POLL_SECONDS = 2.0

_ENDED = (TrialState.COMPLETE, TrialState.PRUNED)


class TrialWatch:
    """Calls ``on_trial(row, finished)`` for every job of ``study`` that ends while the watch is open (``row``: the
    job's attributes — labels, seeds — with its state and accuracy; ``finished``: how many jobs have ended so far).
    Use as a context manager around the work; leaving it reports what is left."""

    def __init__(self, study: Any, on_trial: Callable[[dict[str, Any], int], None]) -> None:
        self.study = study  # Optuna's storages are thread-safe (its own n_jobs runs trials in threads)
        self.on_trial = on_trial
        self.reported = {t.number for t in self._ended()}  # a resumed study's finished jobs were not run now
        self.wake, self.stopping, self.lock = threading.Event(), threading.Event(), threading.Lock()
        self.thread = threading.Thread(target=self._loop, name="compscale-trial-watch", daemon=True)

    def __enter__(self) -> "TrialWatch":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.wake.set()
        self.thread.join()
        if exc[0] is None:
            self.poll()  # the jobs that ended since the last poll

    def nudge(self) -> None:
        """A job of this process ended: report it now rather than at the next poll."""
        self.wake.set()

    def _ended(self) -> list[Any]:
        return [t for t in self.study.get_trials(deepcopy=False, states=_ENDED) if job_index(t) is not None]

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self.wake.wait(POLL_SECONDS)
            self.wake.clear()
            if not self.stopping.is_set():
                try:
                    self.poll()
                except Exception:  # noqa: BLE001 - a storage hiccup: the next poll, or the last one, reports it
                    pass

    def poll(self) -> None:
        """Report every job that ended since the last poll, in the order they ended."""
        with self.lock:
            ended = self._ended()
            for t in sorted((t for t in ended if t.number not in self.reported),
                            key=lambda t: (t.datetime_complete is None, t.datetime_complete, t.number)):
                self.reported.add(t.number)
                values = t.intermediate_values
                accuracy = t.value if t.state == TrialState.COMPLETE else (values[max(values)] if values else None)
                row = {"job": job_index(t), **t.user_attrs, "state": t.state.name.lower(), "accuracy": accuracy}
                self.on_trial(row, len(self.reported))
