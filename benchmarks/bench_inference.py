"""CPU inference, compscale vs timm, in one process, interleaved (issue 10).

    .venv/bin/python benchmarks/bench_inference.py [--threads 2] [--quick] [--json out.json]

Three scenarios, each timed round-robin so that every path sees the same machine load (each timed call
after one untimed call, so that no path pays for the previous runtime's spinning threads):

1. efficientnet_b0, batch 32, 224 px — compscale.optimize's choice vs timm eager NCHW, timm channels_last,
   timm TorchScript trace+freeze+channels_last and timm exported to ONNX Runtime (default session), the last
   both with timm's own export setting (dynamic batch) and with a static shape; the peer figure is the
   faster of the two;
2. the same at batch 1 (latency);
3. efficientnet_b1 (240 px) vs resnet152 (224 px) at batch 1: the paper's Table 4 claim (B1 0.098 s vs
   ResNet-152 0.554 s on one core, 5.7x), eager vs eager and best path vs best path.

All models are randomly initialised (nothing is downloaded), with BatchNorm statistics settled on random
images so that no path runs on subnormal floats. Goals (issue 10): B0 batch 32 throughput >= 1.2x timm->ONNX
Runtime; batch-1 latency <= 0.85x of it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys

import torch

import compscale
from compscale.deploy import optimize
from compscale.deploy.bench import build_path, measure, settle_batchnorm
from compscale.deploy.export import OnnxRuntimeModule, onnx_bytes


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


def ort_recipe_on(model: torch.nn.Module, x: torch.Tensor, threads: int, micro_batch: int | None):
    """compscale's ONNX Runtime recipe (graph rewrite, static shape, tuned session, micro-batches) applied to
    another library's model: shows how much of the gain is the recipe rather than the model code."""
    m = OnnxRuntimeModule(onnx_bytes(model, x[:1]), tuple(x.shape), threads, micro_batch=micro_batch)
    m(x)
    return lambda: m(x)


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


def effnet_scenario(batch: int, threads: int, repeats: int) -> tuple[list[dict], float, str]:
    res = 224
    x = torch.randn(batch, 3, res, res, generator=torch.Generator().manual_seed(0))
    ours = settle_batchnorm(compscale.create_model("efficientnet_b0"), x)
    peer = settle_batchnorm(timm_model("efficientnet_b0"), x)
    print(f"\n[efficientnet_b0, batch {batch}] optimizing (measures its candidates) ...", flush=True)
    best = optimize(ours, x, threads=threads)
    print(f"  compscale.optimize chose {best.backend}; its own timings (ms): "
          + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in best.timings.items()), flush=True)
    calls, labels = {}, {}
    calls["cs_best"], labels["cs_best"] = (lambda: best(x)), f"compscale best ({best.backend})"
    for p in ("eager", "channels_last", "torchscript"):
        calls[f"timm_{p}"], what = build_path(peer, p, x, threads)
        labels[f"timm_{p}"] = f"timm {what}"
    calls["timm_ort_dyn"], labels["timm_ort_dyn"] = ort_default_dynamic(peer, x), "timm -> ONNX Runtime default session, dynamic batch"
    calls["timm_ort_static"], labels["timm_ort_static"] = build_path(peer, "onnxruntime_default", x)[0], "timm -> ONNX Runtime default session, static shape"
    mb = getattr(best.runner, "micro_batch", None)
    calls["timm_recipe"], labels["timm_recipe"] = ort_recipe_on(peer, x, threads, mb), f"timm + compscale's ORT recipe (micro-batch {mb})"
    timings = measure(calls, batch=batch, warmup=2, repeats=repeats, settle=1)
    peer_key = min(("timm_ort_dyn", "timm_ort_static"), key=lambda k: timings[k].median)
    rows = table(f"efficientnet_b0, batch {batch}, {res} px, {threads} threads — peer: {labels[peer_key]}",
                 timings, labels, peer_key, batch)
    ratio = timings[peer_key].median / timings["cs_best"].median
    return rows, ratio, best.backend


def b1_vs_resnet152(threads: int, repeats: int) -> list[dict]:
    has_own = "resnet152" in compscale.list_models()
    x1 = torch.randn(1, 3, 240, 240, generator=torch.Generator().manual_seed(0))
    x2 = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    b1 = settle_batchnorm(compscale.create_model("efficientnet_b1"), x1)
    rn = settle_batchnorm(compscale.create_model("resnet152") if has_own else timm_model("resnet152"), x2)
    src = "compscale" if has_own else "timm (compscale has no resnet152 yet)"
    print(f"\n[efficientnet_b1 vs resnet152 from {src}, batch 1] optimizing both ...", flush=True)
    b1_best, rn_best = optimize(b1, x1, threads=threads), optimize(rn, x2, threads=threads)
    calls = {"b1_eager": lambda: b1(x1), "rn_eager": lambda: rn(x2), "b1_best": lambda: b1_best(x1), "rn_best": lambda: rn_best(x2)}
    labels = {"b1_eager": "efficientnet_b1 eager", "rn_eager": f"resnet152 eager ({src.split()[0]})",
              "b1_best": f"efficientnet_b1 best ({b1_best.backend})", "rn_best": f"resnet152 best ({rn_best.backend})"}
    t = measure(calls, batch=1, warmup=2, repeats=repeats, settle=1)
    rows = table("efficientnet_b1 (240 px) vs resnet152 (224 px), batch 1 — speed relative to resnet152 eager",
                 t, labels, "rn_eager", 1)
    print(f"  B1 faster than ResNet-152: eager {t['rn_eager'].median / t['b1_eager'].median:.1f}x, "
          f"best path {t['rn_best'].median / t['b1_best'].median:.1f}x (paper, one core: 5.7x)")
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
    r32, ratio32, b32 = effnet_scenario(32, args.threads, 3 if args.quick else 5)
    r1, ratio1, b1 = effnet_scenario(1, args.threads, 10 if args.quick else 30)
    out["b0_batch32"], out["b0_batch1"] = r32, r1
    out["b1_vs_resnet152"] = b1_vs_resnet152(args.threads, 5 if args.quick else 20)
    print("\nGoals (fp32, vs timm -> ONNX Runtime default session, same run):")
    print(f"  batch 32 throughput: {ratio32:.2f}x (goal >= 1.2x) {'MET' if ratio32 >= 1.2 else 'NOT MET'}  [{b32}]")
    print(f"  batch 1 latency: {1 / ratio1:.2f}x of the peer's (goal <= 0.85x) {'MET' if 1 / ratio1 <= 0.85 else 'NOT MET'}  [{b1}]")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
