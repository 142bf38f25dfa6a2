"""CPU inference, compscale vs timm, in one process, interleaved (issue 10).

    .venv/bin/python benchmarks/bench_inference.py [--threads 2] [--quick] [--json out.json]

Three scenarios, each timed round-robin so that every path sees the same machine load (each timed call
after one untimed call, so that no path pays for the previous runtime's spinning threads):

1. efficientnet_b0, batch 32, 224 px — compscale.optimize's choice (fp32) vs timm eager NCHW, timm
   channels_last, timm TorchScript trace+freeze+channels_last and timm exported to ONNX Runtime (default
   session), the last both with timm's own export setting (dynamic batch) and with a static shape; the peer
   figure is the faster of the two. Also shown: the same runtime recipe applied to timm's model (how much of
   the gain is the runtime rather than the model code) and compscale's opt-in bf16 path (not fp32);
2. the same at batch 1 (latency);
3. efficientnet_b1 (240 px) vs resnet152 (224 px) at batch 1: the paper's Table 4 claim (B1 0.098 s vs
   ResNet-152 0.554 s on one core, 5.7x), eager vs eager and best path vs best path;
4. reduced precision, measured on real weights and real photos: EfficientNet-Lite0 (the packaged ImageNet
   weights) on scikit-image's sample photos cut into 80 views: fp32 vs bf16 (OpenVINO) vs int8 (ONNX Runtime
   static post-training quantization, calibrated on other views, run by ONNX Runtime and by OpenVINO):
   speed at batch 1 and 32, top-1 agreement and top-5 overlap with the fp32 model.

Scenarios 1-3 use randomly initialised models (nothing is downloaded), with BatchNorm statistics settled on
random images so that no path runs on subnormal floats. Goals (issue 10): fp32 B0 batch 32 throughput >= 1.2x
timm->ONNX Runtime; fp32 batch-1 latency <= 0.85x of it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys

import torch

import compscale
from compscale.deploy import fold_batchnorm, optimize
from compscale.deploy.bench import measure
from compscale.deploy.export import OnnxRuntimeModule, onnx_bytes
from compscale.deploy.openvino_runtime import OpenVinoModule, available_precisions
from compscale.deploy.paths import build_path, settle_batchnorm


def timm_model(name: str) -> torch.nn.Module:
    try:
        import timm
    except ImportError:
        sys.exit("this benchmark needs timm (pip install timm)")
    return timm.create_model(name, pretrained=False).eval()


def ort_default_dynamic(model: torch.nn.Module, x: torch.Tensor):
    """timm.utils.onnx_export's setting: batch axis dynamic; ONNX Runtime's default session."""
    data = onnx_bytes(model, x[:1], dynamic_batch=True, optimize_graph=False)
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    arr = x.numpy()
    return lambda: sess.run(None, {"input": arr})


def recipe_on(model: torch.nn.Module, x: torch.Tensor, threads: int, runner) -> tuple | None:
    """compscale's runtime recipe (graph rewrite, static shapes, tuned session, micro-batches and streams), as
    chosen for our model, applied to another library's model: how much of the gain is the recipe rather than
    the model code. None when the winner is a PyTorch path (nothing to transplant)."""
    data = onnx_bytes(model, x[:1])
    if isinstance(runner, OpenVinoModule):
        m = OpenVinoModule(data, tuple(x.shape), threads, runner.precision, runner.micro_batch, runner.streams)
        what = f"OpenVINO, micro-batch {runner.micro_batch}, {runner.streams} stream(s)"
    elif isinstance(runner, OnnxRuntimeModule):
        m = OnnxRuntimeModule(data, tuple(x.shape), threads, micro_batch=runner.micro_batch)
        what = f"ONNX Runtime tuned, micro-batch {runner.micro_batch}"
    else:
        return None
    m(x)
    return (lambda: m(x)), f"timm + compscale's recipe ({what})"


def table(title: str, timings: dict, labels: dict, peer: str, batch: int) -> list[dict]:
    print(f"\n{title}")
    base = timings[peer].median
    rows = []
    w = max(len(labels[k]) for k in timings)
    print(f"  {'path'.ljust(w)}  {'ms/batch':>9}  {'img/s':>7}  {'spread':>6}  {'speed vs peer':>13}")
    for k, t in timings.items():
        r = base / t.median
        print(f"  {labels[k].ljust(w)}  {t.latency_ms:9.1f}  {t.images_per_s:7.1f}  {t.spread * 100:5.0f}%  {r:12.2f}x")
        rows.append({"key": k, "path": labels[k], "batch": batch, "latency_ms": t.latency_ms,
                     "images_per_s": t.images_per_s, "spread": t.spread, "speed_vs_peer": r, "n": len(t.times)})
    return rows


def effnet_scenario(batch: int, threads: int, repeats: int) -> tuple[list[dict], dict[str, float], str]:
    res = 224
    x = torch.randn(batch, 3, res, res, generator=torch.Generator().manual_seed(0))
    ours = settle_batchnorm(compscale.create_model("efficientnet_b0"), x)
    peer = settle_batchnorm(timm_model("efficientnet_b0"), x)
    print(f"\n[efficientnet_b0, batch {batch}] optimizing (measures its candidates) ...", flush=True)
    best = optimize(ours, x, threads=threads)
    print(f"  compscale.optimize chose {best.backend}; its own timings (ms): "
          + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in best.timings.items()), flush=True)
    calls, labels = {}, {}
    calls["cs_best"], labels["cs_best"] = (lambda: best(x)), f"compscale best fp32 ({best.backend})"
    if "bf16" in available_precisions():
        bf16 = optimize(ours, x, threads=threads, precision="bf16")
        calls["cs_bf16"], labels["cs_bf16"] = (lambda: bf16(x)), f"compscale bf16, NOT fp32 ({bf16.backend})"
    for p in ("eager", "channels_last", "torchscript"):
        calls[f"timm_{p}"], what = build_path(peer, p, x, threads)
        labels[f"timm_{p}"] = f"timm {what}"
    calls["timm_ort_dyn"], labels["timm_ort_dyn"] = (ort_default_dynamic(peer, x),
                                                     "timm -> ONNX Runtime default session, dynamic batch")
    calls["timm_ort_static"], labels["timm_ort_static"] = (build_path(peer, "onnxruntime_default", x)[0],
                                                           "timm -> ONNX Runtime default session, static shape")
    recipe = recipe_on(peer, x, threads, best.runner)
    if recipe is not None:
        calls["timm_recipe"], labels["timm_recipe"] = recipe
    timings = measure(calls, batch=batch, warmup=2, repeats=repeats, settle=1, inner="auto")
    peer_key = min(("timm_ort_dyn", "timm_ort_static"), key=lambda k: timings[k].median)
    rows = table(f"efficientnet_b0, batch {batch}, {res} px, {threads} threads — peer: {labels[peer_key]}",
                 timings, labels, peer_key, batch)
    ratios = {k: timings[peer_key].median / t.median for k, t in timings.items()}
    return rows, ratios, best.backend


def b1_vs_resnet152(threads: int, repeats: int) -> list[dict]:
    has_own = "resnet152" in compscale.list_models()
    x1 = torch.randn(1, 3, 240, 240, generator=torch.Generator().manual_seed(0))
    x2 = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    b1 = settle_batchnorm(compscale.create_model("efficientnet_b1"), x1)
    rn = settle_batchnorm(compscale.create_model("resnet152") if has_own else timm_model("resnet152"), x2)
    src = "compscale" if has_own else "timm (compscale has no resnet152 yet)"
    print(f"\n[efficientnet_b1 vs resnet152 from {src}, batch 1] optimizing both ...", flush=True)
    b1_best, rn_best = optimize(b1, x1, threads=threads), optimize(rn, x2, threads=threads)
    calls = {"b1_eager": lambda: b1(x1), "rn_eager": lambda: rn(x2),
             "b1_best": lambda: b1_best(x1), "rn_best": lambda: rn_best(x2)}
    labels = {"b1_eager": "efficientnet_b1 eager", "rn_eager": f"resnet152 eager ({src.split()[0]})",
              "b1_best": f"efficientnet_b1 best ({b1_best.backend})", "rn_best": f"resnet152 best ({rn_best.backend})"}
    t = measure(calls, batch=1, warmup=2, repeats=repeats, settle=1, inner="auto")
    rows = table("efficientnet_b1 (240 px) vs resnet152 (224 px), batch 1 — speed relative to resnet152 eager",
                 t, labels, "rn_eager", 1)
    print(f"  B1 faster than ResNet-152: eager {t['rn_eager'].median / t['b1_eager'].median:.1f}x, "
          f"best path {t['rn_best'].median / t['b1_best'].median:.1f}x (paper, one core: 5.7x)")
    return rows


def int8_onnx(model: torch.nn.Module, calibration: torch.Tensor) -> bytes:
    """ONNX Runtime's static post-training quantization (QDQ, per-channel int8 weights, uint8 activations)
    of ``model``, calibrated on ``calibration`` (real photo views, disjoint from the ones scored)."""
    import tempfile
    from pathlib import Path

    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": calibration[i:i + 1].numpy()} for i in range(len(calibration))])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(onnx_bytes(fold_batchnorm(model, example_input=calibration[:1]), calibration[:1]))
        quant_pre_process(str(src), str(pre))
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return dst.read_bytes()


def precision_scenario(threads: int, repeats: int) -> list[dict]:
    """fp32 vs bf16 vs int8 on EfficientNet-Lite0's real ImageNet weights: speed and agreement with fp32."""
    from compscale.deploy.accuracy import accuracy_cost, photo_views
    from compscale.errors import UserError
    from compscale.pretrained import pretrained

    try:
        model = pretrained("efficientnet_lite0")
    except UserError as err:
        print(f"\n[reduced precision] skipped: {err}")
        return []
    views = photo_views(model.preprocess, views_per_photo=16, seed=0)  # 80 views scored
    calibration = photo_views(model.preprocess, views_per_photo=8, seed=1)  # 40 others for int8 calibration
    print("\n[efficientnet_lite0, real weights, 80 views of 5 real photos] quantizing and optimizing ...", flush=True)
    q8 = int8_onnx(model, calibration)
    rows = []
    for batch in (1, 32):
        x = views[:batch]
        paths = {"fp32": optimize(model, x, threads=threads)}
        labels = {"fp32": f"fp32, compscale best ({paths['fp32'].backend})"}
        if "bf16" in available_precisions():
            paths["bf16"] = optimize(model, x, threads=threads, precision="bf16")
            labels["bf16"] = f"bf16 ({paths['bf16'].backend})"
        paths["int8_ort"] = OnnxRuntimeModule(q8, tuple(x.shape), threads)
        labels["int8_ort"] = "int8 QDQ, ONNX Runtime tuned session"
        paths["int8_ov"] = OpenVinoModule(q8, tuple(x.shape), threads)
        labels["int8_ov"] = "int8 QDQ, OpenVINO"
        costs = {k: accuracy_cost(model, m, views, batch=batch if batch > 1 else 16) for k, m in paths.items()}
        calls = {k: (lambda m: lambda: m(x))(m) for k, m in paths.items()}
        t = measure(calls, batch=batch, warmup=2, repeats=repeats, settle=1, inner="auto")
        print(f"\nefficientnet_lite0, batch {batch}, {threads} threads — speed vs fp32 best, agreement with fp32 on "
              f"{costs['fp32'].images} real views")
        w = max(map(len, labels.values()))
        print(f"  {'path'.ljust(w)}  {'ms/batch':>9}  {'img/s':>7}  {'vs fp32':>7}"
              f"  {'top-1 agree':>11}  {'top-5 overlap':>13}  {'mean |Δ|/max':>12}")
        for k, tk in t.items():
            c = costs[k]
            r = t["fp32"].median / tk.median
            print(f"  {labels[k].ljust(w)}  {tk.latency_ms:9.1f}  {tk.images_per_s:7.1f}  {r:6.2f}x"
                  f"  {c.top1_agreement * 100:10.1f}%"
                  f"  {c.top5_overlap * 100:12.1f}%  {c.mean_relative_error:12.2e}")
            rows.append({"key": k, "path": labels[k], "batch": batch, "latency_ms": tk.latency_ms,
                         "images_per_s": tk.images_per_s, "speed_vs_fp32": r, **c.as_dict()})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"compscale {compscale.__version__}, torch {torch.__version__}, {platform.machine()}, "
          f"{args.threads} threads, {datetime.date.today()}")
    out = {}
    r32, ratio32, b32 = effnet_scenario(32, args.threads, 3 if args.quick else 8)
    r1, ratio1, b1 = effnet_scenario(1, args.threads, 10 if args.quick else 30)
    out["b0_batch32"], out["b0_batch1"] = r32, r1
    out["b1_vs_resnet152"] = b1_vs_resnet152(args.threads, 5 if args.quick else 20)
    out["reduced_precision"] = precision_scenario(args.threads, 3 if args.quick else 10)
    print("\nGoals (fp32, vs timm -> ONNX Runtime default session, same run):")
    r32_, r1_ = ratio32["cs_best"], ratio1["cs_best"]
    print(f"  batch 32 throughput: {r32_:.2f}x (goal >= 1.2x) {'MET' if r32_ >= 1.2 else 'NOT MET'}  [{b32}]")
    print(f"  batch 1 latency: {1 / r1_:.2f}x of the peer's (goal <= 0.85x)"
          f" {'MET' if 1 / r1_ <= 0.85 else 'NOT MET'}  [{b1}]")
    if "cs_bf16" in ratio1:
        print(f"  (bf16, not fp32: batch 32 {ratio32['cs_bf16']:.2f}x,"
              f" batch 1 latency {1 / ratio1['cs_bf16']:.2f}x of the peer's;"
              " its accuracy cost is in the reduced-precision table)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
