"""The paper's Figure 7 on data we have: where do models scaled in different ways look, at equal cost?

Five models are trained on the same data: a small EfficientNet baseline for 32-pixel inputs and four
models of about the same *realized* multiply-adds, scaled along one dimension each — deeper (d only),
wider (w only), higher resolution (r only) — and by compound scaling, d = α^φ, w = β^φ, r = γ^φ
(α, β, γ = 1.2, 1.1, 1.15; φ = 2 by default, which gives d ≈ 1.44, w ≈ 1.21, r ≈ 1.32 — the paper's
Table 7 compound model is d = 1.4, w = 1.2, r = 1.3). The compound model's realized cost is the target;
each single-dimension multiplier is the one whose built architecture comes closest to it
(:func:`compscale.search.dimensions.match_dimension`), and every model's deviation is reported.

The paper only *shows* the maps. Here each model is also scored on a fixed subset of test images, for the
true class, against the object's mask (Fashion-MNIST and digits are objects on a black background, so the
mask is "pixels brighter than a threshold" of the original image):

* **energy in mask** — the share of the (min-max normalised) map's mass that falls inside the mask; a map
  spread evenly over the image scores the mask's area fraction (reported as ``chance``);
* **pointing game** (Zhang et al., 2016) — the share of images whose map peaks inside the mask.

Both are averaged over the images, then mean ± standard deviation over seeds (each seed trains all five).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from compscale.compound import CostMatch
from compscale.errors import UserError
from compscale.plots import pyplot, save_figure
from compscale.progress import Progress, report
from compscale.specs import EfficientNetSpec, MBConvStage, ModelSpec
from compscale.vocabulary import normalize

if TYPE_CHECKING:
    import torch
    from torch import nn

#: The study's baseline: EfficientNet's MBConv/SE blocks sized for 32-pixel grayscale images. Only two
#: stride-2 layers (stem and stage 2), so the last feature maps are 8×8 at 32 px — a CAM needs a grid,
#: not B0's 1×1 at this size.
CAM_BASE = EfficientNetSpec(
    stages=(MBConvStage(1, 3, 1, 16, 1), MBConvStage(4, 3, 2, 24, 2), MBConvStage(4, 5, 1, 40, 2),
            MBConvStage(4, 3, 1, 64, 2)),
    stem_channels=16, head_channels=256, resolution=32, in_chans=1, num_classes=10, dropout=0.2, drop_path_rate=0.1)

#: Display order of the five models (the paper's Figure 7 left to right).
MODEL_NAMES: tuple[str, ...] = ("baseline", "deeper", "wider", "higher-res", "compound")
_DIMENSION = {"deeper": "depth", "wider": "width", "higher-res": "resolution"}
METRICS: tuple[tuple[str, str], ...] = (("top1", "test top-1"), ("scored_top1", "top-1, scored images"),
                                        ("energy", "map energy in mask"), ("pointing", "pointing-game hits"))


@dataclass(frozen=True, kw_only=True)
class StudyModel(CostMatch):
    """One of the five models: its multipliers (d, w, r), concrete spec and realized cost vs the target (the
    compound model's; the baseline's own deviation means nothing: it is not cost-matched)."""

    name: str
    depth: float
    width: float
    resolution_mult: float

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "depth": self.depth, "width": self.width, "resolution_mult": self.resolution_mult,
                **self.cost_dict(), "blocks": sum(s.repeats for s in self.spec.stages), "spec": self.spec.as_dict()}


def study_models(base: ModelSpec = CAM_BASE, phi: float = 2.0, alpha: float = 1.2, beta: float = 1.1,
                 gamma: float = 1.15) -> list[StudyModel]:
    """The baseline, and deeper / wider / higher-res / compound models at the compound model's realized cost."""
    from compscale.compound import realized_cost, scale
    from compscale.scaling import CompoundScaling
    from compscale.search.dimensions import match_dimension

    if not phi > 0:
        raise UserError(f"--phi must be positive (the models must be larger than the baseline), got {phi:g}")
    compound = scale(base, phi, CompoundScaling(alpha, beta, gamma))
    target = compound.macs
    base_cost = realized_cost(base)
    models = [StudyModel(name="baseline", depth=1.0, width=1.0, resolution_mult=1.0, spec=base, macs=base_cost.macs,
                         params=base_cost.params, target_macs=target)]
    for name, dim in _DIMENSION.items():
        m = match_dimension(base, dim, target)
        d, w, r = (m.multiplier if dim == k else 1.0 for k in ("depth", "width", "resolution"))
        models.append(StudyModel(name=name, depth=d, width=w, resolution_mult=r, spec=m.spec, macs=m.macs,
                                 params=m.params, target_macs=target))
    f = compound.factors
    models.append(StudyModel(name="compound", depth=f.depth, width=f.width, resolution_mult=f.resolution_mult,
                             spec=compound.spec, macs=compound.macs, params=compound.params, target_macs=target))
    return models


# --- scoring ---------------------------------------------------------------------------------------------


def object_masks(images: "torch.Tensor", size: int, threshold: float) -> "torch.Tensor":
    """Boolean masks (N, size, size) of the objects: the original uint8 images (N, C, h, w), resized
    bilinearly to ``size`` and averaged over channels, brighter than ``threshold`` × 255."""
    import torch.nn.functional as F

    gray = images.float().mean(1, keepdim=True) / 255.0
    up = F.interpolate(gray, size=(size, size), mode="bilinear", align_corners=False)
    return up[:, 0] > threshold


def localisation_scores(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the share of the map's mass inside the mask, and whether the map's peak is inside it.

    ``maps`` (N, S, S) are non-negative; ``masks`` (N, S, S) boolean. A map that is zero everywhere (a flat
    map, after min-max normalisation) spreads evenly: its share is the mask's area and its peak is a miss.
    """
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    if maps.shape != masks.shape or maps.ndim != 3:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} must both be (N, S, S)")
    total = maps.sum((1, 2))
    inside = (maps * masks).sum((1, 2))
    area = masks.mean((1, 2))
    energy = np.where(total > 0, inside / np.where(total > 0, total, 1.0), area)
    flat = maps.reshape(len(maps), -1)
    peak = flat.argmax(1)
    hits = masks.reshape(len(masks), -1)[np.arange(len(masks)), peak] & (total > 0)
    return energy, hits.astype(np.float64)


def batched_cam(model: "nn.Module", x: "torch.Tensor", labels: "torch.Tensor",
                batch: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """CAM (M_c = Σ_k w_k^c f_k, upsampled, min-max normalised) of many images at once, for class ``labels[i]``
    of image i — the same map as :func:`compscale.analysis.cam.class_activation_map`, one forward per batch
    instead of per image. Returns the maps (N, H, W) and the predicted classes."""
    import torch
    import torch.nn.functional as F

    from compscale.analysis.cam import _check_model

    _check_model(model)
    weight = model.get_classifier().weight
    was_training = model.training
    model.eval()
    maps, preds = [], []
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch):
                xb, yb = x[start : start + batch], labels[start : start + batch].long()
                features = model.forward_features(xb)
                preds.append(model.forward_head(features).argmax(1))
                cam = torch.einsum("nk,nkhw->nhw", weight[yb], features)
                cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
                lo, hi = cam.amin((1, 2), keepdim=True), cam.amax((1, 2), keepdim=True)
                maps.append(torch.where(hi > lo, (cam - lo) / (hi - lo).clamp_min(1e-30), torch.zeros_like(cam)))
    finally:
        model.train(was_training)
    return torch.cat(maps).numpy().astype(np.float32), torch.cat(preds).numpy()


def _preparer(model: "nn.Module", bundle: Any, resolution: int):
    """Model inputs from the data set's raw images, at ``resolution``, on the CPU."""
    import torch

    from compscale.data import BatchPreparer

    return BatchPreparer(bundle, resolution, model.spec.in_chans, torch.device("cpu"))


def recalibrate_on_images(model: "nn.Module", images: "torch.Tensor", bundle: Any, resolution: int,
                          batch: int = 100) -> None:
    """Precise BatchNorm statistics over ``images`` (the training images) before the maps: after a short
    schedule the running averages lag behind the weights, and maps computed in eval mode would show that lag
    rather than what the network learned (:func:`compscale.train.precise_bn.recalibrate_batchnorm`)."""
    from compscale.train.precise_bn import recalibrate_batchnorm

    prep = _preparer(model, bundle, resolution)
    recalibrate_batchnorm(model, (prep(chunk) for chunk in images.split(batch)))


def compute_maps(model: "nn.Module", images: "torch.Tensor", labels: "torch.Tensor", bundle: Any, resolution: int,
                 method: str, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maps of ``model`` for the true classes, at the model's input ``resolution`` (the raw maps) and
    resized to ``size`` (for scoring); plus the predicted classes."""
    import torch
    import torch.nn.functional as F

    from compscale.analysis.cam import activation_map

    x = _preparer(model, bundle, resolution)(images)
    if method == "cam":
        raw, preds = batched_cam(model, x, labels)
    else:
        raw = np.empty((len(x), resolution, resolution), dtype=np.float32)
        preds = np.empty(len(x), dtype=np.int64)
        for i in range(len(x)):
            result = activation_map(model, x[i : i + 1], int(labels[i]), method)
            raw[i] = result.map
            preds[i] = int(result.logits.argmax())
    scaled = F.interpolate(torch.from_numpy(raw)[:, None], size=(size, size), mode="bilinear", align_corners=False)
    return raw, scaled[:, 0].clamp_min(0).numpy(), preds


# --- the study -------------------------------------------------------------------------------------------


@dataclass
class CamStudyConfig:
    """Everything that decides the study's numbers."""

    data: str = "fashion-mnist"
    out: str = "runs/cam-study"
    epochs: int = 3
    seeds: tuple[int, ...] = (0, 1, 2)
    limit_train: int | None = 4000
    limit_test: int | None = 2000  # images for the test accuracy
    images: int = 500  # images scored (a fixed subset of the test set)
    figure_images: int = 4  # rows of the figure
    method: str = "cam"
    phi: float = 2.0
    alpha: float = 1.2
    beta: float = 1.1
    gamma: float = 1.15
    threshold: float = 0.1  # object mask: original pixels brighter than this fraction of 255
    recalibrate_bn: bool = True  # precise BatchNorm statistics before the maps (see recalibrate_on_images)
    score_size: int = 64  # maps and masks are compared at this side
    batch_size: int = 64
    lr: float | None = None
    warmup_epochs: float | None = None  # default: the engine's (1 epoch)
    threads: int | None = None

    def validate(self) -> "CamStudyConfig":
        from compscale.analysis.cam import METHODS

        if self.method not in METHODS:
            raise UserError(f"unknown CAM method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}")
        if not self.seeds:
            raise UserError("give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"--seeds repeats a seed: {list(self.seeds)}")
        for name in ("images", "figure_images", "score_size", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.threshold < 1:
            raise UserError(f"--threshold is a fraction of full brightness in [0, 1), got {self.threshold:g}")
        return self


#: ``--quick``: the tests' configuration (digits, tiny, one epoch, two seeds: seconds on one core).
QUICK = dict(data="digits", epochs=1, seeds=(0, 1), limit_train=320, limit_test=100, images=30, figure_images=3,
             batch_size=32, warmup_epochs=0.0, phi=1.0)


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation over seeds (None with one seed: no spread to report)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


@dataclass(frozen=True)
class _ScoredImages:
    """The images every model is scored on (a fixed subset of the test set), their labels and object masks."""

    bundle: Any
    images: "torch.Tensor"
    labels: "torch.Tensor"
    masks: np.ndarray

    @property
    def chance(self) -> float:
        """The energy share of a map spread evenly over the image: the masks' mean area."""
        return float(self.masks.mean())


def run_cam_study(cfg: CamStudyConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Train the five models for every seed (resuming what is already in ``cfg.out``), score their maps,
    and write ``cam_study.json``, ``cam_figure.png``, ``cam_scores.png`` and ``section.md`` to ``cfg.out``.

    ``progress`` receives a ``stage`` when the study starts (``total``: jobs; ``info``: the models) and when
    each model starts training (``info``: model, seed, out), an ``epoch_end`` per epoch (``info``: model,
    seed, epoch, top1), and a ``trial`` per scored model (``done``/``total``: jobs; ``info``: its scores).
    """
    cfg.validate()
    models = study_models(CAM_BASE, cfg.phi, cfg.alpha, cfg.beta, cfg.gamma)
    scored = _scored_images(cfg)
    jobs = len(models) * len(cfg.seeds)
    report(progress, "stage", f"cam-study: {jobs} models to train and score", done=0, total=jobs,
           models=[m.as_dict() for m in models], jobs=jobs, images=len(scored.labels))
    runs: list[dict[str, Any]] = []
    figure_maps: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for seed in cfg.seeds:
        for m in models:
            report(progress, "stage", f"seed {seed} {m.name}", done=len(runs), total=jobs, model=m.name, seed=seed,
                   out=str(_run_folder(cfg, m, seed)))
            run, maps = _train_and_score(cfg, m, seed, scored, progress)
            runs.append(run)
            report(progress, "trial", done=len(runs), total=jobs, **run)
            if seed == cfg.seeds[0]:
                figure_maps[m.name] = maps
    result = _study_result(cfg, models, scored, runs)
    _write_outputs(cfg, models, scored, figure_maps, result)
    return result


def _scored_images(cfg: CamStudyConfig) -> _ScoredImages:
    """A fixed subset of the test set, the same for every model and seed, with the objects' masks."""
    from compscale.data import load_dataset

    bundle = load_dataset(cfg.data, CAM_BASE.resolution, "none", limit_train=cfg.limit_train, limit_test=cfg.images)
    if bundle.native_size is None:
        raise UserError("the CAM study needs a built-in dataset (fashion-mnist or digits): the object masks are "
                        "thresholded from the original images")
    images, labels = bundle.test.images, bundle.test.labels
    return _ScoredImages(bundle, images, labels, object_masks(images, cfg.score_size, cfg.threshold).numpy())


def _run_folder(cfg: CamStudyConfig, m: StudyModel, seed: int) -> Path:
    return Path(cfg.out) / "runs" / f"seed{seed}" / m.name


def _train_options(cfg: CamStudyConfig) -> dict[str, Any]:
    """The training engine's settings every job shares (those left unset keep the engine's defaults)."""
    options: dict[str, Any] = {"batch_size": cfg.batch_size, "limit_train": cfg.limit_train,
                               "limit_test": cfg.limit_test}
    for name in ("lr", "warmup_epochs", "threads"):
        if getattr(cfg, name) is not None:
            options[name] = getattr(cfg, name)
    return options


def _train_and_score(cfg: CamStudyConfig, m: StudyModel, seed: int, scored: _ScoredImages,
                     progress: Progress | None) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Train ``m`` with ``seed`` (or reuse its weights), then score its maps: the run's record, and the
    raw maps, predictions and energies of the figure's images."""
    import torch

    from compscale.jobs.trial import train_spec
    from compscale.models.weights import model_from_weights

    def epoch_done(top1: float, epoch: int) -> None:
        report(progress, "epoch_end", done=epoch, total=cfg.epochs, model=m.name, seed=seed, epoch=epoch, top1=top1)

    folder = _run_folder(cfg, m, seed)
    result = train_spec(m.spec, cfg.data, folder, cfg.epochs, seed, report_epoch=epoch_done, **_train_options(cfg))
    model = model_from_weights(folder / "model.safetensors")
    if cfg.recalibrate_bn:
        recalibrate_on_images(model, scored.bundle.train.images, scored.bundle, m.spec.resolution)
    torch.manual_seed(0)
    raw, scaled, preds = compute_maps(model, scored.images, scored.labels, scored.bundle, m.spec.resolution,
                                      cfg.method, cfg.score_size)
    energy, hits = localisation_scores(scaled, scored.masks)
    run = {"model": m.name, "seed": seed, "top1": float(result["top1"]), "epochs": int(result["epochs"]),
           "energy": float(energy.mean()), "pointing": float(hits.mean()),
           "scored_top1": float((preds == scored.labels.numpy()).mean()), "out": str(folder)}
    k = min(cfg.figure_images, len(scored.labels))
    return run, (raw[:k], preds[:k], energy[:k])


def _summary(models: Sequence[StudyModel], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model: the mean and standard deviation over seeds of every metric."""
    summary = []
    for m in models:
        mine = [r for r in runs if r["model"] == m.name]
        row: dict[str, Any] = {"model": m.name, "seeds": len(mine)}
        for key, _ in METRICS:
            row[f"{key}_mean"], row[f"{key}_std"] = _mean_std([r[key] for r in mine])
        summary.append(row)
    return summary


def _study_result(cfg: CamStudyConfig, models: Sequence[StudyModel], scored: _ScoredImages,
                  runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything ``cam_study.json`` holds, with the plain-language reading."""
    out = Path(cfg.out)
    result = {
        "config": {**asdict(cfg), "seeds": list(cfg.seeds)},
        "base": CAM_BASE.as_dict(),
        "target_macs": models[0].target_macs,
        "max_abs_deviation": max(abs(m.deviation) for m in models[1:]),
        "models": [m.as_dict() for m in models],
        "chance": {"mask_area": scored.chance, "description": "energy share of a map spread evenly over the image"},
        "images": int(len(scored.labels)),
        "runs": runs,
        "summary": _summary(models, runs),
        "files": {name: str(out / name)
                  for name in ("cam_study.json", "cam_figure.png", "cam_scores.png", "section.md")},
    }
    result["reading"] = reading(result)
    return result


def _write_outputs(cfg: CamStudyConfig, models: Sequence[StudyModel], scored: _ScoredImages,
                   figure_maps: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], result: dict[str, Any]) -> None:
    """The figure of maps, the plot of scores, the markdown section and the JSON, in ``cfg.out``."""
    from compscale.io import atomic_write_text

    out = Path(cfg.out)
    save_cam_grid(out / "cam_figure.png", models, scored.images, scored.labels, scored.bundle, figure_maps, cfg)
    save_scores_plot(out / "cam_scores.png", result)
    atomic_write_text(out / "section.md", section_markdown(result))
    atomic_write_text(out / "cam_study.json", json.dumps(normalize(result), indent=2) + "\n")


# --- the report ------------------------------------------------------------------------------------------


def _pm(mean: float, std: float | None, pct: bool = True) -> str:
    scale = 100 if pct else 1
    return f"{scale * mean:.1f}" + ("" if std is None else f" ± {scale * std:.1f}")


def reading(result: dict[str, Any]) -> str:
    """A plain-language reading of the numbers, whichever way they fall."""
    rows = {r["model"]: r for r in result["summary"]}
    n = rows["compound"]["seeds"]
    parts = []
    for key, label in (("energy", "map energy inside the object"), ("pointing", "pointing-game hit rate")):
        ranked = sorted(rows.values(), key=lambda r: -r[f"{key}_mean"])
        best = ranked[0]
        comp = rows["compound"]
        singles = [rows[k] for k in ("deeper", "wider", "higher-res")]
        best_single = max(singles, key=lambda r: r[f"{key}_mean"])
        gap = comp[f"{key}_mean"] - best_single[f"{key}_mean"]
        spread = max((r[f"{key}_std"] or 0.0) for r in (comp, best_single))
        if n < 2:
            verdict = "with one seed there is no spread to judge the gap against"
        elif abs(gap) > 2 * spread:
            verdict = "larger than twice the seed-to-seed spread"
        else:
            verdict = f"within twice the seed-to-seed spread (±{100 * spread:.1f} points), so not a clear difference"
        position = f"ranks {[r['model'] for r in ranked].index('compound') + 1} of 5"
        parts.append(f"On {label}, the compound model {position} ({_pm(comp[f'{key}_mean'], comp[f'{key}_std'])} %); "
                     f"{best['model']} is highest. Compound minus the best single-dimension model "
                     f"({best_single['model']}) is {100 * gap:+.1f} points, {verdict}.")
    chance = result["chance"]["mask_area"]
    parts.append(f"For scale: a map spread evenly over the image would put {100 * chance:.1f} % of its energy "
                 "inside the mask (the objects fill much of the image, so this floor is high).")
    top = sorted(rows.values(), key=lambda r: -r["top1_mean"])
    accuracies = ", ".join(f"{r['model']} {_pm(r['top1_mean'], r['top1_std'])} %" for r in top)
    parts.append(f"Test top-1, best first: {accuracies}.")
    return " ".join(parts)


def section_markdown(result: dict[str, Any]) -> str:
    """A markdown fragment: the models, the table of scores, and the reading."""
    cfg = result["config"]
    models = {m["name"]: m for m in result["models"]}
    lines = [
        "### Class activation maps at equal cost (the paper's Figure 7)",
        "",
        f"Five models trained on {cfg['data']} ({cfg['limit_train'] or 'all'} training images, {cfg['epochs']} "
        f"epoch(s), seeds {', '.join(map(str, cfg['seeds']))}): a small EfficientNet baseline and four models at the "
        f"compound model's realized cost ({result['target_macs'] / 1e6:.2f} M multiply-adds; φ = {cfg['phi']:g}, "
        f"α, β, γ = {cfg['alpha']:g}, {cfg['beta']:g}, {cfg['gamma']:g}). Maps: {cfg['method']} for the true class; "
        f"scores over {result['images']} fixed test images; object mask = original pixels above "
        f"{cfg['threshold']:g} of full brightness. Mean ± standard deviation over seeds. Test top-1: the training "
        f"engine's, on {cfg['limit_test'] or 'all'} test images; scored top-1: on the scored images, "
        + ("after re-estimating the BatchNorm statistics on the training images (precise BN), as the maps are."
           if cfg["recalibrate_bn"] else "with the engine's BatchNorm statistics, as the maps are."),
        "",
        "| model | d | w | resolution | MACs | vs target | params | test top-1 % | scored top-1 % "
        "| energy in mask % | pointing hits % |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["summary"]:
        m = models[row["model"]]
        dev = "—" if row["model"] == "baseline" else f"{100 * m['deviation']:+.1f} %"
        lines.append(f"| {row['model']} | {m['depth']:.2f} | {m['width']:.2f} | {m['resolution']} px | "
                     f"{m['macs'] / 1e6:.2f} M | {dev} | {m['params'] / 1e3:.0f} k | "
                     f"{_pm(row['top1_mean'], row['top1_std'])} | "
                     f"{_pm(row['scored_top1_mean'], row['scored_top1_std'])} | "
                     f"{_pm(row['energy_mean'], row['energy_std'])} | "
                     f"{_pm(row['pointing_mean'], row['pointing_std'])} |")
    lines += ["", f"Chance level (a flat map): {100 * result['chance']['mask_area']:.1f} % energy in mask.", "",
              result["reading"], "", "![CAMs of the five models](cam_figure.png)", "",
              "![Localisation scores](cam_scores.png)", ""]
    return "\n".join(lines)


def save_cam_grid(path: Path, models: Sequence[StudyModel], images: "torch.Tensor", labels: "torch.Tensor",
                  bundle: Any, maps: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], cfg: CamStudyConfig,
                  display: int = 128) -> None:
    """Rows of test images, one column per model: the map over the image *as that model saw it* (its own
    input resolution), both upsampled to a common display size."""
    import torch
    import torch.nn.functional as F

    from compscale.analysis.cam import overlay

    plt = pyplot()
    k = len(next(iter(maps.values()))[0])
    outline = object_masks(images[:k], display, cfg.threshold).float().numpy()
    fig, axes = plt.subplots(k, len(models), figsize=(2.3 * len(models), 2.45 * k), squeeze=False)
    for j, m in enumerate(models):
        raw, preds, energy = maps[m.name]
        res = m.spec.resolution
        seen = F.interpolate(images[:k].float().mean(1, keepdim=True), size=(res, res), mode="bilinear",
                             antialias=res < images.shape[-1], align_corners=False)
        for i in range(k):
            img = F.interpolate(seen[i : i + 1], size=(display, display), mode="nearest")[0, 0].clamp(0, 255).numpy()
            cam = F.interpolate(torch.from_numpy(raw[i])[None, None], size=(display, display), mode="bilinear",
                                align_corners=False)[0, 0].clamp(0, 1).numpy()
            ax = axes[i][j]
            ax.imshow(overlay(img, cam))
            ax.contour(outline[i], levels=[0.5], colors="white", linewidths=0.8)  # the scored object mask
            ax.set_xticks([]), ax.set_yticks([])
            name = bundle.classes[int(preds[i])]
            ax.set_xlabel(f"pred {name[:12]} · in mask {100 * energy[i]:.0f}%", fontsize=7)
            if i == 0:
                ax.set_title(f"{m.name}\n{res}px, {m.macs / 1e6:.1f}M MACs", fontsize=9)
            if j == 0:
                ax.set_ylabel(bundle.classes[int(labels[i])][:14], fontsize=8)
    fig.suptitle(f"{cfg.method} for the true class ({cfg.data}, seed {cfg.seeds[0]}; white: object mask)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def save_scores_plot(path: Path, result: dict[str, Any]) -> None:
    """Grouped bars (mean over seeds, error bars one standard deviation) for accuracy and both CAM scores."""
    plt = pyplot()
    rows = result["summary"]
    fig, ax = plt.subplots(figsize=(8.5, 3.8))
    width = 0.8 / len(rows)
    xs = np.arange(len(METRICS))
    for i, row in enumerate(rows):
        means = [100 * row[f"{k}_mean"] for k, _ in METRICS]
        stds = [100 * (row[f"{k}_std"] or 0.0) for k, _ in METRICS]
        ax.bar(xs + (i - (len(rows) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=row["model"])
    chance = 100 * result["chance"]["mask_area"]
    ax.hlines(chance, xs[1] - 0.45, xs[1] + 0.45, colors="k", linestyles="dashed", label="flat map (chance)")
    ax.set_xticks(xs, [label for _, label in METRICS])
    ax.set_ylabel("%")
    ax.set_ylim(0, 118)
    seeds = rows[0]["seeds"]
    ax.set_title(f"Equal-cost models: mean over {seeds} seed(s), bars ± 1 std", fontsize=10)
    ax.legend(fontsize=7, ncol=6, loc="upper center")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
