"""Named random streams derived from one run seed.

Every random choice of a run draws from a stream named for what it does, derived
from the run's ``--seed`` by hashing (never ``seed + 1 ... seed + 6`` scattered
through the code), so adding a stream does not shift the others, and two streams
never collide:

- ``init``: the model's initial weights (set before the model is built);
- ``tokenizer``: fitting a learned tokenizer;
- ``batches``, ``orders``, ``dropout``: training batches, training orders, and the
  global torch stream (dropout, a model's own noise) while training;
- ``validation``: the validation loss, in a forked RNG state that leaves the training
  streams untouched (CPU and CUDA);
- ``score``, ``templates``, ``sample``, ``diagnostics``: evaluation;
- ``conditions``: the classes a conditional model samples from (drawn from the test
  split's label distribution).

Fitting a tokenizer runs under :func:`deterministic` as well: a fitted codebook is
what later numbers rest on, so its kernels should not move it from run to run.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

STREAMS = ("init", "tokenizer", "batches", "orders", "dropout", "validation", "score", "templates", "sample",
           "diagnostics", "conditions")


def stream_seed(seed: int, stream: str, rank: int = 0) -> int:
    """A 63-bit seed for ``stream`` derived from the run seed (and, for the processes
    of a distributed run other than rank 0, from the rank: rank 0 draws what a single
    process draws)."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r} (one of {', '.join(STREAMS)})")
    tag = f"seqify|{int(seed)}|{stream}" + (f"|rank{int(rank)}" if rank else "")
    digest = hashlib.sha256(tag.encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, stream: str):
    """A CPU ``torch.Generator`` seeded for ``stream``."""
    import torch

    return torch.Generator().manual_seed(stream_seed(seed, stream))


def seed_global(seed: int, stream: str, rank: int = 0) -> None:
    """Seed torch's global streams (CPU and every CUDA device) for ``stream``."""
    import torch

    torch.manual_seed(stream_seed(seed, stream, rank))


@contextlib.contextmanager
def forked(seed: int, stream: str, device=None) -> Iterator[None]:
    """Run the block with the global streams seeded for ``stream``; the CPU and (when
    ``device`` is CUDA) that device's RNG states are restored afterwards."""
    import torch

    devices = [device] if device is not None and getattr(device, "type", str(device)) == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(stream_seed(seed, stream))
        yield


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Run the block with ``torch.use_deterministic_algorithms(True, warn_only=True)``
    (an operation without a deterministic kernel warns instead of failing; a strict
    setting the caller made stays strict); the previous setting is restored afterwards."""
    import torch

    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=warn_only if enabled else True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
