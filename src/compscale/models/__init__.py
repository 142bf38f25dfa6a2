"""Model families. Importing this package registers every named model."""

from compscale.models import (  # noqa: F401,E501  (the seed table's comparison architectures)
    amoebanet,
    densenet,
    efficientnet,  # noqa: F401  (registers the EfficientNet family)
    inception,
    inception_resnet,  # noqa: F401  (registers Inception-ResNet-v2)
    mobilenet,  # noqa: F401  (registers MobileNetV1 / V2)
    nasnet,
    polynet,
    resnet,  # noqa: F401  (registers ResNet / ResNeXt)
    senet,
    xception,
)
from compscale.models.registry import build_model, create_model, list_models, model_spec, register_model

__all__ = ["build_model", "create_model", "list_models", "model_spec", "register_model"]
