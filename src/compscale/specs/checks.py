"""The checks every spec field passes when a spec is made — from a file, from weights' metadata, through the
API or ``replace()``: its type (an integer is not a string, a bool or a float), its range, a finite value, and
absolute structural limits that keep building a model bounded, even on the meta device.

The limits are not the size ceiling (:func:`compscale.compound.check_model_size` bounds parameters and
multiply-adds before anything is built); they bound what a spec can *describe* so that counting it (the meta
profile of a family without an analytic ``complexity()``) always finishes: no layer wider than
:data:`MAX_CHANNELS`, no network deeper than :data:`MAX_BLOCKS` blocks, no input side beyond
:data:`~compscale.scaling.MAX_RESOLUTION`. Every check is a few comparisons: step 1 builds thousands of specs.

Each failure is one line naming the field and the value given (cut by :func:`compscale.errors.shorten`).
"""

from __future__ import annotations

import math
from typing import Any

from compscale.errors import UserError, echo
from compscale.scaling import MAX_RESOLUTION, MIN_RESOLUTION

#: The most channels (or classes, or input planes) any one layer of a spec may have.
MAX_CHANNELS = 1 << 20
#: The most blocks (dense layers, bottlenecks, modules) one network may have in total; a family whose block is
#: heavier to build counts each as several (NASNet-style cells as 16: counting a spec on the meta device costs
#: about 10 ms per bottleneck and 200 ms per cell, so any valid spec is counted in seconds).
MAX_BLOCKS = 2_000
#: The largest convolution kernel side.
MAX_KERNEL = 255
#: The largest expansion ratio of an inverted bottleneck, or bottleneck expansion.
MAX_EXPAND = 256
#: The largest width multiplier of the families that keep one (Inception, PolyNet): 1000 × the released widths.
MAX_WIDTH = 1000.0

__all__ = ["echo"]  # re-exported: the families' messages echo values through it


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(name: str, value: Any, lo: int = 1, hi: int = MAX_CHANNELS) -> int:
    """``value`` if it is an integer (not a bool, not a float) in [lo, hi]; else one line naming ``name``."""
    if not is_int(value) or not lo <= value <= hi:
        raise UserError(f"{name} must be an integer from {lo} to {hi:,}, got {echo(value)}")
    return value


def number(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a float if it is a finite number (int or float, not a bool or a string) in the range
    (``lo_open``/``hi_open``: excluding that end); else one line naming ``name``."""
    number = math.nan
    if not isinstance(value, bool) and isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range
            pass
    if not (math.isfinite(number) and (number > lo if lo_open else number >= lo)
            and (number < hi if hi_open else number <= hi)):
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise UserError(f"{name} must be a finite number in {left}{lo:g}, {hi:g}{right}, got {echo(value)}")
    return number


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{name} must be true or false, got {echo(value)}")
    return value


def choice(name: str, value: Any, options: Any) -> str:
    if not isinstance(value, str) or value not in options:
        raise UserError(f"unknown {name} {echo(value)}; use one of {', '.join(options)}")
    return value


def sequence(name: str, value: Any, length: int | None = None) -> tuple:
    """``value`` as a tuple if it is a list or tuple (of ``length`` items when given)."""
    if not isinstance(value, (list, tuple)):
        raise UserError(f"{name} must be a list, got {echo(value)}")
    if length is not None and len(value) != length:
        raise UserError(f"{name} must have {length} items, got {len(value)}: {echo(value)}")
    return tuple(value)


def integers(name: str, value: Any, lo: int = 1, hi: int = MAX_CHANNELS, length: int | None = None) -> tuple[int, ...]:
    """A list of integers in [lo, hi], as a tuple."""
    items = sequence(name, value, length)
    for i, item in enumerate(items):
        integer(f"{name}[{i}]", item, lo, hi)
    return items


def resolution(value: Any, lo: int = MIN_RESOLUTION, what: str = "resolution") -> int:
    """An input side in [lo, MAX_RESOLUTION]."""
    if not is_int(value) or value < lo:
        raise UserError(f"{what} must be an integer >= {lo}, got {echo(value)}")
    if value > MAX_RESOLUTION:
        raise UserError(f"{what} must be at most {MAX_RESOLUTION:,} pixels, got {echo(value)}")
    return value


def blocks(family: str, total: int, weight: int = 1, what: str = "blocks") -> None:
    """The network's total number of blocks, each counting ``weight`` times, is within :data:`MAX_BLOCKS`."""
    if total * weight > MAX_BLOCKS:
        raise UserError(f"a {family} spec of {total:,} {what} is too deep (at most {MAX_BLOCKS // weight:,} in all)")


def stage_rows(spec: Any, stage_type: type, what: str) -> tuple:
    """A spec's ``stages``: a non-empty sequence of ``stage_type`` rows (``what`` describes one in the message),
    stored back as a tuple, their blocks bounded; returns them."""
    stages = sequence("stages", spec.stages)
    if not stages:
        raise UserError(f"stages: the {spec.family} spec needs at least one stage, got none")
    for i, stage in enumerate(stages):
        if not isinstance(stage, stage_type):
            raise UserError(f"stages[{i}] must be {what}, got {echo(stage)}")
    if stages is not spec.stages:
        object.__setattr__(spec, "stages", stages)
    blocks(spec.family, sum(s.repeats for s in stages))
    return stages


def expanded_width(stem_channels: int, stages: Any) -> None:
    """Refuse a network whose widest expanded layer (widest channels × largest expansion) exceeds
    :data:`MAX_CHANNELS`, before anything is built."""
    widest = max([stem_channels] + [s.out_channels for s in stages])
    if widest * max(s.expand_ratio for s in stages) > MAX_CHANNELS:
        raise UserError(f"the expanded channels exceed {MAX_CHANNELS:,}: the network is too wide")


def common(spec: Any, min_resolution: int = MIN_RESOLUTION, check_resolution: bool = True) -> None:
    """The fields every family has (resolution, classes, input channels, dropout), and, when the family has
    them, BatchNorm's eps and momentum and the stochastic depth rate. Floats given as ints become floats."""
    if check_resolution:
        resolution(spec.resolution, min_resolution)
    integer("num_classes", spec.num_classes)
    integer("in_chans", spec.in_chans)
    set_ = object.__setattr__
    set_(spec, "dropout", number("dropout", spec.dropout, 0.0, 1.0, hi_open=True))
    if hasattr(spec, "drop_path_rate"):
        set_(spec, "drop_path_rate", number("drop_path_rate", spec.drop_path_rate, 0.0, 1.0, hi_open=True))
    if hasattr(spec, "bn_eps"):
        set_(spec, "bn_eps", number("bn_eps", spec.bn_eps, 0.0, 1.0, lo_open=True))
    if hasattr(spec, "bn_momentum"):
        set_(spec, "bn_momentum", number("bn_momentum", spec.bn_momentum, 0.0, 1.0))
