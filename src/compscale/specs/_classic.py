"""Helpers shared by the specs of the seed table's comparison architectures (no torch)."""

from __future__ import annotations

import dataclasses
from typing import Any

from compscale.errors import UserError
from compscale.scaling import MIN_RESOLUTION, ScaleFactors, round_repeats
from compscale.specs import checks


def positive_int(name: str, value: Any, hi: int = checks.MAX_CHANNELS) -> None:
    if not checks.is_int(value) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {checks.echo(value)}")
    if value > hi:
        raise UserError(f"{name} must be a positive integer of at most {hi:,}, got {value:,}")


def repeat_counts(spec: Any, name: str, n: int | None = None, what: str = "", weight: int = 1) -> tuple[int, ...]:
    """The field ``name`` of ``spec``: a list of ``n`` (any number when None) block counts, each in [1,
    MAX_BLOCKS] and at most MAX_BLOCKS in all, each block counting ``weight`` times (:func:`checks.blocks`);
    ``what`` says what the counts are, for the message."""
    counts = getattr(spec, name)
    if not isinstance(counts, tuple) or (n is not None and len(counts) != n):
        size = f"{n} " if n is not None else ""
        raise UserError(f"a {spec.family} spec needs {size}{name} counts{what}, got {checks.echo(counts)}")
    for r in counts:
        positive_int(name, r, checks.MAX_BLOCKS)
    checks.blocks(spec.family, sum(counts), weight)
    return counts


def check_common(spec: Any) -> None:
    """The checks every comparison spec shares: resolution, width multiplier, classes, input channels,
    dropout, BatchNorm eps; lists (from JSON) → tuples."""
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if isinstance(value, list):
            object.__setattr__(spec, f.name, tuple(value))
    checks.resolution(spec.resolution, getattr(spec, "min_resolution", MIN_RESOLUTION))
    if hasattr(spec, "width"):
        width = spec.width
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
            raise UserError(f"width must be a positive number, got {checks.echo(width)}")
        object.__setattr__(spec, "width", checks.number("width", width, 0.0, checks.MAX_WIDTH, lo_open=True))
    checks.common(spec, check_resolution=False)


def scale_channels(channels: int, width: float) -> int:
    """c·w rounded to the nearest integer (≥ 1); exactly c at w = 1, so the released models are untouched."""
    return channels if width == 1.0 else max(1, int(round(channels * width)))


def scale_repeats(repeats: tuple[int, ...], factors: ScaleFactors, depth_rounding: str) -> tuple[int, ...]:
    return tuple(round_repeats(r, factors.depth, depth_rounding) for r in repeats)
