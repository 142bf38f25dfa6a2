"""Latency on this machine, measured until it can decide, and scaling to a latency budget.

People choose φ for a device, not for a FLOPs count: "the biggest model that answers in 10 ms here". A
latency is a distribution, not a number, on a shared machine even more so: :func:`time_call` times calls
until the 95 % interval of their *median* is narrow enough — or, given a budget, until the interval lies
entirely under or over it — and reports the spread, the machine's load and what other processes took of its
cores beside the number, so a timing taken while other processes held the cores is never printed as if clean.

:func:`scale_to_latency` then bisects φ over *realized* models (each timed on the chosen inference path:
``eager`` PyTorch or :func:`compscale.optimize`'s ``best``): the answer is the largest φ whose median latency
fits. An interval from one process is not enough: batch-1 medians differ by several per cent from one process
to the next (memory layout, which core, the allocator), more than the interval of one process's median. So the
candidate is re-timed in fresh processes (:func:`fresh_latency`), and it is kept only when a 95 % *prediction
bound* for the median of the next fresh process — from those medians, their spread pooled over the rounds —
lies under the budget; otherwise the search steps down by the measured safety factor and confirms again.

Layer: the top of the deploy package (imports :mod:`compscale.deploy.paths` and ``bench``).
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch

from compscale.deploy.records import Record
from compscale.errors import UserError, first_line, shorten
from compscale.progress import Progress, report
from compscale.specs import ModelSpec

__all__ = ["Latency", "LatencyChoice", "Watch", "compare_latency", "fresh_latency", "machine_load", "median_interval",
           "model_latency", "parse_duration", "prediction_bound", "scale_to_budget", "scale_to_latency", "summarize",
           "time_call"]

#: A timed block of calls lasts at least this long (sub-millisecond calls are timed in groups).
MIN_BLOCK_SECONDS = 0.002
#: A timing whose samples spread (p90 − p10) by more than this fraction of the median is called noisy.
NOISY_SPREAD = 0.5
#: Other processes using more than this share of the cores while a timing ran make it "busy".
BUSY_OTHERS = 0.25
#: Fresh processes that re-time a latency-budget candidate, per round, and the rounds at most.
CONFIRM_RUNS = 3
CONFIRM_ROUNDS = 4
#: The smallest process-to-process spread (sd of log medians) a prediction bound assumes: three medians that
#: happen to agree do not prove the next process will.
MIN_PROCESS_SPREAD = 0.02
#: One-sided confidence of the prediction bound a confirmed candidate's fresh medians must lie under.
BOUND_CONFIDENCE = 0.95


def machine_load() -> float:
    """The 1-minute load average per core this process may use (1.0: every core busy on average)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        return os.getloadavg()[0] / max(1, cores)
    except (AttributeError, OSError):
        return 0.0


def _cpu_counters() -> tuple[float, float, int] | None:
    """(CPU seconds every process has used, CPU seconds this process has used, CPUs), from ``/proc/stat``;
    None where there is none (not Linux) or it counts other CPUs than this process may use (a container)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.read().splitlines()
        fields_ = [int(v) for v in lines[0].split()[1:9]]  # user nice system idle iowait irq softirq steal
        cpus = sum(1 for line in lines if re.match(r"cpu\d+ ", line))
        if cpus != len(os.sched_getaffinity(0)):
            return None
        busy = sum(fields_) - fields_[3] - fields_[4]
        return busy / os.sysconf("SC_CLK_TCK"), time.process_time(), cpus
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _others(before: tuple[float, float, int] | None, after: tuple[float, float, int] | None,
            wall: float) -> float | None:
    """The share of the cores other processes used between two :func:`_cpu_counters` readings."""
    if before is None or after is None or wall < 0.2:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return min(1.0, max(0.0, others / wall / after[2]))


class Watch:
    """The machine's state over a stretch of timing: started on creation, read by :meth:`stop` — the 1-minute
    load per core (the higher of start and stop), the share of the cores other processes used, the seconds."""

    def __init__(self) -> None:
        self.load, self.counters, self.start = machine_load(), _cpu_counters(), time.perf_counter()
        self.others: float | None = None
        self.seconds = 0.0

    def stop(self) -> "Watch":
        self.seconds = time.perf_counter() - self.start
        self.others = _others(self.counters, _cpu_counters(), self.seconds)
        self.load = max(self.load, machine_load())
        return self


def median_interval(times: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """A distribution-free ~95 % confidence interval of the median of ``times`` (order statistics: ranks
    n/2 ∓ z·√n/2, widened by one), valid whatever the shape of the timing distribution (they are skewed). For
    six samples or fewer it is [min, max] (with six: 97 %)."""
    ordered = sorted(times)
    n = len(ordered)
    half = z * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half) - 1)
    hi = min(n - 1, math.ceil(n / 2 + half))
    return ordered[lo], ordered[hi]


@dataclass(frozen=True)
class Latency(Record):
    """Milliseconds per call: the median, its ~95 % interval, the spread of the samples, the machine's load and
    the share of its cores other processes used while they were taken."""

    median_ms: float
    low_ms: float
    high_ms: float
    samples: int
    spread: float  # (p90 − p10) / median of the samples
    load: float  # 1-minute load average per core, the higher of before and after
    others: float | None = None  # share of the cores other processes used while timing (None: unknown)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def busy(self) -> bool:
        """Other processes held the cores while it was timed (load above the cores, or a quarter of them used)."""
        return self.load > 1.0 or (self.others is not None and self.others > BUSY_OTHERS)

    @property
    def noisy(self) -> bool:
        return self.spread > NOISY_SPREAD

    @property
    def note(self) -> str:
        """What to say beside the number ("" when the timing was clean)."""
        busy = []
        if self.load > 1.0:
            busy.append(f"load {self.load:.1f}x the cores")
        if self.others is not None and self.others > BUSY_OTHERS:
            busy.append(f"other processes used {self.others:.0%} of the cores while timing")
        notes = [f"machine busy: {', '.join(busy)}"] if busy else []
        if self.noisy:
            notes.append(f"noisy: samples spread {self.spread:.0%} of the median")
        return "; ".join(notes)

    def fits(self, budget_ms: float) -> bool | None:
        """True when the whole interval is under ``budget_ms``, False when it is all over, None undecided."""
        if self.high_ms <= budget_ms:
            return True
        if self.low_ms > budget_ms:
            return False
        return None

    def describe(self) -> str:
        """``22.1 ms [21.8, 22.5], spread 6%`` and the note, if any: how every timing is printed."""
        text = f"{self.median_ms:.3g} ms [{self.low_ms:.3g}, {self.high_ms:.3g}], spread {self.spread:.0%}"
        return text + (f" ({self.note})" if self.note else "")

    def fields(self) -> dict[str, Any]:
        """The timing in the JSON vocabulary's keys (``latency_ms``, ``latency_low_ms``, ..., ``latency_note``)."""
        return {"latency_ms": self.median_ms, "latency_low_ms": self.low_ms, "latency_high_ms": self.high_ms,
                "latency_spread": self.spread, "latency_samples": self.samples, "load_per_core": self.load,
                "others_cpu": self.others, "busy": self.busy, "latency_note": self.note}

    def as_dict(self) -> dict[str, Any]:
        d = super().as_dict()
        d.pop("extra", None)
        d.update(self.extra, busy=self.busy, note=self.note)
        return d


def summarize(times_ms: Sequence[float], load: float | None = None, others: float | None = None,
              seconds: float = 0.0, **extra: Any) -> Latency:
    """A :class:`Latency` from timed samples (ms): median, its interval, the p90 − p10 spread; ``load`` defaults
    to :func:`machine_load` now."""
    if not times_ms:
        raise ValueError("no samples")
    med = statistics.median(times_ms)
    lo, hi = median_interval(times_ms)
    deciles = statistics.quantiles(times_ms, n=10, method="inclusive") if len(times_ms) >= 2 else [med] * 9
    spread = (deciles[-1] - deciles[0]) / med if med > 0 else 0.0
    return Latency(med, lo, hi, len(times_ms), spread, machine_load() if load is None else load, others, seconds,
                   dict(extra))


def _block_size(fn: Callable[[], Any]) -> int:
    """How many calls make one timed block of at least :data:`MIN_BLOCK_SECONDS`."""
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    return max(1, min(1000, math.ceil(MIN_BLOCK_SECONDS / one)))


def time_call(fn: Callable[[], Any], budget_ms: float | None = None, warmup: int = 3, min_samples: int = 6,
              max_samples: int = 400, max_seconds: float = 10.0, rel_width: float = 0.05) -> Latency:
    """Time ``fn`` (a zero-argument call) until the median's interval decides.

    After ``warmup`` calls (one when a call takes over a second), samples (each the mean of a block of calls
    lasting ≥ 2 ms) are taken until the interval of the median is narrower than ``rel_width`` of it — or, when
    ``budget_ms`` is given, until the interval lies wholly under or over the budget — or until ``max_samples`` /
    ``max_seconds`` (never before ``min_samples``: six samples' [min, max] is a 97 % interval).
    """
    if budget_ms is not None and not (math.isfinite(budget_ms) and budget_ms > 0):
        raise UserError(f"a latency budget must be a positive number of milliseconds, got {budget_ms!r}")
    for _ in range(max(1, warmup)):
        t0 = time.perf_counter()
        fn()
        if time.perf_counter() - t0 > 1.0:
            break
    block = _block_size(fn)
    watch = Watch()
    times: list[float] = []
    start = watch.start
    while len(times) < max_samples:
        t0 = time.perf_counter()
        for _ in range(block):
            fn()
        times.append((time.perf_counter() - t0) / block * 1e3)
        if len(times) < min_samples:
            continue
        lo, hi = median_interval(times)
        med = statistics.median(times)
        decided = budget_ms is not None and (hi <= budget_ms or lo > budget_ms)
        if decided or (hi - lo) <= rel_width * med or time.perf_counter() - start > max_seconds:
            break
    watch.stop()
    return summarize(times, watch.load, watch.others, watch.seconds)


def model_latency(spec: ModelSpec, batch: int = 1, threads: int | None = None, path: str = "eager",
                  budget_ms: float | None = None, max_seconds: float = 10.0) -> Latency:
    """The latency of ``spec`` (randomly initialised, BatchNorm settled) at ``batch`` on this machine, on the
    inference ``path`` (``eager``, ``best`` = :func:`compscale.optimize`, or any path of ``compscale bench``)."""
    from compscale.compound import check_model_size
    from compscale.deploy.bench import set_threads
    from compscale.deploy.paths import build_path, settle_batchnorm
    from compscale.models import build_model

    check_model_size(spec)
    previous = torch.get_num_threads()
    set_threads(threads)
    try:
        torch.manual_seed(0)
        model = build_model(spec).eval()
        x = torch.randn(batch, spec.in_chans, spec.resolution, spec.resolution,
                        generator=torch.Generator().manual_seed(0))
        settle_batchnorm(model, x)
        used = torch.get_num_threads()
        run, label = build_path(model, path, x, used)
        with torch.inference_mode():
            result = time_call(run, budget_ms, max_seconds=max_seconds)
    finally:
        torch.set_num_threads(previous)
    return replace(result, extra={"backend": label, "batch": batch, "threads": used})


def compare_latency(specs: dict[str, ModelSpec], batch: int = 1, threads: int | None = None, repeats: int = 10,
                    warmup: int = 2, progress: Progress | None = None) -> dict[str, Latency]:
    """Several models timed side by side, interleaved (:func:`compscale.deploy.bench.measure`: every model once
    per round, so all share the machine's drift; the ratio of two medians is the figure to compare), each
    summarised with its interval and the machine's state (eager PyTorch, random weights, BatchNorm settled)."""
    from compscale.compound import check_model_size
    from compscale.deploy.bench import measure, set_threads
    from compscale.deploy.paths import settle_batchnorm
    from compscale.models import build_model

    previous = torch.get_num_threads()
    set_threads(threads)
    try:
        calls = {}
        for name, spec in specs.items():
            check_model_size(spec, what=name)
            x = torch.randn(batch, spec.in_chans, spec.resolution, spec.resolution,
                            generator=torch.Generator().manual_seed(0))
            model = settle_batchnorm(build_model(spec), x)
            calls[name] = (lambda m=model, x=x: m(x))
        watch = Watch()
        timings = measure(calls, batch=batch, warmup=warmup, repeats=repeats, inner="auto", progress=progress)
        watch.stop()
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    return {name: summarize([s * 1e3 for s in t.times], watch.load, watch.others, watch.seconds, backend="eager",
                            batch=batch, threads=used) for name, t in timings.items()}


# --- fresh processes ------------------------------------------------------------------------------------


def fresh_latency(spec: ModelSpec, batch: int = 1, threads: int | None = None, path: str = "eager",
                  runs: int = CONFIRM_RUNS, max_seconds: float = 4.0, timeout: float = 600.0,
                  progress: Progress | None = None) -> list[Latency]:
    """``spec`` timed in ``runs`` fresh Python processes, one after the other (:func:`model_latency` in each):
    what a user re-measuring the model later would see, process-to-process variation included."""
    from compscale.io import atomic_write_text
    from compscale.models.registry import family_modules

    results = []
    with tempfile.TemporaryDirectory(prefix="compscale-latency-") as tmp:
        spec_file = os.path.join(tmp, "spec.json")
        atomic_write_text(spec_file, json.dumps(spec.as_dict()))
        argv = [sys.executable, "-m", "compscale.deploy.latency", spec_file, "--batch", str(batch), "--path", path,
                "--max-seconds", str(max_seconds)]
        if threads is not None:
            argv += ["--threads", str(threads)]
        modules = family_modules([spec])
        if modules:
            argv += ["--imports", ",".join(modules)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
        for i in range(runs):
            report(progress, "message", f"re-timing in a fresh process ({i + 1}/{runs})", i, runs)
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
            except subprocess.TimeoutExpired:
                raise UserError(f"re-timing the model in a fresh process took over {timeout:.0f} s") from None
            if done.returncode != 0:
                lines = [line for line in done.stderr.splitlines() if line.strip()]
                raise UserError(f"re-timing the model in a fresh process failed: "
                                f"{shorten(lines[-1] if lines else f'exit status {done.returncode}')}")
            d = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(Latency(d["median_ms"], d["low_ms"], d["high_ms"], d["samples"], d["spread"], d["load"],
                                   d["others"], d["seconds"], {"process": "fresh"}))
    report(progress, "message", "re-timed in fresh processes", runs, runs)
    return results


def prediction_bound(groups: Sequence[Sequence[float]], confidence: float = BOUND_CONFIDENCE,
                     floor: float = MIN_PROCESS_SPREAD) -> float:
    """A one-sided ``confidence`` upper prediction bound for the median a new fresh process will measure, from
    the fresh medians of the *last* group (ms) and the process-to-process spread pooled over every group (each
    group: one model's fresh medians; sd of their logs about the group's mean, at least ``floor``):
    exp(mean + t·s·√(1 + 1/n))."""
    from compscale.stats import t_quantile

    last = [math.log(v) for v in groups[-1]]
    n = len(last)
    if n < 1:
        raise ValueError("no fresh medians")
    ss, df = 0.0, 0
    for g in groups:
        logs = [math.log(v) for v in g]
        mean = sum(logs) / len(logs)
        ss += sum((v - mean) ** 2 for v in logs)
        df += len(logs) - 1
    s = max(math.sqrt(ss / df) if df else 0.0, floor)
    t = t_quantile(confidence, df) if df else t_quantile(confidence, 1)
    return math.exp(sum(last) / n + t * s * math.sqrt(1 + 1 / n))


# --- scaling to a latency budget ------------------------------------------------------------------------

_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|us|µs)\s*")


def parse_duration(value: float | str, what: str = "a latency budget") -> float:
    """A duration in milliseconds: ``"10ms"``, ``"0.01s"``, ``"2.5ms"``, ``"500us"``, or a number (already ms)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ms = float(value)
    else:
        m = _DURATION.fullmatch(str(value))
        if not m:
            raise UserError(f"{what} must be a time such as 10ms or 0.01s, got {shorten(repr(value))}")
        ms = float(m.group(1)) * {"ms": 1.0, "s": 1e3, "us": 1e-3, "µs": 1e-3}[m.group(2)]
    if not (math.isfinite(ms) and ms > 0):
        raise UserError(f"{what} must be a positive time such as 10ms or 0.01s, got {shorten(repr(value))}")
    return ms


@dataclass(frozen=True)
class LatencyChoice(Record):
    """The largest φ whose realized model fits a latency budget: its latency here and in fresh processes, the
    bound those give for the next process, and the next φ (the smallest known not to fit) with its latency."""

    scaled: Any = field(repr=False)  # compscale.compound.ScaledModel of the chosen φ
    budget_ms: float
    latency: Latency  # in the searching process
    fresh: tuple[Latency, ...]  # re-timed in fresh processes (empty: not confirmed)
    bound_ms: float | None  # the prediction bound for a fresh process's median (None: no fresh processes)
    next_phi: float | None
    next_latency: Latency | None
    timed: int  # distinct architectures timed
    backend: str = "eager"
    batch: int = 1
    threads: int | None = None
    seconds: float = 0.0
    rounds: int = 1

    @property
    def phi(self) -> float:
        return self.scaled.phi

    @property
    def spec(self) -> ModelSpec:
        return self.scaled.spec

    @property
    def macs(self) -> int:
        return self.scaled.macs

    @property
    def params(self) -> int:
        return self.scaled.params

    @property
    def confirmed(self) -> bool:
        """The fresh processes' prediction bound lies under the budget."""
        return self.bound_ms is not None and self.bound_ms <= self.budget_ms

    @property
    def next_fresh_low_ms(self) -> float | None:
        """How fast a fresh process may run the next φ's model: its median here, times the ratio of the fresh
        processes' medians of the chosen model to this process's (geometric mean), divided by the room the
        prediction bound leaves for the process-to-process spread: the lower twin of ``bound_ms``. Processes
        differ by more than one process's interval (measured here: 42 to 61 ms for one model at batch 1), so
        this, not the next φ's own interval, says whether a re-run may find that it fits. None without fresh
        processes."""
        if self.next_latency is None or not self.fresh or self.bound_ms is None:
            return None
        center = math.exp(statistics.fmean(math.log(f.median_ms) for f in self.fresh))
        room = self.bound_ms / center  # exp(t·s·√(1 + 1/n)) >= 1
        return self.next_latency.median_ms * (center / self.latency.median_ms) / room

    @property
    def within_noise(self) -> bool:
        """The next φ may fit too on a re-run: its interval here reaches under the budget, or a fresh process may
        run it fast enough (:attr:`next_fresh_low_ms`)."""
        if self.next_latency is None:
            return False
        low = self.next_fresh_low_ms
        return self.next_latency.low_ms <= self.budget_ms or (low is not None and low <= self.budget_ms)

    def as_dict(self) -> dict[str, Any]:
        nxt = None
        if self.next_phi is not None:
            from compscale.compound import scale

            s = scale(self.scaled.base, self.next_phi, self.scaled.scaling)
            nxt = {"phi": self.next_phi, "macs": s.macs, "params": s.params, "resolution": s.spec.resolution,
                   **(self.next_latency.fields() if self.next_latency else {})}
        return {**self.scaled.as_dict(), "budget_ms": self.budget_ms, "backend": self.backend,
                "runtime": self.latency.extra.get("backend"), "batch": self.batch,
                "threads": self.latency.extra.get("threads", self.threads), **self.latency.fields(),
                "fresh_latency_ms": [f.median_ms for f in self.fresh], "latency_bound_ms": self.bound_ms,
                "confirmed": self.confirmed, "within_noise": self.within_noise, "next": nxt, "distinct": self.timed,
                "seconds": self.seconds}


def scale_to_latency(base: str | ModelSpec, target_ms: float | str, scaling=None, batch: int = 1,
                     threads: int | None = None, path: str = "eager", step: float = 0.05, hi: float = 8.0,
                     target_macs: float | str | None = None, target_params: float | str | None = None,
                     depth_rounding: str = "ceil", confirm: int = CONFIRM_RUNS,
                     timer: Callable[..., Latency] | None = None,
                     fresh: Callable[..., list[Latency]] | None = None,
                     progress: Progress | None = None) -> LatencyChoice:
    """The largest φ (to ``step``) whose realized model's latency on this machine fits ``target_ms`` (ms, or a
    duration such as ``"10ms"``), and, when given, the multiply-add and parameter budgets too (those bound φ
    first, without timing).

    φ is searched from 0 in whole steps (up while the models fit, to ``hi``; down while they miss, to -8), then
    bisected to ``step``; every distinct architecture is timed once in this process (rounding makes many φ
    build the same network). A model fits when its median's interval lies under the budget; an undecided one
    (interval across the budget) counts as a miss. The candidate is then re-timed in ``confirm`` fresh processes
    (``fresh``, default :func:`fresh_latency`; 0: not confirmed) and kept when their prediction bound
    (:func:`prediction_bound`) is under the budget; else the search is repeated under the budget divided by the
    safety factor measured (bound / this process's median), and the new candidate confirmed in turn (at most
    :data:`CONFIRM_ROUNDS` rounds). ``timer(spec, batch=, threads=, path=, budget_ms=)`` defaults to
    :func:`model_latency`.
    """
    from compscale.compound import scale
    from compscale.compound import scale_to_budget as cost_budget
    from compscale.scaling import CompoundScaling

    target = parse_duration(target_ms, "--target-latency")
    started = time.perf_counter()
    scaling = scaling or CompoundScaling()
    timer = timer or model_latency
    fresh = fresh or fresh_latency
    if target_macs is not None or target_params is not None:
        hi = min(hi, cost_budget(base, target_macs, target_params, scaling, depth_rounding).phi)
    cache: dict[ModelSpec, tuple[Latency, float]] = {}  # spec -> (its latency, the budget it was timed for)

    def timed(phi: float, budget: float) -> tuple[Any, Latency]:
        s = scale(base, phi, scaling, depth_rounding)
        lat, timed_for = cache.get(s.spec, (None, budget))
        if lat is None or (lat.fits(budget) is None and timed_for != budget):  # re-timed for a lowered budget
            lat = timer(s.spec, batch=batch, threads=threads, path=path, budget_ms=budget)
            cache[s.spec] = (lat, budget)
            report(progress, "message", f"phi={phi:.3g} ({s.spec.resolution}px, {s.macs / 1e9:.3g}G "
                   f"multiply-adds): {lat.describe()}", len(cache), None, phi=phi)
        return s, lat

    budget, groups, rounds = target, [], 0
    fresh_runs: list[Latency] = []
    bound: float | None = None
    while True:
        rounds += 1
        lo, first_miss = _search(lambda phi, b=budget: timed(phi, b)[1].fits(b) is True, hi, step,
                                 lambda phi, b=budget: timed(phi, b)[1], target)
        chosen, latency = timed(lo, budget)
        if confirm <= 0:
            break
        fresh_runs = list(fresh(chosen.spec, batch=batch, threads=threads, path=path, runs=confirm,
                                progress=progress))
        groups.append([f.median_ms for f in fresh_runs])
        bound = prediction_bound(groups)
        report(progress, "message", f"phi={lo:.3g} in {confirm} fresh processes: "
               f"{', '.join(f'{v:.3g}' for v in groups[-1])} ms; 95 % bound for the next {bound:.3g} ms "
               f"({'fits' if bound <= target else 'over'} {target:g} ms)", rounds, None)
        if bound <= target or rounds >= CONFIRM_ROUNDS:
            break
        # A fresh process may be `bound / median` times slower than this one: search again under a budget that
        # leaves that much room (the candidate itself no longer fits it, so the next one is smaller).
        budget = min(budget, target * latency.median_ms / bound)
    nxt_latency = None if first_miss is None else timed(first_miss, budget)[1]
    return LatencyChoice(chosen, target, latency, tuple(fresh_runs), bound, first_miss, nxt_latency, len(cache),
                         path, batch, threads, time.perf_counter() - started, rounds)


def _search(fits: Callable[[float], bool], hi: float, step: float, latency_at: Callable[[float], Latency],
            target_ms: float) -> tuple[float, float | None]:
    """(largest φ that fits, smallest φ known to miss or None): whole steps of φ from min(0, hi) (up while the
    models fit, to ``hi``; down while they miss, to φ = -8), then bisection to ``step``."""
    from compscale.monotone import boundary

    start = min(0.0, hi)
    if fits(start):
        lo, miss = start, None
        while lo < hi:
            nxt = min(lo + 1.0, hi)
            if not fits(nxt):
                miss = nxt
                break
            lo = nxt
    else:
        lo, miss = start - 1.0, start
        while not fits(lo):
            if lo <= -8.0:
                lat = latency_at(lo)
                raise UserError(f"even the smallest model (phi={lo:g}) does not fit {target_ms:g} ms here: "
                                f"{lat.describe()}")
            lo, miss = lo - 1.0, lo
    if miss is None:
        return lo, None
    return boundary(fits, lo, miss, tol=step)


def scale_to_budget(base: str | ModelSpec, target_macs: float | str | None = None,
                    target_params: float | str | None = None, scaling=None, depth_rounding: str = "ceil",
                    step: float = 1e-3, *, target_latency: float | str | None = None, batch: int = 1,
                    threads: int | None = None, backend: str = "eager", confirm: int = CONFIRM_RUNS,
                    progress: Progress | None = None):
    """:func:`compscale.compound.scale_to_budget` (the largest φ within multiply-add and parameter budgets), and
    with ``target_latency`` (ms, or ``"10ms"``, ``"0.01s"``) the largest φ whose model also answers within it on
    this machine (:func:`scale_to_latency`: a :class:`LatencyChoice`, with ``phi``, ``spec``, ``macs`` and
    ``params`` like a ``ScaledModel``)."""
    from compscale.compound import scale_to_budget as cost_budget

    if target_latency is None:
        if target_macs is None and target_params is None:
            raise UserError("give a budget: target_macs, target_params and/or target_latency")
        return cost_budget(base, target_macs, target_params, scaling, depth_rounding, step)
    return scale_to_latency(base, target_latency, scaling, batch, threads, backend, target_macs=target_macs,
                            target_params=target_params, depth_rounding=depth_rounding, confirm=confirm,
                            progress=progress)


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m compscale.deploy.latency SPEC.json``: one fresh process's :func:`model_latency`, as JSON."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m compscale.deploy.latency")
    p.add_argument("spec")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int)
    p.add_argument("--path", default="eager")
    p.add_argument("--max-seconds", type=float, default=4.0)
    p.add_argument("--imports", default="")
    args = p.parse_args(argv)
    try:
        from compscale.models.registry import import_modules
        from compscale.specs import read_spec_file

        if args.imports:
            import_modules(args.imports.split(","))
        lat = model_latency(read_spec_file(args.spec), args.batch, args.threads, args.path,
                            max_seconds=args.max_seconds)
    except UserError as err:
        print(f"compscale: error: {first_line(err)}", file=sys.stderr)
        return 2
    print(json.dumps(lat.as_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
