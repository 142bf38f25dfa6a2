"""Class activation maps: where a classifier looks (the EfficientNet paper's Figure 7).

* **CAM** (Zhou et al., 2016): for a network ending in global average pooling and a linear classifier,
  M_c(x, y) = Σ_k w_k^c · f_k(x, y), the classifier weights of class c applied to the last feature maps.
* **Grad-CAM / Grad-CAM++** (Selvaraju et al., 2017; Chattopadhay et al., 2018), from the maintained
  ``grad-cam`` package, on the same feature maps.

A model only has to offer ``forward_features`` (the last maps, before pooling), ``forward_head`` and
``get_classifier()``, as every compscale family does. Maps are upsampled to the input size and min-max
normalised to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compscale.errors import UserError

Method = Literal["cam", "gradcam", "gradcam++"]
METHODS: tuple[str, ...] = ("cam", "gradcam", "gradcam++")


@dataclass(frozen=True)
class ActivationMap:
    """One image's map (H×W in [0, 1]) for class ``target``, and the logits it was computed with."""

    map: np.ndarray
    target: int
    logits: torch.Tensor


def _normalise(m: torch.Tensor) -> torch.Tensor:
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else torch.zeros_like(m)


def _check_model(model: nn.Module) -> None:
    for attr in ("forward_features", "forward_head", "get_classifier"):
        if not hasattr(model, attr):
            raise UserError(f"{type(model).__name__} has no {attr}(): class activation maps need a compscale model")


class _FeaturesModule(nn.Module):
    """``model.forward_features`` as a module, so Grad-CAM can hook its output and gradient."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


class _Split(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.features = _FeaturesModule(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features.model.forward_head(self.features(x))


def class_activation_map(model: nn.Module, x: torch.Tensor, target: int | None = None) -> ActivationMap:
    """CAM of one image ``x`` (1×C×H×W) for class ``target`` (default: the predicted class)."""
    _check_model(model)
    classifier = model.get_classifier()
    if not isinstance(classifier, nn.Linear):
        raise UserError("CAM needs a linear classifier after global average pooling")
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model.forward_head(features)
        target = int(logits[0].argmax()) if target is None else int(target)
        if not 0 <= target < classifier.out_features:
            raise UserError(f"class {target} is out of range (0..{classifier.out_features - 1})")
        cam = torch.einsum("k,khw->hw", classifier.weight[target], features[0])
        cam = F.interpolate(cam[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    return ActivationMap(_normalise(cam).cpu().numpy(), target, logits[0])


def activation_map(model: nn.Module, x: torch.Tensor, target: int | None = None, method: str = "cam") -> ActivationMap:
    """The activation map of one image by ``method`` (``cam``, ``gradcam`` or ``gradcam++``)."""
    if method not in METHODS:
        raise UserError(f"unknown CAM method {method!r}; use one of {', '.join(METHODS)}")
    if x.ndim != 4 or x.shape[0] != 1:
        raise UserError("activation maps are computed for one image at a time (a 1×C×H×W tensor)")
    was_training = model.training
    model.eval()
    try:
        if method == "cam":
            return class_activation_map(model, x, target)
        return _grad_cam(model, x, target, method)
    finally:
        model.train(was_training)


def _grad_cam(model: nn.Module, x: torch.Tensor, target: int | None, method: str) -> ActivationMap:
    _check_model(model)
    try:
        from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        raise UserError(f"{method} needs the grad-cam package: pip install grad-cam") from None

    split = _Split(model)
    with torch.no_grad():
        logits = split(x)[0]
    target = int(logits.argmax()) if target is None else int(target)
    if not 0 <= target < logits.numel():
        raise UserError(f"class {target} is out of range (0..{logits.numel() - 1})")
    cls = GradCAM if method == "gradcam" else GradCAMPlusPlus
    with cls(model=split, target_layers=[split.features]) as cam:
        grayscale = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]
    return ActivationMap(np.asarray(grayscale, dtype=np.float32), target, logits.detach())


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image`` (H×W×3 or H×W, uint8 or 0..255 float) blended with the ``jet`` colouring of ``cam``."""
    import matplotlib

    rgb = np.asarray(image, dtype=np.float32) / 255.0
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=-1)
    heat = matplotlib.colormaps["jet"](np.clip(cam, 0, 1))[..., :3]
    return np.clip((1 - alpha) * rgb + alpha * heat, 0, 1)


def save_cam_figure(path: str, panels: Sequence[tuple[str, np.ndarray, np.ndarray, Sequence[str]]],
                    title: str = "") -> None:
    """A row of overlays, one per panel ``(title, image, cam, caption lines)``, written atomically as PNG."""
    from compscale.plots import pyplot, save_figure

    n = len(panels)
    fig, axes = pyplot().subplots(1, n, figsize=(3.2 * n, 3.9), squeeze=False)
    for ax, (name, image, cam, caption) in zip(axes[0], panels):
        ax.imshow(overlay(image, cam))
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("\n".join(caption), fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
