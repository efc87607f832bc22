"""The generic orderers. Each uses only slot indices, given flags and predictions."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from seqify.ordering import AdaptiveOrderer, StaticOrderer, canonical_index, random_priority
from seqify.protocols import GeneratorCaps
from seqify.types import OrderBatch, TokenBatch, TokenizerSpec


class Raster(StaticOrderer):
    """The tokenizer's canonical order: slot 0, 1, 2, ..."""

    name = "raster"
    prefix_closed = True
    needs_any_order = False

    def priority(self, batch, rng):
        return canonical_index(batch)


class Reverse(StaticOrderer):
    """The canonical order backwards."""

    name = "reverse"

    def priority(self, batch, rng):
        return -canonical_index(batch)


class Random(StaticOrderer):
    """A fresh uniformly random permutation per example and per call."""

    name = "random"
    stochastic = True
    grows_in_steps = True  # any-order training covers each growth step given the earlier ones

    def priority(self, batch, rng):
        return random_priority(batch, rng)


class FixedRandomOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(0, description="seed of the one permutation used for every example")


class FixedRandom(StaticOrderer):
    """One seeded permutation of slot indices, the same for every example.

    Args:
        seed: seed of the permutation (default 0).
    """

    name = "fixed-random"
    config_model = FixedRandomOptions

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._keys: torch.Tensor | None = None

    def __repr__(self) -> str:
        return f"FixedRandom(seed={self.seed})"

    def priority(self, batch, rng):
        L = batch.length
        if self._keys is None or self._keys.numel() < L:
            g = torch.Generator().manual_seed(self.seed)
            self._keys = torch.rand(max(L, 1024), generator=g)
        return self._keys[:L].to(batch.values.device).expand(batch.batch_size, L).clone()


class RAROptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    anneal_start: float = Field(0.4, ge=0, le=1, description="fraction of training at which r starts to decay from 1")
    anneal_end: float = Field(0.6, ge=0, le=1, description="fraction of training at which r reaches 0")


class RAR(StaticOrderer):
    """Randomized autoregressive training (RAR): each example is randomly permuted with
    probability r, r = 1 until ``anneal_start``, then linearly to 0 at ``anneal_end``.
    Inference (and scoring) uses the raster order.

    Args:
        anneal_start: fraction of training where r starts to fall (default 0.4).
        anneal_end: fraction of training where r reaches 0 (default 0.6).
    """

    name = "rar"
    prefix_closed = True  # inference is raster
    config_model = RAROptions

    def __init__(self, anneal_start: float = 0.4, anneal_end: float = 0.6):
        if anneal_end < anneal_start:
            raise ValueError(f"rar: anneal_end ({anneal_end}) must be >= anneal_start ({anneal_start})")
        self.anneal_start, self.anneal_end = anneal_start, anneal_end

    def __repr__(self) -> str:
        return f"RAR(anneal_start={self.anneal_start}, anneal_end={self.anneal_end})"

    def r(self, progress: float) -> float:
        """Probability of a random permutation at this point of training."""
        if progress <= self.anneal_start:
            return 1.0
        if progress >= self.anneal_end:
            return 0.0
        return 1.0 - (progress - self.anneal_start) / (self.anneal_end - self.anneal_start)

    def train_orders(self, batch: TokenBatch, *, progress: float, rng: torch.Generator) -> OrderBatch:
        use_random = torch.rand(batch.batch_size, generator=rng) < self.r(progress)
        prio = torch.where(
            use_random.to(batch.values.device)[:, None],
            random_priority(batch, rng) * batch.length,
            canonical_index(batch),
        )
        if batch.pad.any():  # variable length: only real slots are permuted
            prio = prio.masked_fill(batch.pad, float("inf"))
        return OrderBatch.from_priorities(batch, prio)

    def priority(self, batch, rng):
        return canonical_index(batch)


class TopProb(AdaptiveOrderer):
    """Fill the slot whose most likely value has the highest probability."""

    name = "top-prob"

    def slot_score(self, logp_BLV):
        return logp_BLV.max(dim=-1).values


class Margin(AdaptiveOrderer):
    """Fill the slot with the largest gap between its top two probabilities."""

    name = "margin"

    def slot_score(self, logp_BLV):
        top2 = logp_BLV.topk(2, dim=-1).values.exp()
        return top2[..., 0] - top2[..., 1]


class Entropy(AdaptiveOrderer):
    """Fill the slot whose predictive distribution has the lowest entropy."""

    name = "entropy"

    def slot_score(self, logp_BLV):
        p = logp_BLV.exp()
        ent = -(p * logp_BLV.masked_fill(~torch.isfinite(logp_BLV), 0.0)).sum(-1)
        return -ent


def _chunk(batch: TokenBatch, order: OrderBatch, k: int, next_block_only: bool) -> OrderBatch:
    """The same permutation, its predicted slots grouped into consecutive blocks of ``k``."""
    steps_BL = torch.arange(batch.length, device=order.perm.device).expand_as(order.perm)
    n_given_B1 = batch.given.sum(1, keepdim=True).to(order.perm.device)
    block_BL = torch.where(order.block >= 0, torch.div(steps_BL - n_given_B1, k, rounding_mode="floor"), order.block)
    return OrderBatch(order.perm, block_BL, next_block_only=next_block_only)


#: the base orders ``parallel`` can follow (built from this module, not the registry)
PARALLEL_BASES: dict[str, type[StaticOrderer]] = {
    cls.name: cls for cls in (Raster, Reverse, Random, FixedRandom, RAR)
}


class ParallelOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: int = Field(2, ge=1, description="slots predicted per step (the last block of an item may be smaller)")
    base: str = Field(
        "random", description=f"the order the blocks follow: one of {', '.join(sorted(PARALLEL_BASES))}"
    )

    @field_validator("base")
    @classmethod
    def _known_base(cls, value: str) -> str:
        if value not in PARALLEL_BASES:
            raise ValueError(f"unknown base order {value!r}; choose one of {', '.join(sorted(PARALLEL_BASES))}")
        return value


class Parallel(StaticOrderer):
    """Parallel decoding (RandAR / MaskGIT style): ``k`` slots per step along a base order.

    The base order's predicted slots are cut into consecutive blocks of ``k`` (the last
    one may be smaller); the given slots stay first. Training orders ask for
    next-block-only training (the masked generator then predicts the block after a
    random cut, as it will decode). ``k = 1`` gives the base order itself.

    Args:
        k: slots per block (default 2).
        base: name of the static base order: raster, reverse, random, fixed-random or
            rar (default "random"), built with its default settings.
    """

    name = "parallel"
    produces_blocks = True
    stochastic = True  # the default base, 'random'; each instance follows its base
    config_model = ParallelOptions

    def __init__(self, k: int = 2, base: str = "random"):
        opts = ParallelOptions(k=k, base=base)
        self.k, self.base = opts.k, opts.base
        self.base_orderer = PARALLEL_BASES[self.base]()
        self.stochastic = self.base_orderer.stochastic

    def __repr__(self) -> str:
        return f"Parallel(k={self.k}, base={self.base!r})"

    def check(self, spec: TokenizerSpec, caps: GeneratorCaps) -> str | None:
        if self.k > 1:
            if spec.variable_length:
                return (
                    f"orderer {self.name!r} with k={self.k} predicts several slots per step, but this "
                    "tokenizer is variable-length: its END token decides the length one slot at a "
                    "time (use k=1 with base 'raster')"
                )
            reason = super().check(spec, caps)
            if reason is not None:
                return reason
        reason = self.base_orderer.check(spec, caps)
        if reason is not None:
            return f"orderer {self.name!r} follows the base order {self.base!r}: {reason}"
        return None

    def train_orders(self, batch: TokenBatch, *, progress: float, rng: torch.Generator) -> OrderBatch:
        order = self.base_orderer.train_orders(batch, progress=progress, rng=rng)
        return _chunk(batch, order, self.k, next_block_only=True)

    def infer_orders(self, batch: TokenBatch, *, rng: torch.Generator) -> OrderBatch:
        return _chunk(batch, self.base_orderer.infer_orders(batch, rng=rng), self.k, next_block_only=False)
