"""Scaling to a measured latency budget (issue 19): the search over φ with an injected timer, the fresh-process
confirmation, the median's interval, early stopping, duration parsing, and the `latency`, `bench`, `pareto` and
`scale --target-latency` commands on tiny models (real timings of milliseconds, one thread)."""

from __future__ import annotations

import json
import math
import random
import statistics

import pytest

from compscale import UserError
from compscale.cli import main
from compscale.compound import scale, scale_to_budget
from compscale.deploy import latency as L
from compscale.deploy.latency import Latency, median_interval, prediction_bound, scale_to_latency, time_call
from conftest import tiny_spec, tiny_spec_file
from test_json_vocabulary import check_vocabulary

B0 = "efficientnet_b0"


def fake_timer(rel: float = 0.02, per_ms: float = 1e7, calls: list | None = None):
    """Latency from the realized multiply-adds (macs / per_ms ms), with an interval of ±``rel``."""

    def timer(spec, batch=1, threads=None, path="eager", budget_ms=None):
        from compscale.compound import realized_cost

        macs = realized_cost(spec).macs
        if calls is not None:
            calls.append(macs)
        ms = macs / per_ms
        return Latency(ms, ms * (1 - rel), ms * (1 + rel), 20, 0.05, 0.1, 0.0, 0.0, {"backend": "fake"})

    return timer


def fake_fresh(factor: float = 1.0, jitter: float = 0.01, log: list | None = None):
    """Fresh processes that measure ``factor`` times the fake timer's median, ±``jitter``."""

    def fresh(spec, batch=1, threads=None, path="eager", runs=3, progress=None):
        ms = fake_timer()(spec).median_ms * factor
        if log is not None:
            log.append(ms)
        return [Latency(ms * (1 + jitter * (i - 1)), ms, ms, 20, 0.05, 0.1) for i in range(runs)]

    return fresh


# --- the search ----------------------------------------------------------------------------------------


def test_the_largest_phi_that_fits_to_within_step():
    budget, step = 90.0, 0.05
    choice = scale_to_latency(B0, budget, timer=fake_timer(), confirm=0, step=step)
    lat = choice.latency
    assert lat.high_ms <= budget and lat.median_ms == pytest.approx(choice.macs / 1e7)
    # The fake latency fits exactly when macs * 1.02 / 1e7 <= budget: the multiply-add search's answer.
    by_macs = scale_to_budget(B0, target_macs=budget * 1e7 / 1.02, step=1e-3)
    assert by_macs.phi - step <= choice.phi <= by_macs.phi + 1e-9
    assert choice.next_phi is not None and choice.next_phi - choice.phi <= step + 1e-9
    assert choice.next_latency.fits(budget) is not True
    nxt = scale(B0, choice.phi + step)
    assert fake_timer()(nxt.spec).fits(budget) is not True  # φ + step misses
    assert not choice.within_noise  # ±2 %: the next model's interval lies wholly over the budget
    assert choice.timed <= 12  # every distinct architecture once: whole steps, then bisection


def test_undecided_intervals_count_as_misses_and_are_reported():
    budget = 90.0
    choice = scale_to_latency(B0, budget, timer=fake_timer(rel=0.3), confirm=0)
    assert choice.latency.high_ms <= budget  # the chosen one's whole interval is under the budget
    nl = choice.next_latency
    assert nl.fits(budget) is None and choice.within_noise  # the next one straddles it: a miss, reported
    lines = "\n".join(__import__("compscale.commands.deploy", fromlist=["x"]).latency_choice_lines(choice))
    assert "within the noise" in lines


def test_multiply_add_and_parameter_budgets_bound_phi_first():
    calls: list[int] = []
    choice = scale_to_latency(B0, 1e6, timer=fake_timer(calls=calls), confirm=0, target_macs="2x")
    limit = scale_to_budget(B0, target_macs="2x")
    assert choice.phi == pytest.approx(limit.phi) and choice.next_phi is None
    assert max(calls) <= limit.macs  # nothing over the multiply-add budget was timed
    calls.clear()
    choice = scale_to_latency(B0, 1e6, timer=fake_timer(calls=calls), confirm=0, target_params=6e6)
    assert choice.params <= 6e6 and choice.phi == pytest.approx(scale_to_budget(B0, target_params=6e6).phi)


def test_a_budget_below_the_smallest_model_is_one_line():
    with pytest.raises(UserError) as err:
        scale_to_latency(B0, 1e-4, timer=fake_timer(), confirm=0)
    msg = str(err.value)
    assert "\n" not in msg and "smallest model" in msg and "phi=-8" in msg


def test_negative_phi_when_the_baseline_is_too_slow():
    choice = scale_to_latency(B0, 20.0, timer=fake_timer(), confirm=0)
    assert choice.phi < 0 and choice.latency.high_ms <= 20.0


def test_fresh_processes_step_the_choice_down_until_their_bound_fits():
    budget, log = 90.0, []
    # Fresh processes run 10 % slower than the searching one: the first candidate is over, the second fits.
    choice = scale_to_latency(B0, budget, timer=fake_timer(), fresh=fake_fresh(1.10, log=log), confirm=3)
    plain = scale_to_latency(B0, budget, timer=fake_timer(), confirm=0)
    assert choice.confirmed and choice.rounds >= 2 and choice.phi < plain.phi
    assert choice.bound_ms <= budget and len(choice.fresh) == 3
    assert log[0] > budget * 0.98  # the first candidate's fresh medians: at or over the budget
    # The next φ fits this process's budget but not the room fresh processes need: within the noise, and said.
    assert choice.within_noise
    d = choice.as_dict()
    assert d["confirmed"] and d["latency_bound_ms"] == choice.bound_ms and d["next"]["phi"] == choice.next_phi
    check_vocabulary({"model": B0, **d}, "scale")


def test_fresh_processes_faster_than_this_one_put_the_next_phi_within_the_noise():
    # Fresh processes run the chosen model 20 % faster than the searching one (measured on this machine: the
    # searching process 53 ms, fresh ones 41-43 ms): the next φ misses here but may fit in a fresh process.
    budget = 90.0
    choice = scale_to_latency(B0, budget, timer=fake_timer(), fresh=fake_fresh(0.8, 0.005), confirm=3)
    assert choice.confirmed and choice.next_latency.low_ms > budget
    assert choice.next_fresh_low_ms < budget and choice.within_noise
    lines = "\n".join(__import__("compscale.commands.deploy", fromlist=["x"]).latency_choice_lines(choice))
    assert "within the noise of fresh processes" in lines and "0.80x" in lines
    # Fresh processes as fast as this one, hardly spread: the next φ's miss stands.
    same = scale_to_latency(B0, budget, timer=fake_timer(), fresh=fake_fresh(1.0, 0.0), confirm=3)
    assert same.next_fresh_low_ms > budget * 0.9


def test_a_quiet_machine_confirms_the_first_candidate():
    choice = scale_to_latency(B0, 60.0, timer=fake_timer(), fresh=fake_fresh(1.0, 0.005), confirm=3)
    assert choice.confirmed and choice.rounds == 1


def test_prediction_bound():
    # Medians that agree: the floor (2 %) and t(0.95, 2) = 2.92 set the room: exp(2.92 * 0.02 * sqrt(4/3)).
    assert prediction_bound([[10.0, 10.0, 10.0]]) == pytest.approx(10 * math.exp(2.919986 * 0.02 * math.sqrt(4 / 3)),
                                                                   rel=1e-4)
    wide, pooled = prediction_bound([[9.0, 10.0, 11.0]]), prediction_bound([[10.0, 10.0, 10.0]] * 3 + [[9.0, 10.0,
                                                                                                          11.0]])
    assert wide > pooled > 10.0  # pooled over rounds: more degrees of freedom, a tighter bound


# --- the timing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [6, 15, 40, 100])
def test_median_interval_covers_the_true_median(n):
    rng = random.Random(n)
    trials, hits = 2000, 0
    for _ in range(trials):  # skewed, like timings: lognormal, true median exp(0) = 1
        lo, hi = median_interval([rng.lognormvariate(0.0, 0.3) for _ in range(n)])
        hits += lo <= 1.0 <= hi
    assert 0.93 <= hits / trials <= 0.995


def test_time_call_stops_early_once_the_budget_is_decided():
    import time

    nap = lambda: time.sleep(0.002)  # noqa: E731
    far_over = time_call(nap, budget_ms=50.0, warmup=1, max_seconds=5)
    far_under = time_call(nap, budget_ms=0.1, warmup=1, max_seconds=5)
    assert far_over.samples == 6 and far_over.fits(50.0) is True
    assert far_under.samples == 6 and far_under.fits(0.1) is False
    assert far_over.low_ms <= far_over.median_ms <= far_over.high_ms and far_over.seconds < 1.0


def test_the_busy_note_when_the_load_is_high(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(L, "machine_load", lambda: 3.0)
    lat = time_call(lambda: None, warmup=1, max_seconds=0.1)
    assert lat.busy and "machine busy: load 3.0x the cores" in lat.note
    tiny = tiny_spec_file(tmp_path / "tiny.json")
    assert main(["latency", tiny, "--threads", "1", "--max-seconds", "0.3"]) == 0
    assert "machine busy: load 3.0x the cores" in capsys.readouterr().out
    assert main(["latency", tiny, "--threads", "1", "--max-seconds", "0.3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["busy"] is True and "load 3.0x" in out["latency_note"] and out["load_per_core"] == 3.0


# --- the commands ----------------------------------------------------------------------------------------


def test_durations_parse():
    from compscale.commands._util import duration_ms

    assert duration_ms("10ms") == 10.0 and duration_ms("0.01s") == pytest.approx(10.0)
    assert duration_ms("2.5ms") == 2.5 and duration_ms("500us") == pytest.approx(0.5)
    assert L.parse_duration(12) == 12.0


@pytest.mark.parametrize("argv", [["--target-latency=-1ms"], ["--target-latency", "abc"], ["--target-latency", "10"],
                                  ["--target-latency", "0ms"], ["--target-latency", "-1ms"],
                                  ["--phi", "1", "--batch", "2"]])
def test_bad_latency_budgets_are_one_line(capsys, argv):
    assert main(["scale", "--base", B0, *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and lines[0].startswith("compscale: error: ")


def test_scale_target_latency_command(monkeypatch, capsys):
    monkeypatch.setattr(L, "model_latency", fake_timer(rel=0.3))
    monkeypatch.setattr(L, "fresh_latency", fake_fresh(1.0))
    assert main(["scale", "--base", B0, "--target-latency", "60ms", "--threads", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    check_vocabulary(out, "scale")
    assert out["budget_ms"] == 60.0 and out["latency_high_ms"] <= 60.0 and out["confirmed"] is True
    assert out["within_noise"] is True and out["next"]["phi"] > out["phi"] and out["spec"]
    assert main(["scale", "--base", B0, "--target-latency", "0.06s", "--target-macs", "1.5x"]) == 0
    text = capsys.readouterr().out
    assert "latency budget 60 ms" in text and "fresh processes" in text and "prediction bound" in text


def test_a_spec_written_by_scale_target_latency_reads_back(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(L, "model_latency", fake_timer())
    monkeypatch.setattr(L, "fresh_latency", fake_fresh(1.0))
    assert main(["scale", "--base", B0, "--target-latency", "60ms", "--json"]) == 0
    out = capsys.readouterr().out
    (tmp_path / "chosen.json").write_text(out)
    from compscale.models import model_spec

    assert model_spec(str(tmp_path / "chosen.json")) == scale(B0, json.loads(out)["phi"]).spec


def test_latency_with_one_model_and_with_phi(tmp_path, capsys):
    tiny = tiny_spec_file(tmp_path / "tiny.json")
    assert main(["latency", tiny, "--threads", "1", "--max-seconds", "0.3", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    check_vocabulary(one, "latency")
    assert one["latency_low_ms"] <= one["latency_ms"] <= one["latency_high_ms"] and one["resolution"] == 32
    assert main(["latency", f"{tiny}@phi=1", "--threads", "1", "--max-seconds", "0.3", "--json"]) == 0
    at = json.loads(capsys.readouterr().out)
    assert at["model"] == f"{tiny}@phi=1" and at["macs"] > one["macs"]
    assert at["resolution"] == scale(tiny_spec(), 1).spec.resolution
    assert main(["latency", tiny, "--phi", "1", "--threads", "1", "--max-seconds", "0.3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["macs"] == at["macs"]
    assert main(["latency", "efficientnet_b0@phi=1", "--threads", "1", "--max-seconds", "0.2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["resolution"] == scale(B0, 1).spec.resolution
    assert main(["latency", tiny, "--threads", "1", "--max-seconds", "0.3"]) == 0
    text = capsys.readouterr().out
    assert "ms [" in text and "spread" in text


def test_bench_takes_phi_and_reports_the_interval(tmp_path, capsys):
    tiny = tiny_spec_file(tmp_path / "tiny.json")
    argv = ["bench", tiny, "--phi", "1", "--backend", "eager", "--repeats", "3", "--warmup", "1", "--threads", "1"]
    assert main([*argv, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    check_vocabulary(rows, "bench")
    row = rows[0]
    assert row["model"] == f"{tiny}@phi=1" and row["resolution"] == scale(tiny_spec(), 1).spec.resolution
    assert row["latency_low_ms"] <= row["latency_ms"] <= row["latency_high_ms"] and "latency_note" in row


def test_phi_references_are_refused_in_one_line(capsys):
    for ref in ("efficientnet_b0@phi=abc", "efficientnet_b0@phi=", "nosuchmodel@phi=1"):
        assert main(["latency", ref]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_pareto_writes_table_json_and_png(tmp_path, capsys):
    tiny = tiny_spec_file(tmp_path / "tiny.json")
    out = tmp_path / "p"
    argv = ["pareto", "--base", tiny, "--phis", "0", "1", "--no-best", "--threads", "1", "--max-seconds", "0.3",
            "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "eager ms [95% interval] spread" in text and "pareto.png" in text
    assert (out / "pareto.png").stat().st_size > 1000
    written = json.loads((out / "pareto.json").read_text())
    check_vocabulary(written, "pareto")
    rows = written["rows"]
    assert [r["phi"] for r in rows] == [0.0, 1.0] and all(r["backend"] == "eager" for r in rows)
    assert rows[1]["macs"] > rows[0]["macs"] and all(r["latency_ms"] > 0 for r in rows)
    assert written["official"] == []  # not a B0 baseline


def test_pareto_marks_the_released_models_for_b0(monkeypatch, tmp_path):
    from compscale.analysis import pareto

    timed = []

    def timer(spec, batch=1, threads=None, path="eager", max_seconds=5.0):
        timed.append(spec)
        return fake_timer()(spec)

    monkeypatch.setattr(L, "model_latency", timer)
    result = pareto.latency_pareto(B0, [0, 1], paths=("eager",))
    marks = {m["model"]: m for m in result["official"]}
    assert len(marks) == 8 and marks["efficientnet_b0"]["timed"] and not marks["efficientnet_b7"]["timed"]
    assert all(m["macs"] <= 1.1 * result["rows"][-1]["macs"] for m in marks.values() if m["timed"])
    assert len(timed) == len(set(timed))  # B0 and phi=0 are one architecture: timed once
    pareto.plot_pareto(result, tmp_path / "b0.png")
    assert (tmp_path / "b0.png").stat().st_size > 1000


def test_fresh_latency_runs_in_a_fresh_process():
    runs = L.fresh_latency(tiny_spec(), threads=1, runs=1, max_seconds=0.2)
    assert len(runs) == 1 and runs[0].median_ms > 0 and runs[0].low_ms <= runs[0].median_ms <= runs[0].high_ms


def test_scale_to_budget_with_a_latency_target():
    from compscale.deploy.latency import scale_to_budget as budget

    assert budget(B0, target_macs="2x").phi == pytest.approx(scale_to_budget(B0, target_macs="2x").phi)
    with pytest.raises(UserError):
        budget(B0)
    with pytest.raises(UserError):
        budget(B0, target_latency="abc")


def test_the_public_scale_to_budget_takes_a_latency_target(monkeypatch):
    import compscale

    monkeypatch.setattr(L, "model_latency", fake_timer())
    choice = compscale.scale_to_budget(B0, target_latency="60ms", confirm=0)
    assert choice.latency.high_ms <= 60 and statistics.median([choice.latency.median_ms]) <= 60
