"""GPU throughput, compscale vs timm, in one process (issue 10, item 5).

    .venv/bin/python benchmarks/gpu_throughput.py [--models efficientnet_b0 efficientnet_b3] [--batch 64]

Training (forward + backward + SGD step) and inference images/s of EfficientNet-B0 (224 px) and B3 (300 px)
on one CUDA GPU with AMP (bfloat16 autocast, or float16 with a GradScaler where bf16 is unsupported) and
channels_last, compscale and timm interleaved step by step. Then packed seeds (issue 15): the demo's small
baseline (32 px, grayscale) trained as k seeds packed into one module (``compscale.models.packing``), k = 1, 4,
16, 64, against timm's same network one seed at a time: seed-images per second (k × batch / step time), the
figure that decides how long a study's many small trials take on a GPU. Exits with a message (status 0) when
no CUDA device is present. Random weights and random images: throughput only.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def _step_fns(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train() -> None:
        model.train()
        with torch.autocast("cuda", dtype=dtype):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    @torch.inference_mode()
    def infer() -> None:
        model.eval()
        with torch.autocast("cuda", dtype=dtype):
            model(x)

    return train, infer


def _time(fns: dict, steps: int, warmup: int) -> dict[str, float]:
    """Median seconds per step, the candidates interleaved step by step; CUDA synchronised around each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize()
    times = {k: [] for k in fns}
    for _ in range(steps):
        for k, fn in fns.items():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def packed_seeds(args: argparse.Namespace, dtype: torch.dtype, dev: torch.device) -> None:
    """Seed-images/s of k packed seeds of the demo baseline vs timm's same network alone (AMP, channels_last)."""
    from timm.models.efficientnet import _gen_efficientnet

    from compscale.analysis.demo import demo_baseline
    from compscale.models import build_model
    from compscale.models.packing import member_losses, pack

    spec = demo_baseline().replace(in_chans=1, num_classes=10)
    b = args.small_batch
    print(f"\npacked seeds: {spec.family} demo baseline, 32 px, batch {b} per seed, AMP {dtype}, channels_last")
    print(f"{'seeds':>6s} {'compscale seed-img/s':>21s} {'timm (1 seed) img/s':>20s} {'ratio':>6s}")
    peer = _gen_efficientnet("efficientnet_b0", channel_multiplier=0.25, depth_multiplier=0.25, in_chans=1,
                             num_classes=10).to(dev, memory_format=torch.channels_last)
    xp = torch.randn(b, 1, 32, 32, device=dev).contiguous(memory_format=torch.channels_last)
    yp = torch.randint(0, 10, (b,), device=dev)
    peer_train, _ = _step_fns(peer, xp, yp, dtype)
    for k in args.seeds:
        members = []
        for seed in range(k):
            torch.manual_seed(seed)
            members.append(build_model(spec))
        packed = pack(members).to(dev, memory_format=torch.channels_last)
        x = torch.randn(b, k, 32, 32, device=dev).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (b, k), device=dev)
        opt = torch.optim.SGD(packed.parameters(), lr=0.01, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()

        def ours(packed=packed, x=x, y=y, opt=opt) -> None:
            with torch.autocast("cuda", dtype=dtype):
                loss = member_losses(packed(x), y, loss_fn).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t = _time({"ours": ours, "timm": peer_train}, args.steps, args.warmup)
        ours_rate, peer_rate = k * b / t["ours"], b / t["timm"]
        print(f"{k:6d} {ours_rate:21.0f} {peer_rate:20.0f} {ours_rate / peer_rate:5.2f}x")
        del packed, members, opt
        torch.cuda.empty_cache()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["efficientnet_b0", "efficientnet_b3"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 4, 16, 64], help="packed seeds to time")
    ap.add_argument("--small-batch", type=int, default=64, help="batch per seed of the packed-seeds table")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_throughput: no CUDA device here; nothing measured (run it on a machine with a GPU).")
        return 0
    try:
        import timm
    except ImportError:
        print("gpu_throughput: needs timm (pip install timm)", file=sys.stderr)
        return 2
    import compscale

    torch.backends.cudnn.benchmark = True
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    dev = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, timm {timm.__version__}, AMP {dtype}, "
          f"channels_last, batch {args.batch}, medians of {args.steps} interleaved steps")
    print(f"{'model':18s} {'mode':6s} {'compscale img/s':>16s} {'timm img/s':>11s} {'ratio':>6s}")
    for name in args.models:
        res = compscale.model_spec(name).resolution
        x = torch.randn(args.batch, 3, res, res, device=dev).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 1000, (args.batch,), device=dev)
        ours = compscale.create_model(name).to(dev, memory_format=torch.channels_last)
        peer = timm.create_model(name, pretrained=False).to(dev, memory_format=torch.channels_last)
        (ot, oi), (pt, pi) = _step_fns(ours, x, y, dtype), _step_fns(peer, x, y, dtype)
        for mode, fns in (("train", {"ours": ot, "timm": pt}), ("infer", {"ours": oi, "timm": pi})):
            t = _time(fns, args.steps, args.warmup)
            print(f"{name:18s} {mode:6s} {args.batch / t['ours']:16.1f} {args.batch / t['timm']:11.1f} "
                  f"{t['timm'] / t['ours']:5.2f}x")
        del ours, peer
        torch.cuda.empty_cache()
    packed_seeds(args, dtype, dev)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
