"""Model families. Importing this package registers every named model."""

from compscale.models import efficientnet  # noqa: F401  (registers the EfficientNet family)
from compscale.models.registry import build_model, create_model, list_models, model_spec, register_model

__all__ = ["build_model", "create_model", "list_models", "model_spec", "register_model"]
