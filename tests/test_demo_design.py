"""The demo as an experiment (issue 16): a baseline on which α, β, γ and φ — not the rounding — decide the models,
honest step-1 candidates, step 2 matched within ±5 % with no run shared between two φ, the paired verdict over
seeds, resuming only with the same settings, and a cost-weighted ETA. Pure counting except where noted."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compscale import create_model, profile
from compscale.analysis.demo import FULL, QUICK, demo_baseline
from compscale.compound import realized_cost
from compscale.errors import UserError
from compscale.scaling import CompoundScaling, ScaleFactors, round_filters, round_resolution
from compscale.search.candidates import RATIO_TOLERANCE, enumerate_candidates
from compscale.search.step2 import MATCH_TOLERANCE, RULE_TOLERANCE, compare, plan_sweep, sweep_jobs
from compscale.specs import EfficientNetSpec, MBConvStage
from compscale.stats import NO_NOISE, at_chance, paired_gap, t_cdf, t_quantile

BASE = demo_baseline()
PAPER = (1.2, 1.1, 1.15)


def _ratio(base, coefficients, phi):
    rule = CompoundScaling(*coefficients, enforce_constraint=False)
    return realized_cost(base.scaled(rule.factors(phi))).macs / realized_cost(base).macs


@pytest.fixture(scope="module")
def kept():
    """The candidates the full demo's step 1 keeps (honest at phi = 1, comparable at equal cost at every phi)."""
    phis = tuple(p for p in FULL.phis if p > 0)
    return enumerate_candidates(BASE, step=FULL.grid_step, sweep_phis=phis, sweep_tolerance=RULE_TOLERANCE,
                                match_tolerance=MATCH_TOLERANCE)


# --- the baseline -----------------------------------------------------------------------------------------------


def test_baseline_is_fine_grained_and_released_models_keep_their_defaults():
    assert BASE.stem_stride == 1 and BASE.divisor == 1 and BASE.resolution == 28 and BASE.in_chans == 1
    assert all(s.repeats >= 2 for s in BASE.stages), "every stage depth scales has at least two blocks"
    assert not BASE.fix_first_last_depth
    assert EfficientNetSpec().stem_stride == 2 and EfficientNetSpec().divisor == 8
    cost = realized_cost(BASE)
    assert 0.5e6 < cost.macs < 1.0e6 and cost.params < 50_000


def test_round_filters_divisor():
    # divisor 8: the official rounding (nearest multiple of 8, never 10 % below, at least 8)
    assert [round_filters(c, 1.1) for c in (16, 24, 32, 40, 320, 1280)] == [16, 24, 32, 48, 352, 1408]
    assert round_filters(16, 0.25) == 8 and round_filters(24, 1.3) == 32
    # divisor 1: the nearest channel count; 2: the nearest even one
    assert [round_filters(c, 1.1, 1) for c in (8, 12, 16, 24)] == [9, 13, 18, 26]
    assert [round_filters(c, 1.1, 2) for c in (8, 12, 16, 24)] == [8, 14, 18, 26]
    assert BASE.scaled(ScaleFactors(width=1.1)).stem_channels == 9  # the spec's divisor is honoured


def test_resolution_floor_is_the_baselines_own_side_below_32():
    assert round_resolution(28, 1.0) == 28 and round_resolution(28, 1.15) == 32 and round_resolution(224, 0.01) == 32
    assert round_resolution(28, 0.5) == 28  # shrinking stops at the baseline's own side
    with pytest.raises(UserError, match=">= 16"):
        BASE.replace(resolution=15)
    with pytest.raises(UserError, match=">= 32"):
        EfficientNetSpec(resolution=28)  # a stride-2 stem still needs 32


def test_paper_coefficients_realize_their_nominal_cost_at_phi_1():
    nominal = 1.2 * 1.1**2 * 1.15**2
    assert abs(_ratio(BASE, PAPER, 1) / nominal - 1) <= RATIO_TOLERANCE
    # on B0 (stride-2 stem, 8-channel rounding, one-block stages) the same coefficients realize 2.57x
    assert _ratio(EfficientNetSpec(), PAPER, 1) / nominal - 1 > 0.3


def test_every_kept_candidate_is_honest_at_every_phi(kept):
    assert len(kept.candidates) >= 5
    assert sum(1 for c in kept.candidates if sum(v > 1 for v in (c.alpha, c.beta, c.gamma)) >= 2) >= 3
    for c in kept.candidates:
        coefficients = (c.alpha, c.beta, c.gamma)
        nominal = c.alpha * c.beta**2 * c.gamma**2
        assert abs(nominal - 2) <= 0.1 and abs(c.realized_ratio - 2) <= 0.1
        assert abs(_ratio(BASE, coefficients, 1) / nominal - 1) <= RATIO_TOLERANCE
        for phi in (1, 2, 3):
            assert abs(_ratio(BASE, coefficients, phi) / 2**phi - 1) <= RULE_TOLERANCE, (coefficients, phi)


def test_sweep_of_a_kept_candidate_is_matched_and_shares_no_run(kept):
    for c in kept.candidates[:: max(1, len(kept.candidates) // 3)]:
        points = plan_sweep(BASE, CompoundScaling(c.alpha, c.beta, c.gamma, enforce_constraint=False), FULL.phis)
        assert [(p.strategy, p.phi) for p in points][:5] == [("baseline", 0.0), ("compound", 1.0), ("depth", 1.0),
                                                             ("width", 1.0), ("resolution", 1.0)]
        assert len(points) == 1 + 4 * 3
        for p in points:
            assert p.matched and abs(p.deviation) <= MATCH_TOLERANCE, p
        phis_of: dict = {}
        for p in points:
            phis_of.setdefault(p.spec, set()).add(p.phi)
        assert all(len(phis) == 1 for phis in phis_of.values()), "no network is trained at two phi"


@settings(max_examples=25, deadline=None)
@given(stem_stride=st.sampled_from([1, 2]), divisor=st.sampled_from([1, 2, 4, 8]),
       width=st.floats(1.0, 2.0), depth=st.floats(1.0, 2.5), resolution=st.integers(28, 60),
       padding=st.sampled_from(["symmetric", "same"]))
def test_complexity_equals_the_meta_profile_with_the_new_fields(stem_stride, divisor, width, depth, resolution,
                                                                 padding):
    base = BASE.replace(stem_stride=stem_stride, divisor=divisor, padding=padding,
                        resolution=max(resolution, 32 if stem_stride == 2 else 16))
    spec = base.scaled(ScaleFactors(depth=depth, width=width))
    with torch.device("meta"):
        p = profile(create_model(spec))
    c = spec.complexity()
    assert (c.macs, c.params, c.activations) == (p.macs, p.params, p.activations)


def test_stride_one_stem_model_runs_and_reports_its_feature_strides():
    model = create_model(BASE).eval()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 4, 8]


# --- step 1: honest candidates, and a warning for a coarse baseline -----------------------------------------------


def test_coarse_baseline_gets_a_warning_that_names_the_cause():
    coarse = EfficientNetSpec(drop_path_rate=0.0, in_chans=1, num_classes=10).scaled(
        ScaleFactors(depth=0.25, width=0.25, resolution=32))  # the old demo baseline: one block per stage
    report = enumerate_candidates(coarse)
    assert report.warning and "too coarse" in report.warning and report.off_nominal > report.nominal_feasible / 2
    assert any(dim in report.warning for dim in ("depth", "width", "resolution"))
    for c in report.candidates:  # what it keeps is still honest
        assert abs(c.nominal_ratio - 2) <= 0.1 and abs(c.realized_ratio - 2) <= 0.1
        assert abs(c.realized_ratio / c.nominal_ratio - 1) <= RATIO_TOLERANCE
    assert enumerate_candidates(BASE, step=0.1).warning is None
    row = report.as_dict()["candidates"][0]
    assert {"nominal_ratio", "realized_ratio"} <= set(row)


def test_step_one_rejects_what_only_rounding_makes_feasible():
    report = enumerate_candidates("efficientnet_b0")
    assert report.realized_feasible == 45 and report.both_feasible == 5 and len(report.candidates) == 4
    for c in report.candidates:
        assert abs(c.nominal_ratio - 2) <= 0.1


# --- step 2: unmatched points are reported, never trained or borrowed -----------------------------------------------


def test_an_unmatchable_dimension_is_reported_not_trained():
    coarse = EfficientNetSpec(stages=(MBConvStage(1, 3, 1, 16, 1), MBConvStage(6, 3, 2, 24, 1)), stem_channels=16,
                              head_channels=64, resolution=32, drop_path_rate=0.0)
    points = plan_sweep(coarse, CompoundScaling(1.2, 1.1, 1.15), (0, 1, 2))
    unmatched = [p for p in points if not p.matched]
    assert unmatched, "one-block stages cannot match 2x by depth alone within 5 %"
    for p in unmatched:
        assert p.note and (abs(p.deviation) > MATCH_TOLERANCE or "same network" in p.note)
    from compscale.jobs.runner import RunSettings

    jobs = sweep_jobs(points, RunSettings(data="digits", out="unused", seeds=3))
    trained = {j.labels["point"] for j in jobs}
    assert trained == {i for i, p in enumerate(points) if p.matched}
    phis_of: dict = {}
    for i in trained:
        phis_of.setdefault(points[i].spec, set()).add(points[i].phi)
    assert all(len(phis) == 1 for phis in phis_of.values())


# --- the paired verdict -----------------------------------------------------------------------------------------


def test_student_t_matches_the_tables():
    assert t_quantile(0.975, 1) == pytest.approx(12.706204736, rel=1e-9)
    assert t_quantile(0.975, 2) == pytest.approx(4.302652730, rel=1e-9)
    assert t_quantile(0.975, 9) == pytest.approx(2.262157163, rel=1e-9)
    assert t_quantile(0.025, 4) == pytest.approx(-2.776445105, rel=1e-9)
    assert t_cdf(0.0, 3) == pytest.approx(0.5) and t_cdf(1.0, 1e6) == pytest.approx(0.841344746, rel=1e-6)
    scipy = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 30):
        for p in (0.6, 0.95, 0.995):
            assert t_quantile(p, df) == pytest.approx(scipy.t.ppf(p, df), rel=1e-9)


def test_paired_gap_readings():
    assert paired_gap([0.81], [0.79]).verdict == NO_NOISE
    won = paired_gap([0.82, 0.84, 0.83], [0.80, 0.81, 0.80])
    assert won.verdict == "won" and won.low > 0 and won.mean == pytest.approx(0.026666, abs=1e-5)
    assert paired_gap([0.80, 0.81, 0.80], [0.82, 0.84, 0.83]).verdict == "lost"
    tied = paired_gap([0.82, 0.78, 0.83], [0.80, 0.81, 0.80])
    assert tied.verdict == "tied" and tied.low < 0 < tied.high
    # Pairing removes the seed effect both models share: the same gaps, unpaired, would overlap.
    shared = paired_gap([0.70, 0.80, 0.90], [0.69, 0.785, 0.892])
    assert shared.verdict == "won"
    d = shared.as_dict()
    assert d["outcome"] == "won" and d["pairs"] == 3 and d["gap_low"] < d["gap"] < d["gap_high"]
    assert at_chance(0.11, 10) and at_chance(0.0, 10) and not at_chance(0.5, 10)


def _row(strategy, phi, accs, matched=True):
    return {"strategy": strategy, "phi": phi, "matched": matched, "note": None, "macs": 1, "macs_ratio": 2.0**phi,
            "rule_deviation": 0.0, "seed_order": list(range(len(accs))), "accuracies": accs,
            "accuracy_mean": sum(accs) / len(accs) if accs else None}


def test_one_seed_gives_no_verdict_and_chance_is_flagged():
    one = [_row("baseline", 0.0, [0.7]), _row("compound", 1.0, [0.60]), _row("width", 1.0, [0.80]),
           _row("depth", 1.0, [0.75])]
    v = compare(one, classes=10)
    assert v["wins"] == v["ties"] == v["losses"] == 0 and v["no_noise"] == 1
    assert v["summary"].startswith("no verdict") and "tied" not in v["summary"]
    assert v["comparisons"][0]["outcome"] == NO_NOISE and v["comparisons"][0]["best_single"] == "width"
    chance = [_row("baseline", 0.0, [0.1, 0.1]), _row("compound", 1.0, [0.1, 0.09]), _row("width", 1.0, [0.1, 0.1])]
    v = compare(chance, classes=10)
    assert v["summary"] == "no verdict: every model scored at chance" and any("chance" in w for w in v["warnings"])


def test_three_seeds_give_a_paired_interval_per_phi():
    rows = [_row("baseline", 0.0, [0.70, 0.72, 0.71])]
    for phi, lead in ((1.0, 0.02), (2.0, 0.0)):
        rows += [_row("compound", phi, [0.80 + lead, 0.84 + lead, 0.82 + lead]),
                 _row("width", phi, [0.80, 0.83, 0.82]), _row("depth", phi, [0.70, 0.74, 0.72]),
                 _row("resolution", phi, [0.70, 0.70, 0.71], matched=False)]
    v = compare(rows, classes=10)
    assert [c["outcome"] for c in v["comparisons"]] == ["won", "tied"]
    assert all(c["best_single"] == "width" for c in v["comparisons"])
    assert all(c["paired"]["pairs"] == 3 for c in v["comparisons"])
    assert all(o["strategy"] == "depth" for c in v["comparisons"] for o in c["others"])  # unmatched: not compared
    assert "won at 1, tied at 1" in v["summary"]


# --- the plan fits the budget the issue sets ----------------------------------------------------------------------


def test_full_and_quick_plans():
    assert FULL.seeds >= 3 and FULL.phis == (0.0, 1.0, 2.0, 3.0) and FULL.precise_bn > 0
    assert QUICK.seeds == 1 and QUICK.precise_bn > 0
    assert FULL.sweep_limit_train >= FULL.search_limit_train - FULL.holdout


# --- progress: a cost-weighted ETA ----------------------------------------------------------------------------------


def test_eta_weighs_work_by_cost(monkeypatch, capsys):
    from compscale.commands._util import JobProgress
    from compscale.progress import Event

    clock = iter([100.0, 110.0, 130.0])
    monkeypatch.setattr("time.monotonic", lambda: next(clock))
    progress = JobProgress("demo")
    progress(Event("start", "4 jobs", 0, 4, {"work": 100.0, "work_done": 0.0}))
    progress(Event("trial", "", 1, 4, {"strategy": "baseline", "state": "complete", "accuracy": 0.5,
                                       "work": 100.0, "work_done": 10.0}))  # 10 units in 10 s: 90 s left
    progress(Event("trial", "", 2, 4, {"strategy": "compound", "state": "complete", "accuracy": 0.6,
                                       "work": 100.0, "work_done": 60.0}))  # 60 units in 30 s: 20 s left
    err = capsys.readouterr().err.splitlines()
    assert err[1].endswith("ETA 1m30s") and err[2].endswith("ETA 0m20s")


def test_eta_waits_for_a_job_per_worker_and_stops_at_the_last(monkeypatch, capsys):
    """Two workers: when the first job ends the other is as far along, so no ETA until two have ended; none on
    the last line (pruned jobs never reach the study's full work)."""
    from compscale.commands._util import JobProgress
    from compscale.progress import Event

    clock = iter([100.0, 120.0])  # the start, then the second job's end: 40 units in 20 s, 60 left
    monkeypatch.setattr("time.monotonic", lambda: next(clock))
    progress = JobProgress("demo")
    progress(Event("start", "3 jobs", 0, 3, {"work": 100.0, "work_done": 0.0, "workers": 2}))
    for done, work_done in ((1, 10.0), (2, 40.0), (3, 60.0)):
        progress(Event("trial", "", done, 3, {"alpha": 1.0, "state": "pruned", "accuracy": 0.5, "work": 100.0,
                                              "work_done": work_done}))
    err = capsys.readouterr().err.splitlines()
    assert "ETA" not in err[1] and err[2].endswith("ETA 0m30s") and "ETA" not in err[3], err


# --- the demo's JSON keeps its promises (a tiny run) -------------------------------------------------------------


def test_demo_quick_says_it_has_no_noise_estimate(tmp_path, monkeypatch, capsys):
    from dataclasses import replace

    from compscale.analysis import demo
    from compscale.cli import main

    monkeypatch.setattr(demo, "QUICK", replace(QUICK, search_limit_train=300, holdout=100, sweep_limit_train=300,
                                               limit_test=100, sweep_epochs=1, grid_step=0.1, precise_bn=64))
    assert main(["demo", "--quick", "--data", "digits", "--workers", "1", "--threads", "1", "--out",
                 str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no verdict: one seed") and "no noise estimate" in out
    assert ": tied" not in out and ": won" not in out and ": lost" not in out
    summary = json.loads((tmp_path / "d" / "demo.json").read_text())
    checks = summary["checks"]
    assert checks["no_shared_runs"] and checks["all_matched"] and math.isfinite(checks["constraint"])
    assert "no noise estimate" in (tmp_path / "d" / "report.md").read_text()


# --- precise BatchNorm: on by default for `train`, what a study says for its jobs -----------------------------------


def test_train_reestimates_batchnorm_by_default_and_studies_keep_their_setting(tmp_path, capsys):
    import yaml

    from compscale.cli import main
    from compscale.jobs.runner import RunSettings
    from compscale.train.config import TrainConfig

    assert TrainConfig().precise_bn == 500 and RunSettings(data="digits", out="x").precise_bn == 0
    spec = tmp_path / "base.json"
    spec.write_text(BASE.to_json())
    small = ["--data", "digits", "--epochs", "1", "--batch-size", "32", "--limit-train", "100", "--limit-test", "50",
             "--threads", "1"]
    assert main(["train", str(spec), *small, "--out", str(tmp_path / "t")]) == 0
    assert yaml.safe_load((tmp_path / "t" / "config.yaml").read_text())["precise_bn"] == 500
    assert main(["sweep", "--base", str(spec), *small, "--phis", "0", "--out", str(tmp_path / "s"), "--json"]) == 0
    capsys.readouterr()
    configs = [yaml.safe_load(p.read_text()) for p in (tmp_path / "s").rglob("config.yaml")]
    assert configs and all(c["precise_bn"] == 0 for c in configs)  # off unless the study says --precise-bn
