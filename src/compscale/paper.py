"""The figures the papers report, kept apart from anything we measure so the two are never confused.

``SEED_TABLE`` is the EfficientNet paper's Table 2 as the seed document reproduces it ("FLOPs" there are
multiply-adds). ``group`` is the EfficientNet each row is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperRow:
    model: str
    top1: float
    top5: float
    params: int | None  # parameters
    macs: int | None  # multiply-adds ("FLOPs" in the paper)
    group: str  # the EfficientNet of the same accuracy group


def _r(model: str, top1: float, top5: float, params_m: float, macs_b: float | None, group: str) -> PaperRow:
    # Whole counts, as every count compscale prints (4.1 * 1e9 would print as 4099999999.9999995).
    return PaperRow(model, top1, top5, round(params_m * 1e6), None if macs_b is None else round(macs_b * 1e9), group)


SEED_TABLE: tuple[PaperRow, ...] = (
    _r("EfficientNet-B0", 77.1, 93.3, 5.3, 0.39, "B0"),
    _r("ResNet-50", 76.0, 93.0, 26, 4.1, "B0"),
    _r("DenseNet-169", 76.2, 93.2, 14, 3.5, "B0"),
    _r("EfficientNet-B1", 79.1, 94.4, 7.8, 0.70, "B1"),
    _r("ResNet-152", 77.8, 93.8, 60, 11, "B1"),
    _r("DenseNet-264", 77.9, 93.9, 34, 6.0, "B1"),
    _r("Inception-v3", 78.8, 94.4, 24, 5.7, "B1"),
    _r("Xception", 79.0, 94.5, 23, 8.4, "B1"),
    _r("EfficientNet-B2", 80.1, 94.9, 9.2, 1.0, "B2"),
    _r("Inception-v4", 80.0, 95.0, 48, 13, "B2"),
    _r("Inception-ResNet-v2", 80.1, 95.1, 56, 13, "B2"),
    _r("EfficientNet-B3", 81.6, 95.7, 12, 1.8, "B3"),
    _r("ResNeXt-101", 80.9, 95.6, 84, 32, "B3"),
    _r("PolyNet", 81.3, 95.8, 92, 35, "B3"),
    _r("EfficientNet-B4", 82.9, 96.4, 19, 4.2, "B4"),
    _r("SENet", 82.7, 96.2, 146, 42, "B4"),
    _r("NASNet-A", 82.7, 96.2, 89, 24, "B4"),
    _r("AmoebaNet-A", 82.8, 96.1, 87, 23, "B4"),
    _r("PNASNet", 82.9, 96.2, 86, 23, "B4"),
    _r("EfficientNet-B5", 83.6, 96.7, 30, 9.9, "B5"),
    _r("AmoebaNet-C", 83.5, 96.5, 155, 41, "B5"),
    _r("EfficientNet-B6", 84.0, 96.8, 43, 19, "B6"),
    _r("EfficientNet-B7", 84.3, 97.0, 66, 37, "B7"),
    _r("GPipe", 84.3, 97.0, 557, None, "B7"),
)

#: The paper's EfficientNet rows by variant ("b0".."b7").
EFFICIENTNET_PAPER: dict[str, PaperRow] = {
    row.group.lower(): row for row in SEED_TABLE if row.model.startswith("EfficientNet")
}
