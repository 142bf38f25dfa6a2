"""Deployment commands: export (ONNX / TorchScript, validated) and bench (side by side with a peer)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from compscale.commands._util import int_in, positive_int, render_table
from compscale.errors import UserError

#: --backend choice → (our path, the peer's path): the peer's counterpart of "best" and "onnxruntime" is
#: the strongest thing its users get without tuning: a static-shape ONNX export in ONNX Runtime's default
#: session. The paths are :data:`compscale.deploy.paths.PATHS`.
BACKEND_PAIRS = {
    "eager": ("eager", "eager"),
    "channels_last": ("channels_last", "channels_last"),
    "torchscript": ("torchscript", "torchscript"),
    "onnxruntime": ("onnxruntime", "onnxruntime_default"),
    "openvino": ("openvino", "onnxruntime_default"),
    "best": ("best", "onnxruntime_default"),
}


def cmd_export(args: argparse.Namespace) -> int:
    from compscale.compound import check_model_size
    from compscale.deploy.export import export_model
    from compscale.models import create_model, model_spec
    from compscale.models.registry import resolve_spec
    from compscale.models.weights import load_weights

    model_spec(args.model)  # unknown model → one line, before anything is built or written
    # The model at the traced input side within the size ceiling (a 100,000-pixel export is refused here).
    check_model_size(resolve_spec(args.model, resolution=args.resolution))
    model = create_model(args.model)
    if args.weights:
        load_weights(model, args.weights)
    kwargs = {"resolution": args.resolution, "batch": args.batch, "fold_bn": args.fold_bn}
    if args.format in ("onnx", "openvino"):
        kwargs["dynamic_batch"] = not args.static_batch
    report = export_model(model.eval(), args.out, args.format, **kwargs)
    if args.json:
        print(json.dumps(report.as_dict()))
        return 0
    shape = "x".join(map(str, report.input_shape))
    print(f"wrote {report.path}: {report.format}, input {shape}{' (batch dynamic)' if report.dynamic_batch else ''}, "
          f"{report.folded_batchnorms} BatchNorms folded, {report.bytes / 1e6:.1f} MB; validated: max|diff| "
          f"{report.max_abs_error:.2e} = {report.relative_error:.2e} of max|logit|")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from compscale.compound import check_model_size
    from compscale.deploy.bench import set_threads
    from compscale.models import model_spec

    threads = set_threads(args.threads)
    if args.precision != "fp32" and args.backend not in ("openvino", "best"):
        raise UserError(f"--precision {args.precision} needs --backend openvino or best")
    specs = {name: model_spec(name) for name in args.models}  # every name checked before any timing
    for name, spec in specs.items():  # ... and every size, at the timed input side
        check_model_size(spec.replace(resolution=args.resolution) if args.resolution else spec, what=name)
    rows = [row for name, spec in specs.items() for row in _bench_model(args, name, spec, threads)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = [("model", "model", str), ("library", "library", str), ("path", "path", str), ("batch", "batch", str),
            ("latency_ms", "ms/batch", lambda v: f"{v:.1f}"), ("images_per_s", "img/s", lambda v: f"{v:.1f}"),
            ("spread", "spread", lambda v: f"{v * 100:.0f}%")]
    if args.vs:
        cols.append(("speedup_vs_peer", f"x {args.vs}", lambda v: f"{v:.2f}x"))
    print(render_table(rows, cols))
    print(f"\n{threads} threads; medians of {args.repeats} interleaved repetitions (each the median of a block of "
          f"calls of about 80 ms) after {args.warmup} warm-up; random weights with settled BatchNorm statistics")
    return 0


def _bench_model(args: argparse.Namespace, name: str, spec: Any, threads: int) -> list[dict[str, Any]]:
    """One table row per library: ``name`` (and the peer's model of that name) timed side by side."""
    import torch

    from compscale.deploy.bench import measure
    from compscale.deploy.paths import build_path, peer_model, settle_batchnorm
    from compscale.models import create_model

    res = args.resolution or spec.resolution
    x = torch.randn(args.batch, spec.in_chans, res, res, generator=torch.Generator().manual_seed(0))
    ours_path, peer_path = BACKEND_PAIRS[args.backend]
    ours = settle_batchnorm(create_model(name), x)
    calls, what = {}, {}
    calls["compscale"], what["compscale"] = build_path(ours, ours_path, x, threads, args.precision)
    if args.vs:
        peer = settle_batchnorm(peer_model(args.vs, name), x)
        calls[args.vs], what[args.vs] = build_path(peer, peer_path, x, threads)
    timings = measure(calls, batch=args.batch, warmup=args.warmup, repeats=args.repeats, settle=1, inner="auto")
    rows = []
    for who, t in timings.items():
        row = {"model": name, "library": who, "path": what[who],
               "precision": args.precision if who == "compscale" else "fp32", "batch": args.batch,
               "resolution": res, "threads": threads, "latency_ms": t.latency_ms, "images_per_s": t.images_per_s,
               "spread": t.spread, "repeats": len(t.times)}
        if args.vs:
            row["speedup_vs_peer"] = timings[args.vs].median / t.median
        rows.append(row)
    return rows


def register(sub: argparse._SubParsersAction) -> None:
    from compscale.train.config import MAX_BATCH, max_threads

    p = sub.add_parser("export",
                       help="export a model to ONNX, TorchScript or OpenVINO IR, validated by running the file")
    p.add_argument("model")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript", "openvino"),
                   help="openvino: OUT must end in .xml; the weights go to the .bin beside it")
    p.add_argument("--weights", help="safetensors or .pth state dict (any registered layout) to load first")
    p.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the preceding convolutions")
    p.add_argument("--resolution", type=positive_int, help="input side in pixels (default: the model's)")
    p.add_argument("--batch", type=int_in(1, MAX_BATCH), default=1, help="batch size traced (default 1)")
    p.add_argument("--static-batch", action="store_true",
                   help="ONNX/OpenVINO: fix the batch size (faster in ONNX Runtime)")
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="time inference paths, interleaved, optionally against timm or torchvision")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("--batch", type=int_in(1, MAX_BATCH), default=1)
    p.add_argument("--threads", type=int_in(1, max_threads, "4 per core"),
                   help="intra-op threads (torch, ONNX Runtime, OpenVINO)")
    p.add_argument("--backend", choices=tuple(BACKEND_PAIRS), default="best")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="arithmetic of the openvino/best paths; "
                        "bf16 (CPUs with AVX512-BF16 or AMX) changes the logits")
    p.add_argument("--vs", choices=("timm", "torchvision"), help="peer library, timed in the same run (fp32)")
    p.add_argument("--resolution", type=positive_int)
    p.add_argument("--repeats", type=int_in(1, 10_000), default=10)
    p.add_argument("--warmup", type=int_in(1, 10_000), default=2)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)
