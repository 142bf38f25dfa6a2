"""The spec every family shares: a frozen, JSON-serialisable description of one concrete architecture.

A spec says exactly which network a model is (its per-stage depth and width, its input resolution, its
head), so a trained model, a search trial or a report row can name its architecture. Specs import no torch:
the builder in :mod:`compscale.models` turns one into an ``nn.Module``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar

from compscale.errors import UserError, first_line, shorten
from compscale.scaling import ScaleFactors
from compscale.specs.checks import echo, sequence

_FAMILIES: dict[str, type["ModelSpec"]] = {}


@dataclass(frozen=True)
class Complexity:
    """Counts of one network at its resolution: multiply-adds, parameters, conv/linear output elements."""

    macs: int = 0
    params: int = 0
    activations: int = 0

    def __add__(self, other: "Complexity") -> "Complexity":
        return Complexity(self.macs + other.macs, self.params + other.params, self.activations + other.activations)


def conv_complexity(c_in: int, c_out: int, kernel: int, h_out: int, w_out: int, groups: int = 1,
                    bias: bool = False) -> Complexity:
    """A k×k convolution producing c_out × h_out × w_out: k²·(c_in/g)·c_out MACs per output position."""
    per_position = kernel * kernel * (c_in // groups) * c_out
    return Complexity(per_position * h_out * w_out, per_position + (c_out if bias else 0), c_out * h_out * w_out)


def linear_complexity(c_in: int, c_out: int, bias: bool = True) -> Complexity:
    return Complexity(c_in * c_out, c_in * c_out + (c_out if bias else 0), c_out)


def bn_complexity(channels: int) -> Complexity:
    """BatchNorm: 2·C affine parameters; its arithmetic is element-wise and not counted (as in the paper)."""
    return Complexity(0, 2 * channels, 0)


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Fields every family has. Subclasses add their own and implement :meth:`scaled`."""

    family: ClassVar[str] = ""
    #: Nested dataclass fields (name -> type of each element of a tuple), for :meth:`from_dict`.
    nested: ClassVar[dict[str, type]] = {}

    resolution: int
    num_classes: int = 1000
    in_chans: int = 3
    dropout: float = 0.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.family:
            _FAMILIES[cls.family] = cls

    def scaled(self, factors: ScaleFactors, depth_rounding: str = "ceil") -> "ModelSpec":
        """This spec taken as a baseline and scaled in depth, width and resolution."""
        raise NotImplementedError

    def complexity(self) -> "Complexity":
        """Exact (multiply-adds, params, activations) computed from the spec alone, pycls-style, when the
        family implements it (it must equal :func:`compscale.profile` of the built model)."""
        raise NotImplementedError

    def stage_table(self) -> list[dict[str, Any]]:
        """One row per stage (at least ``name``, ``repeats``, ``channels``), for reports and the CLI."""
        raise NotImplementedError

    def replace(self, **changes: Any) -> "ModelSpec":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {"family": self.family, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    @classmethod
    def _from_fields(cls, data: dict[str, Any]) -> "ModelSpec":
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - names, key=str)  # keys read from YAML need not be strings
        if unknown:
            raise UserError(shorten(f"unknown field(s) for a {cls.family} spec: {', '.join(map(echo, unknown))}"))
        values = dict(data)
        for name, item_type in cls.nested.items():
            if name in values:
                values[name] = _nested(name, values[name], item_type)
        try:
            return cls(**values)
        except TypeError as err:
            raise UserError(f"invalid {cls.family} spec: {first_line(err)}") from None


def _nested(name: str, items: Any, item_type: type) -> tuple:
    """A list of mappings (JSON/YAML) as a tuple of ``item_type`` (e.g. the stages), each field checked."""
    fields = [f.name for f in dataclasses.fields(item_type)]
    out = []
    for i, item in enumerate(sequence(name, items)):
        if isinstance(item, item_type):
            out.append(item)
            continue
        if not isinstance(item, dict):
            raise UserError(f"{name}[{i}] must be a mapping of {', '.join(fields)}, got {echo(item)}")
        unknown = sorted(set(item) - set(fields), key=str)
        missing = [f for f in fields if f not in item]
        if unknown or missing:
            what = f"unknown field {echo(unknown[0])}" if unknown else f"missing field {missing[0]!r}"
            raise UserError(f"{name}[{i}]: {what} (a stage has {', '.join(fields)})")
        try:
            out.append(item_type(**item))
        except UserError as err:
            raise UserError(f"{name}[{i}]: {err}") from None
    return tuple(out)


def spec_from_dict(data: dict[str, Any]) -> ModelSpec:
    """Rebuild a spec written by :meth:`ModelSpec.as_dict` (or read from JSON/YAML), every field checked."""
    if not isinstance(data, dict) or "family" not in data:
        raise UserError("a model spec must be a mapping with a 'family' key")
    values = dict(data)
    family = values.pop("family")
    if not isinstance(family, str) or family not in _FAMILIES:
        raise UserError(f"unknown model family {echo(family)}; known: {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[family]._from_fields(values)


def spec_from_json(text: str) -> ModelSpec:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, an int of 5,000 digits, nesting
        raise UserError(f"model spec is not valid JSON: {first_line(err)}") from None
    return spec_from_dict(data)
