"""The data types every component speaks: token sets, batches, orders and specs.

A datum becomes a :class:`TokenSet`: a fixed list of discrete *slots*. Each slot has
a value (an id inside the sub-vocabulary of its *kind*), integer coordinates that
describe where it sits in the datum's structure, and a flag saying whether it is
given (conditioning, never predicted). Components never see the raw datum: this is
what lets any orderer and any generator run on any modality.

Shapes are written in names: ``B`` batch, ``L`` slots, ``C`` coordinate axes,
``V`` vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "KindSpec",
    "TokenizerSpec",
    "TokenSet",
    "TokenBatch",
    "OrderBatch",
    "Scores",
    "blocks_of_one",
    "collate",
]


@dataclass(frozen=True)
class KindSpec:
    """One sub-vocabulary.

    Args:
        name: what the slots of this kind hold ("cell", "atom", "bond", "code").
        size: number of values; a slot of this kind holds an id in ``[0, size)``.
        labels: optional human-readable label per value (for tables and pictures).
    """

    name: str
    size: int
    labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"kind {self.name!r}: size must be >= 1, got {self.size}")
        if self.labels is not None and len(self.labels) != self.size:
            raise ValueError(
                f"kind {self.name!r}: {len(self.labels)} labels for {self.size} values"
            )


@dataclass(frozen=True)
class TokenizerSpec:
    """What a tokenizer produces, declared once so generators can size themselves.

    Args:
        kinds: the sub-vocabularies, indexed by a slot's ``kind``.
        coord_names: name of each coordinate axis, e.g. ("row", "col", "box").
        coord_sizes: number of distinct values on each axis (coordinates are ints in
            ``[0, size)``), used to size coordinate embeddings.
        max_len: the largest number of slots one datum can have.
        variable_length: True when data have different numbers of slots (then the
            last real slot holds ``end_value`` of kind ``end_kind``, and only
            prefix-closed orders such as raster can generate them).
        end_kind, end_value: the end token, for variable-length tokenizers.
        lossless: True when ``decode(encode(x)) == x`` for every datum.
        grows: True when the tokenizer grows an item as it is decoded (a grammar:
            octrees): ``blank()`` holds the first slots and ``Tokenizer.next_slots``
            gives the slots that follow the values decoded so far, until the item is
            complete (:mod:`seqify.grow`). Items then have different lengths without an
            end token (``variable_length`` stays False). Each growth step is generated
            given the steps before it, so only orders that train each step after the
            earlier ones serve it (``StaticOrderer.check``).
    """

    kinds: tuple[KindSpec, ...]
    coord_names: tuple[str, ...]
    coord_sizes: tuple[int, ...]
    max_len: int
    variable_length: bool = False
    end_kind: int | None = None
    end_value: int | None = None
    lossless: bool = True
    grows: bool = False

    def __post_init__(self) -> None:
        if len(self.coord_names) != len(self.coord_sizes):
            raise ValueError("coord_names and coord_sizes must have the same length")
        if self.variable_length and (self.end_kind is None or self.end_value is None):
            raise ValueError("a variable-length spec needs end_kind and end_value")
        if self.grows and self.variable_length:
            raise ValueError("a spec that grows (next_slots decides the length) has no end token: "
                             "set variable_length=False")

    @property
    def vocab_offsets(self) -> tuple[int, ...]:
        """Start of each kind's range in the concatenated (global) vocabulary."""
        offsets, total = [], 0
        for kind in self.kinds:
            offsets.append(total)
            total += kind.size
        return tuple(offsets)

    @property
    def total_vocab(self) -> int:
        """Size of the concatenated vocabulary of all kinds."""
        return sum(kind.size for kind in self.kinds)

    def kind_mask(self) -> torch.Tensor:
        """``[num_kinds, total_vocab]`` bool: which global ids each kind may take."""
        mask_KV = torch.zeros(len(self.kinds), self.total_vocab, dtype=torch.bool)
        for k, (start, kind) in enumerate(zip(self.vocab_offsets, self.kinds)):
            mask_KV[k, start : start + kind.size] = True
        return mask_KV


@dataclass
class TokenSet:
    """One datum as slots.

    Args:
        values: ``[L]`` long, the value of each slot inside its kind's vocabulary.
        kinds: ``[L]`` long, index into ``TokenizerSpec.kinds``.
        coords: ``[L, C]`` long, the slot's place in the datum's structure.
        given: ``[L]`` bool, conditioning slots (Sudoku clues): never predicted.
        meta: whatever decoding needs beyond the slots (kept out of tensors).
        cond: the item's condition, a class id the modality declares
            (:meth:`seqify.protocols.Modality.condition`), that a conditional generator
            reads; None: none (a conditional generator then uses its null class).
    """

    values: torch.Tensor
    kinds: torch.Tensor
    coords: torch.Tensor
    given: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)
    cond: int | None = None

    def __post_init__(self) -> None:
        n = self.values.shape[0]
        if self.values.dim() != 1:
            raise ValueError(f"values must be [L], got shape {tuple(self.values.shape)}")
        for name in ("kinds", "given"):
            if getattr(self, name).shape != (n,):
                raise ValueError(
                    f"{name} must have shape ({n},), got {tuple(getattr(self, name).shape)}"
                )
        if self.coords.dim() != 2 or self.coords.shape[0] != n:
            raise ValueError(f"coords must be [{n}, C], got {tuple(self.coords.shape)}")

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def with_values(self, values: torch.Tensor) -> "TokenSet":
        """A copy with new values (structure, given flags and meta kept)."""
        return TokenSet(values.clone(), self.kinds, self.coords, self.given, dict(self.meta), self.cond)


@dataclass
class TokenBatch:
    """Token sets padded to a common length.

    ``pad`` marks padding (True = not a real slot); padded slots have value 0,
    kind 0, coords 0 and are never given, predicted or scored. ``cond`` (``[B]`` long,
    or None) holds each item's condition class for a conditional generator; -1 (or
    no ``cond`` at all) means none, which such a generator reads as its null class.
    """

    values: torch.Tensor  # [B, L] long
    kinds: torch.Tensor  # [B, L] long
    coords: torch.Tensor  # [B, L, C] long
    given: torch.Tensor  # [B, L] bool
    pad: torch.Tensor  # [B, L] bool
    meta: list[dict[str, Any]] = field(default_factory=list)
    #: the names of the coordinate axes (the tokenizer's ``spec.coord_names``), so that an
    #: orderer reads the structure off the batch; () when the batch was built without them
    coord_names: tuple[str, ...] = ()
    #: ``[B]`` long, each item's condition class (-1: none); None when the batch carries none
    cond: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.values.shape[0])

    @property
    def length(self) -> int:
        return int(self.values.shape[1])

    @property
    def target(self) -> torch.Tensor:
        """``[B, L]`` bool: the slots a model must predict (not given, not padding)."""
        return ~self.given & ~self.pad

    def to(self, device: torch.device | str) -> "TokenBatch":
        return TokenBatch(
            self.values.to(device),
            self.kinds.to(device),
            self.coords.to(device),
            self.given.to(device),
            self.pad.to(device),
            self.meta,
            self.coord_names,
            None if self.cond is None else self.cond.to(device),
        )

    def rows(self, index: slice) -> "TokenBatch":
        """Items ``index`` (a slice of the batch), at the same padded length."""
        return TokenBatch(self.values[index], self.kinds[index], self.coords[index], self.given[index],
                          self.pad[index], self.meta[index], self.coord_names,
                          None if self.cond is None else self.cond[index])

    def with_values(self, values_BL: torch.Tensor) -> "TokenBatch":
        """A copy with new values; structure is shared, nothing is mutated."""
        return TokenBatch(values_BL, self.kinds, self.coords, self.given, self.pad, self.meta, self.coord_names,
                          self.cond)

    def unbatch(self) -> list[TokenSet]:
        """Back to one :class:`TokenSet` per item, padding removed."""
        out = []
        values = self.values.cpu()
        cond = None if self.cond is None else self.cond.cpu().tolist()
        for b in range(self.batch_size):
            keep = ~self.pad[b].cpu()
            out.append(
                TokenSet(
                    values[b][keep].clone(),
                    self.kinds[b].cpu()[keep].clone(),
                    self.coords[b].cpu()[keep].clone(),
                    self.given[b].cpu()[keep].clone(),
                    dict(self.meta[b]) if b < len(self.meta) else {},
                    None if cond is None or cond[b] < 0 else int(cond[b]),
                )
            )
        return out


def collate(items: list[TokenSet], length: int | None = None, *, coord_names: tuple[str, ...] = ()) -> TokenBatch:
    """Pad token sets into one :class:`TokenBatch` (to ``length`` if given), whose axes
    are named ``coord_names`` (the tokenizer's ``spec.coord_names``). The batch carries
    ``cond`` when some item has one (-1 for those without)."""
    if not items:
        raise ValueError("collate needs at least one TokenSet")
    L = max(len(t) for t in items) if length is None else length
    C = items[0].coords.shape[1]
    B = len(items)
    values = torch.zeros(B, L, dtype=torch.long)
    kinds = torch.zeros(B, L, dtype=torch.long)
    coords = torch.zeros(B, L, C, dtype=torch.long)
    given = torch.zeros(B, L, dtype=torch.bool)
    pad = torch.ones(B, L, dtype=torch.bool)
    for b, t in enumerate(items):
        n = len(t)
        if n > L:
            raise ValueError(f"item {b} has {n} slots, more than the batch length {L}")
        if t.coords.shape[1] != C:
            raise ValueError(f"item {b} has {t.coords.shape[1]} coordinate axes, expected {C}")
        values[b, :n] = t.values
        kinds[b, :n] = t.kinds
        coords[b, :n] = t.coords
        given[b, :n] = t.given
        pad[b, :n] = False
    cond = None
    if any(t.cond is not None for t in items):
        cond = torch.tensor([-1 if t.cond is None else int(t.cond) for t in items], dtype=torch.long)
    return TokenBatch(values, kinds, coords, given, pad, [dict(t.meta) for t in items], tuple(coord_names), cond)


@dataclass
class OrderBatch:
    """Generation orders for a batch.

    ``perm[b]`` lists every slot index of item ``b`` exactly once: the given slots
    first (in canonical order), then the slots to predict in the order they are
    generated, then padding. ``block[b, t]`` is the block of the ``t``-th entry:
    entries of one block are predicted together, from the same context. Given slots
    are block -1, padding is block -2; predicted blocks count 0, 1, 2, ... and never
    decrease. Next-token generation = blocks of one.

    ``next_block_only`` is a training request: a generator that trains on a random cut
    through the blocks (the masked generator) then predicts only the block right after
    the cut, as it will decode (RandAR / MaskGIT style parallel decoding), instead of
    every block after it. Scoring and sampling ignore it.

    ``block_layout`` says the orders group slots into blocks by design (one block per
    scale): a generator with a separate layout for blocks (the causal generator) uses it
    even when every block of this order holds one slot, as when a growing tokenizer's
    root is sampled on its own, so that it samples as it trained.
    """

    perm: torch.Tensor  # [B, L] long
    block: torch.Tensor  # [B, L] long
    next_block_only: bool = False
    block_layout: bool = False

    @property
    def num_blocks(self) -> torch.Tensor:
        """``[B]`` number of predicted blocks per item."""
        return self.block.max(dim=1).values + 1

    def rank(self) -> torch.Tensor:
        """``[B, L]``: at slot ``i``, its position in the order (inverse of ``perm``)."""
        rank_BL = torch.empty_like(self.perm)
        steps = torch.arange(self.perm.shape[1], device=self.perm.device)
        rank_BL.scatter_(1, self.perm, steps.expand_as(self.perm).contiguous())
        return rank_BL

    def slot_block(self) -> torch.Tensor:
        """``[B, L]``: at slot ``i``, its block id (-1 given, -2 padding)."""
        out = torch.empty_like(self.block)
        out.scatter_(1, self.perm, self.block)
        return out

    def block_sizes(self) -> torch.Tensor:
        """``[B, n]`` number of slots in each predicted block (n = the most blocks of any row)."""
        B = self.block.shape[0]
        n = int(self.num_blocks.max().clamp_min(0)) if B else 0
        sizes_Bn = torch.zeros(B, n + 1, dtype=torch.long, device=self.block.device)
        ids_BL = torch.where(self.block >= 0, self.block, torch.full_like(self.block, n))
        sizes_Bn.scatter_add_(1, ids_BL, torch.ones_like(ids_BL))
        return sizes_Bn[:, :n]

    def to(self, device: torch.device | str) -> "OrderBatch":
        return OrderBatch(self.perm.to(device), self.block.to(device), self.next_block_only, self.block_layout)

    def rows(self, index: slice) -> "OrderBatch":
        """The orders of items ``index`` (a slice of the batch)."""
        return OrderBatch(self.perm[index], self.block[index], self.next_block_only, self.block_layout)

    @staticmethod
    def from_priorities(batch: TokenBatch, priority_BL: torch.Tensor) -> "OrderBatch":
        """Blocks of one, predicted slots sorted by ascending ``priority``.

        Given slots come first (canonical order), padding last, whatever their priority.
        """
        B, L = priority_BL.shape
        idx = torch.arange(L, device=priority_BL.device).expand(B, L)
        big = float(L) * 4.0 + priority_BL.abs().max().item() * 4.0 + 1.0
        key = priority_BL.to(torch.float64).clone()
        key = torch.where(batch.given, idx.to(torch.float64) - 2 * big, key)
        key = torch.where(batch.pad, idx.to(torch.float64) + 2 * big, key)
        perm = torch.sort(key, dim=1, stable=True).indices
        return OrderBatch(perm, _blocks_of_one(batch, perm))

    @staticmethod
    def from_groups(
        batch: TokenBatch, group_BL: torch.Tensor, priority_BL: torch.Tensor | None = None
    ) -> "OrderBatch":
        """Blocks from a group id per slot: each group a row predicts becomes one block.

        Predicted slots are sorted by ascending group, then by ascending ``priority``
        inside a group (ties: slot index). The distinct groups among a row's predicted
        slots become blocks 0, 1, 2, ... in that order (group ids need not be
        consecutive: missing groups are skipped). Given slots come first (block -1,
        canonical order), padding last (block -2), whatever their group.

        Args:
            batch: the items the orders are for.
            group_BL: ``[B, L]`` group of every slot (int or float; read on predicted slots).
            priority_BL: ``[B, L]`` order inside a group (default: slot index).
        """
        B, L = batch.values.shape
        if tuple(group_BL.shape) != (B, L):
            raise ValueError(f"from_groups: group_BL has shape {tuple(group_BL.shape)}, expected {(B, L)}")
        if priority_BL is not None and tuple(priority_BL.shape) != (B, L):
            raise ValueError(f"from_groups: priority_BL has shape {tuple(priority_BL.shape)}, expected {(B, L)}")
        device = batch.values.device
        group_BL = group_BL.to(device)
        idx_BL = torch.arange(L, device=device).expand(B, L)
        # category: 0 given, 1 predicted, 2 padding; given and padding keep their slot index
        category_BL = torch.where(batch.given, 0, torch.where(batch.pad, 2, 1))
        predicted_BL = category_BL == 1
        prio_BL = idx_BL.to(torch.float64)
        if priority_BL is not None:
            prio_BL = torch.where(predicted_BL, priority_BL.to(device, torch.float64), prio_BL)
        group_key_BL = torch.where(predicted_BL, group_BL, torch.zeros_like(group_BL))
        # least significant key first, stable sorts: (category, group, priority, slot index)
        perm_BL = torch.sort(prio_BL, dim=1, stable=True).indices
        perm_BL = perm_BL.gather(1, torch.sort(group_key_BL.gather(1, perm_BL), dim=1, stable=True).indices)
        perm_BL = perm_BL.gather(1, torch.sort(category_BL.gather(1, perm_BL), dim=1, stable=True).indices)
        group_in_order_BL = group_key_BL.gather(1, perm_BL)
        pred_in_order_BL = predicted_BL.gather(1, perm_BL)
        prev_pred_BL = torch.cat([torch.zeros_like(pred_in_order_BL[:, :1]), pred_in_order_BL[:, :-1]], dim=1)
        prev_group_BL = torch.cat([group_in_order_BL[:, :1], group_in_order_BL[:, :-1]], dim=1)
        starts_BL = pred_in_order_BL & (~prev_pred_BL | (group_in_order_BL != prev_group_BL))
        block_BL = torch.cumsum(starts_BL.long(), dim=1) - 1
        block_BL = torch.where(category_BL.gather(1, perm_BL) == 0, torch.full_like(block_BL, -1), block_BL)
        block_BL = torch.where(category_BL.gather(1, perm_BL) == 2, torch.full_like(block_BL, -2), block_BL)
        return OrderBatch(perm_BL, block_BL)

    def validate(self, batch: TokenBatch) -> None:
        """Raise ValueError unless this is a valid order for ``batch``."""
        B, L = batch.values.shape
        if self.perm.shape != (B, L) or self.block.shape != (B, L):
            raise ValueError(f"order shape {tuple(self.perm.shape)} does not match batch {(B, L)}")
        sorted_perm = torch.sort(self.perm, dim=1).values
        if not torch.equal(sorted_perm, torch.arange(L, device=self.perm.device).expand(B, L)):
            raise ValueError("perm is not a permutation of the slots")
        given_in_order = torch.gather(batch.given, 1, self.perm)
        pad_in_order = torch.gather(batch.pad, 1, self.perm)
        n_given = batch.given.sum(1, keepdim=True)
        n_real = (~batch.pad).sum(1, keepdim=True)
        steps = torch.arange(L, device=self.perm.device).expand(B, L)
        if not torch.equal(given_in_order, steps < n_given):
            raise ValueError("given slots must come first in the order")
        if not torch.equal(pad_in_order, steps >= n_real):
            raise ValueError("padding slots must come last in the order")
        expected_special = torch.where(given_in_order, -1, torch.where(pad_in_order, -2, 0))
        if not torch.equal(torch.where(self.block < 0, self.block, 0), expected_special):
            raise ValueError("block ids must be -1 on given slots, -2 on padding, >= 0 elsewhere")
        pred = self.block.clone()
        pred[pred < 0] = -1
        running = torch.cummax(pred, dim=1).values
        if not torch.equal(torch.where(self.block >= 0, self.block, running), running):
            raise ValueError("block ids must not decrease along the order")
        first = torch.where(self.block >= 0, self.block, torch.full_like(self.block, L + 1))
        has = (self.block >= 0).any(1)
        if bool((first.min(1).values[has] != 0).any()):
            raise ValueError("the first predicted block must be 0")
        diffs = self.block[:, 1:] - self.block[:, :-1]
        both = (self.block[:, 1:] >= 0) & (self.block[:, :-1] >= 0)
        if bool((diffs[both] > 1).any()):
            raise ValueError("block ids must increase by at most one at a time")


def _blocks_of_one(batch: TokenBatch, perm_BL: torch.Tensor) -> torch.Tensor:
    given_in_order = torch.gather(batch.given, 1, perm_BL)
    pad_in_order = torch.gather(batch.pad, 1, perm_BL)
    n_given = batch.given.sum(1, keepdim=True)
    steps = torch.arange(perm_BL.shape[1], device=perm_BL.device).expand_as(perm_BL)
    block = steps - n_given
    block = torch.where(given_in_order, torch.full_like(block, -1), block)
    block = torch.where(pad_in_order, torch.full_like(block, -2), block)
    return block


def blocks_of_one(batch: TokenBatch, perm_BL: torch.Tensor) -> OrderBatch:
    """Wrap a permutation (given first, padding last) as next-token blocks of one."""
    return OrderBatch(perm_BL, _blocks_of_one(batch, perm_BL))


@dataclass
class Scores:
    """Per-slot results of scoring items under orders.

    ``logp[b, i]`` is log p(true value of slot i | context the order gives it), in
    nats; ``correct[b, i]`` says whether the model's most likely value was the true
    one; ``scored[b, i]`` marks the slots that were predicted (others hold 0).
    """

    logp: torch.Tensor  # [B, L] float
    correct: torch.Tensor  # [B, L] bool
    scored: torch.Tensor  # [B, L] bool
