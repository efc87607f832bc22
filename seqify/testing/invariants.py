"""Invariants every generator and the runner must keep, checked by probing: no slot
reads a value its order has not revealed (:func:`check_no_peeking`), the scores are a
probability distribution (:func:`check_normalized`), and the runner's modelability
bookkeeping does not depend on the order (:func:`check_order_invariant_modelability`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from seqify.protocols import GeneratorCaps
from seqify.testing.checks import _label, _resolve_generator, randomize_weights
from seqify.testing.doubles import ToyModality, ToyTokenizer, UnigramGenerator
from seqify.testing.probes import (
    NORM_SPEC,
    PROBE_SPEC,
    _completions,
    _max_prob_orderer,
    _norm_template,
    _orders,
    _perturbations,
    _repeat,
    _with_blocks,
    probe_items,
)
from seqify.types import OrderBatch, TokenBatch, TokenizerSpec, collate


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
