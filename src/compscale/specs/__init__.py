"""Architecture specs: frozen dataclasses, one family per module, no torch."""

from compscale.specs.base import ModelSpec, spec_from_dict, spec_from_json
from compscale.specs.efficientnet import B0_STAGES, EfficientNetSpec, MBConvStage

__all__ = ["ModelSpec", "spec_from_dict", "spec_from_json", "EfficientNetSpec", "MBConvStage", "B0_STAGES"]
