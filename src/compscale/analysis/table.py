"""The seed's efficiency table (the EfficientNet paper's Table 2), every row measured by compscale.

Each row is one of our registered models, counted on the meta device at the resolution the paper used.
The paper's numbers stand beside ours; the two "Ratio-to-EfficientNet" columns are recomputed from our
measurements against the EfficientNet of the same accuracy group. Where the paper's own number disagrees
with every public implementation, a note says so rather than the model being bent to fit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from compscale.models import create_model
from compscale.paper import SEED_TABLE, PaperRow
from compscale.plots import pyplot, save_figure
from compscale.profiler import profile
from compscale.progress import Progress, report


@dataclass(frozen=True)
class TableModel:
    name: str  # registered compscale model
    resolution: int
    note: str = ""


#: The model and resolution that stand for each row of the paper's table.
ROW_MODELS: dict[str, TableModel] = {
    **{f"EfficientNet-B{i}": TableModel(f"efficientnet_b{i}", r) for i, r in
       enumerate((224, 240, 260, 300, 380, 456, 528, 600))},
    "ResNet-50": TableModel("resnet50", 224),
    "DenseNet-169": TableModel("densenet169", 224),
    "ResNet-152": TableModel("resnet152", 224),
    "DenseNet-264": TableModel("densenet264", 224, "growth 32, blocks 6-12-64-48"),
    "Inception-v3": TableModel("inception_v3", 299),
    "Xception": TableModel("xception", 299),
    "Inception-v4": TableModel("inception_v4", 299, "paper's 48M disagrees with every public implementation (42.7M)"),
    "Inception-ResNet-v2": TableModel("inception_resnet_v2", 299),
    "ResNeXt-101": TableModel("resnext101_64x4d", 320, "64x4d at 320 px, the row's setting"),
    "PolyNet": TableModel("polynet", 331),
    "SENet": TableModel("senet154", 320,
                        "SENet-154 at 320 px; paper's 146M disagrees with public implementations (115M)"),
    "NASNet-A": TableModel("nasnet_a_large", 331),
    "AmoebaNet-A": TableModel("amoebanet_a", 331, "no public PyTorch peer: tensorflow/tpu cells, N=6 F=190"),
    "PNASNet": TableModel("pnasnet5_large", 331, "public implementations count 24.9B multiply-adds, the paper 23B"),
    "AmoebaNet-C": TableModel("amoebanet_c", 331, "no public PyTorch peer: tensorflow/tpu cells, N=6 F=228"),
    "GPipe": TableModel("gpipe_amoebanet_b", 480, "AmoebaNet-B (18, 512) at 480 px; the paper gives no FLOPs"),
}

#: Latency is measured only below this many multiply-adds (larger models take minutes per image here).
LATENCY_MAX_MACS = 40e9


def _group_model(row: PaperRow) -> str:
    return f"EfficientNet-{row.group}"


def seed_table(
    latency: bool = False,
    threads: int = 2,
    repeats: int = 5,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """One dict per seed row: the model (``model``: the registered name; ``paper_model``: the paper's row), the
    paper's params/MACs/top-1 (a fraction), ours, the deviation, the recomputed ratios, a note, and (with
    ``latency``) the measured CPU batch-1 latency in ms.

    ``progress`` receives a ``stage`` as each model is measured (``message``: the row, or ``latency NAME``).
    """
    measured = _measure_rows(progress)
    rows = [_table_row(row, measured) for row in SEED_TABLE]
    if latency:
        _add_latency(rows, threads, repeats, progress)
    return rows


def _measure_rows(progress: Progress | None) -> dict[str, dict[str, Any]]:
    """Params and multiply-adds of every row's model at the row's resolution, counted on the meta device."""
    measured: dict[str, dict[str, Any]] = {}
    for i, row in enumerate(SEED_TABLE):
        spec = ROW_MODELS[row.model]
        report(progress, "stage", row.model, done=i, total=len(SEED_TABLE))
        with torch.device("meta"):
            model = create_model(spec.name)
        p = profile(model, spec.resolution)
        measured[row.model] = {"params": p.params, "macs": p.macs}
    return measured


def _table_row(row: PaperRow, measured: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One row of the table: the paper's numbers beside ours, ratios to the EfficientNet of its group."""
    spec, ours = ROW_MODELS[row.model], measured[row.model]
    ref = measured[_group_model(row)]
    notes = [spec.note] if spec.note else []
    if abs(ours["params"] / row.params - 1) > 0.05 and not spec.note:
        notes.append(f"params differ from the paper by {ours['params'] / row.params - 1:+.1%}")
    return {
        "model": spec.name, "paper_model": row.model, "resolution": spec.resolution, "group": row.group,
        # The paper's ImageNet accuracies as fractions, as every accuracy compscale prints.
        "paper_top1": round(row.top1 / 100, 4), "paper_top5": None if row.top5 is None else round(row.top5 / 100, 4),
        "paper_params": row.params, "paper_macs": row.macs,
        "params": ours["params"], "macs": ours["macs"],
        "params_dev": ours["params"] / row.params - 1,
        "macs_dev": None if row.macs is None else ours["macs"] / row.macs - 1,
        "params_ratio": ours["params"] / ref["params"], "macs_ratio": ours["macs"] / ref["macs"],
        "paper_params_ratio": row.params / next(r.params for r in SEED_TABLE if r.model == _group_model(row)),
        "note": "; ".join(notes),
    }


#: What a row says of its timing (``--latency``): the median, its 95 % interval, the spread and the machine's state.
TIMING_KEYS = ("latency_ms", "latency_low_ms", "latency_high_ms", "latency_spread", "busy", "latency_note")


def _add_latency(rows: list[dict[str, Any]], threads: int, repeats: int, progress: Progress | None) -> None:
    """``latency_ms`` of every row small enough to time here (None, and a note, for the others)."""
    for i, row in enumerate(rows):
        report(progress, "stage", f"latency {row['model']}", done=i, total=len(rows))
        row["latency_ms"] = None
        if row["macs"] > LATENCY_MAX_MACS:
            row["note"] = "; ".join(filter(None, [row["note"], "too large to time here: latency not measured"]))
            continue
        from compscale.deploy.latency import compare_latency
        from compscale.models import model_spec

        spec = model_spec(row["model"]).replace(resolution=row["resolution"])
        lat = compare_latency({row["model"]: spec}, threads=threads, repeats=repeats)[row["model"]]
        row.update({k: v for k, v in lat.fields().items() if k in TIMING_KEYS})


def batch1_latency(names: list[str], resolution: int | None = None, threads: int = 2, repeats: int = 5,
                   warmup: int = 1, progress: Progress | None = None) -> dict[str, float]:
    """Median batch-1 CPU latency (ms) of each model, timed interleaved in this process (eval, no grad);
    ``progress`` gets a ``message`` after each round of timings (``done``/``total``: rounds)."""
    from compscale.deploy.bench import measure, set_threads

    set_threads(threads)
    calls = {}
    for name in names:
        model = create_model(name).eval()
        side = resolution or model.spec.resolution
        x = torch.randn(1, model.spec.in_chans, side, side)
        calls[name] = (lambda m=model, x=x: m(x))
    timings = measure(calls, batch=1, warmup=warmup, repeats=repeats, progress=progress)
    return {name: t.latency_ms for name, t in timings.items()}


def plot_figures(rows: list[dict[str, Any]], out_dir: str) -> list[str]:
    """The paper's Figure 1 (accuracy vs params) and Figure 5 (accuracy vs multiply-adds), drawn from our
    measured counts with the paper's ImageNet top-1 (labelled as the paper's)."""
    paths = []
    for key, label, fname, title in (
        ("params", "parameters (millions, measured by compscale)", "figure1_params.png", "Figure 1: accuracy vs size"),
        ("macs", "multiply-adds (billions, measured by compscale)", "figure5_flops.png", "Figure 5: accuracy vs FLOPs"),
    ):
        path = os.path.join(out_dir, fname)
        _plot_accuracy_vs(rows, key, 1e6 if key == "params" else 1e9, label, title, path)
        paths.append(path)
    return paths


def _plot_accuracy_vs(rows: list[dict[str, Any]], key: str, scale: float, label: str, title: str, path: str) -> None:
    """The paper's top-1 of every row against our measured ``key`` (divided by ``scale``), log x axis."""
    fig, ax = pyplot().subplots(figsize=(7.5, 5))
    eff = [r for r in rows if r["paper_model"].startswith("EfficientNet")]
    ax.plot([r[key] / scale for r in eff], [100 * r["paper_top1"] for r in eff], "o-", color="tab:red",
            label="EfficientNet B0-B7")
    for r in eff:
        ax.annotate(r["paper_model"].split("-")[1], (r[key] / scale, 100 * r["paper_top1"]),
                    textcoords="offset points", xytext=(4, -10), fontsize=7, color="tab:red")
    others = [r for r in rows if not r["paper_model"].startswith("EfficientNet")]
    ax.scatter([r[key] / scale for r in others], [100 * r["paper_top1"] for r in others], color="tab:blue", s=18)
    for r in others:
        ax.annotate(r["paper_model"], (r[key] / scale, 100 * r["paper_top1"]), textcoords="offset points",
                    xytext=(3, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("ImageNet top-1 % (the paper's figures)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
