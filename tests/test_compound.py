"""Compound scaling on the real architecture: realized cost, its monotonicity, and budget solving."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compscale import CompoundScaling, scale, scale_to_budget
from compscale.compound import realized_cost
from compscale.specs import EfficientNetSpec

# A small baseline keeps the meta-device counting fast while exercising the same rounding.
SMALL = EfficientNetSpec(resolution=64)


def test_phi_one_realized_ratio_is_not_two():
    s = scale("efficientnet_b0", 1.0)
    assert s.spec.total_blocks == 23  # ceil turns 16 blocks into 23
    assert s.spec.resolution == 258
    assert s.macs_ratio == pytest.approx(2.573, abs=0.005)
    assert s.scaling.nominal_flops_ratio(1.0) == pytest.approx(1.9203, abs=1e-4)


def test_phi_zero_is_the_baseline_and_negative_phi_shrinks_with_floors():
    assert scale("efficientnet_b0", 0).spec == scale("efficientnet_b0", 0).base
    tiny = scale("efficientnet_b0", -60)
    assert tiny.spec.resolution == 32
    assert all(s.repeats == 1 and s.out_channels == 8 for s in tiny.spec.stages)
    assert tiny.macs < scale("efficientnet_b0", -1).macs < scale("efficientnet_b0", 0).macs


@settings(max_examples=15, deadline=None)
@given(st.floats(-3, 4), st.floats(0.0, 1.5))
def test_realized_cost_monotone_in_phi(phi, delta):
    low = realized_cost(SMALL.scaled(CompoundScaling().factors(phi)))
    high = realized_cost(SMALL.scaled(CompoundScaling().factors(phi + delta)))
    assert low.macs <= high.macs and low.params <= high.params


@settings(max_examples=4, deadline=None)
@given(st.floats(2e7, 3e8))
def test_budget_solver_on_realized_cost(target):
    step = 1e-3
    result = scale_to_budget(SMALL, target_macs=target, step=step)
    assert result.macs <= target
    assert scale(SMALL, result.phi + step).macs > target


def test_budget_in_params_and_both():
    by_params = scale_to_budget("efficientnet_b0", target_params=10e6)
    assert by_params.params <= 10e6 < scale("efficientnet_b0", by_params.phi + 1e-3).params
    both = scale_to_budget("efficientnet_b0", target_macs=1e9, target_params=9e6)
    assert both.macs <= 1e9 and both.params <= 9e6
