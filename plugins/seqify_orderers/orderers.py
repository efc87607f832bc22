"""The generic orderers. Each uses only slot indices, given flags and predictions."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from seqify.ordering import AdaptiveOrderer, StaticOrderer, canonical_index, random_priority
from seqify.types import OrderBatch, TokenBatch


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
