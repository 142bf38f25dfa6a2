"""Helpers shared by the specs of the seed table's comparison architectures (no torch)."""

from __future__ import annotations

import dataclasses
from typing import Any

from compscale.errors import UserError
from compscale.scaling import MIN_RESOLUTION, ScaleFactors, round_repeats


def positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")


def check_common(spec: Any) -> None:
    """The checks every comparison spec shares: resolution, width multiplier; lists (from JSON) → tuples."""
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if isinstance(value, list):
            object.__setattr__(spec, f.name, tuple(value))
    positive_int("resolution", spec.resolution)
    if spec.resolution < MIN_RESOLUTION:
        raise UserError(f"resolution must be an integer >= {MIN_RESOLUTION}, got {spec.resolution}")
    width = getattr(spec, "width", 1.0)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise UserError(f"width must be a positive number, got {width!r}")


def scale_channels(channels: int, width: float) -> int:
    """c·w rounded to the nearest integer (≥ 1); exactly c at w = 1, so the released models are untouched."""
    return channels if width == 1.0 else max(1, int(round(channels * width)))


def scale_repeats(repeats: tuple[int, ...], factors: ScaleFactors, depth_rounding: str) -> tuple[int, ...]:
    return tuple(round_repeats(r, factors.depth, depth_rounding) for r in repeats)
