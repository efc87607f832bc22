"""Base classes for orderers, part of seqify's public API for plugin authors.

Subclass :class:`StaticOrderer` and implement ``priority`` (lower goes first) for
an order computed from the token structure; subclass :class:`AdaptiveOrderer` and
implement ``slot_score`` (higher goes first) for an order chosen at inference from
the generator's predictions.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from seqify.protocols import BaseOrderer, GeneratorCaps, NoOptions
from seqify.types import OrderBatch, TokenBatch, TokenizerSpec

__all__ = ["StaticOrderer", "AdaptiveOrderer", "NoOptions", "canonical_index", "random_priority"]


class StaticOrderer(BaseOrderer):
    """Orders from structure alone; the same order for training and inference.

    Subclasses set ``name`` and implement :meth:`priority`. Set ``prefix_closed`` when
    the order always generates the canonical prefix first (only such orders can
    generate variable-length items), ``needs_any_order`` = False only for the
    canonical order itself, and ``produces_blocks`` when the orders group several
    slots into one block (then only generators with ``GeneratorCaps.blocks`` apply).
    Set ``grows_in_steps`` when the orders it trains on also cover generating a growing
    tokenizer's items (``TokenizerSpec.grows``) step by step, each step's slots after
    the earlier steps' (random orders do; prefix-closed orders always do).
    """

    name: str = "static"
    prefix_closed: ClassVar[bool] = False
    needs_any_order: ClassVar[bool] = True
    grows_in_steps: ClassVar[bool] = False

    def check(self, spec: TokenizerSpec, caps: GeneratorCaps) -> str | None:
        if spec.variable_length and not self.prefix_closed:
            return (
                f"orderer {self.name!r} needs to know how many slots an item has, but this "
                "tokenizer is variable-length (its end token decides); only prefix-closed "
                "orders such as 'raster' can generate it"
            )
        if getattr(spec, "grows", False) and not (self.prefix_closed or self.grows_in_steps):
            return (
                f"orderer {self.name!r} does not generate step by step as this tokenizer grows its items "
                "(each step's slots given the earlier steps', as the tokenizer's next_slots gives them); "
                "orders that do: 'raster', 'rar', 'random', 'next-scale' when the steps are scales, and the "
                "adaptive orderers"
            )
        if self.needs_any_order and not caps.any_order:
            return f"orderer {self.name!r} needs a generator that trains in any order"
        if self.produces_blocks and not caps.blocks:
            return (
                f"orderer {self.name!r} predicts several slots per step (blocks), but this "
                "generator predicts one slot at a time (it does not support blocks)"
            )
        return None

    def priority(self, batch: TokenBatch, rng: torch.Generator) -> torch.Tensor:
        """``[B, L]`` float: predicted slots go in ascending priority."""
        raise NotImplementedError

    def train_orders(self, batch: TokenBatch, *, progress: float, rng: torch.Generator) -> OrderBatch:
        return self.infer_orders(batch, rng=rng)

    def infer_orders(self, batch: TokenBatch, *, rng: torch.Generator) -> OrderBatch:
        prio = self.priority(batch, rng).to(batch.values.device)
        return OrderBatch.from_priorities(batch, prio)


def canonical_index(batch: TokenBatch) -> torch.Tensor:
    """``[B, L]`` float slot index: the tokenizer's canonical order."""
    B, L = batch.values.shape
    return torch.arange(L, device=batch.values.device, dtype=torch.float32).expand(B, L).clone()


def random_priority(batch: TokenBatch, rng: torch.Generator) -> torch.Tensor:
    """``[B, L]`` uniform random priorities (a fresh permutation per row)."""
    return torch.rand(batch.values.shape, generator=rng).to(batch.values.device)


class AdaptiveOrderer(BaseOrderer):
    """Chooses each next slot from the generator's current predictions.

    Trains on random orders (the any-order objective), and at inference fills the
    candidate slot with the highest :meth:`slot_score`.
    """

    name: str = "adaptive"
    adaptive: ClassVar[bool] = True

    #: adaptive orderers all train on uniformly random orders, like the 'random' orderer
    train_signature = "Random()"

    def check(self, spec: TokenizerSpec, caps: GeneratorCaps) -> str | None:
        if spec.variable_length:
            return (
                f"orderer {self.name!r} chooses among all slots, but this tokenizer is "
                "variable-length: the number of slots is not known before generation"
            )
        if not caps.adaptive:
            return (
                f"orderer {self.name!r} picks each slot from predictions for every open slot "
                "at once; this generator predicts only the slot it is told to (use 'masked')"
            )
        return None

    def train_orders(self, batch: TokenBatch, *, progress: float, rng: torch.Generator) -> OrderBatch:
        return OrderBatch.from_priorities(batch, random_priority(batch, rng))

    def slot_score(self, logp_BLV: torch.Tensor) -> torch.Tensor:
        """``[B, L]``: how confidently each slot can be filled now (higher first)."""
        raise NotImplementedError

    def select(self, logp_BLV: torch.Tensor, candidates_BL: torch.Tensor) -> torch.Tensor:
        score_BL = self.slot_score(logp_BLV.float())
        score_BL = torch.nan_to_num(score_BL, nan=-1e30, neginf=-1e30, posinf=1e30)
        score_BL = score_BL.masked_fill(~candidates_BL, float("-inf"))
        return score_BL.argmax(dim=1)
