"""What a study needs to know about its data before it plans models: channels, classes and sizes, so that
every cost it reports is that of the model actually trained (a grayscale 10-class model, not ImageNet's)."""

from __future__ import annotations

from dataclasses import dataclass

from compscale.specs import ModelSpec


@dataclass(frozen=True)
class DataInfo:
    name: str
    channels: int
    num_classes: int
    train: int
    test: int


def data_info(data: str, resolution: int = 32, limit_train: int | None = None,
              limit_test: int | None = None) -> DataInfo:
    """Channels, classes and sizes of a dataset; an unknown dataset is one clear error here, before anything is
    planned."""
    from compscale.data import load_dataset

    bundle = load_dataset(data, resolution, augment="none", limit_train=limit_train, limit_test=limit_test)
    return DataInfo(data, bundle.channels, bundle.num_classes, len(bundle.train), len(bundle.test))


def for_data(spec: ModelSpec, info: DataInfo, resolution: int | None = None) -> ModelSpec:
    """The spec as the training engine will build it for this data: its channels, classes and (when given) side."""
    from compscale.models.registry import resolve_spec

    return resolve_spec(spec, info.num_classes, info.channels, resolution=resolution)


def data_aware_base(base: str | ModelSpec, data: str, resolution: int | None = None) -> ModelSpec:
    """The baseline (a registered name, a spec file or a spec) for ``data``, at ``resolution`` when given."""
    from compscale.models.registry import model_spec

    spec = model_spec(base)
    return for_data(spec, data_info(data, resolution or spec.resolution), resolution)
