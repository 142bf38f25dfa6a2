"""The base of the deploy layer's result records (lowest layer: imports nothing from compscale.deploy)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

__all__ = ["Record"]


class Record:
    """Mixin for a dataclass whose ``as_dict()`` is its fields, in order (what ``--json`` prints)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]
