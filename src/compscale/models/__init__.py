"""Model families. Importing this package registers every named model."""

from compscale.models import efficientnet  # noqa: F401  (registers the EfficientNet family)
from compscale.models import inception_resnet  # noqa: F401  (registers Inception-ResNet-v2)
from compscale.models import resnet  # noqa: F401  (registers ResNet / ResNeXt)
from compscale.models import amoebanet, densenet, inception, nasnet, polynet, senet, xception  # noqa: F401,E501  (the seed table's comparison architectures)
from compscale.models.registry import build_model, create_model, list_models, model_spec, register_model

__all__ = ["build_model", "create_model", "list_models", "model_spec", "register_model"]
