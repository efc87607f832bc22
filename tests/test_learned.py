"""The learned (LO-ARM-style) orderer: posterior, bound, RLOO, training, sampling, runner."""

from __future__ import annotations

import itertools
import json
import math
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from seqify.dataset import TokenTable
from seqify.errors import NotApplicableError
from seqify.io import load_checkpoint, save_checkpoint
from seqify.protocols import BaseTokenizer, GeneratorCaps, TrainableModel, TrainableOrderer, orderer_kind
from seqify.types import KindSpec, OrderBatch, TokenizerSpec, TokenSet, collate
from seqify_generators.masked import MaskedTransformer
from seqify_learned.estimators import confidence_features
from seqify_learned.model import LearnedOrderModel
from seqify_learned.orderer import LearnedOrder
from seqify_learned.plackett_luce import (
    masked_entropy,
    plackett_luce_log_prob,
    plackett_luce_prefix_log_prob,
    rloo_surrogate,
)
from seqify_learned.posterior import PosteriorGraph, slot_graph

TINY = {"d_model": 32, "n_layers": 2, "n_heads": 4}
SMALL_Q = {"policy_d_model": 16, "policy_layers": 1, "policy_heads": 2}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models: threads only contend with each other on a shared 2-core machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------ tiny data

# 4 x 4 Sudoku-like grid: one kind of 4 digits, coords (row, col, box)
SUDOKU4 = TokenizerSpec(
    kinds=(KindSpec("digit", 4),),
    coord_names=("row", "col", "box"),
    coord_sizes=(4, 4, 4),
    max_len=16,
)
_BASE4 = torch.tensor([[0, 1, 2, 3], [2, 3, 0, 1], [1, 0, 3, 2], [3, 2, 1, 0]])


def sudoku4_items(n: int, seed: int = 0, n_given: int = 6) -> list[TokenSet]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.arange(16)
    row, col = idx // 4, idx % 4
    coords = torch.stack([row, col, (row // 2) * 2 + col // 2], dim=1)
    items = []
    for _ in range(n):
        relabel = torch.randperm(4, generator=g)
        values = relabel[_BASE4.flatten()]
        given = torch.zeros(16, dtype=torch.bool)
        given[torch.randperm(16, generator=g)[:n_given]] = True
        items.append(TokenSet(values, torch.zeros(16, dtype=torch.long), coords.clone(), given))
    return items


# a 3-atom graph tokenization: node slots (i, i) of kind "atom", edge slots (i, j) of kind "bond"
GRAPH3 = TokenizerSpec(
    kinds=(KindSpec("atom", 3), KindSpec("bond", 2)),
    coord_names=("i", "j"),
    coord_sizes=(3, 3),
    max_len=6,
)
_PAIRS3 = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]


def graph3_items(n: int, seed: int = 0) -> list[TokenSet]:
    g = torch.Generator().manual_seed(seed)
    coords = torch.tensor(_PAIRS3)
    kinds = (coords[:, 0] != coords[:, 1]).long()
    sizes = torch.tensor([3, 2])[kinds]
    items = []
    for _ in range(n):
        values = (torch.rand(6, generator=g) * sizes).long()
        items.append(TokenSet(values, kinds.clone(), coords.clone(), torch.zeros(6, dtype=torch.bool)))
    return items


# digit strings x0 x1 x1 x0 x1 with x0 given: one free digit, the rest are copies
DIGITS5 = TokenizerSpec(kinds=(KindSpec("digit", 10),), coord_names=("pos",), coord_sizes=(5,), max_len=5)


def copy_items(n: int, seed: int = 0) -> list[TokenSet]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x0, x1 = (int(v) for v in torch.randint(0, 10, (2,), generator=g))
        values = torch.tensor([x0, x1, x1, x0, x1])
        given = torch.tensor([True, False, False, False, False])
        out.append(TokenSet(values, torch.zeros(5, dtype=torch.long), torch.arange(5)[:, None], given))
    return out


def build(spec: TokenizerSpec, seed: int = 0, **options) -> tuple[LearnedOrder, LearnedOrderModel]:
    torch.manual_seed(seed)
    orderer = LearnedOrder(**{**SMALL_Q, **options})
    return orderer, orderer.wrap(MaskedTransformer(spec, TINY), spec)


def randomize_heads(model: LearnedOrderModel, seed: int = 0, scale: float = 0.5) -> None:
    """The policy and posterior heads start at zero (uniform); give them some shape."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in (model.order_head, model.posterior.out):
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) * scale)
            head.bias.copy_(torch.randn(head.bias.shape, generator=g) * scale)


# ------------------------------------------------------------------ registration and options


def test_registers_through_its_entry_point():
    from seqify.plugins import build_registry

    names = {ep.name: ep.value for ep in entry_points(group="seqify")}
    assert names.get("learned") == "seqify_learned"
    registry = build_registry(warn=False)
    assert "learned" in registry.names("orderer")
    cls = registry.get("orderer", "learned")
    assert cls is LearnedOrder and not cls.adaptive and cls.stochastic
    assert orderer_kind(cls) == "trainable" and isinstance(LearnedOrder(), TrainableOrderer)
    assert not hasattr(cls, "infer_orders") and not hasattr(cls, "select")  # nothing that only refuses
    _, model = build(SUDOKU4)
    assert isinstance(model, TrainableModel)


def test_the_model_module_still_exports_every_public_name():
    import seqify_learned.model as module

    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_options_are_validated():
    with pytest.raises(ValidationError):
        LearnedOrder(not_an_option=1)
    with pytest.raises(ValidationError):
        LearnedOrder(orders_per_item=0)
    # one order per item is the causal generator's (running baseline); the masked one's RLOO needs two
    assert "orders_per_item=1" in LearnedOrder(orders_per_item=1).check(SUDOKU4, MaskedTransformer.caps)
    with pytest.raises(ValidationError):
        LearnedOrder(policy_d_model=30, policy_heads=4)
    assert "warm_start=0.5" in repr(LearnedOrder(warm_start=0.5))
    # evaluation-only settings share a trained model; training settings do not
    assert LearnedOrder(greedy_order=True, eval_orders=2).train_signature == LearnedOrder().train_signature
    assert LearnedOrder(warm_start=0.5).train_signature != LearnedOrder().train_signature
    assert all(f.description for f in LearnedOrder.config_model.model_fields.values())


class _EncodeOnly(nn.Module):
    """A generator with ``encode`` but without the declared ``hidden_size``."""

    config = SimpleNamespace(d_model=8)  # an undeclared width is not read

    def encode(self, batch, known_BL):  # pragma: no cover - never called
        raise AssertionError


def test_check_says_when_it_does_not_apply():
    adaptive = MaskedTransformer.caps
    assert adaptive.hidden_states
    assert LearnedOrder().check(SUDOKU4, adaptive) is None
    reason = LearnedOrder().check(SUDOKU4, GeneratorCaps(adaptive=True, hidden_states=False))
    assert "caps.hidden_states" in reason and "masked" in reason  # the capability it needs, not adaptive
    assert LearnedOrder().check(SUDOKU4, GeneratorCaps(adaptive=False, hidden_states=True)) is None
    var = TokenizerSpec((KindSpec("t", 4),), ("pos",), (8,), 8, variable_length=True, end_kind=0, end_value=3)
    assert "variable-length" in LearnedOrder().check(var, adaptive)
    assert "('i', 'j')" in LearnedOrder(backbone="graph").check(SUDOKU4, adaptive)
    assert LearnedOrder(backbone="graph").check(GRAPH3, adaptive) is None
    with pytest.raises(NotApplicableError, match="hidden_size"):  # encode alone is not enough
        LearnedOrderModel(_EncodeOnly(), SUDOKU4)
    batch = collate(sudoku4_items(2))
    LearnedOrder().train_orders(batch, progress=0.0, rng=torch.Generator().manual_seed(0)).validate(batch)


# ------------------------------------------------------------------ the posterior q


def _plackett_luce_by_hand(s_L: torch.Tensor, pred: list[int], steps: int) -> float:
    """log q of the first ``steps`` picks of ``pred``: sum_t [s_{z_t} - logsumexp over the
    slots not yet chosen]."""
    by_hand, remaining = 0.0, list(pred)
    for i in pred[:steps]:
        by_hand += float(s_L[i] - torch.logsumexp(s_L[remaining], 0))
        remaining.remove(i)
    return by_hand


def test_q_orders_are_valid_and_log_q_is_the_plackett_luce_formula():
    _, model = build(SUDOKU4)
    randomize_heads(model, scale=2.0)
    batch = collate(sudoku4_items(3, seed=1))
    with torch.no_grad():
        rep, scores_RL, order, logq_R = model.posterior_orders(batch, 2, rng=torch.Generator().manual_seed(0))
    order.validate(rep)
    assert rep.batch_size == 6 and torch.equal(rep.values[0], rep.values[1])
    for r in range(rep.batch_size):
        pred = [int(i) for i, b in zip(order.perm[r], order.block[r]) if b >= 0]
        assert sorted(pred) == rep.target[r].nonzero().flatten().tolist()  # every predicted slot once
        assert not any(bool(rep.given[r, i]) for i in pred)  # given slots never chosen
        by_hand = _plackett_luce_by_hand(scores_RL[r].double(), pred, len(pred))
        assert logq_R[r].item() == pytest.approx(by_hand, abs=1e-4)
    assert torch.allclose(plackett_luce_log_prob(scores_RL, order), logq_R)
    assert float(scores_RL[rep.target].abs().max()) <= model.options.score_clip


def test_scores_are_bounded_by_score_clip():
    _, model = build(SUDOKU4, score_clip=2.0)
    randomize_heads(model, scale=50.0)
    batch = collate(sudoku4_items(2))
    with torch.no_grad():
        s = model.posterior_scores(batch)
        hidden, logp = model.generator.encode(batch, batch.given)
        o = model.order_logits(hidden, logp, batch.kinds)
    assert float(s[batch.target].abs().max()) <= 2.0 and float(o.abs().max()) <= 2.0
    assert float(s[batch.target].abs().max()) > 1.5  # the clip is active, not a collapse


# ------------------------------------------------------------------ exact scoring and the bound


def test_score_is_the_sum_of_per_step_value_and_order_log_probs():
    _, model = build(SUDOKU4)
    randomize_heads(model)
    batch = collate(sudoku4_items(3, seed=2))
    order = LearnedOrder().train_orders(batch, progress=0.0, rng=torch.Generator().manual_seed(3))
    scores, used = model.score(batch, order)
    assert torch.equal(used.perm, order.perm)
    offsets = torch.tensor(SUDOKU4.vocab_offsets)
    with torch.no_grad():
        for b in range(batch.batch_size):
            one = collate([batch.unbatch()[b]])
            known = one.given.clone()
            total = 0.0
            for i in [int(i) for i, blk in zip(order.perm[b], order.block[b]) if blk >= 0]:
                hidden, logp = model.generator.encode(one, known)
                logits = model.order_head(hidden).squeeze(-1)
                logits = 10.0 * torch.tanh(logits / 10.0)
                open_ = one.target & ~known
                order_lp = logits[0, i] - torch.logsumexp(logits[0][open_[0]], 0)
                value_lp = logp[0, i, offsets[one.kinds[0, i]] + one.values[0, i]]
                assert float(scores.logp[b, i]) == pytest.approx(float(order_lp + value_lp), abs=1e-4)
                total += float(order_lp + value_lp)
                known[0, i] = True
            assert float(scores.logp[b].sum()) == pytest.approx(total, abs=1e-3)
    assert torch.equal(scores.scored, batch.target)
    with pytest.raises(ValueError, match="blocks of one"):
        model.score(batch, OrderBatch(order.perm, torch.where(order.block > 0, order.block // 2, order.block)))
    _, drawn = model.score(batch)  # no order: one draw from q
    drawn.validate(batch)


def test_importance_weighted_estimate_is_at_least_the_elbo_and_equal_for_one_order():
    _, model = build(SUDOKU4)
    randomize_heads(model)
    batch = collate(sudoku4_items(4, seed=3))
    est = model.estimate(batch, 4, rng=torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(est["iw"]).all() and torch.isfinite(est["elbo"]).all())
    assert bool((est["iw"] >= est["elbo"] - 1e-9).all())
    assert bool((est["iw"] > est["elbo"] + 1e-6).any())  # orders differ, so the bound is not tight
    assert torch.allclose(est["elbo"], est["value"] + est["order"] - est["log_q"])
    one = model.estimate(batch, 1, rng=torch.Generator().manual_seed(0))
    assert torch.allclose(one["iw"], one["elbo"])
    assert bool((one["iw"] < 0).all())


def test_stratified_training_estimate_is_unbiased_and_exact_with_one_step_per_stratum():
    _, model = build(SUDOKU4)
    randomize_heads(model)
    batch = collate(sudoku4_items(3, seed=12))  # 10 predicted slots each
    torch.manual_seed(7)
    with torch.no_grad():
        exact = model.elbo_estimate(batch, k=2, steps=10)["elbo_slot"]
    torch.manual_seed(7)
    with torch.no_grad():
        rep, _, order, logq = model.posterior_orders(batch, 2)
    value, order_lp, _ = model.walk(rep, order)
    by_walk = ((value.sum(1) + order_lp.sum(1) - logq) / 10).mean()
    assert float(exact) == pytest.approx(float(by_walk), abs=1e-4)
    # one step per order is unbiased: over many draws it averages to the exact estimator
    single, full = [], []
    with torch.no_grad():
        for seed in range(300):
            torch.manual_seed(seed)
            single.append(float(model.elbo_estimate(batch, k=2, steps=1)["elbo_slot"]))
            torch.manual_seed(seed)
            full.append(float(model.elbo_estimate(batch, k=2, steps=10)["elbo_slot"]))
    assert sum(single) / 300 == pytest.approx(sum(full) / 300, abs=0.08)
    assert torch.tensor(single).std() > 2 * torch.tensor(full).std()  # ... at a higher variance


def test_modelability_reports_the_estimate_and_the_bound():
    orderer, model = build(SUDOKU4, eval_orders=3)
    randomize_heads(model)
    table = TokenTable.from_tokensets(sudoku4_items(7, seed=4))
    stats = orderer.modelability(model, table, n=5, batch_size=6, device=torch.device("cpu"), seed=0)
    for key in ("nats_per_token", "nats_per_item", "bits_per_item", "top1_accuracy", "tokens_per_item",
                "n_items", "kind", "note", "sem_nats_per_item"):
        assert key in stats
    assert stats["kind"] == "estimate" and stats["bound_kind"] == "bound" and stats["n_items"] == 5
    assert stats["tokens_per_item"] == 10
    assert 0 < stats["nats_per_item"] <= stats["bound_nats_per_item"] + 1e-9
    assert stats["bound_bits_per_item"] == pytest.approx(stats["bound_nats_per_item"] / math.log(2))
    assert stats["bound_nats_per_item"] == pytest.approx(
        stats["value_nats_per_item"] + stats["order_nats_per_item"] - stats["q_entropy_nats_per_item"], abs=1e-6)
    assert "upper bound" in stats["note"]
    with pytest.raises(TypeError, match="LearnedOrderModel"):
        orderer.modelability(model.generator, table, n=2, batch_size=4, device=torch.device("cpu"), seed=0)


# ------------------------------------------------------------------ gradients


def test_rloo_gives_no_gradient_when_every_order_has_the_same_reward():
    logq = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.7, -0.9]], requires_grad=True)
    rloo_surrogate(logq, torch.full((2, 3), 4.2), torch.ones(2)).backward()
    assert torch.equal(logq.grad, torch.zeros_like(logq))
    logq.grad = None
    f = torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    value = rloo_surrogate(logq, f, torch.tensor([1.0, 0.5]))
    assert float(value.detach()) == 0.0
    value.backward()
    baseline = (f.sum(1, keepdim=True) - f) / 2
    expected = -(f - baseline) * torch.tensor([[1.0], [0.5]]) / f.numel()
    assert torch.allclose(logq.grad, expected)


def test_warm_start_trains_only_the_generator_then_everything():
    orderer, model = build(SUDOKU4, warm_start=0.3)
    model.train()
    batch = collate(sudoku4_items(8, seed=5))
    order = orderer.train_orders(batch, progress=0.1, rng=torch.Generator().manual_seed(0))
    model.set_progress(0.1)
    loss, stats = model.loss_with_stats(batch, order)
    loss.backward()
    policy = list(model.order_head.parameters()) + list(model.posterior.parameters())
    assert all(p.grad is None for p in policy)
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.generator.parameters())
    assert float(stats["phase"]) == 0.0
    model.zero_grad(set_to_none=True)
    model.set_progress(0.5)
    loss, stats = model.loss_with_stats(batch, order)
    loss.backward()
    assert float(stats["phase"]) == 1.0
    # the statistics are detached 0-dim tensors (read back by the training loop only when it logs)
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in stats.values())
    assert float(model.order_head.weight.grad.abs().sum()) > 0
    assert float(model.posterior.out.weight.grad.abs().sum()) > 0
    # the returned value is the negative ELBO per slot (the regularisers add gradient, not value)
    assert float(loss.detach()) == pytest.approx(-float(stats["elbo_nats_per_slot"]), abs=1e-5)
    # loss is loss_with_stats's first element; in eval mode there are no statistics
    torch.manual_seed(3)
    plain = model.loss(batch, order)
    torch.manual_seed(3)
    assert torch.equal(plain, model.loss_with_stats(batch, order)[0])
    model.eval()
    assert model.loss_with_stats(batch, order)[1] == {}


def test_entropy_helper():
    logits = torch.tensor([[0.0, 0.0, 5.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    ent = masked_entropy(logits, mask)
    assert ent[0].item() == pytest.approx(math.log(2)) and ent[1].item() == 0.0


# ------------------------------------------------------------------ LO-ARM's exact next-slot estimator

# three free digits, nothing given: every order of the 3 slots can be enumerated
DIGITS3 = TokenizerSpec(kinds=(KindSpec("digit", 3),), coord_names=("pos",), coord_sizes=(3,), max_len=3)


def digits3_items(n: int, seed: int = 0) -> list[TokenSet]:
    g = torch.Generator().manual_seed(seed)
    return [
        TokenSet(torch.randint(0, 3, (3,), generator=g), torch.zeros(3, dtype=torch.long), torch.arange(3)[:, None],
                 torch.zeros(3, dtype=torch.bool))
        for _ in range(n)
    ]


def order_starting_with(batch, prefix: list[int]) -> OrderBatch:
    """Blocks-of-one orders of a 1-item batch that fill ``prefix`` first, then the rest by index."""
    priority = torch.arange(batch.values.shape[1], dtype=torch.float32)[None] + 100.0
    for t, slot in enumerate(prefix):
        priority[0, slot] = float(t)
    return OrderBatch.from_priorities(batch, priority)


def enumerated_elbo_per_slot(model: LearnedOrderModel, item_batch) -> torch.Tensor:
    """``(1/n) sum_i sum_{z_<i} q(z_<i | x) F(z_<i, x)``, every prefix enumerated (differentiable)."""
    slots = item_batch.target[0].nonzero().flatten().tolist()
    n = len(slots)
    scores = model.posterior_scores(item_batch)
    total = torch.zeros(())
    for i in range(n):
        for prefix in itertools.permutations(slots, i):
            order = order_starting_with(item_batch, list(prefix))
            step = torch.tensor([i])
            logq = plackett_luce_prefix_log_prob(scores, order, step)
            total = total + logq.exp()[0] * model.next_slot_terms(item_batch, order, step, scores)["F"][0] / n
    return total


def test_next_slot_term_is_the_q_weighted_sum_over_open_slots_scored_one_by_one():
    _, model = build(SUDOKU4)
    randomize_heads(model, scale=1.0)
    batch = collate(sudoku4_items(1, seed=13))
    with torch.no_grad():
        scores = model.posterior_scores(batch)
        free = batch.target[0].nonzero().flatten().tolist()
        prefix = free[:3]
        terms = model.next_slot_terms(batch, order_starting_with(batch, prefix), torch.tensor([3]), scores)
        open_ = [j for j in free if j not in prefix]
        q = torch.softmax(scores[0, open_].double(), 0)
        by_hand = 0.0
        for qj, j in zip(q.tolist(), open_):
            # the same step scored by the sequential walk along an order that fills j next
            scored, _ = model.score(batch, order_starting_with(batch, prefix + [j]))
            by_hand += qj * (float(scored.logp[0, j]) - math.log(qj))
    assert float(terms["F"][0]) == pytest.approx(by_hand, abs=1e-4)
    assert float(terms["log_open"][0]) == pytest.approx(math.log(len(open_)))


def test_prefix_log_q_is_the_plackett_luce_formula_on_the_first_steps():
    _, model = build(SUDOKU4)
    randomize_heads(model, scale=2.0)
    batch = collate(sudoku4_items(3, seed=14))
    with torch.no_grad():
        rep, scores, order, logq = model.posterior_orders(batch, 1, rng=torch.Generator().manual_seed(0))
    n = rep.target.sum(1)
    assert torch.allclose(plackett_luce_prefix_log_prob(scores, order, n), logq)  # the whole order
    assert torch.equal(plackett_luce_prefix_log_prob(scores, order, torch.zeros_like(n)), torch.zeros(3))
    for r in range(3):
        pred = [int(i) for i, b in zip(order.perm[r], order.block[r]) if b >= 0]
        by_hand = _plackett_luce_by_hand(scores[r], pred, 4)
        got = plackett_luce_prefix_log_prob(scores[r : r + 1], order.rows(slice(r, r + 1)), torch.tensor([4]))
        assert float(got) == pytest.approx(by_hand, abs=1e-4)


def test_exact_next_estimate_is_unbiased_for_the_enumerated_elbo():
    _, model = build(DIGITS3)
    randomize_heads(model, scale=1.5)
    model.eval()
    item = collate(digits3_items(1, seed=1))
    with torch.no_grad():
        exact = float(enumerated_elbo_per_slot(model, item))
        # the ELBO itself, every one of the 3! orders walked exactly
        scores = model.posterior_scores(item)
        elbo = 0.0
        for perm in itertools.permutations(range(3)):
            order = order_starting_with(item, list(perm))
            logq = float(plackett_luce_log_prob(scores, order)[0])
            scored, _ = model.score(item, order)
            elbo += math.exp(logq) * (float(scored.logp.sum()) - logq)
        torch.manual_seed(0)
        mc = model.exact_next_estimate(collate(digits3_items(1, seed=1) * 6000), k=2)["elbo_slot"]
    assert exact == pytest.approx(elbo / 3, abs=1e-4)
    assert float(mc) == pytest.approx(exact, abs=0.02)


def test_exact_next_gradient_matches_the_enumerated_gradient_and_needs_the_prefix_rloo():
    _, model = build(DIGITS3)
    randomize_heads(model, scale=1.5)
    model.eval()  # no dropout: the two gradients see the same function
    item = collate(digits3_items(1, seed=2))
    params = {"posterior": list(model.posterior.parameters()), "order head": list(model.order_head.parameters()),
              "generator": list(model.generator.parameters())}

    def flat(loss: torch.Tensor) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        loss.backward()
        return {k: torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in ps])
                for k, ps in params.items()}

    exact = flat(-enumerated_elbo_per_slot(model, item))
    many = collate(digits3_items(1, seed=2) * 4000)
    torch.manual_seed(1)
    with_rloo = flat(model.exact_next_estimate(many, k=2, rloo=True)["loss"])
    torch.manual_seed(1)
    without = flat(model.exact_next_estimate(many, k=2, rloo=False)["loss"])

    def error(a, b):  # relative distance of the estimate a from the exact gradient b
        return float((a - b).norm() / b.norm())

    for name in params:
        assert error(with_rloo[name], exact[name]) < 0.05, name
    # the next-step term alone misses how the prefix's choices change later steps
    assert error(without["posterior"], exact["posterior"]) > 3 * error(with_rloo["posterior"], exact["posterior"])


class _FirstSlotGenerator(nn.Module):
    """A stub backbone: slot 0's value is certain when it is filled first, a coin flip
    among 4 otherwise; the other slots are always uniform. Hidden states tell the
    order head which slots are known."""

    def __init__(self, spec: TokenizerSpec, d_model: int = 8):
        super().__init__()
        self.hidden_size = d_model
        self.spec = spec
        self.slot_embed = nn.Embedding(spec.max_len, d_model)
        self.known_embed = nn.Embedding(2, d_model)

    def encode(self, batch, known_BL):
        B, L = known_BL.shape
        hidden = self.slot_embed(torch.arange(L))[None].expand(B, L, -1) + self.known_embed(known_BL.long())
        nothing_known_B = ~(known_BL & batch.target).any(1)
        logp = torch.full((B, L, 4), math.log(0.25))
        sharp = torch.full((4,), -20.0)
        sharp[batch.values[0, 0]] = 0.0  # every item has the same values here
        logp[:, 0] = torch.where(nothing_known_B[:, None], sharp.expand(B, 4).log_softmax(-1), logp[:, 0])
        return hidden, logp

    def loss(self, batch, order):  # pragma: no cover - no warm start here
        raise AssertionError("no warm start in this test")


def test_a_reward_for_one_slot_first_moves_the_policy_below_uniform():
    spec = TokenizerSpec(kinds=(KindSpec("digit", 4),), coord_names=("pos",), coord_sizes=(4,), max_len=4)
    torch.manual_seed(0)
    model = LearnedOrderModel(_FirstSlotGenerator(spec), spec, LearnedOrder(**SMALL_Q, warm_start=0.0).options)
    item = TokenSet(torch.tensor([2, 1, 0, 3]), torch.zeros(4, dtype=torch.long), torch.arange(4)[:, None],
                    torch.zeros(4, dtype=torch.bool))
    batch = collate([item] * 32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    model.train()
    model.set_progress(0.5)
    for _ in range(150):
        opt.zero_grad()
        loss, stats = model.loss_with_stats(batch, OrderBatch.from_priorities(batch, torch.rand(32, 4)))
        loss.backward()
        opt.step()
    stats = {name: float(v) for name, v in stats.items()}
    assert stats["first_digit"] == pytest.approx(1.0)  # one kind: all of q's first pick
    with torch.no_grad():
        first_q = model.posterior_scores(collate([item])).softmax(-1)[0]
    assert float(first_q[0]) > 0.9  # q fills slot 0 first
    assert stats["uniform_order_nll"] - stats["order_nll"] > 1.0  # p learned it too: below log 4! in nats
    assert stats["value_nll"] < stats["uniform_value_nll"] - 0.5


def test_uniform_heads_make_the_exact_next_term_the_any_order_loss():
    _, model = build(SUDOKU4)  # zero-initialized heads: p and q uniform
    batch = collate(sudoku4_items(4, seed=15))
    with torch.no_grad():
        parts = model.exact_next_estimate(batch, k=2)
        rep, scores, order, _ = model.posterior_orders(batch, 1, rng=torch.Generator().manual_seed(0))
        terms = model.next_slot_terms(rep, order, torch.tensor([2, 0, 5, 9]), scores)
    assert torch.allclose(terms["F"], terms["value_uniform"], atol=1e-5)  # order and -log q cancel
    assert torch.allclose(terms["kl"], torch.zeros(4), atol=1e-5)
    assert parts["order_nll"] == pytest.approx(float(parts["uniform_order_nll"]), abs=1e-3)
    assert parts["value_nll"] == pytest.approx(float(parts["uniform_value_nll"]), abs=1e-3)


def test_param_groups_split_the_order_parameters_without_weight_decay():
    _, model = build(SUDOKU4, policy_lr_scale=3.0, policy_weight_decay=0.0)
    groups = model.param_groups(1e-3, 0.01)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    gen, pol = groups
    assert gen["weight_decay"] == 0.01 and gen["lr"] == 1e-3 and gen["lr_scale"] == 1.0
    assert pol["weight_decay"] == 0.0 and pol["lr"] == pytest.approx(3e-3) and pol["lr_scale"] == 3.0
    assert {id(p) for p in pol["params"]} == {id(p) for p in model.order_parameters()}
    torch.optim.AdamW(groups)  # a valid AdamW argument
    _, default = build(SUDOKU4)
    assert [(g["lr"], g["weight_decay"]) for g in default.param_groups(1e-3, 0.01)] == [(1e-3, 0.01), (1e-3, 0.01)]


def test_two_equal_groups_train_exactly_as_one():
    """The default groups (same rate, same decay) change nothing: measured runs reproduce."""
    def run(grouped: bool):
        torch.manual_seed(0)
        _, model = build(SUDOKU4)
        params = model.param_groups(1e-2, 0.01) if grouped else model.parameters()
        opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)
        for step in range(3):
            loss = sum((p.float() ** 2).sum() for p in model.parameters()) * (step + 1)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(run(True), run(False)))


def test_q_entropy_weight_is_annealed_to_zero_and_its_sign_sets_the_direction():
    _, model = build(SUDOKU4, q_entropy_bonus=0.2, warm_start=0.1, entropy_anneal=0.5)
    weights = []
    for progress in (0.1, 0.3, 0.5, 0.9):
        model.set_progress(progress)
        weights.append(model.q_entropy_weight())
    assert weights == pytest.approx([0.2, 0.1, 0.0, 0.0])
    _, model = build(SUDOKU4, p_entropy_bonus=-0.5, entropy_anneal=0.5)
    model.set_progress(0.25)
    assert model.p_entropy_weight() == pytest.approx(-0.25) and model.q_entropy_weight() == 0.0
    batch = collate(sudoku4_items(16, seed=16))
    entropy_after = {}
    for bonus in (-1.0, 1.0):  # one SGD step on q alone: sharpening lowers q's entropy, the bonus raises it
        _, model = build(SUDOKU4, q_entropy_bonus=bonus, entropy_anneal=1.0)
        randomize_heads(model, scale=1.0)
        model.train()
        model.set_progress(0.0)
        opt = torch.optim.SGD(model.posterior.parameters(), lr=5.0)
        torch.manual_seed(0)
        model.loss(batch, OrderBatch.from_priorities(batch, torch.rand(16, 16))).backward()
        opt.step()
        with torch.no_grad():
            entropy_after[bonus] = float(masked_entropy(model.posterior_scores(batch), batch.target).mean())
    assert entropy_after[-1.0] < entropy_after[1.0] - 0.05


def test_one_step_estimator_stays_selectable_with_the_same_diagnostics():
    orderer, model = build(SUDOKU4, estimator="one-step", orders_per_item=4, entropy_bonus=0.01)
    model.train()
    model.set_progress(0.5)
    batch = collate(sudoku4_items(8, seed=17))
    loss, stats = model.loss_with_stats(batch, orderer.train_orders(batch, progress=0.5, rng=torch.Generator()))
    loss.backward()
    assert float(model.posterior.out.weight.grad.abs().sum()) > 0
    assert {"order_nll", "uniform_order_nll", "order_cost", "value_nll", "uniform_value_nll", "first_digit"} <= set(
        stats)
    assert "estimator='one-step'" in repr(model)


# ------------------------------------------------------------------ training


def test_short_training_lowers_the_loss_and_keeps_the_policy_finite():
    from seqify.config import TrainConfig
    from seqify.training import train

    orderer, model = build(DIGITS5, warm_start=0.25)
    table = TokenTable.from_tokensets(copy_items(256, seed=6))
    cfg = TrainConfig(steps=60, batch_size=32, lr=1e-2, warmup_steps=5)
    log = train(model, table, None, orderer, cfg, device=torch.device("cpu"), seed=0)
    losses = [v for _, v in log.loss]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3
    assert set(log.extra) >= {"policy_entropy", "q_entropy", "order_logit_std", "elbo_nats_per_slot", "phase"}
    phases = [v for _, v in log.extra["phase"]]
    assert phases[0] == 0.0 and phases[-1] == 1.0
    assert [s for s, _ in log.extra["phase"]] == [s for s, _ in log.loss]  # logged at the loss's steps
    for name in ("policy_entropy", "q_entropy", "order_logit_std"):
        assert all(math.isfinite(v) for _, v in log.extra[name])
    assert 0 <= log.extra["policy_entropy"][-1][1] <= math.log(4) + 1e-4


# ------------------------------------------------------------------ sampling and checkpoints


def test_sample_keeps_givens_fills_every_slot_and_is_reproducible():
    orderer, model = build(SUDOKU4)
    randomize_heads(model)
    batch = collate(sudoku4_items(5, seed=7))
    template = batch.with_values(batch.values.masked_fill(~batch.given, 0))
    a, order_a, entropy_a = model.sample_with_orders(template, rng=torch.Generator().manual_seed(1))
    b, order_b, entropy_b = model.sample_with_orders(template, rng=torch.Generator().manual_seed(1))
    assert torch.equal(a.values, b.values) and torch.equal(order_a.perm, order_b.perm)
    assert torch.equal(entropy_a, entropy_b)
    assert torch.equal(model.sample(template, orderer, rng=torch.Generator().manual_seed(1)).values, a.values)
    assert torch.equal(a.values[batch.given], batch.values[batch.given])
    assert bool(((a.values >= 0) & (a.values < 4)).all())
    order_a.validate(template)
    assert entropy_a.shape == (10,) and bool((entropy_a >= 0).all() & (entropy_a <= math.log(10) + 1e-4).all())
    c, order_c, _ = model.sample_with_orders(template, rng=torch.Generator().manual_seed(2))
    assert not torch.equal(order_a.perm, order_c.perm)  # sampled orders vary with the seed
    assert not torch.equal(a.values, c.values)


def test_greedy_order_is_deterministic():
    orderer, model = build(SUDOKU4, greedy_order=True)
    randomize_heads(model)
    batch = collate(sudoku4_items(4, seed=8))
    template = batch.with_values(batch.values.masked_fill(~batch.given, 0))
    a, order_a, _ = model.sample_with_orders(template, rng=torch.Generator().manual_seed(1), temperature=0)
    b, order_b, _ = model.sample_with_orders(template, rng=torch.Generator().manual_seed(99), temperature=0)
    assert torch.equal(a.values, b.values) and torch.equal(order_a.perm, order_b.perm)
    with pytest.raises(ValueError, match="temperature"):
        model.sample(template, orderer, rng=torch.Generator(), temperature=-1)


def assert_round_trip_samples_identically(model, generator_cls, tmp_path, **options):
    """Save ``model``'s weights, load them into a freshly built one (another init, ``options``
    on top of the small ones), and check both sample the same values and orders; returns
    (fresh model, batch)."""
    save_checkpoint(tmp_path / "ckpt.pt", {"model": model.state_dict()})
    torch.manual_seed(123)  # a different init, overwritten by the weights
    fresh = LearnedOrder(**SMALL_Q, causal_layout=model.options.causal_layout, **options).wrap(
        generator_cls(SUDOKU4, TINY), SUDOKU4)
    fresh.load_state_dict(load_checkpoint(tmp_path / "ckpt.pt")["model"])
    batch = collate(sudoku4_items(4, seed=9))
    template = batch.with_values(batch.values.masked_fill(~batch.given, 0))
    a, order_a, _ = model.sample_with_orders(template, rng=torch.Generator().manual_seed(3))
    b, order_b, _ = fresh.sample_with_orders(template, rng=torch.Generator().manual_seed(3))
    assert torch.equal(a.values, b.values)
    assert torch.equal(order_a.perm, order_b.perm)
    return fresh, batch


def test_checkpoint_round_trip_samples_identically(tmp_path):
    orderer, model = build(SUDOKU4)
    randomize_heads(model)
    assert_round_trip_samples_identically(model, MaskedTransformer, tmp_path)


# ------------------------------------------------------------------ graph backbone


def test_slot_graph_links_edge_slots_to_their_atoms_and_bonded_atoms():
    # atoms 0, 1, 2; bond (0, 1) present, (0, 2) absent, (1, 2) present
    values = torch.tensor([1, 1, 0, 2, 1, 0])
    item = graph3_items(1)[0].with_values(values)
    batch = collate([item, item])
    edge_index, edge_type = slot_graph(batch)
    edges = {(int(s), int(d), int(t)) for s, d, t in zip(edge_index[0], edge_index[1], edge_type)}
    slot = {pair: n for n, pair in enumerate(_PAIRS3)}
    expected = set()
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        e = slot[(i, j)]
        for node in (slot[(i, i)], slot[(j, j)]):
            expected |= {(e, node, 0), (node, e, 1)}
    for i, j in [(0, 1), (1, 2)]:
        expected |= {(slot[(i, i)], slot[(j, j)], 2), (slot[(j, j)], slot[(i, i)], 2)}
    second = {(s + 6, d + 6, t) for s, d, t in expected}
    assert edges == expected | second


def test_graph_backbone_trains_and_round_trips(tmp_path):
    orderer, model = build(GRAPH3, backbone="graph", warm_start=0.0)
    assert isinstance(model.posterior, PosteriorGraph)
    batch = collate(graph3_items(6, seed=10))
    model.train()
    model.set_progress(0.5)
    model.loss(batch, orderer.train_orders(batch, progress=0.5, rng=torch.Generator())).backward()
    grads = [p.grad for p in model.posterior.convs.parameters()]
    assert float(model.posterior.out.weight.grad.abs().sum()) > 0 and any(g is not None for g in grads)
    randomize_heads(model)
    est = model.estimate(batch, 2, rng=torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(est["iw"]).all())
    save_checkpoint(tmp_path / "g.pt", {"model": model.state_dict()})
    fresh = LearnedOrder(**SMALL_Q, backbone="graph").wrap(MaskedTransformer(GRAPH3, TINY), GRAPH3)
    fresh.load_state_dict(load_checkpoint(tmp_path / "g.pt")["model"])
    with torch.no_grad():
        assert torch.allclose(model.posterior_scores(batch), fresh.posterior_scores(batch))


def test_diagnostics_profile_kinds_and_pictures(tmp_path):
    orderer, model = build(GRAPH3, diagnostic_items=5)
    randomize_heads(model)
    table = TokenTable.from_tokensets(graph3_items(8, seed=11))
    log = {"steps": 10, "series": {"policy_entropy": [(0, 1.0), (5, 0.8)], "q_entropy": [(0, 1.0), (5, 0.9)],
                                   "order_logit_std": [(0, 0.0), (5, 0.3)], "phase": [(0, 0.0), (5, 1.0)]}}
    diag = orderer.diagnostics(model, table, out=tmp_path, train_log=log, device=torch.device("cpu"), seed=0)
    assert diag["files"] == {"policy_entropy": "policy_entropy.png", "order_profile": "order_profile.png"}
    for name in diag["files"].values():
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert diag["steps"] == 6 and diag["n_templates"] == 5
    shares = diag["kind_share_per_step"]
    for t in range(6):
        assert shares["atom"][t] + shares["bond"][t] == pytest.approx(1.0)
    # over the 6 steps every item fills its 3 atoms and 3 bonds
    assert sum(shares["atom"]) == pytest.approx(3.0)
    assert diag["final_policy_entropy"] == 0.8
    assert all(0 <= v <= 1 for v in diag["known_neighbour_fraction_per_step"])


# ------------------------------------------------------------------ the runner


def test_run_bench_end_to_end(tmp_path):
    from seqify.bench import BenchRequest, run_bench
    from seqify.plugins import build_registry
    from seqify.testing import ToyPlugin

    out = tmp_path / "cell"
    result = run_bench(
        BenchRequest(modality="toy", orderer="learned", generator="masked", out=out, budget="smoke",
                     overrides={"orderer": {**SMALL_Q, "eval_orders": 2, "diagnostic_items": 8},
                                "generator": TINY}),
        registry=build_registry([ToyPlugin()], warn=False),
    )
    results = json.loads((out / "results.json").read_text())
    m = results["modelability"]
    assert m["kind"] == "estimate" and m["bound_kind"] == "bound"
    assert m["nats_per_item"] <= m["bound_nats_per_item"] + 1e-9
    assert results["order_diagnostics"]["files"]["order_profile"] == "order_profile.png"
    for name in ("policy_entropy.png", "order_profile.png"):
        assert (out / name).is_file() and result.files[name.removesuffix(".png")] == name
    assert "policy_entropy" in results["training"]["series"]
    state = load_checkpoint(out / "checkpoint.pt")["model"]
    assert any(k.startswith("posterior.") for k in state) and any(k.startswith("generator.") for k in state)


def test_a_learned_run_completes_again_with_a_greedy_order_from_its_checkpoint(tmp_path):
    """run_sample(orderer=...): generation-time settings of the run's orderer without
    retraining; the greedy order makes the completions independent of the seed."""
    from seqify.bench import BenchRequest, run_bench, run_sample

    run = tmp_path / "run"
    run_bench(BenchRequest(modality="sudoku", orderer="learned", out=run, budget="smoke", seed=0))
    a = run_sample(run, tmp_path / "a", seed=1, orderer={"greedy_order": True})
    b = run_sample(run, tmp_path / "b", seed=2, orderer={"greedy_order": True})
    sampled = run_sample(run, tmp_path / "c", seed=1)
    assert a.results["metrics"]["cell_accuracy"] == b.results["metrics"]["cell_accuracy"]
    assert (tmp_path / "a" / "completions.csv").read_text() == (tmp_path / "b" / "completions.csv").read_text()
    assert (tmp_path / "a" / "completions.csv").read_text() != (tmp_path / "c" / "completions.csv").read_text()

# ------------------------------------------------------------------ the structured start (issue 18)
# a tokenizer's order prior seeds q, so the policy p has a gradient from step 0; p reads the
# slots' confidence; margin start and teacher; the all-open-slots value loss; old checkpoints


class _Raster(BaseTokenizer):
    """Only the default order_prior of BaseTokenizer (slot order)."""


class _NoPrior(BaseTokenizer):
    def order_prior(self, batch):
        return None


def build_seeded(spec, tokenizer=None, seed=0, **options):
    torch.manual_seed(seed)
    orderer = LearnedOrder(**{**SMALL_Q, **options})
    return orderer.wrap(MaskedTransformer(spec, TINY), spec, tokenizer=tokenizer)


def _head_grad(model, batch) -> float:
    model.train()
    model.set_progress(0.0)
    model.zero_grad()
    torch.manual_seed(1)
    loss, _ = model.loss_with_stats(batch, None)
    loss.backward()
    return float(model.order_head.weight.grad.abs().sum())


def test_a_seeded_q_gives_the_policy_head_a_gradient_at_step_0_and_a_uniform_start_gives_none():
    batch = collate(sudoku4_items(8))
    seeded = build_seeded(SUDOKU4, tokenizer=_Raster())
    assert _head_grad(seeded, batch) > 1e-2
    uniform_starts = (build_seeded(SUDOKU4), build_seeded(SUDOKU4, tokenizer=_NoPrior()),
                      build_seeded(SUDOKU4, _Raster(), prior="none"))
    for uniform in uniform_starts:
        assert _head_grad(uniform, batch) < 1e-5  # zero up to rounding: the diagnosis, held


def test_q_starts_on_the_prior_ranks_and_the_anneal_reaches_prior_final():
    model = build_seeded(SUDOKU4, tokenizer=_Raster(), prior_temperature=2.0, prior_final=0.25, prior_anneal_start=0.5)
    batch = collate(sudoku4_items(3))
    model.train()
    model.set_progress(0.0)
    with torch.no_grad():
        scores = model.posterior_scores(batch)
    for b in range(3):
        target = batch.target[b].nonzero().squeeze(1)  # slot order among the predicted slots
        expected = -torch.arange(len(target), dtype=torch.float32) / 2.0
        assert torch.allclose(scores[b, target], expected)  # q's residual starts at zero
    assert model.prior_weight(0.5) == 1.0 and model.prior_weight(0.75) == pytest.approx(0.625)
    assert model.prior_weight(1.0) == pytest.approx(0.25)
    model.eval()
    assert model.prior_weight() == pytest.approx(0.25)  # scoring after training: the end weight


def test_the_graph_tokenizer_prior_is_the_bfs_order():
    from seqify_molecule.orderers import BFS
    from seqify_molecule.tokenizers import GraphTokenizer

    tok = GraphTokenizer(dataset="qm9")
    batch = collate([tok.blank(), tok.encode("CC(=O)N")])
    prior = tok.order_prior(batch)
    assert torch.equal(prior, BFS().priority(batch, torch.Generator()))
    order = prior[0].argsort()[:6].tolist()
    coords = [tuple(batch.coords[0, i].tolist()) for i in order]
    assert coords == [(0, 0), (1, 1), (0, 1), (2, 2), (0, 2), (1, 2)]


def _train_graph3(model, items, steps: int = 40):
    """``steps`` Adam steps (lr 1e-2) on batches of 16 of the 64 ``items``, progress rising
    from 0; each step's statistics and loss."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    stats, losses = [], []
    for step in range(steps):
        batch = collate(items[(step * 16) % 64:(step * 16) % 64 + 16])
        model.train()
        model.set_progress(step / steps)
        loss, st = model.loss_with_stats(batch, None)
        opt.zero_grad()
        loss.backward()
        opt.step()
        stats.append(st)
        losses.append(float(loss.detach()))
    return stats, losses


def test_a_seeded_run_learns_an_order_far_below_uniform():
    """A few steps with the BFS-like prior: p follows q away from uniform (order NLL below log n!)."""
    model = build_seeded(GRAPH3, tokenizer=_Raster())
    items = graph3_items(64)
    stats, _ = _train_graph3(model, items)
    last = stats[-10:]
    order_nll = sum(float(s["order_nll"]) for s in last) / len(last)
    uniform = sum(float(s["uniform_order_nll"]) for s in last) / len(last)
    assert order_nll < uniform - 1.0
    assert all(float(s["prior_weight"]) == 1.0 for s in stats)


def test_confidence_features_margin_and_entropy():
    logp = torch.tensor([[[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]]]).log()
    logp = torch.cat([logp, torch.full((1, 2, 1), float("-inf"))], -1)  # an id outside the kind
    f = confidence_features(logp)
    assert torch.allclose(f[0, :, 0], torch.tensor([0.7, 0.4]).log())
    assert torch.allclose(f[0, :, 1], torch.tensor([0.5, 0.0]), atol=1e-6)
    ent = -(torch.tensor([0.7, 0.2, 0.1]) * torch.tensor([0.7, 0.2, 0.1]).log()).sum()
    assert float(f[0, 0, 2]) == pytest.approx(float(ent), abs=1e-6)


def test_margin_init_makes_the_policy_pick_the_margin_slot_and_the_teacher_adds_gradient_not_value():
    model = build_seeded(SUDOKU4, margin_init=50.0, margin_teacher=1.0)
    batch = collate(sudoku4_items(4))
    model.eval()
    with torch.no_grad():
        hidden, logp = model.generator.encode(batch, batch.given)
        logits = model.order_logits(hidden, logp, batch.kinds)
    margin = confidence_features(logp)[..., 1].masked_fill(~batch.target, -1.0)
    assert torch.equal(logits.masked_fill(~batch.target, float("-inf")).argmax(1), margin.argmax(1))
    model = build_seeded(SUDOKU4, margin_init=10.0, margin_teacher=1.0)  # a teacher sharper than p
    plain = build_seeded(SUDOKU4, margin_init=10.0)
    model.train(), plain.train()
    torch.manual_seed(3)
    with_teacher, _ = model.loss_with_stats(batch, None)
    torch.manual_seed(3)
    without, _ = plain.loss_with_stats(batch, None)
    assert float(with_teacher.detach()) == pytest.approx(float(without.detach()), abs=1e-6)  # a gradient term only
    with_teacher.backward()
    without.backward()
    assert float(model.margin_scale.grad) < float(plain.margin_scale.grad) - 1e-4  # pushed toward sharper


def test_value_spread_trains_values_on_every_open_slot_without_changing_the_bound():
    batch = collate(sudoku4_items(4))
    grads, values = [], []
    for spread in (0.0, 1.0):
        model = build_seeded(SUDOKU4, tokenizer=_Raster(), value_spread=spread)
        model.train()
        torch.manual_seed(5)
        loss, _ = model.loss_with_stats(batch, None)
        loss.backward()
        values.append(float(loss.detach()))
        grads.append(model.generator.head.weight.grad.clone())
    assert values[0] == pytest.approx(values[1], abs=1e-6)
    assert not torch.allclose(grads[0], grads[1])


def test_a_checkpoint_from_before_the_prior_and_the_confidence_mlp_still_loads():
    old = build_seeded(SUDOKU4)
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("feature_mlp.") and k != "uses_prior"}
    fresh = build_seeded(SUDOKU4, tokenizer=_Raster(), seed=1)
    fresh.load_state_dict(state)
    assert not bool(fresh.uses_prior) and fresh.order_prior is None  # q was trained without a prior
    batch = collate(sudoku4_items(2))
    fresh.eval(), old.eval()
    with torch.no_grad():
        assert torch.allclose(fresh.posterior_scores(batch), old.posterior_scores(batch))


def test_a_model_trained_with_a_prior_refuses_to_score_without_it():
    trained = build_seeded(SUDOKU4, tokenizer=_Raster())
    bare = build_seeded(SUDOKU4)
    bare.load_state_dict(trained.state_dict())
    with pytest.raises(ValueError, match="tokenizer="):
        bare.posterior_scores(collate(sudoku4_items(1)))

# ------------------------------------------------------------------ the learned order on the causal generator
# one block-layout pass scores a whole order exactly (values and order choices); K whole
# orders of q per item train it, RLOO on the whole order's log q


def build_causal(spec, seed=0, tokenizer=None, **options):
    from seqify_generators.causal import CausalTransformer

    torch.manual_seed(seed)
    orderer = LearnedOrder(**{**SMALL_Q, **options})
    return orderer, orderer.wrap(CausalTransformer(spec, TINY), spec, tokenizer=tokenizer)


def randomize_causal(model, seed=0, scale=1.0) -> None:
    """p and q start uniform (zero heads); give both some shape (p's logits spread about ``scale``)."""
    g = torch.Generator().manual_seed(seed)
    stream = [model.order_start] if model.stream else []
    with torch.no_grad():
        for param in (model.order_query.weight, model.order_bias.weight, model.posterior.out.weight,
                      model.posterior.out.bias, *stream):
            param.copy_(torch.randn(param.shape, generator=g) * scale)
        model.order_query.weight.mul_(8.0)
        model.order_bias.weight.mul_(8.0)
        if model.stream:  # the last value's MLP adds to the prefix state: keep p's spread near the block layout's
            model.last_value[-1].weight.mul_(0.1)


def mixed_sudoku4_batch(seed: int = 0):
    """Items with 6, 3 and 9 given slots, and one of 12 slots (4 padding): the lockstep
    over order positions and the masks see different prefixes per row."""
    items = sudoku4_items(1, seed=seed, n_given=6) + sudoku4_items(1, seed=seed + 1, n_given=3)
    items += sudoku4_items(1, seed=seed + 2, n_given=9)
    short = sudoku4_items(1, seed=seed + 3, n_given=2)[0]
    items.append(TokenSet(short.values[:12], short.kinds[:12], short.coords[:12], short.given[:12]))
    return collate(items, length=16)


def step_by_step_log_probs(model, batch, order):
    """Per predicted position: log p(x_{z_t} | x_{z_<t}) and log p(z_t | prefix), each from
    its own causal pass (plain causal attention, no block-layout levels). Block layout: a
    pass over ``[BOS, value tokens of z_<t, query token of z_t]`` gives the value, and its
    state t (BOS or z_{t-1}'s value token) the order. Stream layout: a pass over the
    single-stream tokens ``0 .. t`` gives the value, and the order comes from
    ``order_start`` (t = 0) or the last state of a pass over tokens ``0 .. t-1`` with
    z_{t-1}'s value token."""
    gen = model.generator
    gid, kinds, source, target = gen._prepare(batch)
    slots = model._slots(batch)
    value, order_lp = torch.zeros(batch.values.shape), torch.zeros(batch.values.shape)
    for b in range(batch.batch_size):
        perm = order.perm[b : b + 1]
        one = (gid[b : b + 1], source[b : b + 1], target[b : b + 1], perm)
        for t in range(batch.length):
            if int(order.block[b, t]) < 0:
                continue
            if model.stream:
                h = gen.stack(gen._inputs(*one, 0, t + 1), causal=True)
                if t == 0:
                    prefix = model.order_start[None, None]
                else:
                    before = gen.stack(gen._inputs(*one, 0, t), causal=True)[:, -1:]
                    prefix = model._stream_prefix(before, gen._value_tokens(gid[b : b + 1], source[b : b + 1],
                                                                            perm[:, t - 1 : t]))
            else:
                x = torch.cat([gen._bos(1, source), gen._value_tokens(gid[b : b + 1], source[b : b + 1], perm[:, :t]),
                               gen._query_tokens(target[b : b + 1], perm[:, t : t + 1])], dim=1)
                h = gen.stack(x, causal=True)
                prefix = h[:, t : t + 1]  # state t: BOS or z_{t-1}'s value
            slot = int(perm[0, t])
            logp = gen.head(h[0, -1]).float().masked_fill(~gen.kind_mask_KV[kinds[b, slot]], float("-inf"))
            value[b, t] = logp.log_softmax(-1)[gid[b, slot]]
            logits = model.order_logits(prefix, slots[b : b + 1])[0, 0]
            open_ = batch.target[b].clone()
            open_[perm[0, :t]] = False
            order_lp[b, t] = logits[slot] - torch.logsumexp(logits[open_], 0)
    return value, order_lp


LAYOUTS = pytest.mark.parametrize("layout", ["block", "stream"])


def test_causal_wrap_check_and_refusals():
    from seqify_generators.causal import CausalTransformer
    from seqify_learned.causal_model import CausalLearnedOrderModel

    orderer, model = build_causal(SUDOKU4)
    assert isinstance(model, CausalLearnedOrderModel) and isinstance(model, TrainableModel)
    assert isinstance(build(SUDOKU4)[1], LearnedOrderModel)  # the masked generator keeps LO-ARM's model
    assert orderer.check(SUDOKU4, CausalTransformer.caps) is None
    assert orderer.generator_preference(CausalTransformer.caps) < orderer.generator_preference(MaskedTransformer.caps)
    reason = LearnedOrder(margin_init=1.0).check(SUDOKU4, CausalTransformer.caps)
    assert "margin_init" in reason and "masked" in reason
    assert LearnedOrder(margin_init=1.0).check(SUDOKU4, MaskedTransformer.caps) is None
    reason = LearnedOrder(causal_layout="stream").check(SUDOKU4, MaskedTransformer.caps)
    assert "causal_layout='stream'" in reason and "'causal'" in reason
    assert LearnedOrder(causal_layout="stream", policy_trunk_grad=0.5).check(SUDOKU4, CausalTransformer.caps) is None
    with pytest.raises(NotApplicableError, match="value_spread"):
        LearnedOrder(value_spread=1.0).wrap(CausalTransformer(SUDOKU4, TINY), SUDOKU4)
    with pytest.raises(NotApplicableError, match="block layout"):
        from seqify_learned.causal_model import CausalLearnedOrderModel as M
        M(nn.Linear(2, 2), SUDOKU4)
    assert "estimator='whole-order'" in repr(model)


@LAYOUTS
def test_causal_one_pass_log_p_of_x_and_z_equals_the_step_by_step_computation(layout):
    _, model = build_causal(SUDOKU4, causal_layout=layout)
    randomize_causal(model)
    model.eval()
    batch = mixed_sudoku4_batch()
    order = LearnedOrder().train_orders(batch, progress=0.0, rng=torch.Generator().manual_seed(3))
    with torch.no_grad():
        terms = model.order_terms(batch, order)
        value_ref, order_ref = step_by_step_log_probs(model, batch, order)
        scores, used = model.score(batch, order)
    assert torch.equal(used.perm, order.perm)
    predicted = order.block >= 0
    assert torch.allclose(terms["value_BT"], value_ref, atol=1e-4)
    assert torch.allclose(terms["order_BT"], order_ref, atol=1e-4)
    assert float(order_ref[predicted].std()) > 0.1  # p is not uniform here: the check has teeth
    # summed over the slots, Scores.logp is log p(x, z) = sum_t [value + order]
    assert torch.allclose(scores.logp.sum(1), (value_ref + order_ref).sum(1), atol=1e-4)
    assert torch.equal(scores.scored, batch.target) and bool((scores.logp[~batch.target] == 0).all())
    # the same pass with gradients (training) computes the same numbers
    value, order_lp, _ = model.walk(batch, order)
    assert torch.allclose(value.sum(1) + order_lp.sum(1), (value_ref + order_ref).sum(1), atol=1e-4)
    with pytest.raises(ValueError, match="blocks of one"):
        model.score(batch, OrderBatch(order.perm, torch.where(order.block > 0, order.block // 2, order.block)))


@LAYOUTS
def test_causal_policy_sums_to_one_over_the_open_slots_only(layout):
    _, model = build_causal(SUDOKU4, causal_layout=layout)
    randomize_causal(model)
    batch = mixed_sudoku4_batch(seed=4)
    order = LearnedOrder().train_orders(batch, progress=0.0, rng=torch.Generator().manual_seed(5))
    with torch.no_grad():
        terms = model.order_terms(batch, order)
    probs = terms["order_logp_BTL"].exp()
    n_given = batch.given.sum(1)
    for b in range(batch.batch_size):
        for t in range(int((~batch.pad[b]).sum())):
            if t < int(n_given[b]):
                continue
            p = probs[b, t]
            chosen = torch.zeros(16, dtype=torch.bool)
            chosen[order.perm[b, :t]] = True
            assert float(p.sum()) == pytest.approx(1.0, abs=1e-5)
            assert float(p[batch.given[b] | batch.pad[b] | chosen].sum()) == 0.0  # never given, padding or chosen
            open_ = batch.target[b] & ~chosen
            assert int(open_.sum()) == int(batch.target[b].sum()) - (t - int(n_given[b]))
            assert bool((p[open_] > 0).all())
            if int(open_.sum()) > 1:
                assert float(p[open_].max() - p[open_].min()) > 1e-3  # a real distribution, not the uniform start


@LAYOUTS
def test_causal_order_probabilities_over_every_order_sum_to_one_and_the_bounds_hold(layout):
    # SUDOKU4 with 13 given slots: 3 open slots, 3! orders
    _, model = build_causal(SUDOKU4, causal_layout=layout)
    randomize_causal(model, scale=1.5 if layout == "block" else 0.5)  # q covers the orders p favours
    item = collate(sudoku4_items(1, seed=18, n_given=13))
    free = item.target[0].nonzero().flatten().tolist()
    with torch.no_grad():
        log_joint = []
        total_order_prob = 0.0
        for perm in itertools.permutations(free):
            value, order_lp, _ = model.walk(item, order_starting_with(item, list(perm)))
            total_order_prob += math.exp(float(order_lp.sum()))
            log_joint.append(float(value.sum() + order_lp.sum()))
    assert total_order_prob == pytest.approx(1.0, abs=1e-5)  # p is a distribution over the 3! orders
    log_px = float(torch.logsumexp(torch.tensor(log_joint, dtype=torch.float64), 0))
    batch = collate(sudoku4_items(1, seed=18, n_given=13) * 2)
    est = model.estimate(batch, 2000, rng=torch.Generator().manual_seed(0))
    assert bool((est["iw"] >= est["elbo"] - 1e-9).all()) and bool((est["iw"] > est["elbo"] + 1e-6).all())
    assert bool((est["elbo"] <= log_px + 1e-6).all())  # the ELBO bounds the exact log p(x)
    assert est["iw"].tolist() == pytest.approx([log_px] * 2, abs=0.1)  # 2000 draws of 6 orders: near exact
    assert torch.allclose(est["elbo"], est["value"] + est["order"] - est["log_q"])
    one = model.estimate(batch, 1, rng=torch.Generator().manual_seed(0))
    assert torch.allclose(one["iw"], one["elbo"])


def enumerated_causal_elbo(model, item) -> torch.Tensor:
    """``sum_z q(z | x) [log p(x, z) - log q(z | x)]`` over every order (differentiable)."""
    slots = item.target[0].nonzero().flatten().tolist()
    scores = model.posterior_scores(item)
    total = torch.zeros(())
    for perm in itertools.permutations(slots):
        order = order_starting_with(item, list(perm))
        logq = plackett_luce_log_prob(scores, order)[0]
        terms = model.order_terms(item, order)
        total = total + logq.exp() * (terms["value_BT"].sum() + terms["order_BT"].sum() - logq)
    return total


@LAYOUTS
@pytest.mark.parametrize("k", [2, 1])  # K = 1: one order per item, a running-mean baseline instead of RLOO
def test_causal_whole_order_estimate_and_its_gradient_match_enumeration(layout, k):
    _, model = build_causal(DIGITS3, causal_layout=layout, orders_per_item=k)
    randomize_causal(model, scale=1.5)
    model.eval()  # no dropout: the Monte Carlo and the enumeration see the same function
    item = collate(digits3_items(1, seed=2))
    params = {"posterior": list(model.posterior.parameters()),
              "policy": [model.order_query.weight, model.order_bias.weight, *model.slot_embed.parameters(),
                         *([model.order_start, *model.last_value.parameters()] if layout == "stream" else [])],
              "generator": list(model.generator.parameters())}

    def flat(loss: torch.Tensor) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        loss.backward()
        return {k: torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in ps])
                for k, ps in params.items()}

    exact_elbo = enumerated_causal_elbo(model, item)
    exact = flat(-exact_elbo / 3)
    many = collate(digits3_items(1, seed=2) * (6000 // k))
    torch.manual_seed(1)
    parts = model.whole_order_estimate(many, k=k, rloo=True)
    assert float(parts["elbo_slot"]) == pytest.approx(exact_elbo.item() / 3, abs=0.02)
    with_rloo = flat(parts["loss"])
    torch.manual_seed(1)
    without = flat(model.whole_order_estimate(many, k=k, rloo=False)["loss"])

    def error(a, b):
        return float((a - b).norm() / b.norm())

    for name in params:
        assert error(with_rloo[name], exact[name]) < 0.05, (name, error(with_rloo[name], exact[name]))
    assert error(without["posterior"], exact["posterior"]) > 0.5  # q's gradient is the RLOO term's


@LAYOUTS
def test_causal_warm_start_then_everything_trains_with_detached_statistics(layout):
    orderer, model = build_causal(SUDOKU4, warm_start=0.3, causal_layout=layout)
    model.train()
    batch = collate(sudoku4_items(8, seed=5))
    order = orderer.train_orders(batch, progress=0.1, rng=torch.Generator().manual_seed(0))
    model.set_progress(0.1)
    loss, stats = model.loss_with_stats(batch, order)
    loss.backward()
    assert all(p.grad is None for p in model.order_parameters())
    assert float(model.generator.head.weight.grad.abs().sum()) > 0
    assert float(stats["phase"]) == 0.0
    model.zero_grad(set_to_none=True)
    model.set_progress(0.5)
    loss, stats = model.loss_with_stats(batch, order)
    loss.backward()
    assert float(stats["phase"]) == 1.0
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in stats.values())
    assert {"order_nll", "uniform_order_nll", "q_entropy_deficit", "order_logit_std", "value_nll", "uniform_value_nll",
            "elbo_nats_per_slot", "policy_entropy", "q_entropy", "order_cost", "prior_weight", "first_digit"} <= set(stats)
    assert float(stats["uniform_order_nll"]) == pytest.approx(math.lgamma(11), abs=1e-4)  # 10 open slots
    assert float(stats["order_nll"]) == pytest.approx(math.lgamma(11), abs=1e-3)  # p starts uniform
    # p is fitted to q's sampled orders and q takes the RLOO gradient of their exact rewards
    for param in (model.order_query.weight, model.order_bias.weight, model.posterior.out.weight):
        assert float(param.grad.abs().sum()) > 0
    assert float(loss.detach()) == pytest.approx(-float(stats["elbo_nats_per_slot"]), abs=1e-5)
    assert "order NLL" in model.progress_note()
    model.eval()
    assert model.loss_with_stats(batch, order)[1] == {}


@LAYOUTS
def test_causal_seeded_training_lowers_the_loss_and_learns_an_order_below_uniform(layout):
    _, model = build_causal(GRAPH3, tokenizer=_Raster(), causal_layout=layout)
    items = graph3_items(64)
    with torch.no_grad():
        model.train()
        model.set_progress(0.0)
        _, first = model.loss_with_stats(collate(items[:16]), None)
    assert float(model.order_query.weight.detach().abs().sum()) == 0.0
    stats, losses = _train_graph3(model, items)
    assert all(math.isfinite(float(v)) for st in stats for v in st.values())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2
    last = stats[-10:]
    order_nll = sum(float(s["order_nll"]) for s in last) / len(last)
    uniform = sum(float(s["uniform_order_nll"]) for s in last) / len(last)
    assert order_nll < uniform - 1.0  # p follows the seeded q away from uniform (log 6! = 6.6 nats)
    assert float(model.order_query.weight.detach().abs().sum()) > 0  # the prefix-state query trains too


@LAYOUTS
def test_causal_sampling_keeps_givens_fills_every_slot_and_is_reproducible(layout):
    orderer, model = build_causal(SUDOKU4, causal_layout=layout)
    randomize_causal(model)
    batch = mixed_sudoku4_batch(seed=7)
    template = batch.with_values(batch.values.masked_fill(~batch.given, 0))
    a, order_a, entropy_a = model.sample_with_orders(template, rng=torch.Generator().manual_seed(1))
    b, order_b, entropy_b = model.sample_with_orders(template, rng=torch.Generator().manual_seed(1))
    assert torch.equal(a.values, b.values) and torch.equal(order_a.perm, order_b.perm)
    assert torch.equal(entropy_a, entropy_b)
    assert torch.equal(model.sample(template, orderer, rng=torch.Generator().manual_seed(1)).values, a.values)
    assert torch.equal(a.values[batch.given], batch.values[batch.given])
    assert bool((a.values[batch.pad] == 0).all()) and torch.equal(a.pad, batch.pad)
    assert bool(((a.values >= 0) & (a.values < 4)).all())
    order_a.validate(template)
    n_open = int(batch.target.sum(1).max())
    assert entropy_a.shape == (n_open,) and bool((entropy_a >= 0).all() & (entropy_a <= math.log(n_open) + 1e-4).all())
    c, order_c, _ = model.sample_with_orders(template, rng=torch.Generator().manual_seed(2))
    assert not torch.equal(order_a.perm, order_c.perm) and not torch.equal(a.values, c.values)


@LAYOUTS
def test_causal_cached_sampler_makes_the_choices_the_one_pass_scores_best(layout):
    """Greedy order and values: each sampled value is the one-pass argmax along the returned
    order, and each chosen slot p's most likely open slot there (the KV-cache sampler and
    the block layout compute the same distributions)."""
    orderer, model = build_causal(SUDOKU4, greedy_order=True, causal_layout=layout)
    randomize_causal(model)
    batch = mixed_sudoku4_batch(seed=9)
    template = batch.with_values(batch.values.masked_fill(~batch.given, 0))
    samples, orders, _ = model.sample_with_orders(template, rng=torch.Generator().manual_seed(1), temperature=0)
    again, orders_again, _ = model.sample_with_orders(template, rng=torch.Generator().manual_seed(99), temperature=0)
    assert torch.equal(samples.values, again.values) and torch.equal(orders.perm, orders_again.perm)
    _, _, correct = model.walk(samples, orders)
    assert torch.equal(correct, samples.target)  # every sampled value is the most likely one
    with torch.no_grad():
        terms = model.order_terms(samples, orders)
    predicted = orders.block >= 0
    best = terms["order_logp_BTL"].max(-1).values
    assert torch.allclose(terms["order_BT"][predicted], best[predicted], atol=1e-5)
    canonical = OrderBatch.from_priorities(template, torch.zeros(4, 16)).perm
    assert not torch.equal(orders.perm, canonical)  # the policy chose, not the slot index


@LAYOUTS
def test_causal_checkpoint_round_trip_samples_identically(tmp_path, layout):
    from seqify_generators.causal import CausalTransformer

    orderer, model = build_causal(SUDOKU4, causal_layout=layout)
    randomize_causal(model)
    fresh, batch = assert_round_trip_samples_identically(model, CausalTransformer, tmp_path)
    est_a = model.estimate(batch, 2, rng=torch.Generator().manual_seed(0))
    est_b = fresh.estimate(batch, 2, rng=torch.Generator().manual_seed(0))
    assert torch.equal(est_a["iw"], est_b["iw"])


@LAYOUTS
def test_causal_policy_trunk_grad_scales_the_policy_gradient_into_the_generator(layout):
    batch = mixed_sudoku4_batch(seed=2)
    order = LearnedOrder().train_orders(batch, progress=0.0, rng=torch.Generator().manual_seed(4))
    grads = {}
    for share in (1.0, 0.25, 0.0):
        _, model = build_causal(SUDOKU4, causal_layout=layout, policy_trunk_grad=share)
        randomize_causal(model)
        terms = model.order_terms(batch, order)
        terms["order_BT"].sum().backward()  # p's log-probabilities alone
        grads[share] = torch.cat([p.grad.flatten() for p in model.generator.parameters() if p.grad is not None]
                                 or [torch.zeros(1)])
        assert float(model.order_query.weight.grad.abs().sum()) > 0  # p itself still learns
        if layout == "stream":
            assert float(model.last_value[0].weight.grad.abs().sum()) > 0
        with torch.no_grad():  # the detach changes gradients, not values
            again = build_causal(SUDOKU4, causal_layout=layout)[1]
            again.load_state_dict(model.state_dict())
            assert torch.allclose(again.order_terms(batch, order)["order_BT"], terms["order_BT"].detach())
    assert float(grads[1.0].abs().sum()) > 0 and float(grads[0.0].abs().sum()) == 0.0
    assert torch.allclose(grads[0.25], 0.25 * grads[1.0], atol=1e-6)  # the generator's share, exactly scaled


def test_causal_one_order_per_item_trains_q_against_a_running_baseline_and_round_trips(tmp_path):
    from seqify_generators.causal import CausalTransformer

    orderer, model = build_causal(SUDOKU4, orders_per_item=1, causal_layout="stream")
    assert "orders_per_item=1" in LearnedOrder(orders_per_item=1).check(SUDOKU4, MaskedTransformer.caps)
    assert LearnedOrder(orders_per_item=1).check(SUDOKU4, CausalTransformer.caps) is None
    randomize_causal(model)
    model.train()
    model.set_progress(0.5)
    assert bool(torch.isnan(model.reward_baseline))
    baselines, rewards = [], []
    for seed in range(3):
        batch = collate(sudoku4_items(16, seed=seed))
        loss, stats = model.loss_with_stats(batch, None)
        loss.backward()
        assert float(model.posterior.out.weight.grad.abs().sum()) > 0  # q learns with one order per item
        model.zero_grad(set_to_none=True)
        baselines.append(float(model.reward_baseline))
        rewards.append(float(stats["elbo_nats_per_slot"]))  # the batch's mean reward per slot
        assert float(loss.detach()) == pytest.approx(-rewards[-1], abs=1e-5)
    # the first batch sets the baseline to its mean reward per slot; later ones move it 10% of the way
    assert baselines[0] == pytest.approx(rewards[0], abs=1e-5) and baselines[0] < 0
    for i in (1, 2):
        assert baselines[i] == pytest.approx(0.9 * baselines[i - 1] + 0.1 * rewards[i], abs=1e-5)
    assert len(set(rewards)) == 3
    fresh, _ = assert_round_trip_samples_identically(model, CausalTransformer, tmp_path, orders_per_item=1)
    assert float(fresh.reward_baseline) == baselines[-1]  # the baseline is part of the checkpoint


@LAYOUTS
def test_causal_param_groups_split_the_order_parameters(layout):
    _, model = build_causal(SUDOKU4, policy_lr_scale=3.0, policy_weight_decay=0.0, causal_layout=layout)
    gen, pol = model.param_groups(1e-3, 0.01)
    ids = [id(p) for p in gen["params"] + pol["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    assert {id(p) for p in gen["params"]} == {id(p) for p in model.generator.parameters()}
    assert pol["lr"] == pytest.approx(3e-3) and pol["weight_decay"] == 0.0


def test_run_bench_learned_on_the_causal_generator_end_to_end(tmp_path):
    from seqify.bench import BenchRequest, run_bench

    out = tmp_path / "cell"
    run_bench(BenchRequest(modality="molecule", dataset="qm9", orderer="learned", generator="causal", budget="smoke",
                           seed=0, out=out, device="cpu"))
    results = json.loads((out / "results.json").read_text())
    m = results["modelability"]
    assert math.isfinite(m["bits_per_item"]) and m["bits_per_item"] > 0
    assert m["kind"] == "estimate" and m["nats_per_item"] <= m["bound_nats_per_item"] + 1e-9
    assert "one pass of the causal generator" in m["note"]
    diag = results["order_diagnostics"]
    assert diag["files"]["order_profile"] == "order_profile.png" and (out / "order_profile.png").is_file()
    assert diag["steps"] == 45 and math.isfinite(diag["final_order_nll"])
    assert {"order_nll", "q_entropy_deficit", "uniform_value_nll"} <= set(results["training"]["series"])
    state = load_checkpoint(out / "checkpoint.pt")["model"]
    assert any(k.startswith("order_query.") for k in state) and any(k.startswith("generator.") for k in state)


def test_run_bench_learned_causal_stream_layout_end_to_end_and_its_distance_to_the_prior(tmp_path):
    """The stream layout through `seqify bench` (smoke budget), then benchmarks/learned_vs_prior.py
    on its checkpoint: at prior temperature 0.01 q's orders are the prior's."""
    import subprocess
    import sys

    from seqify.bench import BenchRequest, run_bench

    out = tmp_path / "cell"
    run_bench(BenchRequest(modality="molecule", dataset="qm9", orderer="learned", generator="causal", budget="smoke",
                           seed=0, out=out, device="cpu",
                           overrides={"orderer": {"causal_layout": "stream", "orders_share_batch": True,
                                                  "prior_temperature": 0.01}}))
    m = json.loads((out / "results.json").read_text())["modelability"]
    assert math.isfinite(m["bits_per_item"]) and "single stream" in m["note"]
    state = load_checkpoint(out / "checkpoint.pt")["model"]
    assert "order_start" in state and any(k.startswith("last_value.") for k in state)
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "learned_vs_prior.py"), "--run", str(out),
                           "--n", "8", "--orders", "4"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads((out / "vs_prior_K4_n8.json").read_text())
    assert found["q"] == {"identical_orders": 1.0, "positions_as_prior": 1.0, "mean_rank_shift": 0.0}
    assert 0.0 <= found["p_generation"]["positions_as_prior"] <= 1.0


def test_exact_next_only_options_are_refused_with_the_one_step_estimator():
    caps = MaskedTransformer.caps
    for bad in ({"value_spread": 1.0}, {"margin_teacher": 1.0}, {"p_from_elbo": False}):
        reason = LearnedOrder(estimator="one-step", **bad).check(SUDOKU4, caps)
        assert reason is not None and "exact-next" in reason and next(iter(bad)) in reason
        assert LearnedOrder(**bad).check(SUDOKU4, caps) is None  # the default estimator takes them


@pytest.mark.parametrize("options", [{}, {"warm_start": 0.5}, {"estimator": "one-step", "orders_per_item": 2}])
def test_progress_note_reports_the_policy_after_a_step(options):
    model = build_seeded(SUDOKU4, tokenizer=_Raster(), **options)
    assert model.progress_note() == "policy: no statistics yet"
    model.train()
    model.set_progress(0.0)
    batch = collate(sudoku4_items(4))
    order = LearnedOrder().train_orders(batch, progress=0.0, rng=torch.Generator().manual_seed(0))
    model.loss_with_stats(batch, order)
    note = model.progress_note()
    assert note.startswith("policy: order NLL ") and "vs uniform" in note and "p logit spread" in note


def test_learned_sampling_takes_top_k_and_top_p():
    """Top-k 1 is the greedy value draw (the order draw is unchanged); top-p 1 changes nothing."""
    for make, shape in ((build, randomize_heads), (build_causal, randomize_causal)):
        orderer, model = make(SUDOKU4)
        shape(model)
        batch = collate(sudoku4_items(4, seed=9))
        template = batch.with_values(batch.values.masked_fill(~batch.given, 0))

        def draw(**kw):
            return model.sample(template, orderer, rng=torch.Generator().manual_seed(3), **kw).values

        assert torch.equal(draw(top_p=1.0), draw())
        top1 = draw(top_k=1)
        assert torch.equal(top1, draw(top_k=1, top_p=0.5))  # the most likely value is always kept
        assert not torch.equal(top1, draw())  # randomized heads: the plain draw differs somewhere
