"""How fast one small trial trains: compscale's engine against a plain timm loop, per seed, same run.

Every step-1 candidate, step-2 point and study point is a small network trained for a few epochs, several
seeds each; this measures that unit of work on the demo's baseline (``compscale.analysis.demo.demo_baseline``:
an EfficientNet-style network with a stride-1 stem, 28 px grayscale, Fashion-MNIST):

  (a) a plain timm loop: the same network from timm's generic EfficientNet builder (checked: the same params and
      multiply-adds), NCHW, images prepared once,
      random flips per batch, ``loss.backward(); opt.step()``;
  (b) the same loop in channels_last;
  (c) compscale's engine (``compscale.train``), one seed at a time, its default path;
  (d) compscale's engine with the seeds packed into one module (``compscale.train.packed``).

Each arm trains every seed on the same images for the same epochs with the same batch size and SGD; arms run
in rotated order, ``--rounds`` times, in one process. Printed per arm: training images per second PER SEED
(median over rounds, with min-max), the ratio to (a) and (b), and the mean test top-1 over the seeds (to show
nothing was lost). ``--end-to-end`` also times the whole command `compscale sweep` (φ = 0, the seeds, one
worker) against a plain timm script doing the same work (train the seeds, then score the same test images),
each in a fresh process, alternated.

    .venv/bin/python benchmarks/bench_trials.py                       # 10,000 images, 1 epoch, 3 seeds, batch 64
    .venv/bin/python benchmarks/bench_trials.py --end-to-end --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def load_data(args: argparse.Namespace):
    """The same uint8 images every arm trains on (a fixed subset), and the test images."""
    from compscale.data import load_dataset

    bundle = load_dataset(args.data, _demo_spec().resolution, "none", limit_train=args.limit_train,
                          limit_test=args.limit_test)
    tr, te = bundle.train, bundle.test
    return (tr.images, tr.labels, te.images, te.labels, bundle.mean, bundle.std)


# --- (a), (b): the plain timm loop ------------------------------------------------------------------------


#: Which network the arms train (``--baseline``): the demo's, or the issue's original one — B0's table at a
#: quarter of its depth and width, 32 px (the previous demo baseline), built by timm's ``_gen_efficientnet``.
BASELINES = ("demo", "quarter-b0")
BASELINE = "demo"


def timm_model(seed: int, channels: int, classes: int) -> nn.Module:
    if BASELINE == "quarter-b0":
        from timm.models.efficientnet import _gen_efficientnet

        torch.manual_seed(seed)
        return _gen_efficientnet("efficientnet_b0", channel_multiplier=0.25, depth_multiplier=0.25,
                                 pretrained=False, in_chans=channels, num_classes=classes, drop_rate=0.0,
                                 drop_path_rate=0.0)
    return _timm_demo_model(seed, channels, classes)


def _timm_demo_model(seed: int, channels: int, classes: int) -> nn.Module:
    """The demo's baseline (``compscale.analysis.demo.demo_baseline``) built by timm's generic EfficientNet
    builder from the same table: a ``ds`` block for expansion 1, ``ir`` blocks otherwise, SE 0.25 of the block
    input, swish, channels as written (divisor 1), and the stride-1 stem set on timm's conv after the build
    (timm's builder has no stem-stride argument). :func:`check_twins` checks both count the same parameters and
    multiply-adds."""
    from functools import partial

    from timm.models._efficientnet_builder import decode_arch_def, round_channels
    from timm.models.efficientnet import EfficientNet

    spec = _demo_spec()
    arch = [[f"{'ds' if st.expand_ratio == 1 else 'ir'}_r{st.repeats}_k{st.kernel}_s{st.stride}_e{st.expand_ratio}"
             f"_c{st.out_channels}_se{spec.se_ratio:g}"] for st in spec.stages]
    torch.manual_seed(seed)
    model = EfficientNet(decode_arch_def(arch), num_classes=classes, num_features=spec.head_channels,
                         in_chans=channels, stem_size=spec.stem_channels, fix_stem=True, act_layer=nn.SiLU,
                         round_chs_fn=partial(round_channels, multiplier=1.0, divisor=spec.divisor),
                         drop_rate=spec.dropout, drop_path_rate=spec.drop_path_rate)
    model.conv_stem.stride = (spec.stem_stride, spec.stem_stride)
    return model


def _demo_spec():
    """The baseline's compscale spec (``--baseline``)."""
    from compscale.analysis.demo import demo_baseline

    if BASELINE == "quarter-b0":
        from compscale.scaling import ScaleFactors
        from compscale.specs import EfficientNetSpec

        return EfficientNetSpec(in_chans=1, num_classes=10, dropout=0.0, drop_path_rate=0.0).scaled(
            ScaleFactors(depth=0.25, width=0.25, resolution=32))
    return demo_baseline()


def check_twins() -> None:
    """timm's network and compscale's: the same parameter count and the same multiply-adds (else stop)."""
    from compscale.models import build_model
    from compscale.profiler import profile

    spec = _demo_spec()
    ours, theirs = build_model(spec), timm_model(0, spec.in_chans, spec.num_classes)
    a = profile(ours, spec.resolution, in_chans=spec.in_chans)
    b = profile(theirs, spec.resolution, in_chans=spec.in_chans)
    if (a.params, a.macs) != (b.params, b.macs):
        raise SystemExit(f"timm's twin differs: params {a.params} vs {b.params}, multiply-adds {a.macs} vs {b.macs}")
    print(f"network: the {BASELINE} baseline, {a.params:,} parameters, {a.macs / 1e6:.2f} M multiply-adds at "
          f"{spec.resolution} px (timm's twin: the same)")


def plain_prepare(images: torch.Tensor, mean, std, size: int | None = None) -> torch.Tensor:
    size = size or _demo_spec().resolution
    x = images.float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def timm_run(data, seed: int, args: argparse.Namespace, channels_last: bool) -> tuple[float, float]:
    """Train one seed with the plain loop; (training seconds, test top-1)."""
    x_all, y_all, x_te, y_te, mean, std = data
    x_all, x_te = plain_prepare(x_all, mean, std), plain_prepare(x_te, mean, std)
    model = timm_model(seed, x_all.shape[1], 10)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    crit = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    steps = len(y_all) // args.batch
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        order = torch.randperm(len(y_all), generator=g)
        for s in range(steps):
            idx = order[s * args.batch:(s + 1) * args.batch]
            x, y = x_all[idx], y_all[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x).contiguous(memory_format=fmt)
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x_te[i:i + 500].contiguous(memory_format=fmt)).argmax(1)
                          for i in range(0, len(y_te), 500)])
    return seconds, float((pred == y_te).float().mean())


# --- (c), (d): compscale's engine -------------------------------------------------------------------------


def compscale_run(seeds: list[int], args: argparse.Namespace, root: Path, packed: bool,
                  **engine: Any) -> tuple[float, list[float]]:
    """Train the seeds with the engine (packed into one module, or one after the other); (training seconds
    summed over what ran, each seed's test top-1)."""
    from compscale.jobs.trial import train_spec, train_specs_packed

    spec = _demo_spec()
    opts = {"batch_size": args.batch, "optimizer": "sgd", "lr": args.lr, "schedule": "constant",
            "warmup_epochs": 0.0, "limit_train": args.limit_train, "limit_test": args.limit_test,
            "threads": args.threads, **engine}
    folder = Path(tempfile.mkdtemp(dir=root))
    if packed:
        results = train_specs_packed(spec, args.data, [folder / f"seed{s}" for s in seeds], folder / "packed",
                                     args.epochs, seeds, **opts)
        # One training loop for all the seeds: its time is in every seed's record.
        seconds = sum(rec["epoch_seconds"] for rec in results[0]["history"])
    else:
        results = [train_spec(spec, args.data, folder / f"seed{s}", args.epochs, s, **opts) for s in seeds]
        seconds = sum(rec["epoch_seconds"] for r in results for rec in r["history"])
    return seconds, [float(r["top1"]) for r in results]


# --- the two measurements ---------------------------------------------------------------------------------


def throughput(args: argparse.Namespace) -> dict:
    data = load_data(args)
    seeds = list(range(args.seeds))
    images = (len(data[1]) // args.batch) * args.batch * args.epochs  # per seed (last partial batch dropped)
    root = Path(tempfile.mkdtemp(prefix="bench-trials-"))
    arms = {
        "a": ("timm loop, NCHW", lambda: _timm_arm(data, seeds, args, False)),
        "b": ("timm loop, channels_last", lambda: _timm_arm(data, seeds, args, True)),
        "c": ("compscale, one seed at a time", lambda: compscale_run(seeds, args, root, packed=False)),
        "d": (f"compscale, {len(seeds)} seeds packed", lambda: compscale_run(seeds, args, root, packed=True)),
        # Optional arms (--arms abcdef): the fast paths the engine leaves off by default, measured. The compile
        # time is inside the epoch's time: what a run of this length pays for it.
        "e": ("compscale packed + torch.compile", lambda: compscale_run(seeds, args, root, packed=True, compile=True)),
        "f": ("compscale packed + bf16 autocast", lambda: compscale_run(seeds, args, root, packed=True, amp=True)),
    }
    arms = {k: v for k, v in arms.items() if k in args.arms}
    rate: dict[str, list[float]] = {k: [] for k in arms}
    top1: dict[str, list[float]] = {k: [] for k in arms}
    keys = list(arms)
    for r in range(args.rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:  # rotated order: drifts hit every arm alike
            seconds, accs = arms[k][1]()
            rate[k].append(images * len(seeds) / seconds)  # training images per second, per seed
            top1[k] += accs
            print(f"  round {r + 1} {arms[k][0]}: {rate[k][-1]:.0f} img/s per seed, top-1 "
                  f"{statistics.fmean(accs):.4f}", flush=True)
    med = {k: statistics.median(v) for k, v in rate.items()}
    print(f"\nCPU: {cpu_model()}, {args.threads} threads; {images} training images per seed, batch {args.batch}, "
          f"{len(seeds)} seeds, {args.rounds} rounds (median, min-max)")
    for k, (label, _) in arms.items():
        ratios = "  ".join(f"{med[k] / med[ref]:.2f}x ({ref})" for ref in ("a", "b") if ref in med)
        print(f"  ({k}) {label:36s} {med[k]:7.0f} img/s per seed [{min(rate[k]):.0f}-{max(rate[k]):.0f}]  {ratios}"
              f"  test top-1 {statistics.fmean(top1[k]):.4f}")
    return {"cpu": cpu_model(), "median_img_s_per_seed": med, "img_s": rate, "top1": top1}


def _timm_arm(data, seeds: list[int], args: argparse.Namespace, channels_last: bool) -> tuple[float, list[float]]:
    runs = [timm_run(data, s, args, channels_last) for s in seeds]
    return sum(r[0] for r in runs), [r[1] for r in runs]


PLAIN_SCRIPT = """
import sys, json, time, argparse, torch
sys.path.insert(0, {bench!r})
import bench_trials as b
args = argparse.Namespace(**json.loads({args!r}))
b.BASELINE = args.baseline
torch.set_num_threads(args.threads)
data = b.load_data(args)
for s in range(args.seeds):
    b.timm_run(data, s, args, False)
"""


def end_to_end(args: argparse.Namespace) -> dict:
    """Wall time of `compscale sweep` (φ = 0, the seeds, one worker) vs the plain timm script, fresh processes."""
    root = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    base = root / "baseline.json"
    base.write_text(_demo_spec().to_json())
    walls: dict[str, list[float]] = {"compscale sweep": [], "plain timm loop": []}
    for r in range(args.rounds):
        out = root / f"sweep{r}"
        sweep = [sys.executable, "-m", "compscale", "sweep", "--base", str(base), "--data", args.data, "--phis", "0",
                 "--seeds", str(args.seeds), "--epochs", str(args.epochs), "--batch-size", str(args.batch),
                 "--limit-train", str(args.limit_train), "--limit-test", str(args.limit_test), "--workers", "1",
                 "--threads", str(args.threads), "--optimizer", "sgd", "--lr", str(args.lr), "--out", str(out),
                 "--json"]
        plain = [sys.executable, "-c", PLAIN_SCRIPT.format(bench=str(Path(__file__).parent),
                                                           args=json.dumps(vars(args)))]
        for name, cmd in (("compscale sweep", sweep), ("plain timm loop", plain))[:: 1 if r % 2 == 0 else -1]:
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            walls[name].append(time.perf_counter() - t0)
            print(f"  round {r + 1} {name}: {walls[name][-1]:.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    ratio = med["plain timm loop"] / med["compscale sweep"]
    print(f"\nCPU: {cpu_model()}, {args.threads} threads; {args.seeds} seeds x {args.limit_train} images x "
          f"{args.epochs} epoch(s), batch {args.batch}, then {args.limit_test} test images")
    for k, v in walls.items():
        print(f"  {k:16s} {med[k]:6.1f} s [{min(v):.1f}-{max(v):.1f}]")
    print(f"  compscale is {ratio:.2f}x the plain loop's speed end to end (goal >= 2.0x)")
    return {"walls": walls, "ratio": ratio}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--limit-train", type=int, default=10000)
    p.add_argument("--limit-test", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--arms", default="abcd", help="which arms to run (letters a-f; e: + torch.compile, f: + bf16)")
    p.add_argument("--end-to-end", action="store_true", help="also time the whole commands")
    p.add_argument("--json", help="write the figures to this file")
    p.add_argument("--baseline", choices=BASELINES, default="demo",
                   help="demo: the demo's baseline; quarter-b0: the issue's original (B0, 1/4 depth and width, 32 px)")
    args = p.parse_args()
    global BASELINE
    BASELINE = args.baseline
    torch.set_num_threads(args.threads)
    check_twins()
    result = {"throughput": throughput(args)} if args.arms else {}
    if args.end_to_end:
        result["end_to_end"] = end_to_end(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
