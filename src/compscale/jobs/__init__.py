"""The one job runner: every study compscale trains (step 1's search, step 2's sweep, the cardinality and
family studies, the demo) is a list of :class:`~compscale.jobs.runner.Job` s — a concrete spec, seeds and a
folder — run through one resumable, parallel Optuna queue (:mod:`compscale.jobs.queue`) by
:func:`~compscale.jobs.runner.run_jobs`. What differs between studies is only which jobs they plan and how
they summarise the results.
"""

from compscale.jobs.runner import Job, JobResult, RunSettings, join_study, run_jobs
from compscale.jobs.trial import train_spec

__all__ = ["Job", "JobResult", "RunSettings", "join_study", "run_jobs", "train_spec"]
