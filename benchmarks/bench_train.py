"""Training speed and memory: compscale's engine vs timm's model in a plain loop, same settings.

Three sides train EfficientNet-B0 (same architecture, same TF-style RMSProp, label smoothing, batch, input
size) on the same random batches: compscale's model in timm's memory layout (like for like), compscale's
*default training path* (channels_last, the engine's per-step seeding), and timm's model in a plain eager loop.
Speed: steps interleaved in one process, rotated each round, so machine noise hits all alike; the ratios are
img/s over timm's (> 1: compscale faster). Goal: the default path >= 1.3x timm eager, peak memory <= 1.0x.
Memory: on CUDA, peak allocated bytes per side in-process; on the CPU (no allocator statistics), each side
runs in a fresh child process and reports the growth of its peak resident memory over the training steps.

    .venv/bin/python benchmarks/bench_train.py                      # B0, 128 px, batch 32, 2 threads
    .venv/bin/python benchmarks/bench_train.py --channels-last --rounds 6
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from torch import nn

SIDES = ("compscale", "compscale-default", "timm")


def channels_last(side: str, args: argparse.Namespace) -> bool:
    """The memory layout of a side: the engine's default path is channels_last (TrainConfig.channels_last);
    the other two use the layout asked for (NCHW unless --channels-last), so compscale vs timm is like for like."""
    return True if side == "compscale-default" else args.channels_last


def build(side: str, args: argparse.Namespace):
    """(model, optimizer, step function) of one side."""
    torch.manual_seed(0)
    if side.startswith("compscale"):
        from compscale import create_model
        from compscale.train.distributed import derive_seed, seed_rng
        from compscale.train.loop import train_step
        from compscale.train.optim import RMSpropTF, param_groups

        model = create_model(args.model, num_classes=args.classes)
        opt = RMSpropTF(param_groups(model, 1e-5), lr=0.016 * args.batch / 256)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        crit = nn.CrossEntropyLoss(label_smoothing=0.1)
        counter = [0]

        def step(x, y):
            seed_rng(derive_seed(0, 0, counter[0]), x.device)  # what the engine does per step
            counter[0] += 1
            return train_step(model, x, y, opt, crit, scaler)
    else:
        import timm
        import timm.optim

        model = timm.create_model(args.model, num_classes=args.classes)
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        opt = timm.optim.RMSpropTF([{"params": decay, "weight_decay": 1e-5}, {"params": no_decay, "weight_decay": 0.0}],
                                   lr=0.016 * args.batch / 256, alpha=0.9, eps=1e-3, momentum=0.9)
        crit = nn.CrossEntropyLoss(label_smoothing=0.1)

        def step(x, y):  # the plain loop
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()

    model.to(args.device).train()
    if channels_last(side, args):
        model.to(memory_format=torch.channels_last)
    return model, step


def batches(args: argparse.Namespace, n: int, side: str = "timm"):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        x = torch.randn(args.batch, 3, args.resolution, args.resolution, generator=g)
        y = torch.randint(0, args.classes, (args.batch,), generator=g)
        x = x.to(args.device)
        if channels_last(side, args):
            x = x.contiguous(memory_format=torch.channels_last)
        out.append((x, y.to(args.device)))
    return out


def cpu_model() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def sync(args):
    if args.device == "cuda":
        torch.cuda.synchronize()


def memory_child(side: str, args: argparse.Namespace) -> None:
    """Print the peak-RSS growth (bytes) of ``args.steps`` training steps of one side, in this fresh process."""
    import timm  # noqa: F401

    import compscale.train.loop  # noqa: F401  (both sides import both libraries: same baseline)

    torch.set_num_threads(args.threads)
    _, step = build(side, args)
    data = batches(args, 1, side)
    with open("/proc/self/statm") as fh:
        rss_before = int(fh.read().split()[1]) * resource.getpagesize()
    for _ in range(args.steps):
        step(*data[0])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"side": side, "peak_growth": peak - rss_before}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_b0")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds (each side runs --steps per round)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--memory-child", choices=SIDES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args)
        return
    torch.set_num_threads(args.threads)
    sides = {name: build(name, args)[1] for name in SIDES}
    data = {name: batches(args, args.steps, name) for name in SIDES}
    for name, step in sides.items():  # warm-up (allocator, kernels)
        step(*data[name][0])
    sync(args)
    times = {name: [] for name in sides}
    for r in range(args.rounds):
        order = list(sides)[r % len(sides):] + list(sides)[:r % len(sides)]  # rotated: drifts hit every side
        for name in order:
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            for x, y in data[name]:
                sides[name](x, y)
            sync(args)
            times[name].append((time.perf_counter() - t0) / args.steps)
    print(f"CPU: {cpu_model()}")
    print(f"{args.model} training, {args.resolution}px, batch {args.batch}, {args.threads} threads, {args.device}"
          f"{', channels_last' if args.channels_last else ''}; {args.rounds} interleaved rounds x {args.steps} steps")
    ips = {}
    for name, ts in times.items():
        best, med = min(ts), sorted(ts)[len(ts) // 2]
        ips[name] = args.batch / med
        print(f"  {name:10s} median {med * 1000:7.1f} ms/step ({args.batch / med:6.1f} img/s),"
              f" best {best * 1000:7.1f} ms")
    print(f"  img/s ratio compscale / timm (medians): {ips['compscale'] / ips['timm']:.3f} (same layout); "
          f"compscale's default path / timm: {ips['compscale-default'] / ips['timm']:.3f} (goal >= 1.3)")

    if args.device == "cuda":
        peaks = {}
        for name, step in sides.items():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            step(*data[name][0])
            torch.cuda.synchronize()
            peaks[name] = torch.cuda.max_memory_allocated()
    else:
        peaks = {}
        for name in sides:
            cmd = [sys.executable, __file__, "--memory-child", name, "--model", args.model, "--resolution",
                   str(args.resolution), "--batch", str(args.batch), "--threads", str(args.threads), "--classes",
                   str(args.classes), "--steps", "2", "--device",
                   args.device] + (["--channels-last"] if args.channels_last else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            peaks[name] = json.loads(out.strip().splitlines()[-1])["peak_growth"]
    kind = "peak allocated" if args.device == "cuda" else "peak RSS growth over 2 steps (fresh process each)"
    for name, value in peaks.items():
        print(f"  {name:10s} {kind}: {value / 2**20:8.1f} MiB")
    print(f"  memory ratio compscale / timm: {peaks['compscale'] / peaks['timm']:.3f} (same layout); default path / "
          f"timm: {peaks['compscale-default'] / peaks['timm']:.3f} (goal <= 1.0)")


if __name__ == "__main__":
    main()
