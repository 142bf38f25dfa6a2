"""`compscale demo`, the project's main job: the paper's two-step method on Fashion-MNIST, end to end.

1. the EfficientNet family table (official coefficients vs formula, realized FLOPs);
2. step 1: a small EfficientNet-style baseline for 28 px grayscale images whose rounding is fine enough that
   α, β and γ — not the rounding — decide every scaled architecture; the α, β, γ grid, keeping only honest
   candidates (nominal α·β²·γ² *and* realized cost within 2 ± 0.1, and comparable at equal cost at every φ
   of step 2), each trained as an Optuna trial with successive halving and scored on held-out images;
3. step 2: the baseline scaled by φ = 0, 1, 2, 3 with the found α, β, γ, against depth-, width- and
   resolution-only models matched to the compound model's realized multiply-adds within ±5 %, the same
   seeds for every model (paired), BatchNorm statistics re-estimated before every evaluation;
4. a report (``index.html``, ``report.md``, PNG plots, JSON): the Figure-3/4-style plot, the paired gap per φ
   with its 95 % interval, the step-1 table with nominal beside realized ratios, and a plain verdict.

Everything is resumable: run it again and finished trials are reused (a changed setting is refused).
"""

from __future__ import annotations

import json
import os
import re
import resource
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from compscale.analysis.family import formula_rows, official_rows
from compscale.analysis.report import Section, Table, write_report
from compscale.io import atomic_write_text
from compscale.jobs.planning import data_aware_base
from compscale.jobs.runner import RunSettings
from compscale.locks import output_lock
from compscale.progress import Progress, report
from compscale.scaling import CompoundScaling
from compscale.search.candidates import enumerate_candidates
from compscale.search.step1 import GridSettings, run_search
from compscale.search.step2 import MATCH_TOLERANCE, RULE_TOLERANCE, run_sweep
from compscale.specs import EfficientNetSpec, MBConvStage


@dataclass(frozen=True)
class DemoPlan:
    data: str = "fashion-mnist"
    search_epochs: int = 3
    search_limit_train: int = 3000
    search_seeds: int = 2
    holdout: int = 1000
    grid_step: float = 0.05
    sweep_epochs: int = 4
    sweep_limit_train: int = 3000
    limit_test: int = 1000
    seeds: int = 3
    phis: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0)
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.2
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    precise_bn: int = 300


FULL = DemoPlan()
QUICK = DemoPlan(search_epochs=1, search_limit_train=1000, search_seeds=1, holdout=300, grid_step=0.1,
                 sweep_epochs=2, sweep_limit_train=1500, limit_test=500, seeds=1, phis=(0.0, 1.0), precise_bn=300)


def demo_baseline() -> EfficientNetSpec:
    """An EfficientNet-style network for 28 px grayscale images on which α, β and γ, not the rounding, decide
    the scaled architectures:

    * a stride-1 (CIFAR-style) stem, so every pixel of resolution reaches the first feature map, and 28 px:
      the paper's γ = 1.15 gives 32 px, and every stride-2 map of a 28 px input scales exactly (28/14/7 → 32/16/8);
    * 2 to 4 MBConv blocks per stage, so that ceil(d · repeats) moves in steps of a quarter to a half of a
      stage, not a doubling;
    * channels rounded to multiples of 1 (``divisor``), not 8: the stages have 8 to 24 channels;
    * expansion ratio 2 and no stochastic depth or dropout: a network trained for minutes gains nothing from
      them, and the sweep's 8x models must train in minutes on two CPU cores.

    0.76 M multiply-adds, 27 k parameters (10 classes): the paper's 1.2 / 1.1 / 1.15 realize 1.84x at φ = 1
    (nominal 1.92x) and 4.0x, 7.6x at φ = 2, 3 (tests/test_demo_design.py checks it)."""
    return EfficientNetSpec(
        stages=(MBConvStage(1, 3, 2, 8, 2), MBConvStage(2, 3, 2, 12, 3), MBConvStage(2, 5, 1, 16, 4),
                MBConvStage(2, 3, 2, 24, 4)),
        stem_channels=8, head_channels=64, resolution=28, in_chans=1, num_classes=10, stem_stride=1, divisor=1,
        dropout=0.0, drop_path_rate=0.0)


def run_demo(out: str = "report", quick: bool = False, data: str | None = None, workers: int = 2,
             threads: int | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Run (or resume) the demo into ``out``; returns the summary written to ``out/demo.json``. ``out`` is locked
    while the demo runs: a second demo into it is refused with one line naming this one's PID."""
    with output_lock(out, "demo"):
        return _run_demo(out, quick, data, workers, threads, progress)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the extra workers), user + system."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _run_demo(out: str, quick: bool, data: str | None, workers: int, threads: int | None,
              progress: Progress | None) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    if data:
        plan = replace(plan, data=data)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    start, cpu0, load0 = time.perf_counter(), _cpu_seconds(), os.getloadavg()[0]
    base = data_aware_base(demo_baseline(), plan.data)
    atomic_write_text(folder / "baseline.json", base.to_json())
    grid, grid_note = _grid(plan, base)
    step1 = _step1_settings(plan, folder, workers, threads)
    step2 = _step2_settings(plan, folder, workers, threads)
    # Each step's ETA is its own: step 1's rate (small 2-seed jobs, many stopped after one epoch, fixed cost per job)
    # says little about step 2's, which ran 2.3x more multiply-adds per second in the measured demo, so an estimate
    # of both from step 1 said 33 min for a 12.5 min run.
    report(progress, "stage", "step 1 of 2: searching alpha, beta, gamma at phi=1 (nominal and realized FLOPs 2 ± 0.1)")
    search = run_search(base, step1, grid, progress=progress)
    best, choice = _coefficients_for_step2(search)
    scaling = CompoundScaling(best["alpha"], best["beta"], best["gamma"], enforce_constraint=False)
    report(progress, "stage", choice)

    report(progress, "stage", f"step 2 of 2: scaling by phi={', '.join(f'{p:g}' for p in plan.phis)} with "
           f"alpha={best['alpha']:g} beta={best['beta']:g} gamma={best['gamma']:g}, against single-dimension "
           "scaling at equal FLOPs")
    sweep = run_sweep(base, step2, scaling, plan.phis, progress=progress)

    report(progress, "stage", "writing the report")
    elapsed, cpu = time.perf_counter() - start, _cpu_seconds() - cpu0
    # Other work on the machine: the load before the demo started, or at its end beyond the demo's own workers.
    load = max(load0, os.getloadavg()[0] - workers)
    checks = goal_checks(best, sweep, plan)
    summary = {"plan": asdict(plan), "quick": quick, "seconds": elapsed, "cpu_seconds": cpu, "load_average": load,
               "baseline": {"macs": sweep["points"][0]["macs"], "params": sweep["points"][0]["params"]},
               "best": search["best"], "step2_coefficients": best, "step2_choice": choice,
               "verdict": sweep["verdict"], "checks": checks, "baseline_curve": sweep["baseline_curve"],
               "search": {"epochs_used": search["epochs_used"], "epochs_exhaustive": search["epochs_exhaustive"],
                          "candidates": search["candidates"]["distinct"], "warnings": search["warnings"]}}
    from compscale.vocabulary import normalize

    atomic_write_text(folder / "demo.json", json.dumps(normalize(summary), indent=2))
    html_path, _ = write_report(folder, "compscale: compound scaling, tested on " + plan.data,
                                _sections(plan, search, sweep, summary, folder, choice, grid_note))
    summary["report"] = str(html_path)
    return summary


def _grid(plan: DemoPlan, base: EfficientNetSpec) -> tuple[GridSettings, str]:
    """Step 1's grid: candidates honest at φ = 1 and comparable at equal cost at every φ of step 2; when none on
    this grid is (a tiny quick run), honest at φ = 1 only — the report says so."""
    phis = tuple(p for p in plan.phis if p > 0)
    grid = GridSettings(step=plan.grid_step, sweep_phis=phis, sweep_tolerance=RULE_TOLERANCE,
                        match_tolerance=MATCH_TOLERANCE)
    kept = enumerate_candidates(base, grid.target, grid.tolerance, grid.alpha, grid.beta, grid.gamma, grid.step,
                                sweep_phis=phis, sweep_tolerance=RULE_TOLERANCE, match_tolerance=MATCH_TOLERANCE)
    if kept.candidates:
        return grid, ""
    return replace(grid, sweep_phis=()), ("No candidate on this grid can be compared at equal cost at every phi of "
                                          "step 2, so step 1 keeps the candidates honest at phi = 1 only; step 2 "
                                          "reports the models it cannot match.")


def _recipe(plan: DemoPlan) -> dict[str, Any]:
    return {"batch_size": plan.batch_size, "optimizer": plan.optimizer, "lr": plan.lr, "schedule": plan.schedule,
            "warmup_epochs": plan.warmup_epochs, "precise_bn": plan.precise_bn, "limit_test": plan.limit_test}


def _step1_settings(plan: DemoPlan, folder: Path, workers: int, threads: int | None) -> RunSettings:
    return RunSettings(data=plan.data, out=str(folder / "search"), epochs=plan.search_epochs, seeds=plan.search_seeds,
                       limit_train=plan.search_limit_train, holdout=plan.holdout, workers=workers, threads=threads,
                       **_recipe(plan))


def _step2_settings(plan: DemoPlan, folder: Path, workers: int, threads: int | None) -> RunSettings:
    return RunSettings(data=plan.data, out=str(folder / "sweep"), epochs=plan.sweep_epochs, seeds=plan.seeds,
                       limit_train=plan.sweep_limit_train, workers=workers, threads=threads, **_recipe(plan))


def _grown(t: dict[str, Any]) -> int:
    return sum(v > 1.0 for v in (t["alpha"], t["beta"], t["gamma"]))


def _coefficients_for_step2(search: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Step 1's best, unless it grows only one dimension: then step 2 could not test *compound* scaling, so
    it takes the best candidate that grows at least two (completed first, else the best at the rung where it
    was stopped), or else the paper's 1.2/1.1/1.15."""
    best = search["best"]
    if best is not None and _grown(best) >= 2:
        return best, f"step 2 uses step 1's best: alpha={best['alpha']} beta={best['beta']} gamma={best['gamma']}"
    for state in ("complete", "pruned"):
        compound = [t for t in search["trials"] if t["state"] == state and _grown(t) >= 2 and t["accuracy"] is not None]
        if compound:
            pick = max(compound, key=lambda t: (t["epochs"], t["accuracy"]))
            how = ("completed" if state == "complete"
                   else f"stopped by successive halving after {pick['epochs']} epoch(s)")
            return pick, (f"step 1's best grows a single dimension, so step 2 uses the best candidate that grows two "
                          f"or more ({how}): alpha={pick['alpha']} beta={pick['beta']} gamma={pick['gamma']} "
                          f"(held-out top-1 {pick['accuracy']:.4f})")
    paper = {"alpha": 1.2, "beta": 1.1, "gamma": 1.15, "accuracy": None}
    return paper, ("no step-1 candidate that grows two or more dimensions was trained, so step 2 uses the paper's "
                   "alpha=1.2 beta=1.1 gamma=1.15")


def goal_checks(best: dict[str, Any], sweep: dict[str, Any], plan: DemoPlan) -> dict[str, Any]:
    """The issue's goals, measured on this run: the coefficients' constraint, the compound model's realized cost
    at each φ, every single-dimension model's match, no network trained at two φ, a paired interval per φ."""
    points = sweep["points"]
    constraint = best["alpha"] * best["beta"] ** 2 * best["gamma"] ** 2
    compound = [p for p in points if p["strategy"] == "compound"]
    singles = [p for p in points if p["strategy"] not in ("baseline", "compound")]
    trained = [p for p in points if p["matched"]]
    specs = [json.dumps(p["stages"], sort_keys=True) + str(p["resolution"]) for p in trained]
    comparisons = sweep["verdict"]["comparisons"]
    intervals = [c for c in comparisons if c["paired"]["gap_low"] is not None]
    return {
        "constraint": constraint, "constraint_ok": abs(constraint - 2.0) <= 0.1,
        "compound": [{"phi": p["phi"], "macs_ratio": p["macs_ratio"], "rule_deviation": p["rule_deviation"]}
                     for p in compound],
        "compound_ok": all(abs(p["rule_deviation"]) <= RULE_TOLERANCE for p in compound),
        "worst_match": max((abs(p["deviation"]) for p in singles), default=0.0),
        "all_matched": all(p["matched"] and abs(p["deviation"]) <= MATCH_TOLERANCE for p in singles),
        "no_shared_runs": len(specs) == len(set(specs)),
        "paired_intervals": len(intervals), "phis_compared": len(comparisons),
        "intervals_ok": plan.seeds >= 3 and len(intervals) == len([p for p in plan.phis if p > 0]),
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _pts(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:+.2f}"


def _interval(p: dict[str, Any]) -> str:
    i = p.get("top1_interval")
    return "-" if not i else f"[{100 * i[0]:.2f}, {100 * i[1]:.2f}]"


def _sections(plan: DemoPlan, search: dict[str, Any], sweep: dict[str, Any], summary: dict[str, Any],
              folder: Path, choice: str, grid_note: str) -> list[Section]:
    return [_verdict_section(plan, sweep, summary), _step2_section(sweep, choice),
            _step1_section(plan, search, grid_note), _family_section(), *_fragments(folder)]


def _budget_line(plan: DemoPlan, sweep: dict[str, Any]) -> str:
    curve = sweep["baseline_curve"]
    line = (f"Data: {plan.data}, {plan.sweep_limit_train} training images, {plan.sweep_epochs} epochs per model "
            f"({plan.optimizer} lr {plan.lr:g}, {plan.schedule}, batch {plan.batch_size}), {plan.seeds} seed(s) per "
            f"model (seed k of every model saw the same data order and augmentation), BatchNorm statistics "
            f"re-estimated on {plan.precise_bn} training images before every evaluation, scored on {plan.limit_test} "
            "test images.")
    if len(curve) >= 2:
        move = curve[-1] - curve[-2]
        line += (f" The baseline's test top-1 over the epochs (mean over seeds): "
                 f"{', '.join(f'{100 * c:.1f}' for c in curve)} %; it moved {100 * move:+.2f} points between its last "
                 "two epochs " + ("(under 1 point: past the steep start of its learning curve)." if abs(move) < 0.01
                                  else "(1 point or more: still on the steep part of its learning curve; read the "
                                       "gaps with that in mind)."))
    return line


#: The side of the built-in datasets' own images: a model that sees them larger sees them upsampled.
NATIVE_SIDE = {"fashion-mnist": 28, "digits": 8}


def _resolution_caveat(plan: DemoPlan, sweep: dict[str, Any]) -> str | None:
    """Say so when higher-resolution models only see upsampled images: more pixels carry no new detail here,
    unlike the paper's ImageNet photos, which handicaps resolution (and compound) scaling on this data."""
    native = NATIVE_SIDE.get(plan.data)
    larger = [p["resolution"] for p in sweep["points"] if native and p["resolution"] > native]
    if not larger:
        return None
    return (f"Read with the data in mind: {plan.data}'s images are {native} px, so the models at {min(larger)} to "
            f"{max(larger)} px see them upsampled: more pixels, no new detail (the paper's ImageNet photos have it). "
            "That handicaps resolution scaling, and the resolution part of compound scaling, on this data.")


def _verdict_section(plan: DemoPlan, sweep: dict[str, Any], summary: dict[str, Any]) -> Section:
    v, checks = sweep["verdict"], summary["checks"]
    rows = []
    for c in v["comparisons"]:
        g = c["paired"]
        interval = "-" if g["gap_low"] is None else f"[{100 * g['gap_low']:+.2f}, {100 * g['gap_high']:+.2f}]"
        others = ", ".join(f"{o['strategy']} {_pts(o['gap'])}" for o in c["others"])
        rows.append([f"{c['phi']:g}", f"{c['macs_ratio']:.2f}x", _pct(c["compound_top1"]),
                     f"{c['best_single']} {_pct(c['best_single_top1'])}", _pts(g["gap"]), interval, c["outcome"],
                     others or "-"])
    load = (f" Other work held the machine (load average {summary['load_average']:.1f} beyond the demo's own workers): "
            "the CPU time is the fairer measure." if summary["load_average"] > 1.0 else "")
    paragraphs = [
        v["summary"][0].upper() + v["summary"][1:] + ".",
        "Per phi, the gap is compound minus the best single-dimension model (highest mean), seed k against seed k; "
        "the interval is the 95% Student-t interval of the mean paired gap (n - 1 degrees of freedom). An "
        "interval that contains 0 is a tie." + (" With one seed there is no noise estimate, so no won, tied or "
                                                 "lost." if plan.seeds < 2 else ""),
        *v["details"],
        *filter(None, [_resolution_caveat(plan, sweep)]),
        _budget_line(plan, sweep),
        (f"Goals: alpha*beta^2*gamma^2 = {checks['constraint']:.3f} "
         f"({'within' if checks['constraint_ok'] else 'NOT within'} 2 ± 0.1); compound realizes 2^phi within "
         f"±{RULE_TOLERANCE:.0%} at every phi: "
         f"{'yes' if checks['compound_ok'] else 'NO'} ("
         + ", ".join(f"phi={c['phi']:g}: {c['rule_deviation']:+.1%}" for c in checks["compound"])
         + f"); every single-dimension model within ±{MATCH_TOLERANCE:.0%} of its target: "
         f"{'yes' if checks['all_matched'] else 'NO'} (worst {checks['worst_match']:.1%}); no trained run shared "
         f"between two phi: {'yes' if checks['no_shared_runs'] else 'NO'}; paired intervals: "
         f"{checks['paired_intervals']} of {checks['phis_compared']} phi."),
        f"Total time {summary['seconds'] / 60:.1f} min wall, {summary['cpu_seconds'] / 60:.1f} min CPU.{load}",
    ]
    table = Table(["phi", "cost x", "compound", "best single dimension", "gap (points)", "95% interval", "verdict",
                   "gap to the others"], rows)
    return Section("Verdict", paragraphs, [table])


def _step2_section(sweep: dict[str, Any], choice: str) -> Section:
    rows = [[p["strategy"], f"{p['phi']:g}", p["resolution"], sum(s["repeats"] for s in p["stages"][1:-1]),
             f"{p['macs'] / 1e6:.2f}M", f"{p['macs_ratio']:.2f}x", f"{p['deviation']:+.1%}",
             "-" if p["multiplier"] is None else f"{p['multiplier']:.3f}", _pct(p["accuracy_mean"]), _interval(p),
             " / ".join(f"{100 * a:.1f}" for a in p["accuracies"]) or "-", p["note"] or ""]
            for p in sweep["points"]]
    return Section("Step 2: compound vs single-dimension scaling at equal realized FLOPs", [
        choice[0].upper() + choice[1:] + ".",
        f"alpha={sweep['alpha']:g}, beta={sweep['beta']:g}, gamma={sweep['gamma']:g}. Every single-dimension model is "
        f"the one whose realized multiply-adds come closest to the compound model's at the same phi; it is trained "
        f"only within ±{MATCH_TOLERANCE:.0%} of them (deviation shown), and never borrowed from another phi. The "
        "plot shows each model's mean top-1 with its 95% interval over the seeds, each seed as a dot.",
    ], [Table(["strategy", "phi", "px", "blocks", "MACs", "x baseline", "vs target", "multiplier", "top-1 mean",
               "95% interval", "per seed", "note"], rows)], [str(Path("sweep") / "sweep.png")])


def _step1_section(plan: DemoPlan, search: dict[str, Any], grid_note: str) -> Section:
    cand = search["candidates"]
    by_key = {(c["alpha"], c["beta"], c["gamma"]): c for c in cand["candidates"]}
    rows = []
    for t in search["trials"]:
        checked = by_key.get((t["alpha"], t["beta"], t["gamma"]), {}).get("sweep_check", [])
        at = ", ".join(f"{r['phi']:g}: {r['rule_deviation']:+.0%}" for r in checked if r["phi"] > 1) or "-"
        rows.append([t["alpha"], t["beta"], t["gamma"], f"{t['nominal_ratio']:.3f}", f"{t['realized_ratio']:.3f}",
                     f"{t['realized_ratio'] / t['nominal_ratio'] - 1:+.1%}", at, t["epochs"], t["state"],
                     _pct(t["accuracy"])])
    swept = (f"; {cand['sweep_rejected']} of those dropped because step 2 could not compare them at equal cost at "
             f"every phi (compound within ±{RULE_TOLERANCE:.0%} of 2^phi, every single dimension within "
             f"±{MATCH_TOLERANCE:.0%} of it)" if cand["sweep_phis"] else "")
    paragraphs = [
        f"Grid step {plan.grid_step}: {cand['grid_points']} points; {cand['nominal_feasible']} with "
        f"alpha*beta^2*gamma^2 within 2 ± 0.1; {cand['realized_feasible']} whose built phi=1 model realizes 2 ± 0.1 "
        f"times the baseline's multiply-adds; {cand['both_feasible']} honest (both, and realized within 10% of "
        f"nominal: "
        f"{cand['off_nominal']} nominally feasible points realize farther away){swept}. {cand['distinct']} distinct "
        "architectures were trained.",
        *([grid_note] if grid_note else []),
        *search["warnings"],
        f"Each candidate trained up to {plan.search_epochs} epoch(s) on {plan.search_limit_train} images with "
        f"{plan.search_seeds} seed(s) (packed), selected on {plan.holdout} images held out of the training set (never "
        f"the test set), BatchNorm statistics re-estimated before every evaluation; successive halving used "
        f"{search['epochs_used']} of {search['epochs_exhaustive']} epochs.",
        (f"Best: alpha={search['best']['alpha']}, beta={search['best']['beta']}, gamma={search['best']['gamma']} "
         f"(held-out top-1 {_pct(search['best']['accuracy'])})." if search["best"] else "No trial completed."),
    ]
    return Section("Step 1: alpha, beta, gamma at phi = 1", paragraphs, [Table(
        ["alpha", "beta", "gamma", "nominal a*b^2*g^2", "realized x", "realized vs nominal", "phi=2,3 vs 2^phi",
         "epochs", "state", "held-out top-1"], rows)])


def _family_section() -> Section:
    return Section("The EfficientNet family: official coefficients and the formula", [
        "Measured by compscale on the meta device. The released B1..B7 are not alpha^phi for integer phi, and ceil "
        "rounding makes the realized FLOPs ratio differ from the nominal (alpha*beta^2*gamma^2)^phi."],
        [Table(["model", "w", "d", "res", "params", "paper", "MACs", "paper"],
               [[r["model"], r["width_multiplier"] if "width_multiplier" in r else r["width"],
                 r["depth_multiplier"] if "depth_multiplier" in r else r["depth"], r["resolution"],
                 f"{r['params'] / 1e6:.2f}M", f"{r['paper_params'] / 1e6:.1f}M", f"{r['macs'] / 1e9:.3f}G",
                 f"{r['paper_macs'] / 1e9:.2f}B"] for r in official_rows()]),
         Table(["phi", "d", "w", "res", "blocks", "MACs", "nominal", "realized"],
               [[f"{r['phi']:g}", f"{r['depth_multiplier']:.3f}", f"{r['width_multiplier']:.3f}", r["resolution"],
                 r["blocks"], f"{r['macs'] / 1e9:.3f}G",
                 f"{r.get('nominal_macs_ratio', r.get('nominal_ratio')):.2f}x",
                 f"{r.get('macs_ratio', r.get('realized_ratio')):.2f}x"] for r in formula_rows()])])


def _fragments(folder: Path) -> list[Section]:
    """Studies run into the same folder (cam-study, families, cardinality) add their own fragments."""
    sections = []
    for fragment in sorted(folder.glob("*/section.md")):
        # The fragment's images are relative to its own folder.
        text = re.sub(r"\]\((?!https?:|/)([^)]+)\)", lambda m: f"]({fragment.parent.name}/{m.group(1)})",
                      fragment.read_text())
        sections.append(Section(fragment.parent.name, markdown=text))
    return sections
