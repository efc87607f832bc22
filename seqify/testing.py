"""Conformance kit and test doubles for plugin authors.

Run the ``check_*`` functions on your component in your own tests::

    from seqify.testing import check_tokenizer, check_orderer, check_generator
    check_tokenizer(MyTokenizer(), my_items)

    from seqify.testing import check_no_peeking, check_normalized
    check_no_peeking(MyGenerator)      # built on a tiny spec with random weights
    check_normalized(MyGenerator)      # exhaustive: probabilities sum to one

or run every check on every registered component at once::

    from seqify.testing import run_conformance
    for row in run_conformance():      # the process-wide registry
        print(row)                     # (kind, name, check, status, reason)

Each check raises AssertionError naming the component and what went wrong (the
``run_*`` / ``check_registered`` entries catch it and report ``failed``).

The doubles (a toy modality of short digit strings, its tokenizer, a per-slot
``UnigramGenerator``) let core logic run end to end without training a real model;
``PeekingGenerator`` and ``UnnormalizedGenerator`` are deliberately broken generators
that the checks must catch.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field

from seqify.config import for_dataset
from seqify.data import RowReport
from seqify.hookspecs import hookimpl
from seqify.protocols import BaseModality, BaseTokenizer, GeneratorCaps, Splits, orderer_kind
from seqify.types import KindSpec, OrderBatch, Scores, TokenBatch, TokenizerSpec, TokenSet, collate

__all__ = [
    # kit
    "check_tokenizer",
    "check_orderer",
    "check_generator",
    "check_no_peeking",
    "check_normalized",
    "check_order_invariant_modelability",
    "check_registered",
    "run_conformance",
    "ConformanceResult",
    "CHECKS",
    "ItemSource",
    "ITEM_SOURCES",
    "register_item_source",
    "tiny_generator",
    "PROBE_SPEC",
    "NORM_SPEC",
    # doubles
    "ToyTokenizer",
    "ToyModality",
    "UnigramGenerator",
    "PeekingGenerator",
    "PeekingConfig",
    "UnnormalizedGenerator",
    "ToyPlugin",
    "toy_batch",
]

# --------------------------------------------------------------------------- kit


def check_tokenizer(tokenizer: Any, items: list[Any], *, equal=lambda a, b: a == b) -> None:
    """Fit, then encode -> decode every item; values inside their kinds; shapes agree."""
    tokenizer.fit(items)
    spec: TokenizerSpec = tokenizer.spec
    for n, item in enumerate(items):
        ts = tokenizer.encode(item)
        assert len(ts) <= spec.max_len, f"item {n}: {len(ts)} slots > max_len {spec.max_len}"
        assert ts.coords.shape[1] == len(spec.coord_sizes), f"item {n}: wrong number of coordinate axes"
        sizes = torch.tensor([k.size for k in spec.kinds])
        assert bool((ts.values >= 0).all() and (ts.values < sizes[ts.kinds]).all()), f"item {n}: value outside its kind"
        assert bool((ts.coords < torch.tensor(spec.coord_sizes)).all()), f"item {n}: coordinate outside coord_sizes"
        if spec.lossless:
            back = tokenizer.decode(ts)
            assert equal(back, item), f"item {n}: round trip gave {back!r}, expected {item!r}"


def check_orderer(orderer: Any, batch: TokenBatch, *, seed: int = 0) -> None:
    """Training and (for static orderers) inference orders are valid for ``batch``.

    Adaptive and learned orderers choose inference orders step by step with a model,
    so only their training orders are checked here.
    """
    rng = torch.Generator().manual_seed(seed)
    for progress in (0.0, 0.5, 1.0):
        orderer.train_orders(batch, progress=progress, rng=rng).validate(batch)
    if orderer_kind(orderer) == "static":
        orderer.infer_orders(batch, rng=rng).validate(batch)


def check_generator(model: Any, batch: TokenBatch, order: OrderBatch, *, atol: float = 1e-4) -> None:
    """Finite loss; per-slot log-probs finite, <= 0 and only on predicted slots."""
    loss = model.loss(batch, order)
    assert torch.isfinite(loss), "loss is not finite"
    scores, _ = model.score(batch, order)
    assert torch.equal(scores.scored, batch.target), "scored slots must be exactly the predicted ones"
    logp = scores.logp[scores.scored]
    assert bool(torch.isfinite(logp).all()), "non-finite log-probability"
    assert bool((logp <= atol).all()), "log-probability above 0"


# ------------------------------------------------------------ tiny specs, models, orders

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

_TINY_SETTINGS = {"d_model": 32, "n_layers": 2, "n_heads": 4, "dropout": 0.0}


def _label(generator: Any, name: str | None) -> str:
    if name:
        return name
    cls = generator if isinstance(generator, type) else type(generator)
    return cls.__name__


def tiny_config(generator_cls: type) -> Any:
    """The generator's ``config_model`` with small transformer sizes where it has them
    (``d_model`` 32, ``n_layers`` 2, ``n_heads`` 4, no dropout), else its defaults."""
    config_model = getattr(generator_cls, "config_model", None)
    if config_model is None:
        return None
    fields = getattr(config_model, "model_fields", {})
    overrides = {k: v for k, v in _TINY_SETTINGS.items() if k in fields}
    try:
        return config_model(**overrides)
    except Exception:  # the generator's own constraints win: fall back to its defaults
        return config_model()


@torch.no_grad()
def randomize_weights(model: torch.nn.Module, *, seed: int = 0, std: float = 0.5) -> torch.nn.Module:
    """Overwrite every parameter with seeded N(0, std) noise (in place) and set eval mode.

    Freshly initialised transformers (std 0.02, zero biases) predict nearly uniform,
    nearly context-free distributions; large random weights make every output depend
    visibly on every input it reads, so a leak shows up as a change in the scores.
    """
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.copy_((torch.randn(p.shape, generator=g) * std).to(p.dtype))
    return model.eval()


def tiny_generator(
    generator_cls: type, spec: TokenizerSpec = PROBE_SPEC, *, config: Any = None, seed: int = 0, std: float = 0.5
) -> torch.nn.Module:
    """``generator_cls(spec, config)`` with :func:`tiny_config` and random weights
    (:func:`randomize_weights`), in eval mode; deterministic for a seed."""
    torch.manual_seed(seed)
    model = generator_cls(spec, tiny_config(generator_cls) if config is None else config)
    return randomize_weights(model, seed=seed, std=std)


def _resolve_generator(generator: Any, spec: TokenizerSpec | None, default_spec: TokenizerSpec, config: Any,
                       seed: int, randomize: bool | None) -> tuple[torch.nn.Module, TokenizerSpec]:
    """A class is built on ``spec`` (default ``default_spec``) with random weights; an
    instance is used as it is (on its own ``spec``), randomized only on request, on a copy."""
    if isinstance(generator, type):
        spec = default_spec if spec is None else spec
        return tiny_generator(generator, spec, config=config, seed=seed), spec
    model = generator
    if randomize:
        model = randomize_weights(copy.deepcopy(model), seed=seed)
    model_spec = getattr(model, "spec", None)
    spec = spec if spec is not None else model_spec
    if spec is None:
        raise ValueError(f"{type(model).__name__} has no .spec: pass spec=")
    model.eval()
    return model, spec


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


@torch.no_grad()
def check_no_peeking(
    generator: Any,
    *,
    spec: TokenizerSpec | None = None,
    config: Any = None,
    batch: TokenBatch | None = None,
    seed: int = 0,
    block_size: int = 2,
    atol: float = 1e-5,
    randomize: bool | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """No slot's score reads a value the order has not revealed yet.

    Asserts, for every order below, every item and every predicted slot ``s`` (in
    block ``k``): changing the value of ``s`` leaves ``score().logp`` of every other
    predicted slot in blocks ``<= k`` unchanged (within ``atol``). With blocks of
    one that says the slot at order position ``t`` depends only on the given slots
    and positions ``< t``; with larger blocks, the slots of block ``k`` depend only on
    the given slots and blocks ``< k`` (not on each other). A slot that reads its own
    value cannot be seen this way (its score is of a different value then); that is
    what :func:`check_normalized`'s per-slot sums catch.

    Orders: raster, reverse and random (blocks of one; only raster when
    ``caps.any_order`` is False); when ``caps.blocks`` is True also random orders in
    blocks of ``block_size`` and in one single block, built directly as
    ``OrderBatch(perm, block)``. When ``caps.adaptive`` is True, also scoring with an
    adaptive orderer (fill the most confident slot): the slots picked before ``s`` keep
    their scores and their place in the order.

    Args:
        generator: a generator class (built on ``spec``, default :data:`PROBE_SPEC`,
            with ``config``, default :func:`tiny_config`, and random weights, see
            :func:`randomize_weights`) or a model instance (on its own ``spec``, put in
            eval mode; with ``randomize=True`` a randomized copy is checked instead).
        batch: items to probe (default: 3 random items of ``spec`` with one given slot).
        seed: seeds the weights, the items, the random orders and the new values.
        block_size: size of the blocks of the block orders.
        atol: largest change of a log-probability that counts as no change.
        name: used in messages (default: the class name).

    Returns:
        ``{"orders": {order: rows checked}, "sensitive": rows where a later slot's
        score did change}`` (0 sensitive rows means the model never used its context,
        as the order-free unigram double; the check is then vacuous).

    Raises:
        AssertionError naming the generator, the order, the item, the changed slot and
        the slot whose score moved.
    """
    label = _label(generator, name)
    model, spec = _resolve_generator(generator, spec, PROBE_SPEC, config, seed, randomize)
    caps: GeneratorCaps = getattr(model, "caps", GeneratorCaps())
    if batch is None:
        batch = collate(probe_items(spec, 3, seed=seed))
    rows_R, slots_R, values_RL = _perturbations(batch, spec, seed=seed)
    R = rows_R.shape[0]
    perturbed = _repeat(batch, rows_R, values_RL)
    arange_R = torch.arange(R)
    summary: dict[str, Any] = {"orders": {}, "sensitive": 0}

    def fail(order_name: str, r: int, j: int, before: float, after: float, block_of: Callable[[int, int], int]) -> None:
        b, s = int(rows_R[r]), int(slots_R[r])
        raise AssertionError(
            f"{label} peeks under order {order_name!r}: changing the value of slot {s} of item {b} "
            f"(block {block_of(r, s)}) changed the score of slot {j} (block {block_of(r, j)}, not after it "
            f"in the order) from {before:.6f} to {after:.6f} nats"
        )

    for order_name, order in _orders(batch, caps, seed=seed, block_size=block_size).items():
        base, _ = model.score(batch, order)
        rep_order = OrderBatch(order.perm[rows_R], order.block[rows_R])
        moved, _ = model.score(perturbed, rep_order)
        slot_block_RL = rep_order.slot_block()
        k_R = slot_block_RL[arange_R, slots_R]
        diff_RL = (moved.logp - base.logp[rows_R]).abs()
        scored_RL = perturbed.target
        others_RL = torch.ones_like(scored_RL)
        others_RL[arange_R, slots_R] = False
        forbidden_RL = scored_RL & others_RL & (slot_block_RL >= 0) & (slot_block_RL <= k_R[:, None])
        bad_RL = forbidden_RL & ~(diff_RL <= atol)  # NaN counts as a change
        if bool(bad_RL.any()):
            r, j = (int(x) for x in bad_RL.nonzero()[0])
            fail(order_name, r, j, float(base.logp[rows_R[r], j]), float(moved.logp[r, j]),
                 lambda rr, ii: int(slot_block_RL[rr, ii]))
        later_RL = scored_RL & (slot_block_RL > k_R[:, None])
        summary["sensitive"] += int(((diff_RL > atol) & later_RL).any(1).sum())
        summary["orders"][order_name] = R

    if caps.adaptive:
        orderer = _max_prob_orderer()
        base, base_order = model.score(batch, orderer=orderer)
        moved, moved_order = model.score(perturbed, orderer=orderer)
        base_rank_RL = base_order.rank()[rows_R]
        moved_rank_RL = moved_order.rank()
        t_R = base_rank_RL[arange_R, slots_R]
        before_RL = perturbed.target & (base_rank_RL < t_R[:, None])
        diff_RL = (moved.logp - base.logp[rows_R]).abs()
        bad_RL = before_RL & (~(diff_RL <= atol) | (moved_rank_RL != base_rank_RL))
        if bool(bad_RL.any()):
            r, j = (int(x) for x in bad_RL.nonzero()[0])
            b, s = int(rows_R[r]), int(slots_R[r])
            raise AssertionError(
                f"{label} peeks under an adaptive order ({orderer.name!r}): changing the value of slot {s} "
                f"of item {b} (picked at step {int(t_R[r])}) changed slot {j}, picked before it (step "
                f"{int(base_rank_RL[r, j])}): score {float(base.logp[b, j]):.6f} -> {float(moved.logp[r, j]):.6f} "
                f"nats, step -> {int(moved_rank_RL[r, j])}"
            )
        summary["orders"]["adaptive"] = R
    return summary


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


@torch.no_grad()
def check_normalized(
    generator: Any,
    *,
    spec: TokenizerSpec | None = None,
    config: Any = None,
    seed: int = 0,
    block_size: int = 2,
    atol: float = 1e-4,
    max_completions: int = 4096,
    randomize: bool | None = None,
    name: str | None = None,
) -> dict[str, float]:
    """The scores are a probability distribution over completions.

    Asserts that ``sum over every completion x of exp(sum of score(x).logp)`` is 1
    within ``atol``, and first, for every predicted slot and every setting of the
    other slots, that its probabilities over its own values sum to 1 (a slot whose
    score reads its own value fails this), enumerating every completion of a tiny template exhaustively
    (default :data:`NORM_SPEC`: 4 slots of 2 and 3 values, 36 completions), with no
    slot given and with one slot given (then over the 18 completions of the others),
    under fixed orders: raster and one shuffled permutation in blocks of one (raster
    only when ``caps.any_order`` is False), the shuffled permutation in blocks of
    ``block_size`` when ``caps.blocks`` is True, and an adaptive orderer (fill the most
    confident slot) when ``caps.adaptive`` is True.

    Args:
        generator: a class (built on ``spec``, default :data:`NORM_SPEC`, with
            ``config``, default :func:`tiny_config`, and random weights) or a model
            instance (on a template of up to 4 slots of its own spec's two smallest
            kinds; ``randomize=True`` checks a randomized copy).
        seed: seeds the weights and the shuffled order.
        block_size: size of the blocks of the block order.
        atol: allowed distance of each total from 1.
        max_completions: refuse templates with more completions than this.
        name: used in messages (default: the class name).

    Returns:
        ``{"<order>, <n> given": total probability}``.

    Raises:
        AssertionError naming the generator, the order and the total.
    """
    label = _label(generator, name)
    model, spec = _resolve_generator(generator, spec, NORM_SPEC, config, seed, randomize)
    caps: GeneratorCaps = getattr(model, "caps", GeneratorCaps())
    template = _norm_template(spec, max_completions)
    L = len(template)
    totals: dict[str, float] = {}
    cases = [{}] if L < 2 else [{}, {1: spec.kinds[int(template.kinds[1])].size - 1}]
    for given_value in cases:
        batch = _completions(template, spec, given_value)
        if batch.batch_size > max_completions:
            raise ValueError(f"{batch.batch_size} completions, more than max_completions={max_completions}")
        B = batch.batch_size
        n_given = len(given_value)
        pred = [i for i in range(L) if i not in given_value]
        shuffled = [pred[i] for i in torch.randperm(len(pred), generator=torch.Generator().manual_seed(seed + 3)).tolist()]
        if shuffled == pred and len(pred) > 1:
            shuffled = pred[::-1]
        given_first = sorted(given_value)
        orders: dict[str, OrderBatch | None] = {}
        orders["raster"] = OrderBatch.from_priorities(batch, torch.arange(L, dtype=torch.float32).expand(B, L).clone())
        if caps.any_order:
            perm = torch.tensor(given_first + shuffled).expand(B, L).clone()
            from seqify.types import blocks_of_one

            orders["shuffled"] = blocks_of_one(batch, perm)
            if caps.blocks:
                orders[f"shuffled-blocks-of-{block_size}"] = _with_blocks(orders["shuffled"], block_size)
        elif caps.blocks:
            orders[f"raster-blocks-of-{block_size}"] = _with_blocks(orders["raster"], block_size)
        if caps.adaptive:
            orders["adaptive"] = None
        for order_name, order in orders.items():
            if order is None:
                scores, _ = model.score(batch, orderer=_max_prob_orderer())
            else:
                order.validate(batch)
                scores, _ = model.score(batch, order)
            logp_BL = scores.logp.double().masked_fill(~scores.scored, 0.0)
            for s in pred:  # each slot's conditional, the other slots fixed
                others_B = torch.unique(batch.values.masked_fill(torch.arange(L) == s, -1), dim=0,
                                        return_inverse=True)[1]
                sums = torch.zeros(int(others_B.max()) + 1, dtype=torch.float64).index_add(0, others_B, logp_BL[:, s].exp())
                worst = int((sums - 1).abs().argmax())
                if not abs(float(sums[worst]) - 1.0) <= atol:
                    fixed = batch.values[int((others_B == worst).nonzero()[0, 0])].tolist()
                    fixed[s] = "*"
                    raise AssertionError(
                        f"{label} is not normalized under order {order_name!r} with {n_given} given slot(s): the "
                        f"probabilities of slot {s} over its values sum to {float(sums[worst]):.6f}, not 1, when the "
                        f"slots hold {fixed} (it reads its own value, or its distribution is not normalized)"
                    )
            total = float(torch.logsumexp(logp_BL.sum(1), 0).exp())
            key = f"{order_name}, {n_given} given"
            totals[key] = total
            if not abs(total - 1.0) <= atol:
                raise AssertionError(
                    f"{label} is not normalized under order {order_name!r} with {n_given} given slot(s): the "
                    f"probabilities of all {B} completions of {L} slots sum to {total:.6f}, not 1 (atol {atol})"
                )
    return totals


@torch.no_grad()
def check_order_invariant_modelability(
    registry: Any = None,
    *,
    orderers: tuple[str, str] = ("raster", "random"),
    n: int = 23,
    batch_size: int = 5,
    orders_per_item: int = 3,
    seed: int = 0,
    atol: float = 1e-6,
) -> dict[str, dict]:
    """The runner's modelability bookkeeping does not depend on the order.

    With the order-invariant :class:`UnigramGenerator` double (independent per slot,
    random logits), :func:`seqify.evaluate.modelability` on ``n`` toy items (batches
    of ``batch_size``, the last one partial; ``orders_per_item`` orders per item for
    the stochastic orderer) must give the same ``nats_per_token``, ``nats_per_item``
    and ``tokens_per_item`` under every orderer in ``orderers`` (within ``atol``), and
    ``nats_per_token`` must equal the directly computed mean NLL per predicted slot.
    This checks the runner, not a generator.

    Returns:
        The modelability dict per orderer name.
    """
    from seqify.dataset import TokenTable
    from seqify.evaluate import modelability

    if registry is None:
        from seqify.plugins import get_registry

        registry = get_registry()
    tok = ToyTokenizer()
    table = TokenTable.from_tokensets([tok.encode(s) for s in ToyModality.make(n, seed)])
    model = randomize_weights(UnigramGenerator(tok.spec), seed=seed, std=1.0)
    batch = table.batch(torch.arange(len(table)))
    scores, _ = model.score(batch, OrderBatch.from_priorities(batch, torch.zeros(batch.values.shape)))
    direct = float(-scores.logp.double()[scores.scored].sum() / scores.scored.sum())
    results = {}
    for orderer_name in orderers:
        orderer = registry.get("orderer", orderer_name)()
        results[orderer_name] = modelability(model, table, orderer, n=n, batch_size=batch_size,
                                             device=torch.device("cpu"), seed=seed, orders_per_item=orders_per_item)
    first = orderers[0]
    for orderer_name, res in results.items():
        for key in ("nats_per_token", "nats_per_item", "tokens_per_item"):
            a, b = res[key], results[first][key]
            assert abs(a - b) <= atol, (
                f"modelability of the order-invariant unigram double: {key} is {a!r} under {orderer_name!r} "
                f"but {b!r} under {first!r} (the runner's bookkeeping depends on the order)"
            )
        assert abs(res["nats_per_token"] - direct) <= atol, (
            f"modelability under {orderer_name!r} gives {res['nats_per_token']!r} nats per token, but the mean "
            f"NLL per predicted slot is {direct!r}"
        )
    return results


# ------------------------------------------------------------------ registry-wide runs

#: check name -> what it asserts (one line, for tables)
CHECKS: dict[str, str] = {
    "load": "the registered class imports, passes the registry's protocol check and builds with its defaults",
    "check_generator": "finite loss; log-probs finite, <= 0, exactly on the predicted slots (random order; blocks of 2 if caps.blocks)",
    "check_no_peeking": "changing a slot not yet revealed never changes the scores of slots predicted at or before it (raster, reverse, random; blocks; adaptive)",
    "check_normalized": "exp(sum of scored log-probs) over every completion of a tiny template sums to 1 (0 and 1 given; blocks; adaptive)",
    "check_orderer": "training (and static inference) orders are valid: a permutation, given first, padding last, blocks well formed",
    "check_tokenizer": "fit; every item encodes inside its kinds, coordinates and max_len; lossless tokenizers round-trip",
    "check_order_invariant_modelability": "modelability of the order-free unigram double is identical under raster and random (runner bookkeeping)",
}


class ConformanceResult(NamedTuple):
    """One row of a conformance report."""

    kind: str  # "generator", "orderer", "tokenizer" or "runner"
    name: str  # registered name ("modality/name" for tokenizers)
    check: str  # e.g. "check_no_peeking" or "check_orderer[graph]"
    status: str  # "passed", "failed" or "skipped"
    reason: str  # why it failed or was skipped, or a note


@dataclass
class ItemSource:
    """Where the conformance run gets a few items of a modality for its tokenizers.

    Args:
        items: ``items(n)`` returns ``n`` (or a few) items of the modality.
        equal: ``equal(decoded, item)``, how a lossless round trip is compared.
    """

    items: Callable[[int], list[Any]]
    equal: Callable[[Any, Any], bool] = lambda a, b: a == b


def _toy_items(n: int) -> list[str]:
    return ToyModality.make(n, 0)


def _sudoku_items(n: int) -> list[Any]:
    from seqify_sudoku.puzzles import generate_puzzles

    return generate_puzzles(n, clues=30, seed=0, pool_size=2, workers=1)


_MOLECULES = ("CCO", "CC(=O)[O-]", "C[NH3+]", "N#CC=O", "NC1CC1", "OC(F)(F)F", "c1ccoc1", "CC1=CC(=O)NC1")


def _molecule_items(n: int) -> list[str]:
    from seqify_molecule.chem import canonicalize

    out = []
    for raw in _MOLECULES[:n]:
        smiles, why = canonicalize(raw)
        if smiles is None:
            raise ValueError(f"conformance molecule {raw!r}: {why}")
        out.append(smiles)
    return out


def _molecule_equal(decoded: Any, item: str) -> bool:
    from seqify_molecule.chem import sanitized_smiles

    return sanitized_smiles(decoded) == item


#: modality name -> a fast source of items (a modality without one is loaded with
#: ``load(first dataset, None, seed=0, limit=n)``, which may be slow)
ITEM_SOURCES: dict[str, ItemSource] = {
    "toy": ItemSource(_toy_items),
    "sudoku": ItemSource(_sudoku_items, lambda decoded, item: decoded == item.solution),
    "molecule": ItemSource(_molecule_items, _molecule_equal),
}


def register_item_source(modality: str, items: Callable[[int], list[Any]],
                         equal: Callable[[Any, Any], bool] | None = None) -> None:
    """Tell the conformance run how to get a few items of ``modality`` quickly."""
    ITEM_SOURCES[modality] = ItemSource(items, equal or (lambda a, b: a == b))


def _modality_items(registry: Any, modality: str, n: int) -> tuple[list[Any], Callable[[Any, Any], bool], str]:
    source = ITEM_SOURCES.get(modality)
    if source is not None:
        return source.items(n), source.equal, ""
    cls = registry.get("modality", modality)
    mod = cls()
    splits = mod.load(cls.datasets[0], None, seed=0, limit=n, report=RowReport())
    return list(splits.train[:n]), (lambda a, b: a == b), f"items from {modality}.load({cls.datasets[0]!r})"


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
    return [
        ("sequence", ToyTokenizer().spec, toy_batch(8)),
        ("grid", PROBE_SPEC, grid),
        ("graph", graph_spec, graph),
        ("variable-length", var_spec, collate(var_items, length=7)),
    ]


_ALL_CAPS = GeneratorCaps(any_order=True, blocks=True, adaptive=True, variable_length=True)


def _run(rows: list[ConformanceResult], kind: str, name: str, check: str, fn: Callable[[], Any],
         note: Callable[[Any], str] = lambda _: "") -> None:
    try:
        out = fn()
    except _Skip as exc:
        rows.append(ConformanceResult(kind, name, check, "skipped", str(exc)))
    except Exception as exc:  # AssertionError from a check, or the component crashed
        reason = str(exc) if isinstance(exc, AssertionError) else f"{type(exc).__name__}: {exc}"
        rows.append(ConformanceResult(kind, name, check, "failed", reason))
    else:
        rows.append(ConformanceResult(kind, name, check, "passed", note(out)))


class _Skip(Exception):
    pass


def _generator_rows(registry: Any, name: str, seed: int) -> list[ConformanceResult]:
    rows: list[ConformanceResult] = []
    try:
        cls = registry.get("generator", name)
    except Exception as exc:
        return [ConformanceResult("generator", name, "load", "failed", f"{type(exc).__name__}: {exc}")]
    caps: GeneratorCaps = cls.caps

    def generator_check() -> str:
        model = tiny_generator(cls, PROBE_SPEC, seed=seed)
        batch = collate(probe_items(PROBE_SPEC, 4, n_given=2, seed=seed))
        orders = _orders(batch, caps, seed=seed, block_size=2)
        used = [o for o in orders if o in ("random", "raster") or "blocks" in o]
        for order_name in used:
            try:
                check_generator(model, batch, orders[order_name])
            except AssertionError as exc:
                raise AssertionError(f"{name} under order {order_name!r}: {exc}") from None
        return "orders: " + ", ".join(used)

    _run(rows, "generator", name, "check_generator", generator_check, lambda note: note)
    _run(rows, "generator", name, "check_no_peeking", lambda: check_no_peeking(cls, seed=seed, name=name),
         lambda s: ("orders: " + ", ".join(s["orders"])
                    + ("" if s["sensitive"] else "; the scores never depended on context (vacuous)")))
    _run(rows, "generator", name, "check_normalized", lambda: check_normalized(cls, seed=seed, name=name),
         lambda t: f"{len(t)} cases, worst |sum - 1| = {max(abs(v - 1) for v in t.values()):.1e}")
    return rows


def _orderer_rows(registry: Any, name: str, seed: int) -> list[ConformanceResult]:
    rows: list[ConformanceResult] = []
    try:
        orderer = registry.get("orderer", name)()
    except Exception as exc:
        return [ConformanceResult("orderer", name, "load", "failed", f"{type(exc).__name__}: {exc}")]
    for probe, spec, batch in _probes():
        def one(spec=spec, batch=batch) -> str:
            reason = orderer.check(spec, _ALL_CAPS)
            if reason is not None:
                raise _Skip(reason)
            check_orderer(orderer, batch, seed=seed)
            if orderer_kind(orderer) != "static":
                return "training orders only (inference orders come from a model)"
            return ""

        _run(rows, "orderer", name, f"check_orderer[{probe}]", one, lambda note: note)
    return rows


def _tokenizer_rows(registry: Any, modality: str, name: str, n_items: int) -> list[ConformanceResult]:
    label = f"{modality}/{name}"
    rows: list[ConformanceResult] = []

    def one() -> str:
        # the settings the modality's smoke budget gives this tokenizer (e.g. a few fit steps)
        mod_cls = registry.get("modality", modality)
        settings = for_dataset(mod_cls().budget("smoke"), mod_cls.datasets[0], name).get("tokenizer", {})
        tokenizer = registry.get("tokenizer", name, modality)(**settings)
        items, equal, note = _modality_items(registry, modality, n_items)
        if not items:
            raise _Skip(f"modality {modality!r} gave no items")
        check_tokenizer(tokenizer, items, equal=equal)
        return f"{len(items)} items" + (f"; {note}" if note else "")

    _run(rows, "tokenizer", label, "check_tokenizer", one, lambda note: note)
    return rows


def check_registered(kind: str, name: str, *, registry: Any = None, modality: str | None = None,
                     seed: int = 0, n_items: int = 6) -> list[ConformanceResult]:
    """Run the checks that apply to one registered component; never raises for a failed check.

    generator: :func:`check_generator`, :func:`check_no_peeking` and
    :func:`check_normalized` on the class built with random weights on the tiny specs.
    orderer: :func:`check_orderer` on each probe structure (a sequence, a grid with
    given slots, an (i, j) graph, a padded variable-length sequence) that its
    ``check`` accepts with an all-capable generator; the others are skipped with its
    reason. tokenizer: :func:`check_tokenizer` on ``n_items`` items of its modality
    (from :data:`ITEM_SOURCES`, else the modality's ``load``), built with the settings
    the modality's smoke budget gives it; ``modality`` is needed
    when two modalities register the name.

    Returns:
        One :class:`ConformanceResult` per check.
    """
    if registry is None:
        from seqify.plugins import get_registry

        registry = get_registry()
    if kind == "generator":
        return _generator_rows(registry, name, seed)
    if kind == "orderer":
        return _orderer_rows(registry, name, seed)
    if kind == "tokenizer":
        if modality is None:
            owners = [i.modality for i in registry.infos("tokenizer") if i.name == name]
            if len(owners) != 1:
                raise ValueError(f"tokenizer {name!r} is registered for modalities {owners}: pass modality=")
            modality = owners[0]
        return _tokenizer_rows(registry, modality, name, n_items)
    raise ValueError(f"unknown kind {kind!r} (generator, orderer or tokenizer)")


def run_conformance(registry: Any = None, *, kinds: Iterable[str] = ("generator", "orderer", "tokenizer", "runner"),
                    seed: int = 0, n_items: int = 6,
                    on_result: Callable[[ConformanceResult], None] | None = None) -> list[ConformanceResult]:
    """Every check on every registered generator, orderer and tokenizer, plus the
    runner's :func:`check_order_invariant_modelability`; see :func:`check_registered`.

    Args:
        registry: default the process-wide one (:func:`seqify.plugins.get_registry`).
        kinds: which parts to run.
        on_result: called with each row as it is made (progress output).

    Returns:
        The rows; nothing is raised for a failed check (look for status "failed").
    """
    if registry is None:
        from seqify.plugins import get_registry

        registry = get_registry()
    kinds = tuple(kinds)
    rows: list[ConformanceResult] = []

    def add(new: list[ConformanceResult]) -> None:
        for row in new:
            rows.append(row)
            if on_result is not None:
                on_result(row)

    for kind in ("generator", "orderer"):
        if kind in kinds:
            for name in registry.names(kind):
                add(check_registered(kind, name, registry=registry, seed=seed))
    if "tokenizer" in kinds:
        for info in registry.infos("tokenizer"):
            add(check_registered("tokenizer", info.name, registry=registry, modality=info.modality,
                                 seed=seed, n_items=n_items))
    if "runner" in kinds:
        part: list[ConformanceResult] = []
        _run(part, "runner", "evaluate.modelability", "check_order_invariant_modelability",
             lambda: check_order_invariant_modelability(registry, seed=seed),
             lambda res: "nats/token " + ", ".join(f"{k} {v['nats_per_token']:.9f}" for k, v in res.items()))
        add(part)
    return rows


# ----------------------------------------------------------------------- doubles


class ToyTokenizer(BaseTokenizer):
    """Digit strings such as "3141" -> one slot per digit; the first digit is given.

    Args:
        length: digits per item (default 4).
    """

    name = "digits"

    def __init__(self, length: int = 4):
        self.length = length

    def __repr__(self) -> str:
        return f"ToyTokenizer(length={self.length})"

    @property
    def spec(self) -> TokenizerSpec:
        return TokenizerSpec(
            kinds=(KindSpec("digit", 10, tuple("0123456789")),),
            coord_names=("position",),
            coord_sizes=(self.length,),
            max_len=self.length,
        )

    def encode(self, item: str) -> TokenSet:
        if len(item) != self.length or not item.isdigit():
            raise ValueError(f"expected {self.length} digits, got {item!r}")
        values = torch.tensor([int(c) for c in item])
        L = self.length
        given = torch.zeros(L, dtype=torch.bool)
        given[0] = True
        return TokenSet(values, torch.zeros(L, dtype=torch.long), torch.arange(L)[:, None], given)

    def decode(self, tokens: TokenSet) -> str:
        return "".join(str(int(v)) for v in tokens.values)


class ToyModality(BaseModality):
    """Digit strings whose digits increase by a fixed step mod 10 ("1357", "2468")."""

    name = "toy"
    datasets: ClassVar[tuple[str, ...]] = ("steps",)
    task: ClassVar[str] = "complete"
    headline_metrics: ClassVar[tuple[str, ...]] = ("exact",)

    def __repr__(self) -> str:
        return "ToyModality()"

    @staticmethod
    def make(n: int, seed: int, length: int = 4) -> list[str]:
        g = torch.Generator().manual_seed(seed)
        starts = torch.randint(0, 10, (n,), generator=g)
        steps = torch.randint(1, 3, (n,), generator=g)
        return ["".join(str(int((s + k * d) % 10)) for k in range(length)) for s, d in zip(starts, steps)]

    def load(self, dataset, path, *, seed, limit, report: RowReport) -> Splits:
        n = limit or 200
        return Splits(self.make(n, seed), self.make(32, seed + 1), self.make(32, seed + 2), {"generated": True})

    def budget(self, budget: str) -> dict:
        return {"train": {"steps": 30, "batch_size": 16, "warmup_steps": 2},
                "eval": {"n_test": 16, "n_samples": 16, "batch_size": 8},
                "generator": {}}

    def templates(self, tokenizer, test_tokens, n, rng):
        out = []
        for ts in test_tokens[:n]:
            out.append(ts.with_values(torch.where(ts.given, ts.values, torch.zeros_like(ts.values))))
        return out

    def evaluate(self, samples, splits, *, templates=None) -> dict:
        right = sum(s == t for s, t in zip(samples, splits.test))
        return {"exact": right / max(len(samples), 1), "n": len(samples)}

    def render(self, samples, path: Path, *, splits=None) -> Path:
        from seqify.io import atomic_write_bytes

        # a tiny valid PNG is enough for a double: 1x1 white pixel
        atomic_write_bytes(path, bytes.fromhex(
            "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
            "1f15c4890000000d49444154789c6360f8ffff3f0005fe02fea73581e40000000049454e44ae426082"))
        return Path(path)


class UnigramConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    smoothing: float = Field(0.0, ge=0, description="unused; shows how a generator declares settings")


class UnigramGenerator(torch.nn.Module):
    """Independent categorical per slot: the order does not change its likelihood,
    which makes it a handy double for checking the runner's bookkeeping."""

    config_model: ClassVar[type[BaseModel]] = UnigramConfig
    caps: ClassVar[GeneratorCaps] = GeneratorCaps(any_order=True, blocks=True, adaptive=True)
    #: no size knob: every budget's size means the defaults
    sizes: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, spec: TokenizerSpec, config: UnigramConfig | None = None):
        super().__init__()
        self.spec = spec
        self.logits_LV = torch.nn.Parameter(torch.zeros(spec.max_len, spec.total_vocab))
        self.register_buffer("kind_mask_KV", spec.kind_mask(), persistent=False)
        self.register_buffer("offsets_K", torch.tensor(spec.vocab_offsets), persistent=False)

    def _logp_BLV(self, batch: TokenBatch) -> torch.Tensor:
        B, L = batch.values.shape
        logits = self.logits_LV[:L].expand(B, L, -1)
        logits = logits.masked_fill(~self.kind_mask_KV[batch.kinds], float("-inf"))
        return torch.log_softmax(logits.float(), dim=-1)

    def _true(self, batch):
        return batch.values + self.offsets_K[batch.kinds]

    def loss(self, batch: TokenBatch, order: OrderBatch) -> torch.Tensor:
        logp = self._logp_BLV(batch).gather(-1, self._true(batch)[..., None])[..., 0]
        return -(logp[batch.target]).mean()

    def score(self, batch, order=None, orderer=None):
        logp_BLV = self._logp_BLV(batch)
        true = self._true(batch)
        logp = logp_BLV.gather(-1, true[..., None])[..., 0]
        correct = logp_BLV.argmax(-1) == true
        scored = batch.target
        if order is None:
            rng = torch.Generator().manual_seed(0)
            if orderer is not None and orderer.adaptive:
                prio = torch.zeros(batch.values.shape)
                cand = batch.target.clone()
                for step in range(int(batch.target.sum(1).max())):
                    pick = orderer.select(logp_BLV, cand)
                    active = cand.any(1)
                    prio[active, pick[active]] = step
                    cand[active, pick[active]] = False
                order = OrderBatch.from_priorities(batch, prio)
            else:
                order = orderer.infer_orders(batch, rng=rng)
        return Scores(logp.masked_fill(~scored, 0.0), correct & scored, scored), order

    def sample(self, template, orderer, *, rng, temperature=1.0):
        logp_BLV = self._logp_BLV(template)
        if temperature == 0:
            pick = logp_BLV.argmax(-1)
        else:
            gumbel = -torch.log(-torch.log(torch.rand(logp_BLV.shape, generator=rng).clamp_min(1e-20)))
            pick = (logp_BLV / temperature + gumbel.to(logp_BLV.device)).argmax(-1)
        values = pick - self.offsets_K[template.kinds]
        values = torch.where(template.given | template.pad, template.values, values)
        return template.with_values(values)


class PeekingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    d_model: int = Field(16, ge=1, description="width of the embeddings")
    peek: int = Field(1, ge=0, description="reads the true value of the slot this many places later in the order (0: honest)")


class PeekingGenerator(torch.nn.Module):
    """A deliberately broken causal generator: a test double that ``check_no_peeking`` must catch.

    Position ``t`` of the order predicts slot ``perm[t]`` from the mean embedding of the
    values before it (honest) plus the embedding of the *true value* of slot
    ``perm[t + peek]``, later in the order (the leak). Its probabilities still sum to
    one for each slot, so its scores look fine to every other check. ``peek=0``
    turns the leak off (a small honest causal model).
    """

    config_model: ClassVar[type[BaseModel]] = PeekingConfig
    caps: ClassVar[GeneratorCaps] = GeneratorCaps(any_order=True, blocks=False, adaptive=False)
    sizes: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, spec: TokenizerSpec, config: PeekingConfig | None = None):
        super().__init__()
        self.spec = spec
        self.config = config if isinstance(config, PeekingConfig) else PeekingConfig(**(config or {}))
        d = self.config.d_model
        self.value_embed = torch.nn.Embedding(spec.total_vocab, d)
        self.peek_embed = torch.nn.Embedding(spec.total_vocab, d)
        self.slot_embed = torch.nn.Embedding(spec.max_len, d)
        self.head = torch.nn.Linear(d, spec.total_vocab)
        self.register_buffer("kind_mask_KV", spec.kind_mask(), persistent=False)
        self.register_buffer("offsets_K", torch.tensor(spec.vocab_offsets), persistent=False)

    def _logp_BTV(self, batch: TokenBatch, order: OrderBatch) -> torch.Tensor:
        """Log-probabilities of the slot at each order position ``[B, L, V]``."""
        B, L = batch.values.shape
        perm = order.perm
        gid = (batch.values + self.offsets_K[batch.kinds]).masked_fill(batch.pad, 0)
        gid_T = gid.gather(1, perm)
        seen = self.value_embed(gid_T) + self.slot_embed(perm)
        before = torch.cumsum(seen, 1) - seen  # strictly earlier positions
        x = before / torch.arange(L, device=perm.device).clamp_min(1)[None, :, None] + self.slot_embed(perm)
        k = self.config.peek
        if k:
            ahead = torch.cat([gid_T[:, k:], gid_T[:, :k]], dim=1)  # the value k places later (wraps at the end)
            x = x + self.peek_embed(ahead)
        allowed = self.kind_mask_KV[batch.kinds.gather(1, perm)]
        return self.head(torch.tanh(x)).float().masked_fill(~allowed, float("-inf")).log_softmax(-1)

    def _true_logp(self, batch: TokenBatch, order: OrderBatch) -> torch.Tensor:
        gid = batch.values + self.offsets_K[batch.kinds]
        logp_T = self._logp_BTV(batch, order).gather(-1, gid.gather(1, order.perm)[..., None])[..., 0]
        return torch.zeros_like(logp_T).scatter(1, order.perm, logp_T)

    def loss(self, batch: TokenBatch, order: OrderBatch) -> torch.Tensor:
        return -self._true_logp(batch, order)[batch.target].mean()

    def score(self, batch, order=None, orderer=None):
        if order is None:
            order = orderer.infer_orders(batch, rng=torch.Generator().manual_seed(0))
        logp = self._true_logp(batch, order)
        gid = batch.values + self.offsets_K[batch.kinds]
        best_T = self._logp_BTV(batch, order).argmax(-1)
        correct = torch.zeros_like(batch.target).scatter(1, order.perm, best_T == gid.gather(1, order.perm))
        scored = batch.target
        return Scores(logp.masked_fill(~scored, 0.0), correct & scored, scored.clone()), order

    def sample(self, template, orderer, *, rng, temperature=1.0):
        order = orderer.infer_orders(template, rng=rng)
        values = template.values.clone()
        B = values.shape[0]
        for t in range(template.length):
            batch = template.with_values(values)
            slot = order.perm[:, t]
            logp = self._logp_BTV(batch, order)[:, t]
            pick = logp.argmax(-1) if temperature == 0 else torch.multinomial((logp / temperature).exp(), 1, generator=rng)[:, 0]
            new = pick - self.offsets_K[template.kinds[torch.arange(B), slot]]
            keep = template.given[torch.arange(B), slot] | template.pad[torch.arange(B), slot]
            values[torch.arange(B), slot] = torch.where(keep, values[torch.arange(B), slot], new)
        return template.with_values(values)


class UnnormalizedGenerator(UnigramGenerator):
    """A deliberately broken generator: the unigram double with ``offset`` nats (0.1)
    added to every scored log-probability, so its probabilities sum to more than one.
    A test double that ``check_normalized`` must catch."""

    offset: ClassVar[float] = 0.1

    def score(self, batch, order=None, orderer=None):
        scores, order = super().score(batch, order, orderer)
        logp = torch.where(scores.scored, scores.logp + self.offset, scores.logp)
        return Scores(logp, scores.correct, scores.scored), order


class ToyPlugin:
    """Registers the doubles, exactly like a third-party plugin would."""

    @hookimpl
    def register_modalities(self, register):
        register("toy", "seqify.testing:ToyModality", "Digit strings with a constant step (test double).")

    @hookimpl
    def register_tokenizers(self, register):
        register("digits", "seqify.testing:ToyTokenizer", "One slot per digit (test double).", modality="toy")

    @hookimpl
    def register_generators(self, register):
        register("unigram", "seqify.testing:UnigramGenerator", "Independent categorical per slot (test double).")


def toy_batch(n: int = 4, seed: int = 0) -> TokenBatch:
    tok = ToyTokenizer()
    return collate([tok.encode(s) for s in ToyModality.make(n, seed)])


def nats_to_bits(nats: float) -> float:
    return nats / math.log(2)
