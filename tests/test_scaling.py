"""The scaling rule: rounding exactly as the official code, the constraint, and the budget solver."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compscale.errors import UserError
from compscale.scaling import (
    EFFICIENTNET_COEFFICIENTS,
    CompoundScaling,
    round_filters,
    round_repeats,
    round_resolution,
    solve_phi,
)


@pytest.mark.parametrize(
    "channels, width, expected",
    [
        (32, 1.0, 32), (32, 1.1, 32), (40, 1.1, 48), (1280, 1.1, 1408), (1280, 1.2, 1536), (32, 1.4, 48),
        (112, 1.4, 160), (1280, 2.0, 2560), (16, 0.25, 8), (24, 1.2, 32), (80, 1.6, 128),
        # the 90 % rule: 35.6 rounds to 32, which is < 0.9 * 35.6, so one more 8 is added
        (356, 0.1, 40), (350, 0.1, 32),
    ],
)
def test_round_filters_matches_official(channels, width, expected):
    assert round_filters(channels, width) == expected


def test_round_repeats_ceil_and_round():
    assert [round_repeats(r, 1.1) for r in (1, 2, 2, 3, 3, 4, 1)] == [2, 3, 3, 4, 4, 5, 2]  # B1: 23 blocks
    assert round_repeats(10, 1.1) == 11  # 1.1 * 10 is 11.000000000000002 in floating point
    assert round_repeats(3, 1.2, "round") == 4 and round_repeats(2, 1.2, "round") == 2
    assert round_repeats(1, 0.1) == 1  # never fewer than one block
    with pytest.raises(UserError):
        round_repeats(3, 1.2, "floor")


def test_round_resolution_floor():
    assert round_resolution(224, 1.15) == 258
    assert round_resolution(224, 0.01) == 32


@given(st.integers(1, 2048), st.floats(0.05, 8.0))
def test_round_filters_properties(channels, width):
    new = round_filters(channels, width)
    assert new % 8 == 0 and new >= 8
    assert new >= 0.9 * channels * width
    assert new <= channels * width + 8 or new == 8


@given(st.integers(1, 512), st.floats(0.05, 4.0), st.floats(0.0, 1.0))
def test_round_filters_monotone_in_width(channels, width, delta):
    assert round_filters(channels, width) <= round_filters(channels, width + delta)


def test_paper_coefficients_and_factors():
    s = CompoundScaling()
    assert (s.alpha, s.beta, s.gamma) == (1.2, 1.1, 1.15)
    assert s.flops_factor == pytest.approx(1.2 * 1.1**2 * 1.15**2)
    f = s.factors(2)
    assert (f.depth, f.width, f.resolution_mult) == pytest.approx((1.44, 1.21, 1.3225))
    assert s.factors(-1).depth == pytest.approx(1 / 1.2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha": 0.9}, "alpha must be >= 1"),
        ({"beta": 0.5}, "beta must be >= 1"),
        ({"alpha": 1.5}, "not within 2"),
        ({"alpha": float("nan")}, "finite"),
        ({"gamma": "x"}, "must be a number"),
        ({"tolerance": 0}, "tolerance must be > 0"),
    ],
)
def test_invalid_coefficients(kwargs, message):
    with pytest.raises(UserError, match=message):
        CompoundScaling(**kwargs)


def test_constraint_can_be_relaxed_or_turned_off():
    assert CompoundScaling(alpha=1.5, tolerance=0.5).flops_factor == pytest.approx(2.4003, abs=1e-4)
    assert CompoundScaling(alpha=3.0, enforce_constraint=False).alpha == 3.0
    with pytest.raises(UserError):
        CompoundScaling(alpha=0.5, enforce_constraint=False)  # >= 1 always holds


def test_phi_must_be_finite():
    with pytest.raises(UserError):
        CompoundScaling().factors(float("inf"))


def test_official_table():
    assert EFFICIENTNET_COEFFICIENTS["b7"].width == 2.0 and EFFICIENTNET_COEFFICIENTS["b7"].depth == 3.1
    assert [c.resolution for c in EFFICIENTNET_COEFFICIENTS.values()] == [224, 240, 260, 300, 380, 456, 528, 600]


# --- the budget solver on step functions (fast); the real realized cost is tested in test_compound.py ---

step_functions = st.lists(st.floats(-4, 8, allow_nan=False), min_size=1, max_size=12).map(sorted)


@given(step_functions, st.floats(1, 20))
def test_solver_fits_and_next_step_does_not(edges, budget):
    def cost(phi):  # a non-decreasing step function: one unit per edge passed
        return (1 + sum(1 for e in edges if phi >= e),)

    sol = solve_phi(cost, (budget,), lo=-8, hi=16, step=1e-3)
    assert cost(sol.phi)[0] <= budget
    if sol.phi < 16:
        assert cost(sol.phi + 1e-3)[0] > budget


def test_solver_with_two_budgets_takes_the_tighter():
    sol = solve_phi(lambda p: (10 * p, p), (50.0, 3.0), lo=0, hi=10, step=1e-4)
    assert sol.phi == pytest.approx(3.0, abs=1e-3) and sol.cost[1] <= 3.0


def test_solver_errors():
    with pytest.raises(UserError, match="give a budget"):
        solve_phi(lambda p: (p,), (None,))
    with pytest.raises(UserError, match="positive"):
        solve_phi(lambda p: (p,), (-1.0,))
    with pytest.raises(UserError, match="below the smallest"):
        solve_phi(lambda p: (math.exp(p),), (1e-9,), lo=-8)
