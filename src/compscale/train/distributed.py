"""One process or many (``torchrun --nproc_per_node=N -m compscale train ...``): DDP over gloo on the CPU,
NCCL on GPUs; a sampler that splits every *global* batch across the processes; sums across processes.

The batch size is global: with N processes each one takes batch/N samples of the same global batch, so a
1-process and an N-process run see the same samples at every step (only BatchNorm's per-process statistics
and the float summation order differ). ``torch.utils.data.DistributedSampler`` instead deals each process a
strided share of the whole epoch, which makes the global batches depend on N and cannot start half way
through an epoch; hence :class:`GlobalBatchSampler`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

from compscale.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def init_distributed(device_name: str = "auto") -> DistInfo:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1); otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local_rank, device)


def shutdown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over the processes (in place; a no-op for one process)."""
    if info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (seed, epoch, index, …); stable across processes and runs."""
    digest = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def seed_rng(seed: int, device: torch.device) -> None:
    """Seed the generator that dropout and stochastic depth draw from on ``device`` (the CPU one, and the
    current CUDA device's when training there).

    Not ``torch.manual_seed``: it also seeds every other backend, and in torch 2.x each lazily initialised one
    records a stack trace — about 150 µs a call, which, once per step and once per augmented sample, cost a
    small model a third of its training time.
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


class GlobalBatchSampler(torch.utils.data.Sampler):
    """The indices this process loads in one epoch, as ``(index, augmentation seed)`` pairs.

    Epoch e's order is a permutation drawn from (seed, e); global batch s is its slice [sB, (s+1)B), of which
    process r takes the r-th of N equal parts. The last incomplete global batch is dropped (BatchNorm dislikes
    tiny batches). :meth:`set_epoch` with ``start_step`` resumes half way through an epoch.
    """

    def __init__(self, num_samples: int, batch_size: int, info: DistInfo, seed: int, augment: bool = True) -> None:
        if batch_size % info.world_size:
            raise UserError(f"--batch-size {batch_size} is not divisible by the {info.world_size} processes")
        if num_samples < batch_size:
            raise UserError(f"--batch-size {batch_size} is larger than the training set ({num_samples} images)")
        self.n, self.batch, self.info, self.seed, self.augment = num_samples, batch_size, info, seed, augment
        self.local_batch = batch_size // info.world_size
        self.steps_per_epoch = num_samples // batch_size
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.local_batch

    def __iter__(self) -> Iterator[tuple[int, int] | int]:
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, 0x5EED))
        order = torch.randperm(self.n, generator=g).tolist()
        offset = self.info.rank * self.local_batch
        for step in range(self.start_step, self.steps_per_epoch):
            start = step * self.batch + offset
            for i in order[start : start + self.local_batch]:
                yield (i, derive_seed(self.seed, self.epoch, i)) if self.augment else i
