"""Architecture specs: frozen dataclasses, one family per module, no torch."""

from compscale.specs.base import ModelSpec, spec_from_dict, spec_from_json
from compscale.specs.efficientnet import B0_STAGES, EfficientNetSpec, MBConvStage
from compscale.specs.files import is_spec_file, read_spec_file
from compscale.specs.inception_resnet import InceptionResNetV2Spec
from compscale.specs.mobilenet import MobileNetSpec, MobileNetStage, mobilenet_v1_spec, mobilenet_v2_spec
from compscale.specs.resnet import ResNetSpec, ResNetStage, resnet_spec, resnet_stages

__all__ = ["ModelSpec", "spec_from_dict", "spec_from_json", "is_spec_file", "read_spec_file", "EfficientNetSpec",
           "MBConvStage", "B0_STAGES"]
__all__ += ["ResNetSpec", "ResNetStage", "resnet_spec", "resnet_stages", "InceptionResNetV2Spec"]
from compscale.specs.amoebanet import AmoebaNetSpec  # noqa: E402  (the seed table's comparison architectures)
from compscale.specs.densenet import DenseNetSpec  # noqa: E402
from compscale.specs.inception import InceptionV3Spec, InceptionV4Spec, XceptionSpec  # noqa: E402
from compscale.specs.nasnet import NASNetSpec, PNASNetSpec  # noqa: E402
from compscale.specs.polynet import PolyNetSpec  # noqa: E402
from compscale.specs.senet import SENetSpec  # noqa: E402

__all__ += ["AmoebaNetSpec", "DenseNetSpec", "InceptionV3Spec", "InceptionV4Spec", "XceptionSpec", "NASNetSpec"]
__all__ += ["PNASNetSpec", "PolyNetSpec", "SENetSpec"]
__all__ += ["MobileNetSpec", "MobileNetStage", "mobilenet_v1_spec", "mobilenet_v2_spec"]
