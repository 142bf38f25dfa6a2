"""One progress-callback type for every long-running job (training, search, sweep, studies, demo).

A library function never prints: it reports :class:`Event` objects to a :data:`Progress` callable, and the
command line turns them into progress bars and lines. ``kind`` says what happened; the fields that apply to
it are filled in (``done``/``total`` for counted work, ``info`` for the rest).

Kinds in use: ``"stage"`` (a named phase starts: ``message``), ``"trial"`` (a job of a study finished:
``done``/``total``, ``info`` = the job's labels, state and accuracy), ``"train_start"``, ``"epoch_start"``,
``"step"`` and ``"epoch_end"`` (the training engine; ``info`` holds the epoch record or the step's loss/lr),
``"eval"`` (an evaluation: ``done``/``total`` batches, ``done=0`` before the first), ``"message"`` (anything
else worth a line; ``done``/``total`` when it counts, e.g. timing rounds). A study's ``"start"`` and ``"trial"``
events also carry ``work`` and ``work_done`` (its total and finished work, multiply-adds × seeds × images ×
epochs, for a cost-weighted ETA).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class Event:
    """One thing a long job reports."""

    kind: str
    message: str = ""
    done: int | None = None
    total: int | None = None
    info: Mapping[str, Any] = field(default_factory=dict)


Progress = Callable[[Event], None]


def silent(event: Event) -> None:
    """The default :data:`Progress`: ignores everything."""


def report(progress: Progress | None, kind: str, message: str = "", done: int | None = None,
           total: int | None = None, **info: Any) -> None:
    """Send one event to ``progress`` (nothing when it is None)."""
    if progress is not None:
        progress(Event(kind, message, done, total, info))
