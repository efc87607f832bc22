"""What the checks probe components with: tiny specs, random items, fixed orders,
perturbed items, exhaustive completions, and the token structures orderers are tried on.

Everything here is deterministic for a seed and small enough to run on a laptop.
"""

from __future__ import annotations

import dataclasses

import itertools
import math

import torch

from seqify.protocols import GeneratorCaps
from seqify.testing.doubles import ToyTokenizer, toy_batch
from seqify.types import KindSpec, OrderBatch, TokenBatch, TokenizerSpec, TokenSet, collate


#: the spec ``check_no_peeking`` and ``check_generator`` build generators on: two kinds
#: (3 and 5 values), 8 slots on a 2 x 4 grid, the kind of slot ``i`` is ``i % 2``
PROBE_SPEC = TokenizerSpec(
    kinds=(KindSpec("a", 3), KindSpec("b", 5)),
    coord_names=("row", "col"),
    coord_sizes=(2, 4),
    max_len=8,
)

#: the spec ``check_normalized`` enumerates: 4 slots of kinds a, b, a, b (2 and 3
#: values), so 36 completions (18 with one slot given)
NORM_SPEC = TokenizerSpec(
    kinds=(KindSpec("a", 2), KindSpec("b", 3)),
    coord_names=("pos",),
    coord_sizes=(4,),
    max_len=4,
)


def _grid_coords(spec: TokenizerSpec, L: int) -> torch.Tensor:
    """``[L, C]``: slot ``i`` at the row-major index ``i`` of the coordinate grid (wrapping)."""
    idx = torch.arange(L)
    cols = []
    for c, size in enumerate(spec.coord_sizes):
        stride = math.prod(spec.coord_sizes[c + 1 :])
        cols.append((idx // stride) % size)
    return torch.stack(cols, dim=1) if cols else torch.zeros(L, 0, dtype=torch.long)


def probe_items(spec: TokenizerSpec, n: int, *, length: int | None = None, n_given: int = 1, seed: int = 0) -> list[TokenSet]:
    """``n`` random items on ``spec``: ``length`` slots (default ``min(max_len, 8)``),
    slot ``i`` of kind ``i % num_kinds`` with the row-major grid index ``i`` as its
    coordinates, uniform values, ``n_given`` given slots at seeded random places."""
    g = torch.Generator().manual_seed(seed)
    L = min(spec.max_len, 8) if length is None else length
    idx = torch.arange(L)
    kinds = idx % len(spec.kinds)
    coords = _grid_coords(spec, L)
    sizes = torch.tensor([k.size for k in spec.kinds])[kinds]
    items = []
    for _ in range(n):
        values = (torch.rand(L, generator=g) * sizes).long()
        given = torch.zeros(L, dtype=torch.bool)
        given[torch.randperm(L, generator=g)[: min(n_given, L - 1)]] = True
        items.append(TokenSet(values, kinds.clone(), coords.clone(), given))
    return items


def _with_blocks(order: OrderBatch, size: int | None) -> OrderBatch:
    """The same permutation with the predicted slots grouped ``size`` at a time
    (``None``: all of them in one block)."""
    if size is None:
        block = torch.where(order.block >= 0, torch.zeros_like(order.block), order.block)
    else:
        block = torch.where(order.block >= 0, order.block // size, order.block)
    return OrderBatch(order.perm, block)


def _orders(batch: TokenBatch, caps: GeneratorCaps, *, seed: int, block_size: int) -> dict[str, OrderBatch]:
    """The fixed orders the checks use: raster, reverse, random (blocks of one), and,
    when the generator declares ``caps.blocks``, random orders in blocks of
    ``block_size`` and in one block."""
    B, L = batch.values.shape
    canonical = torch.arange(L, dtype=torch.float32).expand(B, L).clone()
    out = {"raster": OrderBatch.from_priorities(batch, canonical)}
    if caps.any_order:
        out["reverse"] = OrderBatch.from_priorities(batch, -canonical)
        rand = torch.rand(B, L, generator=torch.Generator().manual_seed(seed + 1))
        out["random"] = OrderBatch.from_priorities(batch, rand)
        if caps.blocks:
            out[f"random-blocks-of-{block_size}"] = _with_blocks(out["random"], block_size)
            out["one-block"] = _with_blocks(out["random"], None)
    elif caps.blocks:
        out[f"raster-blocks-of-{block_size}"] = _with_blocks(out["raster"], block_size)
    for order in out.values():
        order.validate(batch)
    return out


def _max_prob_orderer():
    """An adaptive orderer double: fill the open slot whose top value is most likely."""
    from seqify.ordering import AdaptiveOrderer

    class MaxProb(AdaptiveOrderer):
        name = "max-prob"

        def slot_score(self, logp_BLV):
            return logp_BLV.max(dim=-1).values

    return MaxProb()


def _repeat(batch: TokenBatch, rows: torch.Tensor, values_RL: torch.Tensor) -> TokenBatch:
    return TokenBatch(values_RL, batch.kinds[rows], batch.coords[rows], batch.given[rows], batch.pad[rows],
                      [batch.meta[int(r)] if int(r) < len(batch.meta) else {} for r in rows])


def _perturbations(batch: TokenBatch, spec: TokenizerSpec, *, seed: int):
    """One row per (item, predicted slot whose kind has >= 2 values): the item with
    that slot's value changed. Returns (rows_R item index, slots_R, values_RL)."""
    g = torch.Generator().manual_seed(seed + 2)
    sizes_K = torch.tensor([k.size for k in spec.kinds])
    rows, slots, values = [], [], []
    for b in range(batch.batch_size):
        for i in range(batch.length):
            if not bool(batch.target[b, i]):
                continue
            size = int(sizes_K[int(batch.kinds[b, i])])
            if size < 2:
                continue
            v = batch.values[b].clone()
            shift = 1 + int(torch.randint(0, size - 1, (1,), generator=g))
            v[i] = (v[i] + shift) % size
            rows.append(b)
            slots.append(i)
            values.append(v)
    if not rows:
        raise ValueError("no slot can be perturbed: every predicted slot's kind has one value")
    return torch.tensor(rows), torch.tensor(slots), torch.stack(values)


def _norm_template(spec: TokenizerSpec, max_completions: int) -> TokenSet:
    """Up to 4 slots of the spec's two smallest kinds (alternating), fewer if the
    number of completions would exceed ``max_completions``."""
    by_size = sorted(range(len(spec.kinds)), key=lambda k: spec.kinds[k].size)[:2]
    L = min(spec.max_len, 4)
    while L > 1 and math.prod(spec.kinds[by_size[i % len(by_size)]].size for i in range(L)) > max_completions:
        L -= 1
    kinds = torch.tensor([by_size[i % len(by_size)] for i in range(L)])
    coords = _grid_coords(spec, L)
    return TokenSet(torch.zeros(L, dtype=torch.long), kinds, coords, torch.zeros(L, dtype=torch.bool))


def _completions(template: TokenSet, spec: TokenizerSpec, given_value: dict[int, int]) -> TokenBatch:
    """Every assignment of the open slots of ``template`` (given slots fixed)."""
    L = len(template)
    given = torch.zeros(L, dtype=torch.bool)
    for i in given_value:
        given[i] = True
    open_slots = [i for i in range(L) if i not in given_value]
    ranges = [range(spec.kinds[int(template.kinds[i])].size) for i in open_slots]
    items = []
    for combo in itertools.product(*ranges):
        values = torch.zeros(L, dtype=torch.long)
        for i, v in given_value.items():
            values[i] = v
        for i, v in zip(open_slots, combo):
            values[i] = v
        items.append(TokenSet(values, template.kinds.clone(), template.coords.clone(), given.clone()))
    return collate(items)


def _probes() -> list[tuple[str, TokenizerSpec, TokenBatch]]:
    """Token structures an orderer is tried on: a digit sequence (first slot given), a
    grid with given slots, a graph of node (i, i) and edge (i, j) slots, and a
    variable-length sequence with padding."""
    grid = collate(probe_items(PROBE_SPEC, 6, n_given=2, seed=1))
    N = 4
    pairs = [(i, j) for i in range(N) for j in range(i, N)]
    coords = torch.tensor(pairs)
    kinds = (coords[:, 0] != coords[:, 1]).long()
    graph_spec = TokenizerSpec(kinds=(KindSpec("atom", 3), KindSpec("bond", 4)), coord_names=("i", "j"),
                               coord_sizes=(N, N), max_len=len(pairs))
    g = torch.Generator().manual_seed(2)
    graph = collate([TokenSet(torch.where(kinds == 0, torch.randint(0, 3, (len(pairs),), generator=g),
                                          torch.randint(0, 4, (len(pairs),), generator=g)),
                              kinds.clone(), coords.clone(), torch.zeros(len(pairs), dtype=torch.bool))
                     for _ in range(4)])
    var_spec = TokenizerSpec(kinds=(KindSpec("tok", 4),), coord_names=("pos",), coord_sizes=(7,), max_len=7,
                             variable_length=True, end_kind=0, end_value=3)
    var_items = []
    for length in (3, 7, 5, 2):
        values = torch.randint(0, 3, (length,), generator=g)
        values[-1] = 3
        var_items.append(TokenSet(values, torch.zeros(length, dtype=torch.long), torch.arange(length)[:, None],
                                  torch.zeros(length, dtype=torch.bool)))
    probes = [
        ("sequence", ToyTokenizer().spec, toy_batch(8)),
        ("grid", PROBE_SPEC, grid),
        ("graph", graph_spec, graph),
        ("variable-length", var_spec, collate(var_items, length=7)),
    ]
    # each batch carries its spec's axis names, as the runner's batches do
    return [(name, spec, dataclasses.replace(batch, coord_names=tuple(spec.coord_names))) for name, spec, batch in probes]
