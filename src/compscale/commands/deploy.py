"""Deployment commands: export (ONNX / TorchScript, validated), bench (side by side with a peer), pareto (phi
against measured latency) and the timing half of ``scale --target-latency``."""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from compscale.commands._util import (
    BarProgress,
    finite_float,
    fmt_count,
    int_in,
    positive_int,
    print_json,
    render_table,
)
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
    from compscale.models.weights import build_reference, reference_with_weights

    if args.format in PEER_LAYOUTS:
        import os

        if os.path.splitext(args.out)[1].lower() not in (".safetensors", ".pth", ".pt"):
            raise UserError(f"--format {args.format} writes a state dict: --out must end in .safetensors or .pth")
        if args.fold_bn:
            raise UserError(f"--fold-bn changes the tensors: the {args.format} model would not load them")
    # The model (a name, a spec file, a weights file with its spec, module:name) and its weights resolved, then
    # its size at the traced input side checked (a 100,000-pixel export is refused), before anything is built.
    ref = reference_with_weights(args.model, args.weights)
    check_model_size(ref.spec.replace(resolution=args.resolution) if args.resolution else ref.spec)
    model = build_reference(ref)
    if args.format in PEER_LAYOUTS:
        return _export_layout(args, model)
    kwargs = {"resolution": args.resolution, "batch": args.batch, "fold_bn": args.fold_bn}
    if args.format in ("onnx", "openvino"):
        kwargs["dynamic_batch"] = not args.static_batch
    bar = BarProgress("step")
    try:
        report = export_model(model.eval(), args.out, args.format, progress=bar, **kwargs)
    finally:
        bar.close()
    if args.json:
        fields = report.as_dict()
        print_json({"model": args.model, "out": fields.pop("path"), **fields})
        return 0
    shape = "x".join(map(str, report.input_shape))
    print(f"wrote {report.path}: {report.format}, input {shape}{' (batch dynamic)' if report.dynamic_batch else ''}, "
          f"{report.folded_batchnorms} BatchNorms folded, {report.bytes / 1e6:.1f} MB; validated: max|diff| "
          f"{report.max_abs_error:.2e} = {report.relative_error:.2e} of max|logit|")
    return 0


#: ``export --format`` values that write a state dict named as a peer library names it.
PEER_LAYOUTS = ("timm", "torchvision")
#: Where a peer's model of a registered architecture has another name than ours.
PEER_NAMES = {"timm": {"senet154": "legacy_senet154", "xception": "legacy_xception"}}


def _export_layout(args: argparse.Namespace, model: Any) -> int:
    """``export --format timm|torchvision``: the weights as the peer's ``load_state_dict(strict=True)`` takes
    them (safetensors, or a tensors-only ``.pth``), with the peer's call that builds the matching model."""
    from compscale.models.registry import registered_name
    from compscale.models.weights import save_weights

    save_weights(model, args.out, layout=args.format)
    spec, name = model.spec, registered_name(model.spec)
    name = PEER_NAMES.get(args.format, {}).get(name, name)
    if args.format == "timm":
        extra = "".join(f", {k}={v}" for k, v, default in (("num_classes", spec.num_classes, 1000),
                                                            ("in_chans", spec.in_chans, 3)) if v != default)
        how = f"timm.create_model({name!r}{extra})"
    else:
        extra = f", num_classes={spec.num_classes}" if spec.num_classes != 1000 else ""
        how = f"torchvision.models.get_model({name!r}, weights=None{extra})"
        if spec.in_chans != 3:  # torchvision's constructors take no input-channel count
            how += f" with its first convolution replaced by one of {spec.in_chans} input channel(s)"
    if name is None:  # not a registered architecture: the peer has no name for it
        how = f"a {args.format} model of the same architecture ({spec.num_classes} classes, {spec.in_chans} channels)"
    tensors = sum(1 for _ in model.state_dict())
    if args.json:
        print_json({"model": args.model, "format": args.format, "out": args.out, "tensors": tensors,
                    "peer_model": name})
        return 0
    print(f"wrote {args.out}: {tensors} tensors named as {args.format} names them; {how} takes them with "
          f"load_state_dict(state, strict=True)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from compscale.compound import check_model_size
    from compscale.deploy.bench import set_threads
    from compscale.models import model_spec

    threads = set_threads(args.threads)
    if args.precision != "fp32" and args.backend not in ("openvino", "best"):
        raise UserError(f"--precision {args.precision} needs --backend openvino or best")
    names = [with_phi(name, args.phi) for name in args.models]
    specs = {name: model_spec(name) for name in names}  # every name checked before any timing
    for name, spec in specs.items():  # ... and every size, at the timed input side
        check_model_size(spec.replace(resolution=args.resolution) if args.resolution else spec, what=name)
    bar = BarProgress("round", kinds=("message",))
    try:
        rows = [row for name, spec in specs.items() for row in _bench_model(args, name, spec, threads, bar)]
    finally:
        bar.close()
    if args.json:
        print_json(rows, indent=2)
        return 0
    cols = [("model", "model", str), ("library", "library", str), ("backend", "path", str), ("batch", "batch", str),
            ("latency_ms", "ms/batch", lambda v: f"{v:.3g}"), ("latency_low_ms", "95% interval", str),
            ("images_per_s", "img/s", lambda v: f"{v:.1f}"), ("latency_spread", "spread", lambda v: f"{v * 100:.0f}%")]
    if args.vs:
        cols.append(("speedup_vs_peer", f"x {args.vs}", lambda v: f"{v:.2f}x"))
    cols.append(("latency_note", "note", str))
    shown = [{**r, "latency_low_ms": f"[{r['latency_low_ms']:.3g}, {r['latency_high_ms']:.3g}]"} for r in rows]
    print(render_table(shown, cols))
    print(f"\n{threads} threads; medians of {args.repeats} interleaved repetitions (each the median of a block of "
          f"calls of about 80 ms) after {args.warmup} warm-up, with the median's 95 % interval and the spread "
          f"(p90 - p10) of the repetitions; random weights with settled BatchNorm statistics")
    return 0


def with_phi(reference: str, phi: float | None) -> str:
    """``reference`` scaled by ``--phi`` (``NAME@phi=X``; :func:`compscale.models.registry.resolve_reference`)."""
    return reference if phi is None else f"{reference}@phi={phi:g}"


def _bench_model(args: argparse.Namespace, name: str, spec: Any, threads: int,
                 progress: Any = None) -> list[dict[str, Any]]:
    """One table row per library: ``name`` (and the peer's model of that name) timed side by side."""
    import dataclasses

    import torch

    from compscale.deploy.bench import measure
    from compscale.deploy.latency import Watch, summarize
    from compscale.deploy.paths import build_path, peer_model, settle_batchnorm
    from compscale.models import create_model

    res = args.resolution or spec.resolution
    x = torch.randn(args.batch, spec.in_chans, res, res, generator=torch.Generator().manual_seed(0))
    ours_path, peer_path = BACKEND_PAIRS[args.backend]
    ours = settle_batchnorm(create_model(spec), x)
    calls, what = {}, {}
    calls["compscale"], what["compscale"] = build_path(ours, ours_path, x, threads, args.precision)
    if args.vs:
        from compscale.models.registry import registered_name

        # A spec or weights file of a registered architecture is timed against the peer's model of that name.
        if spec.in_chans != 3:
            raise UserError(f"--vs {args.vs}: {name} takes {spec.in_chans} input channel(s); the peer's model 3")
        peer = settle_batchnorm(peer_model(args.vs, registered_name(spec) or name), x)
        calls[args.vs], what[args.vs] = build_path(peer, peer_path, x, threads)
    watch = Watch()
    timings = measure(calls, batch=args.batch, warmup=args.warmup, repeats=args.repeats, settle=1, inner="auto",
                      progress=progress and (lambda e: progress(dataclasses.replace(e, message=f"timing {name}"))))
    watch.stop()
    rows = []
    for who, t in timings.items():
        lat = summarize([v * 1e3 for v in t.times], watch.load, watch.others, watch.seconds)
        row = {"model": name, "library": who, "backend": what[who],
               "precision": args.precision if who == "compscale" else "fp32", "batch": args.batch,
               "resolution": res, "threads": threads, **lat.fields(), "images_per_s": t.images_per_s,
               "repeats": len(t.times)}
        if args.vs:
            row["speedup_vs_peer"] = timings[args.vs].median / t.median
        rows.append(row)
    return rows


def register(sub: argparse._SubParsersAction) -> None:
    from compscale.train.config import MAX_BATCH, max_threads

    p = sub.add_parser("export",
                       help="export a model to ONNX, TorchScript or OpenVINO IR, validated by running the file")
    p.add_argument("model", help="a registered name, a spec file, a weights file saved by compscale, or module:name")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript", "openvino") + PEER_LAYOUTS,
                   help="openvino: OUT must end in .xml; the weights go to the .bin beside it. timm, torchvision: "
                        "a state dict (.safetensors or .pth) named as that library names it")
    p.add_argument("--weights", help="safetensors or .pth state dict (any registered layout) to load first "
                                     "(MODEL may also be a weights file saved by compscale)")
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
    p.add_argument("--phi", type=finite_float, help="time each MODEL compound-scaled by phi (as MODEL@phi=X)")
    p.add_argument("--repeats", type=int_in(1, 10_000), default=10)
    p.add_argument("--warmup", type=int_in(1, 10_000), default=2)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("pareto", help="phi against multiply-adds, parameters and latency measured on this machine "
                                      "(table, JSON and a PNG: your own Figure 5)")
    p.add_argument("--base", default="efficientnet_b0", help="the baseline (any model reference)")
    p.add_argument("--phis", type=finite_float, nargs="+", default=[0, 0.5, 1, 1.5, 2, 2.5, 3],
                   help="compound coefficients (default 0 0.5 ... 3)")
    p.add_argument("--batch", type=int_in(1, MAX_BATCH), default=1)
    p.add_argument("--threads", type=int_in(1, max_threads, "4 per core"),
                   help="intra-op threads (default: torch's, the cores)")
    p.add_argument("--no-best", action="store_true", help="time eager PyTorch only, not compscale.optimize's path")
    p.add_argument("--no-official", action="store_true", help="do not mark the released B0..B7 (B0 baseline)")
    p.add_argument("--max-seconds", type=finite_float, default=5.0,
                   help="the longest one model is timed (default 5 s; sooner once its median is known to 5 %%)")
    p.add_argument("--out", default="pareto", help="folder for pareto.png and pareto.json (default: pareto)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_pareto)


def cmd_pareto(args: argparse.Namespace) -> int:
    import json
    import os

    from compscale.analysis.pareto import latency_pareto, plot_pareto
    from compscale.io import atomic_write_text
    from compscale.locks import output_lock
    from compscale.models import model_spec
    from compscale.vocabulary import normalize

    if len(set(args.phis)) != len(args.phis):
        raise UserError("--phis: each phi once")
    if not 0 < args.max_seconds <= 3600:
        raise UserError(f"--max-seconds must be from 0 to 3600, got {args.max_seconds:g}")
    model_spec(args.base)  # an unknown model: one line, before the folder is made
    paths = ("eager",) if args.no_best else ("eager", "best")
    with output_lock(args.out, "pareto"):
        bar = BarProgress("model")
        try:
            result = latency_pareto(args.base, sorted(args.phis), args.batch, args.threads, paths,
                                    official=not args.no_official, max_seconds=args.max_seconds, progress=bar)
        finally:
            bar.close()
        png, js = os.path.join(args.out, "pareto.png"), os.path.join(args.out, "pareto.json")
        plot_pareto(result, png)
        result["plots"] = [png]
        atomic_write_text(js, json.dumps(normalize(result), indent=2) + "\n")
        result["out"] = js
    if args.json:
        print_json(result, indent=2)
        return 0
    print(pareto_table(result))
    print(f"\nwrote {png} and {js} ({result['distinct']} timings in {result['seconds']:.0f} s)")
    return 0


def pareto_table(result: dict[str, Any]) -> str:
    """``pareto``'s rows as text: one line per phi, a latency column (median [interval] spread) per path, then
    the released models and the notes of busy or noisy timings."""
    paths = list(dict.fromkeys(r["backend"] for r in result["rows"]))
    by_phi: dict[float, dict[str, Any]] = {}
    notes = []
    for r in result["rows"]:
        line = by_phi.setdefault(r["phi"], {k: r[k] for k in ("phi", "resolution", "params", "macs", "macs_ratio")})
        line[r["backend"]] = _timing_cell(r)
        if r["latency_note"]:
            notes.append(f"phi={r['phi']:g} {r['backend']}: {r['latency_note']}")
        if r["backend"] != "eager" and r.get("runtime"):
            line[r["backend"]] += f" {r['runtime'].split('-> ')[-1]}"
    cols = [("phi", "phi", lambda v: f"{v:g}"), ("resolution", "res", str), ("params", "params", fmt_count),
            ("macs", "MACs", lambda v: fmt_count(v, 1e9, 3, "G")), ("macs_ratio", "x base", lambda v: f"{v:.2f}x")]
    cols += [(p, f"{p} ms [95% interval] spread", str) for p in paths]
    threads = result["threads"]
    text = [f"{result['model']}: batch {result['batch']}, {threads} thread{'s' if threads != 1 else ''}",
            render_table(list(by_phi.values()), cols)]
    if result["official"]:
        marks = [{**m, "eager": _timing_cell(m) if m["timed"] else "not timed (larger than the largest phi)"}
                 for m in result["official"]]
        text += ["\nreleased models:", render_table(marks, [
            ("model", "model", str), ("resolution", "res", str), ("params", "params", fmt_count),
            ("macs", "MACs", lambda v: fmt_count(v, 1e9, 3, "G")), ("eager", "eager ms [95% interval] spread", str)])]
        notes += [f"{m['model']}: {m['latency_note']}" for m in result["official"] if m.get("latency_note")]
    if notes:
        text += ["\nnotes:"] + [f"  {n}" for n in notes]
    return "\n".join(text)


def _timing_cell(r: dict[str, Any]) -> str:
    return (f"{r['latency_ms']:.3g} [{r['latency_low_ms']:.3g}, {r['latency_high_ms']:.3g}] "
            f"{r['latency_spread'] * 100:.0f}%" + (" busy" if r.get("busy") else ""))


# --- scale --target-latency (called by `compscale scale`) --------------------------------------------------


def scale_to_latency_budget(args: argparse.Namespace, scaling: Any) -> Any:
    """``scale --target-latency``: :func:`compscale.deploy.latency.scale_to_latency` with the command's flags,
    its progress as lines on stderr."""
    from compscale.commands._util import JobProgress
    from compscale.deploy.latency import scale_to_latency

    progress = JobProgress("scale", quiet=args.json)
    try:
        return scale_to_latency(args.base, args.target_latency, scaling, batch=args.batch or 1, threads=args.threads,
                                path=args.backend or "eager", target_macs=args.target_macs,
                                target_params=args.target_params, depth_rounding=args.depth_rounding,
                                progress=progress)
    finally:
        progress.close()


def latency_choice_lines(choice: Any) -> list[str]:
    """What ``scale --target-latency`` prints after the scaled model: the latency here with its interval, in the
    fresh processes with their bound, and the next phi's, each with its note."""
    lat, budget = choice.latency, choice.budget_ms
    threads = lat.extra.get("threads", choice.threads)
    how = f"{lat.extra.get('backend', choice.backend)}, batch {choice.batch}, {threads} thread{'s' * (threads != 1)}"
    lines = [f"\nlatency budget {budget:g} ms ({how}): phi = {choice.phi:g} is the largest that fits",
             f"  here: {lat.describe()}"]
    if choice.fresh:
        medians = ", ".join(f"{f.median_ms:.3g}" for f in choice.fresh)
        verdict = ("fits" if choice.confirmed else f"over the budget: NOT confirmed after {choice.rounds} rounds "
                   "(the machine is too noisy to promise it)")
        lines.append(f"  re-timed in {len(choice.fresh)} fresh processes: {medians} ms; a fresh process's median "
                     f"stays under {choice.bound_ms:.3g} ms (95 % prediction bound): {verdict}")
        lines += [f"    fresh process {i + 1}: {f.note}" for i, f in enumerate(choice.fresh) if f.note]
    else:
        lines.append("  not re-timed in a fresh process: another process may measure it several per cent slower")
    nl = choice.next_latency
    if choice.next_phi is None:
        lines.append("  no larger phi was tried: it is the largest the search (or a multiply-add or parameter budget) "
                     "allows")
    elif nl is not None:
        low = choice.next_fresh_low_ms
        if nl.low_ms > budget and (low is None or low > budget):
            verdict = "misses the budget"
        elif nl.low_ms > budget:
            verdict = (f"misses the budget here, but within the noise of fresh processes (they ran the chosen model "
                       f"at {statistics.fmean(f.median_ms for f in choice.fresh) / lat.median_ms:.2f}x this "
                       f"process's latency; one may run this at {low:.3g} ms): a re-run may find that it fits")
        elif nl.median_ms <= budget:
            verdict = ("within the noise: its median fits here, but without the room a fresh process needs; a "
                       "re-run may find that it fits")
        else:
            verdict = "within the noise: its interval straddles the budget; a re-run may find that it fits"
        lines.append(f"  next phi = {choice.next_phi:g}: {nl.describe()}: {verdict}")
    rounds = f" and {choice.rounds} rounds of fresh processes" if choice.rounds > 1 else ""
    lines.append(f"  {choice.timed} architectures timed{rounds} in {choice.seconds:.0f} s")
    return lines
