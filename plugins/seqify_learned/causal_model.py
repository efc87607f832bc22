"""The learned order on the causal generator: an exact log p(x, z) of a whole order in
one pass, trained with a whole-order reward.

Generative model (as LO-ARM's)::

    p(x, z) = prod_t p(z_t | z_<t, x_{z_<t}) * p(x_{z_t} | z_<=t, x_{z_<t})

The value distribution is the causal generator's
(:class:`~seqify_generators.causal.CausalTransformer`, sigma-GPT / RAR style), run in its
*block layout* with blocks of one: the sequence is BOS, the L value tokens in order and
the L query tokens in order (:meth:`CausalTransformer.block_states`). Query token ``t``
predicts the value of slot ``z_t`` from the values of ``z_<t`` (the generator's head,
restricted to the slot's kind). The state at index ``t`` (BOS for ``t = 0``, else the
value token of position ``t - 1``) has seen the values of ``z_<t`` but not which slot
comes next: a *prefix state*, from which the order policy reads
``p(z_t = j | prefix) = softmax over the open slots of (W h_t) . u_j / sqrt(D) + b . u_j``
with ``u_j`` a per-slot structure embedding (kind, coordinates, slot index) of its own
and ``W``, ``b`` zero-initialized (p starts uniform). Given slots come first (the
generator's canonical order) and are never chosen.

So ``log p(x, z) = sum_t [value log-prob + order log-prob]`` is exact, differentiable
and costs ONE forward pass of ``1 + 2L`` tokens per order. Training draws K whole
orders per item from the Plackett-Luce posterior q (shared with
:class:`~seqify_learned.model.LearnedOrderModel`, :mod:`~seqify_learned.base`) and
maximizes the ELBO ``E_q[log p(x, z) - log q(z | x)]``: the generator and p by the
exact gradient along the sampled orders, q by the score function with the
leave-one-out baseline over the K orders of an item (RLOO). The reward is the exact
whole-order ``log p(x, z) - log q(z | x)``, so its spread between orders is only the
real one (the masked model's one-step estimator scaled one step's noise by L).

Sampling feeds the value tokens to a KV cache one order position at a time: the policy
picks the next slot from the last state, its query token is run against the cache
(not stored), its value is drawn, and its value token is appended (the next prefix
state). With blocks of one the block layout's attention is plain causal attention
over the value tokens, so the cached sampler computes the same distributions as the
one-pass score.

**The stream layout** (``causal_layout = "stream"``) scores an order in the causal
generator's own single stream instead, the sequence a fixed-order causal cell trains
on: ``L`` tokens, token ``t`` the value token of ``z_{t-1}`` (BOS for ``t = 0``) plus
the target structure of ``z_t``; its state predicts ``x_{z_t}``. That is half the
tokens of the block layout, so a training pass costs about what one in a fixed order
does. No state in it has seen the values of ``z_<t`` without also seeing ``z_t``, so
the policy reads, for its choice of ``z_t`` (t > 0), the state of token ``t - 1`` (the
values of ``z_<t-1`` and which slot ``z_{t-1}`` is) plus a small MLP of that state and
``z_{t-1}``'s value token: the last value reaches the policy through the MLP, not
through attention. The first choice reads a learned vector (``order_start``). The
model is still exact: ``p(x, z) = prod_t p(z_t | x_{z_<t}) p(x_{z_t} | x_{z_<t}, z_t)``
with both factors computed in one pass, and the cached sampler (one token per
position) computes the same distributions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from seqify.errors import NotApplicableError
from seqify.nn import (
    KVCache,
    SlotEmbedding,
    check_batch,
    check_temperature,
    clean_structure,
    evaluating,
    global_ids,
    gumbel_noise,
    pick_values,
    restricted_log_softmax,
)
from seqify.types import OrderBatch, TokenBatch, TokenizerSpec, blocks_of_one

from seqify_learned.base import LearnedOrderBase, head_items
from seqify_learned.options import LearnedOptions
from seqify_learned.plackett_luce import rloo_surrogate

__all__ = ["CausalLearnedOrderModel", "has_block_layout", "causal_option_conflicts"]

#: what the model uses of the causal generator (CausalTransformer's block layout and cache)
_BLOCK_LAYOUT_MEMBERS = ("block_states", "_prepare", "_value_tokens", "_query_tokens", "_bos", "_allowed",
                         "head", "stack", "kind_mask_KV", "config")


#: items whose value NLL along a uniformly random order is measured each training step (a statistic)
_UNIFORM_ITEMS = 8


def has_block_layout(generator: Any) -> bool:
    """True when ``generator`` has the causal generator's block layout
    (:meth:`~seqify_generators.causal.CausalTransformer.block_states` and the pieces
    the cached sampler feeds)."""
    return all(hasattr(generator, name) for name in _BLOCK_LAYOUT_MEMBERS)


def causal_option_conflicts(options: LearnedOptions) -> str | None:
    """The settings of ``options`` that only the masked generator's learned order has
    (they read predictions for every open slot, or choose the masked model's
    estimator), or None."""
    bad = []
    if options.estimator != "exact-next":
        bad.append(f"estimator={options.estimator!r}")
    if options.steps_per_order != 1:
        bad.append(f"steps_per_order={options.steps_per_order}")
    for name in ("margin_init", "margin_teacher", "value_spread"):
        if getattr(options, name) > 0:
            bad.append(f"{name}={getattr(options, name)}")
    if not options.p_from_elbo:
        bad.append("p_from_elbo=False")
    if not bad:
        return None
    return (f"{', '.join(bad)}: a setting of the learned order on the 'masked' generator; on the 'causal' generator "
            "the order is trained with the whole-order reward, and the policy sees no prediction for the open slots")


def _entropy_and_spread(logits_NL: torch.Tensor, open_NL: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N]`` entropy (nats) of ``softmax(logits)`` over the open entries and the
    standard deviation of the logits there (both 0 for rows with none open)."""
    has_N = open_NL.any(-1)
    safe_NL = open_NL | ~has_N[:, None]
    logp_NL = logits_NL.float().masked_fill(~safe_NL, float("-inf")).log_softmax(-1)
    ent_N = -(logp_NL.exp() * logp_NL.masked_fill(~safe_NL, 0.0)).sum(-1)
    n_N = open_NL.sum(-1).clamp_min(1)
    mean_N = (logits_NL * open_NL).sum(-1) / n_N
    var_N = (((logits_NL - mean_N[:, None]) ** 2) * open_NL).sum(-1) / n_N
    zero_N = torch.zeros_like(ent_N)
    return torch.where(has_N, ent_N, zero_N), torch.where(has_N, var_N.sqrt(), zero_N)


class CausalLearnedOrderModel(LearnedOrderBase):
    """The causal generator with a learned order policy on its prefix states and a
    variational order posterior (see the module docstring).

    A :class:`~seqify.protocols.TrainableModel` like
    :class:`~seqify_learned.model.LearnedOrderModel`, with the same members (``loss``,
    ``loss_with_stats``, ``set_progress``, ``score``, ``estimate``, ``walk``, ``sample``,
    ``sample_with_orders``, ``param_groups``, ``progress_note``), so the ``learned``
    orderer measures, samples and diagnoses either.

    The settings of :class:`~seqify_learned.options.LearnedOptions` it uses:
    ``orders_per_item`` (K whole orders per item, the RLOO group; 1: a running-mean
    baseline instead), ``orders_share_batch``,
    ``warm_start`` (the generator alone on the orderer's random orders first),
    ``entropy_bonus`` / ``q_entropy_bonus`` / ``p_entropy_bonus`` and ``entropy_anneal``,
    ``policy_lr_scale`` / ``policy_weight_decay``, ``score_clip`` (p's logits and q's
    scores), the prior settings, q's network (``backbone``, ``policy_*``), and
    ``eval_orders`` / ``greedy_order`` / ``diagnostic_items``, ``causal_layout`` (block or
    stream, see the module docstring). ``policy_features`` is
    not used (the policy has no prediction for the open slots to read); the masked
    model's ``estimator``, ``steps_per_order``, ``margin_*`` and ``value_spread`` are
    refused (:func:`causal_option_conflicts`).

    Args:
        generator: a :class:`~seqify_generators.causal.CausalTransformer` (or a generator
            with its block layout, :func:`has_block_layout`).
        spec: the tokenizer's spec (fixed length).
        options: a :class:`~seqify_learned.options.LearnedOptions` (None: defaults).
        order_prior: the tokenizer's :meth:`~seqify.protocols.Tokenizer.order_prior`,
            seeding q as in :class:`~seqify_learned.model.LearnedOrderModel` (None: q
            starts uniform).
    """

    scoring = "one pass of the causal generator's block layout"

    #: trained with the whole-order reward, not an ``estimator`` option
    estimator_name = "whole-order"

    def __init__(
        self, generator: nn.Module, spec: TokenizerSpec, options: LearnedOptions | None = None, *,
        order_prior: Callable[[TokenBatch], torch.Tensor | None] | None = None,
    ):
        super().__init__()
        if not has_block_layout(generator):
            raise NotApplicableError(
                "the learned order on a causal generator reads its block layout (BOS, value tokens, query tokens: "
                f"CausalTransformer.block_states and the pieces its sampler feeds), which {type(generator).__name__} lacks"
            )
        if spec.variable_length:
            raise NotApplicableError("the learned orderer needs a fixed-length tokenizer")
        if getattr(generator, "uses_slot_inputs", False):
            raise NotApplicableError(
                "the learned order on the causal generator does not read the tokenizer's slot inputs (they need "
                "every lower level decoded first, which a learned order does not promise): set the generator option "
                "slot_inputs = false")
        self.options = options if options is not None else LearnedOptions()
        conflict = causal_option_conflicts(self.options)
        if conflict is not None:
            raise NotApplicableError(conflict)
        self.spec = spec
        self.generator = generator
        d_model = int(generator.config.d_model)
        self._build_posterior(d_model, order_prior)
        self.slot_embed = SlotEmbedding(spec, d_model)  # u_j: the slots the policy chooses among
        for table in self.slot_embed.modules():
            if isinstance(table, nn.Embedding):
                nn.init.normal_(table.weight, std=0.02)
        self.order_query = nn.Linear(d_model, d_model, bias=False)  # W: prefix state -> query over slots
        self.order_bias = nn.Linear(d_model, 1)  # b . u_j: a slot's own preference
        for layer in (self.order_query, self.order_bias):  # p starts uniform
            for param in layer.parameters():
                nn.init.zeros_(param)
        if self.options.orders_per_item == 1:  # q's baseline: a running mean of the per-slot reward (NaN: none yet)
            self.register_buffer("reward_baseline", torch.full((), float("nan")))
        self.stream = self.options.causal_layout == "stream"
        if self.stream:
            if not hasattr(generator, "_inputs"):
                raise NotApplicableError(
                    f"causal_layout='stream' reads the causal generator's single stream (_inputs), which "
                    f"{type(generator).__name__} lacks: use causal_layout='block'")
            # the stream's prefix for choice t: the state of token t - 1 (it has not seen the value of slot
            # z_{t-1}) plus this MLP of that state and z_{t-1}'s value token; the first choice reads order_start
            self.scoring = "one pass of the causal generator's single stream"
            self.order_start = nn.Parameter(torch.zeros(d_model))
            self.last_value = nn.Sequential(nn.Linear(2 * d_model, d_model), nn.GELU(), nn.Linear(d_model, d_model))

    def order_parameters(self) -> list[nn.Parameter]:
        """The order policy (slot embeddings, bilinear query, slot bias) and the posterior q
        (not the generator)."""
        stream = [self.order_start, *self.last_value.parameters()] if self.stream else []
        return [*self.slot_embed.parameters(), *self.order_query.parameters(), *self.order_bias.parameters(),
                *stream, *self.posterior.parameters()]

    def _trunk_grad(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with its gradient scaled by ``policy_trunk_grad`` (same values)."""
        share = self.options.policy_trunk_grad
        if share >= 1.0:
            return x
        return x.detach() if share <= 0.0 else x * share + x.detach() * (1.0 - share)

    def _stream_prefix(self, h_prev_BTD: torch.Tensor, value_prev_BTD: torch.Tensor) -> torch.Tensor:
        """Stream layout: the policy's prefix state for a choice after the first, from the
        state of the token before it (``h_prev``: it has seen the values of all but the
        last filled slot) and the last filled slot's value token (``value_prev``)."""
        return h_prev_BTD + self.last_value(torch.cat([h_prev_BTD, value_prev_BTD.to(h_prev_BTD.dtype)], dim=-1))

    # ----------------------------------------------------------------- the one pass

    def order_logits(self, prefix_BTD: torch.Tensor, slots_BLD: torch.Tensor) -> torch.Tensor:
        """``[B, T, L]`` order logits of the policy p: at each of ``T`` prefix states, one
        logit per slot, ``(W h_t) . u_j / sqrt(D) + b . u_j``, bounded to
        ``+-score_clip`` (tanh). Not restricted to the open slots.

        Args:
            prefix_BTD: prefix states (BOS, or the value token of the last filled slot).
            slots_BLD: the slots' embeddings ``u`` (``self.slot_embed`` of kinds and coordinates).
        """
        D = slots_BLD.shape[-1]
        query_BTD = self.order_query(prefix_BTD)
        raw_BTL = torch.einsum("btd,bld->btl", query_BTD.float(), slots_BLD.float()) / math.sqrt(D)
        return self._clip(raw_BTL + self.order_bias(slots_BLD).float().squeeze(-1)[:, None, :])

    def _slots(self, batch: TokenBatch) -> torch.Tensor:
        """``[B, L, D]`` the slot embeddings ``u`` the policy chooses among."""
        _, kinds_BL, coords_BLC = clean_structure(batch)
        return self.slot_embed(kinds_BL, coords_BLC)

    def order_terms(self, batch: TokenBatch, order: OrderBatch, *, with_order: bool = True) -> dict[str, torch.Tensor]:
        """Everything along ``order`` from one pass of the block layout (differentiable).

        Per order position ``t`` (``_BT`` tensors; 0 where ``t`` is not predicted):
        ``value_BT`` log p(x_{z_t} | x_{z_<t}), ``correct_BT`` (the most likely value is
        the true one), ``predicted_BT``; with ``with_order``, also ``order_BT`` log p(z_t |
        prefix), ``p_entropy_BT`` and ``logit_std_BT`` (p over the open slots),
        ``open_BTL`` (the slots still open at ``t``: predicted, not before ``t``) and
        ``order_logp_BTL`` (p's log-probability of every slot at ``t``; -inf off the open
        slots, 0 where nothing is open).

        Args:
            batch: the items.
            order: blocks-of-one orders for ``batch`` (validated by the caller).
            with_order: also compute the policy's terms (the warm start needs values only).
        """
        gen = self.generator
        gid_BL, kinds_BL, source_BLD, target_BLD = gen._prepare(batch)
        B, L = gid_BL.shape
        perm_BL = order.perm
        if self.stream:  # L tokens: token t = value of z_{t-1} (BOS for t = 0) + structure of z_t
            h_BTD = gen.stack(gen._inputs(gid_BL, source_BLD, target_BLD, perm_BL, 0, L), causal=True)
            value_h_BTD = h_BTD
        else:
            h_BSD = gen.block_states(gid_BL, source_BLD, target_BLD, order)  # S = 1 + 2L
            value_h_BTD = h_BSD[:, 1 + L :]
        logp_BTV = restricted_log_softmax(gen.head(value_h_BTD), gen._allowed(kinds_BL, perm_BL))
        truth_BT = gid_BL.gather(1, perm_BL)
        predicted_BT = order.block >= 0
        value_BT = logp_BTV.gather(2, truth_BT[..., None]).squeeze(2)
        out = {
            "value_BT": torch.where(predicted_BT, value_BT, torch.zeros_like(value_BT)),
            "correct_BT": (logp_BTV.argmax(-1) == truth_BT) & predicted_BT,
            "predicted_BT": predicted_BT,
        }
        if not with_order:
            return out
        if self.stream:
            last_BTD = gen._value_tokens(gid_BL, source_BLD, perm_BL[:, : L - 1])
            h_prev_BTD = h_BTD[:, : L - 1]
            h_prev_BTD, last_BTD = self._trunk_grad(h_prev_BTD), self._trunk_grad(last_BTD)
            later_BTD = self._stream_prefix(h_prev_BTD, last_BTD)
            prefix_BTD = torch.cat([self.order_start.to(later_BTD.dtype).expand(B, 1, -1), later_BTD], dim=1)
        else:
            prefix_BTD = self._trunk_grad(h_BSD[:, :L])
        logits_BTL = self.order_logits(prefix_BTD, self._slots(batch))
        t_T = torch.arange(L, device=perm_BL.device)
        open_BTL = batch.target[:, None, :] & (order.rank()[:, None, :] >= t_T[None, :, None])
        has_BT = open_BTL.any(-1)
        safe_BTL = open_BTL | ~has_BT[..., None]
        olp_BTL = logits_BTL.masked_fill(~safe_BTL, float("-inf")).log_softmax(-1)
        order_BT = olp_BTL.gather(2, perm_BL[..., None]).squeeze(2)
        entropy_N, spread_N = _entropy_and_spread(logits_BTL.reshape(B * L, L), open_BTL.reshape(B * L, L))
        zero_BT = torch.zeros_like(order_BT)
        out.update({
            "order_BT": torch.where(predicted_BT, order_BT, zero_BT),
            "p_entropy_BT": torch.where(predicted_BT, entropy_N.view(B, L), zero_BT),
            "logit_std_BT": torch.where(predicted_BT, spread_N.view(B, L), zero_BT),
            "open_BTL": open_BTL,
            "order_logp_BTL": olp_BTL.masked_fill(~has_BT[..., None], 0.0),
        })
        return out

    def walk(self, batch: TokenBatch, order: OrderBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Exact per-slot log-probabilities along ``order``: one pass of the block layout.

        Returns:
            ``value_BL`` log p(x_i | ...), ``order_BL`` log p(z_t = i | ...) at each
            predicted slot ``i`` (0 elsewhere), and ``correct_BL`` (most likely value = true).
        """
        order = self._check_order(batch, order)
        with evaluating(self):
            terms = self.order_terms(batch, order)
        perm_BL, scored_BL = order.perm, batch.target

        def to_slots(x_BT: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(x_BT).scatter(1, perm_BL, x_BT)

        value_BL, order_BL = to_slots(terms["value_BT"]), to_slots(terms["order_BT"])
        correct_BL = to_slots(terms["correct_BT"])
        return value_BL.masked_fill(~scored_BL, 0.0), order_BL.masked_fill(~scored_BL, 0.0), correct_BL & scored_BL

    # ----------------------------------------------------------------- training

    def whole_order_estimate(self, batch: TokenBatch, *, k: int, rloo: bool = False) -> dict[str, torch.Tensor]:
        """The ELBO from ``k`` whole orders of q per item, each scored exactly in one pass.

        ``f = log p(x, z) - log q(z | x)`` per order; the loss is ``-mean_items f / n``
        (n: the item's predicted slots), exact in the generator and p along the sampled
        orders. With ``rloo`` (and gradients on), q's score-function gradient with the
        leave-one-out baseline over the item's ``k`` orders (:func:`rloo_surrogate`,
        reward ``f``; for ``k = 1``, against a running mean of the per-slot reward,
        :meth:`_baseline_surrogate`) and the annealed entropy terms are added (value 0).

        Args:
            batch: the items.
            k: orders per item (global torch RNG).
            rloo: add the gradient-only terms for q and the entropy bonuses.

        Returns:
            scalars averaged over items: ``loss`` (negative ELBO per slot, plus
            zero-valued gradient terms), ``elbo_slot``; per slot ``p_entropy``,
            ``q_entropy`` (along the sampled orders: each step's next-slot entropy),
            ``log_open``, ``logit_std``; per item ``order_nll`` (-log p(z)),
            ``uniform_order_nll`` (log n!), ``order_cost`` (log q - log p(z), a KL
            estimate), ``value_nll`` (-log p(x | z)), ``prior_weight``; ``first_<kind>``.
        """
        B = batch.batch_size
        device = batch.values.device
        rep, scores_RL, order, logq_R = self.posterior_orders(batch, k)
        terms = self.order_terms(rep, order)
        R, L = order.perm.shape
        n_R = rep.target.sum(1).float()
        active_R = n_R > 0
        per_slot_R = 1.0 / n_R.clamp_min(1.0)
        w_R = active_R.float() / active_R.float().sum().clamp_min(1.0)
        value_R = terms["value_BT"].sum(1)
        order_R = terms["order_BT"].sum(1)
        f_R = value_R + order_R - logq_R
        loss = -((value_R + order_R - logq_R.detach()) * per_slot_R * w_R).sum()
        # q's next-slot entropy at each step of its own order (their sum estimates H(q) without bias)
        open_NL = terms["open_BTL"].reshape(R * L, L)
        q_ent_N, _ = _entropy_and_spread(scores_RL.repeat_interleave(L, 0), open_NL)
        predicted_RT = terms["predicted_BT"]
        q_ent_R = (q_ent_N.view(R, L) * predicted_RT).sum(1)
        p_ent_R = terms["p_entropy_BT"].sum(1)
        log_open_R = (open_NL.sum(-1).clamp_min(1).float().log().view(R, L) * predicted_RT).sum(1)
        if rloo and torch.is_grad_enabled():
            if k == 1:  # one order per item: a running-mean baseline
                loss = loss + self._baseline_surrogate(logq_R, (f_R * per_slot_R).detach(), active_R)
            else:
                active_B = active_R.view(B, k)[:, 0]
                weight_B = active_B.float() * per_slot_R.view(B, k)[:, 0]
                scale = B / max(int(active_B.sum()), 1)  # mean over the items that have slots
                loss = loss + scale * rloo_surrogate(logq_R.view(B, k), f_R.detach().view(B, k), weight_B)
            for beta, ent_R in ((self.q_entropy_weight(), q_ent_R), (self.p_entropy_weight(), p_ent_R)):
                if beta != 0:
                    ent = (ent_R * per_slot_R * w_R).sum()
                    loss = loss - beta * (ent - ent.detach())
            if self.options.entropy_bonus > 0:
                ent = ((q_ent_R + p_ent_R) * per_slot_R * w_R).sum()
                loss = loss - self.options.entropy_bonus * (ent - ent.detach())

        def mean(x_R: torch.Tensor) -> torch.Tensor:
            return (x_R.detach().float() * w_R).sum()

        return {
            "loss": loss,
            "elbo_slot": mean(f_R * per_slot_R),
            "p_entropy": mean(p_ent_R * per_slot_R),
            "q_entropy": mean(q_ent_R * per_slot_R),
            "log_open": mean(log_open_R * per_slot_R),
            "logit_std": mean(terms["logit_std_BT"].sum(1) * per_slot_R),
            "order_nll": mean(-order_R),
            "uniform_order_nll": mean(torch.lgamma(n_R + 1.0)),
            "order_cost": mean(logq_R - order_R),
            "value_nll": mean(-value_R),
            "prior_weight": torch.full((), self.prior_weight() if self.prior_active else 0.0, device=device),
            **self.first_pick_stats(batch, scores_RL[::k]),
        }

    def _baseline_surrogate(self, logq_R: torch.Tensor, f_slot_R: torch.Tensor, active_R: torch.Tensor) -> torch.Tensor:
        """``orders_per_item = 1``: value-0 scalar whose gradient is the score-function
        estimate of -d/dphi E_q[f] per slot, ``-mean_items (f_slot - b) d log q``, with ``b``
        the running mean of the per-slot reward before this batch (the batch's own mean on
        the first call); then ``b`` moves 10% of the way to this batch's mean. A constant
        baseline keeps the estimate unbiased."""
        n = active_R.float().sum().clamp_min(1.0)
        batch_mean = (f_slot_R * active_R).sum() / n
        fresh = torch.isnan(self.reward_baseline)
        baseline = torch.where(fresh, batch_mean, self.reward_baseline)
        if self.training:
            self.reward_baseline.copy_(torch.where(fresh, batch_mean, 0.9 * baseline + 0.1 * batch_mean))
        adv_R = (f_slot_R - baseline) * active_R
        return -(adv_R * (logq_R - logq_R.detach())).sum() / n

    def _uniform_value_nll(self, batch: TokenBatch) -> torch.Tensor:
        """Value NLL per item along one uniformly random order per item (no gradient):
        what the generator would pay without the learned order."""
        with torch.no_grad():
            order = OrderBatch.from_priorities(batch, torch.rand(batch.values.shape, device=batch.values.device))
            value_R = self.order_terms(batch, order, with_order=False)["value_BT"].sum(1)
            active_R = batch.target.any(1).float()
            return -(value_R * active_R).sum() / active_R.sum().clamp_min(1.0)

    def _value_loss(self, batch: TokenBatch, order: OrderBatch) -> torch.Tensor:
        """The generator's cross-entropy (nats per predicted slot) along ``order`` in the
        block layout (the layout it is scored and sampled in)."""
        terms = self.order_terms(batch, order, with_order=False)
        return -terms["value_BT"].sum() / terms["predicted_BT"].sum().clamp_min(1)

    def loss_with_stats(
        self, batch: TokenBatch, order: OrderBatch | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss in nats per predicted slot, averaged over items, and this step's statistics.

        Warm start (``progress < warm_start``): the generator's cross-entropy along
        ``order`` (the orderer's random orders) in the block layout; p and q get no
        gradient. Then: the negative ELBO per predicted slot from
        ``orders_per_item`` whole orders of q per item (:meth:`whole_order_estimate`);
        its value is the negative ELBO estimate, the RLOO and entropy terms add
        gradient, not value.

        The statistics (training mode only; ``{}`` in eval mode) are detached 0-dim
        tensors left on the batch's device: ``policy_entropy``, ``q_entropy`` and their
        ``*_deficit`` (nats per slot), ``order_logit_std``, ``elbo_nats_per_slot``,
        ``order_nll``, ``uniform_order_nll``, ``order_cost``, ``value_nll`` (nats per
        item), ``uniform_value_nll`` (along a uniformly random order, the first
        ``_UNIFORM_ITEMS`` items, an extra pass without gradient), ``prior_weight``,
        ``first_<kind>`` and ``phase`` (0 in the warm start, 1 after). In the warm
        start they come from an extra pass on the first 16 items, without gradient.

        Args:
            batch: training items.
            order: orders from the orderer (used only during the warm start; None: uniformly random).
        """
        if int(batch.target.sum()) == 0:
            raise ValueError("loss: the batch has no slot to predict (every slot is given or padding)")
        k = self.options.orders_per_item
        if self.warm:
            if order is None:
                order = OrderBatch.from_priorities(batch, torch.rand(batch.values.shape, device=batch.values.device))
            loss = self._value_loss(batch, self._check_order(batch, order))
            if not self.training:
                return loss, {}
            few = head_items(batch, 16)
            with torch.no_grad():
                parts = self.whole_order_estimate(few, k=2)  # before the uniform draw, as the random stream expects
                uniform = self._uniform_value_nll(head_items(few, _UNIFORM_ITEMS))
                stats = self._stats({**parts, "uniform_value_nll": uniform}, phase=0)
            self.last_stats = stats
            return loss, stats
        if self.options.orders_share_batch and self.training:
            batch = head_items(batch, max(1, -(-batch.batch_size // k)))
        parts = self.whole_order_estimate(batch, k=k, rloo=True)
        if not self.training:
            return parts["loss"], {}
        uniform = self._uniform_value_nll(head_items(batch, _UNIFORM_ITEMS))
        self.last_stats = self._stats({**parts, "uniform_value_nll": uniform}, phase=1)
        return parts["loss"], self.last_stats

    # ----------------------------------------------------------------- sampling

    def sample_with_orders(
        self, template: TokenBatch, *, rng: torch.Generator, temperature: float = 1.0,
        top_k: int | None = None, top_p: float | None = None,
    ) -> tuple[TokenBatch, OrderBatch, torch.Tensor]:
        """Fill the non-given slots of ``template``, one slot per step, with a KV cache.

        The given slots' value tokens are fed first (canonical order). Then at each
        step the order policy picks the next slot from the last prefix state
        (Gumbel-max with noise from ``rng``, or its argmax when ``greedy_order``), that
        slot's query token is run against the cache and its value drawn at
        ``temperature`` (0: the most likely value), and its value token is appended
        (the next prefix state). In the stream layout one token per position goes into
        the cache instead: the policy picks ``z_t`` from the stream prefix
        (``order_start`` first, then the state of token ``t - 1`` and ``z_{t-1}``'s value
        token), token ``t`` (the value of ``z_{t-1}``, the structure of ``z_t``) is
        appended, and ``z_t``'s value is drawn from its state; the noise draws are the
        same. Items step in lockstep by order position, so an item with fewer given slots
        starts choosing earlier.

        Args:
            template: structure and given values (other values are ignored).
            rng: CPU generator for all sampling noise (one ``[B, L]`` order draw and one
                ``[B, V]`` value draw per step).
            temperature: value softmax temperature; 0 picks the most likely value.
            top_k, top_p: restrict each value draw (:func:`seqify.nn.truncate_logits`; None: off).

        Returns:
            ``(samples, orders, entropy_T)``: the filled batch, the generation orders
            chosen (CPU, blocks of one), and the order policy's mean entropy (nats) at
            each of the ``T`` predicted steps (the item's first choice is its step 0)
            over the items that make that step (CPU float32).
        """
        temperature = check_temperature(temperature)
        check_batch(self.spec, template, values_of=template.given, who="learned")
        gen = self.generator
        device = template.values.device
        B, L = template.values.shape
        V = self.spec.total_vocab
        rows_B = torch.arange(B, device=device)
        values_BL, kinds_BL, _ = clean_structure(template)
        gid_BL = global_ids(values_BL.masked_fill(~template.given, 0), kinds_BL, self.offsets_K)
        perm_BL = OrderBatch.from_priorities(template, torch.zeros(B, L, device=device)).perm  # given first, pad last
        n_given_B = template.given.sum(1)
        n_real_B = (~template.pad).sum(1)
        open_BL = template.target.clone()
        T = int(open_BL.sum(1).max()) if B else 0
        entropy_sum_T = torch.zeros(T + 1, device=device)
        entropy_count_T = torch.zeros(T + 1, device=device)
        start, end = int(n_given_B.min()) if B else 0, int(n_real_B.max()) if B else 0
        with evaluating(self):
            _, _, source_BLD, target_BLD = gen._prepare(template)
            slots_BLD = self._slots(template)
            if self.stream:  # token t: the value of z_{t-1} (BOS for t = 0) and the structure of z_t
                cache = KVCache(gen.config.depth, L)
                h_BD = None  # the state of the last token fed
                if start > 0:
                    h_BD = gen.stack(gen._inputs(gid_BL, source_BLD, target_BLD, perm_BL, 0, start), causal=True,
                                     cache=cache)[:, -1]
            else:  # BOS and the value tokens in the cache; query tokens run against it, not stored
                cache = KVCache(gen.config.depth, 1 + L)
                x_BTD = gen._value_tokens(gid_BL, source_BLD, perm_BL[:, :start])
                x_BTD = torch.cat([gen._bos(B, source_BLD), x_BTD], dim=1)
                h_BD = gen.stack(x_BTD, causal=True, cache=cache)[:, -1]  # the prefix state
            for t in range(start, end):
                choose_B = (t >= n_given_B) & (t < n_real_B)
                choosing = bool(choose_B.any())
                if choosing:  # the policy picks z_t from the prefix
                    if not self.stream:
                        prefix_BD = h_BD
                    elif t == 0:
                        prefix_BD = self.order_start.expand(B, -1)
                    else:
                        last_BD = gen._value_tokens(gid_BL, source_BLD, perm_BL[:, t - 1 : t])[:, 0]
                        prefix_BD = self._stream_prefix(h_BD, last_BD)
                    logits_BL = self.order_logits(prefix_BD[:, None], slots_BLD)[:, 0]
                    entropy_B, _ = _entropy_and_spread(logits_BL, open_BL)
                    step_B = (t - n_given_B).clamp(0, T)
                    entropy_sum_T.index_add_(0, step_B[choose_B], entropy_B[choose_B])
                    entropy_count_T.index_add_(0, step_B[choose_B], torch.ones_like(entropy_B[choose_B]))
                    masked_BL = logits_BL.masked_fill(~open_BL, float("-inf"))
                    if not self.options.greedy_order:
                        masked_BL = masked_BL + gumbel_noise((B, L), rng, device)
                    perm_BL = perm_BL.clone()
                    perm_BL[:, t] = torch.where(choose_B, masked_BL.argmax(1), perm_BL[:, t])
                slot_B = perm_BL[:, t]
                if self.stream:  # token t goes into the cache; its state predicts z_t's value
                    h_BD = gen.stack(gen._inputs(gid_BL, source_BLD, target_BLD, perm_BL, t, t + 1), causal=True,
                                     cache=cache)[:, -1]
                    h_value_BD = h_BD
                elif choosing:
                    h_value_BD = gen.stack(gen._query_tokens(target_BLD, slot_B[:, None]), causal=True, cache=cache,
                                           store=False)[:, -1]
                if choosing:  # z_t's value
                    kind_B = kinds_BL[rows_B, slot_B]
                    logp_BV = restricted_log_softmax(gen.head(h_value_BD), gen.kind_mask_KV[kind_B])
                    noise_BV = gumbel_noise((B, V), rng, device) if temperature > 0 else None
                    choice_B = pick_values(logp_BV, temperature, noise_BV, top_k=top_k, top_p=top_p)
                    r_N, s_N = rows_B[choose_B], slot_B[choose_B]
                    gid_BL[r_N, s_N] = choice_B[choose_B]
                    open_BL[r_N, s_N] = False
                if not self.stream and t + 1 < end:  # z_t's value token: the next prefix state
                    h_BD = gen.stack(gen._value_tokens(gid_BL, source_BLD, slot_B[:, None]), causal=True,
                                     cache=cache)[:, -1]
        orders = blocks_of_one(template, perm_BL).to("cpu")
        entropy_T = (entropy_sum_T[:T] / entropy_count_T[:T].clamp_min(1.0)).float().cpu()
        out_BL = (gid_BL - self.offsets_K[kinds_BL]).masked_fill(template.pad, 0)
        out_BL = torch.where(template.given, template.values, out_BL).masked_fill(template.pad, 0)
        return template.with_values(out_BL), orders, entropy_T
