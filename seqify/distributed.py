"""Multi-process training through ``torchrun`` (torch.distributed + DistributedDataParallel).

seqify has no launcher of its own: ``torchrun`` starts one process per GPU and sets
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`setup` joins the process group
(NCCL on CUDA, gloo on CPU) and each process trains on its share of every global
batch. Rank 0 alone writes files.

One node, N GPUs::

    torchrun --standalone --nproc-per-node=N --no-python seqify bench --modality molecule --orderer learned ...

Several nodes (run on each node, the same command; ``MASTER`` is node 0's address)::

    torchrun --nnodes=M --nproc-per-node=N --rdzv-backend=c10d --rdzv-endpoint=MASTER:29500 \\
        --rdzv-id=JOB --no-python seqify bench ...

The output folder must be on storage every node sees (rank 0 writes it; every rank
reads the resumable training state from it).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["Ctx", "current", "env_world_size", "setup", "teardown", "all_gather_object", "mean_across"]


@dataclass(frozen=True)
class Ctx:
    """This process's place in the job (single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun set it (1 outside torchrun); reads no torch."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


def current() -> Ctx:
    """The running process group's rank and size, or a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Ctx(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return Ctx()


def setup(device_kind: str) -> tuple[Ctx, bool]:
    """Join the process group torchrun prepared, if any.

    Returns the context and whether this call created the group (then the caller
    calls :func:`teardown` when done). ``device_kind`` "cuda" uses NCCL and pins this
    process to ``cuda:LOCAL_RANK``; anything else uses gloo.
    """
    import torch
    import torch.distributed as dist

    if env_world_size() <= 1:
        return current(), False
    if dist.is_initialized():
        return current(), False
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_kind == "cuda":
        torch.cuda.set_device(local_rank)
    # the other ranks wait in teardown's barrier while rank 0 evaluates, which can take
    # long at the full budget: the group's timeout must cover it
    dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo",
                            timeout=datetime.timedelta(minutes=GROUP_TIMEOUT_MIN))
    return current(), True


#: Minutes a collective (and the final barrier) may wait for the other ranks.
GROUP_TIMEOUT_MIN = 180


def teardown(*, wait: bool = True) -> None:
    """Leave the process group; with ``wait``, first wait for every rank to get here.

    Rank 0 evaluates while the others are done: a rank that destroyed its gloo group
    while rank 0 still held it aborted ("terminate called without an active
    exception"), so on the normal path every rank leaves together.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def all_gather_object(obj: Any, ctx: Ctx) -> list[Any]:
    """Every rank's ``obj`` (a one-element list outside a process group)."""
    if not ctx.active:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_across(value, ctx: Ctx):
    """The mean of a tensor over the ranks (the tensor itself outside a process group)."""
    if not ctx.active:
        return value
    import torch.distributed as dist

    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / ctx.world_size
