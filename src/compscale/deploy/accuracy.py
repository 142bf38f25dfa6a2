"""The accuracy cost of a reduced-precision inference path, measured on real photos.

A bf16 or int8 path is only worth its speed if it still predicts what the fp32 model predicts. Offline, the
real images at hand are scikit-image's sample photos; :func:`photo_views` turns each into many views (random
resized crops and flips, as in ImageNet evaluation studies) so that the agreement is measured over tens of
inputs rather than five. The reference is the fp32 model itself, so no labels are needed: the cost is how
often the top-1 class changes, how much the top-5 sets overlap, and how far the logits move.

Layer: imports only :mod:`compscale.deploy.records` from the deploy package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from compscale.deploy.records import Record
from compscale.errors import UserError
from compscale.pretrained import SAMPLE_IMAGES, Preprocess, load_image

__all__ = ["AccuracyCost", "accuracy_cost", "photo_views"]


@dataclass(frozen=True)
class AccuracyCost(Record):
    """Agreement of a candidate's logits with the reference's over ``images`` inputs.

    ``top1_agreement``: share of inputs with the same arg-max; ``top5_overlap``: mean |top5 ∩ top5| / 5;
    ``max_relative_error`` / ``mean_relative_error``: max|Δlogit| / max|logit| per input, worst and mean.
    """

    images: int
    top1_agreement: float
    top5_overlap: float
    max_relative_error: float
    mean_relative_error: float


def photo_views(preprocess: Preprocess, views_per_photo: int = 16, seed: int = 0) -> torch.Tensor:
    """(N, C, H, W) model inputs cut from scikit-image's real sample photos: per photo, its centre crop and
    ``views_per_photo - 1`` random resized crops (8-100 % of the area), half of them mirrored."""
    if views_per_photo < 1:
        raise UserError("views_per_photo must be >= 1")
    from torchvision.transforms import v2

    res = preprocess.resolution
    random_crop = v2.RandomResizedCrop(res, scale=(0.08, 1.0), antialias=True)
    mean = torch.tensor(preprocess.mean[: preprocess.in_chans]).view(-1, 1, 1)
    std = torch.tensor(preprocess.std[: preprocess.in_chans]).view(-1, 1, 1)
    views = []
    with torch.random.fork_rng(devices=[]):  # v2 transforms draw from the global RNG: seed it, then restore it
        torch.manual_seed(seed)
        for name in (n for n in SAMPLE_IMAGES if n != "cat"):  # "cat" is chelsea again
            photo = v2.functional.to_image(load_image(f"skimage:{name}", "L" if preprocess.in_chans == 1 else "RGB"))
            views.append(preprocess.crop(f"skimage:{name}"))
            for i in range(views_per_photo - 1):
                view = random_crop(photo).float()
                views.append(view.flip(-1) if i % 2 else view)
    return (torch.stack(views) - mean) / std


@torch.no_grad()
def accuracy_cost(reference: nn.Module, candidate: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                  batch: int = 8) -> AccuracyCost:
    """How closely ``candidate`` (e.g. a bf16 :func:`compscale.optimize` result) reproduces ``reference``'s
    logits on ``images``, run in batches of ``batch``."""
    if images.ndim != 4 or len(images) == 0:
        raise UserError("images must be a non-empty (N, C, H, W) tensor")
    reference.eval()
    refs, outs = [], []
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        refs.append(reference(x).float())
        outs.append(torch.as_tensor(candidate(x)).float())
    ref, out = torch.cat(refs), torch.cat(outs)
    if ref.shape != out.shape:
        raise UserError(f"candidate output shape {tuple(out.shape)} differs from the reference's {tuple(ref.shape)}")
    k = min(5, ref.shape[1])
    top_ref, top_out = ref.topk(k, dim=1).indices, out.topk(k, dim=1).indices
    overlap = torch.tensor([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(top_ref, top_out)])
    rel = (out - ref).abs().amax(dim=1) / ref.abs().amax(dim=1).clamp_min(1e-12)
    return AccuracyCost(
        images=len(ref),
        top1_agreement=(top_ref[:, 0] == top_out[:, 0]).float().mean().item(),
        top5_overlap=overlap.mean().item(),
        max_relative_error=rel.max().item(),
        mean_relative_error=rel.mean().item(),
    )
