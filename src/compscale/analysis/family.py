"""The EfficientNet family table: official B0..B7 measured against the paper, and the formula mode beside it.

The released B1..B7 are not α^φ for integer φ (B1 ≈ φ 0.5, B2 ≈ φ 1, B7 ≈ φ 7); and because repeats are
rounded up, the *realized* FLOPs ratio at φ = 1 with 1.2/1.1/1.15 is ≈2.6x, not 2x. This table shows both.
"""

from __future__ import annotations

from typing import Any

from compscale.compound import realized_cost, scale
from compscale.models import model_spec
from compscale.paper import EFFICIENTNET_PAPER
from compscale.scaling import EFFICIENTNET_COEFFICIENTS, CompoundScaling


def official_rows() -> list[dict[str, Any]]:
    """One row per released variant: coefficients, measured params and multiply-adds, the paper's, deviation."""
    base_macs = realized_cost(model_spec("efficientnet_b0")).macs
    rows = []
    for variant, coeff in EFFICIENTNET_COEFFICIENTS.items():
        spec = model_spec(f"efficientnet_{variant}")
        cost = realized_cost(spec)
        macs, params = cost.macs, cost.params
        paper = EFFICIENTNET_PAPER[variant]
        rows.append(
            {
                "model": f"efficientnet_{variant}",
                "width": coeff.width,
                "depth": coeff.depth,
                "resolution": coeff.resolution,
                "dropout": coeff.dropout,
                "blocks": sum(s.repeats for s in spec.stages),
                "params": params,
                "macs": macs,
                "macs_ratio": macs / base_macs,
                "paper_params": paper.params,
                "paper_macs": paper.macs,
                "params_dev": params / paper.params - 1,
                "macs_dev": macs / paper.macs - 1,
            }
        )
    return rows


def formula_rows(phis: tuple[float, ...] = (0, 0.5, 1, 2, 3, 4, 5, 6, 7),
                 scaling: CompoundScaling | None = None) -> list[dict[str, Any]]:
    """B0 scaled by φ with α, β, γ (the paper's 1.2/1.1/1.15 by default): nominal vs realized FLOPs ratio."""
    rows = []
    for phi in phis:
        s = scale("efficientnet_b0", phi, scaling)
        rows.append(
            {
                "model": "efficientnet_b0",  # scaled by phi
                "phi": phi,
                "depth_multiplier": s.factors.depth,
                "width_multiplier": s.factors.width,
                "resolution": s.spec.resolution,
                "blocks": sum(st.repeats for st in s.spec.stages),
                "params": s.params,
                "macs": s.macs,
                "nominal_ratio": s.scaling.nominal_flops_ratio(phi),
                "realized_ratio": s.macs_ratio,
            }
        )
    return rows
