"""The two ELBO estimators of the learned order, as functions of a
:class:`~seqify_learned.model.LearnedOrderModel` (its backbone, order head and
posterior q), each with the one-backbone-pass term it is built from.

* :func:`exact_next_estimate` (``estimator="exact-next"``, LO-ARM's Algorithm 1):
  the exact expectation over the next slot (:func:`next_slot_terms`) at one uniformly
  drawn step of K prefixes from q, RLOO on the prefix's log q;
* :func:`elbo_estimate` (``estimator="one-step"``, issue 4's): one sampled next slot
  per order (:func:`one_step`), stratified over the steps, RLOO on the whole order.

Both return scalars averaged over items; ``loss`` carries zero-valued gradient terms
(RLOO, entropy bonuses) when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from seqify.nn import clean_structure
from seqify.types import OrderBatch, TokenBatch

from seqify_learned.plackett_luce import masked_entropy, plackett_luce_prefix_log_prob, repeat_items, rloo_surrogate

if TYPE_CHECKING:
    from seqify_learned.model import LearnedOrderModel

__all__ = ["confidence_features", "one_step", "next_slot_terms", "exact_next_estimate", "elbo_estimate"]


def _kinds(batch: TokenBatch) -> torch.Tensor:
    """``[B, L]`` the batch's kinds, cleaned of padding (what the policy's kind features read)."""
    return clean_structure(batch)[1]


def confidence_features(logp_BLV: torch.Tensor) -> torch.Tensor:
    """``[B, L, 3]`` per slot: the most likely value's log-probability (floored at -20),
    the margin (gap between the top two probabilities, as the ``margin`` orderer) and
    the entropy (nats) of its value distribution (``-inf`` outside the slot's kind)."""
    logp_BLV = logp_BLV.float()
    top2_BL2 = logp_BLV.topk(min(2, logp_BLV.shape[-1]), dim=-1).values
    top1_BL = top2_BL2[..., 0]
    second_BL = top2_BL2[..., 1].exp() if top2_BL2.shape[-1] > 1 else torch.zeros_like(top1_BL)
    finite_BLV = torch.isfinite(logp_BLV)
    entropy_BL = -(logp_BLV.exp() * logp_BLV.masked_fill(~finite_BLV, 0.0)).sum(-1)
    top1_BL = torch.nan_to_num(top1_BL, neginf=-20.0).clamp_min(-20.0)
    return torch.stack([top1_BL, top1_BL.exp() - second_BL, entropy_BL], -1)


def one_step(
    model: LearnedOrderModel, batch: TokenBatch, order: OrderBatch, step_B: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Step ``step_B`` of ``order`` for every row: one backbone pass.

    Returns per-row tensors: ``value`` log p(x_{z_t} | ...), ``order`` log p(z_t | ...),
    the entropy of p's policy (``p_entropy``), the log of the number of open slots
    (``log_open``, the entropy of a uniform pick), the spread of p's logits over the
    open slots (``logit_std``), the open-slot mask (``open_BL``) and whether a row
    has an open slot at all (``has_B``).
    """
    B, L = batch.values.shape
    slot_block_BL = order.slot_block()
    known_BL = batch.given | ((slot_block_BL >= 0) & (slot_block_BL < step_B[:, None]))
    open_BL = batch.target & ~known_BL
    chosen_B = (slot_block_BL == step_B[:, None]).float().argmax(1)
    hidden_BLD, logp_BLV = model.generator.encode(batch, known_BL)
    logits_BL = model.order_logits(hidden_BLD, logp_BLV, _kinds(batch))
    has_B = open_BL.any(1)
    safe_open_BL = open_BL | ~has_B[:, None]
    order_logp_BL = logits_BL.masked_fill(~safe_open_BL, float("-inf")).log_softmax(-1)
    rows_B = torch.arange(B, device=batch.values.device)
    gid_BL = model.true_ids(batch)
    value_B = logp_BLV[rows_B, chosen_B, gid_BL[rows_B, chosen_B]].float()
    order_B = order_logp_BL[rows_B, chosen_B]
    n_open_B = open_BL.sum(1).clamp_min(1)
    mean_B = (logits_BL * open_BL).sum(1) / n_open_B
    var_B = (((logits_BL - mean_B[:, None]) ** 2) * open_BL).sum(1) / n_open_B
    return {
        "value": torch.where(has_B, value_B, torch.zeros_like(value_B)),
        "order": torch.where(has_B, order_B, torch.zeros_like(order_B)),
        "p_entropy": masked_entropy(logits_BL, open_BL),
        "log_open": torch.where(has_B, n_open_B.float().log(), torch.zeros_like(value_B)),
        "logit_std": var_B.sqrt(),
        "open_BL": open_BL,
        "has_B": has_B,
    }


def next_slot_terms(
    model: LearnedOrderModel, batch: TokenBatch, order: OrderBatch, step_B: torch.Tensor, scores_BL: torch.Tensor
) -> dict[str, torch.Tensor]:
    """LO-ARM's exact next-slot term at step ``step_B`` of ``order``: one backbone pass.

    With the slots of the first ``step_B`` entries of ``order`` (and the given
    ones) known, ``F = sum_{j open} q(j) [log p(x_j | .) + log p(z = j | .) - log q(j)]``
    where ``q(j)`` is the Plackett-Luce next-slot probability ``softmax(scores)``
    over the open slots. Differentiable in the generator, the order head and the
    scores.

    Returns per-row tensors: ``F``; the q-weighted ``value`` (sum q log p(x_j)) and
    ``order`` (sum q log p(z = j)) terms, ``value_uniform`` (the mean of log p(x_j)
    over the open slots), ``q_entropy``, ``p_entropy``, ``log_open`` (log of the
    number of open slots), ``kl`` (sum q [log q - log p], the order cost of this
    step), ``logit_std`` (spread of p's logits) and ``has_B``.
    """
    slot_block_BL = order.slot_block()
    known_BL = batch.given | ((slot_block_BL >= 0) & (slot_block_BL < step_B[:, None]))
    open_BL = batch.target & ~known_BL
    has_B = open_BL.any(1)
    safe_BL = open_BL | ~has_B[:, None]
    hidden_BLD, logp_BLV = model.generator.encode(batch, known_BL)
    logits_BL = model.order_logits(hidden_BLD, logp_BLV, _kinds(batch))
    p_BL = logits_BL.masked_fill(~safe_BL, float("-inf")).log_softmax(-1)
    q_BL = scores_BL.float().masked_fill(~safe_BL, float("-inf")).log_softmax(-1)
    v_BL = logp_BLV.gather(2, model.true_ids(batch)[..., None]).squeeze(2).float()

    def on_open(x_BL: torch.Tensor) -> torch.Tensor:
        return torch.where(open_BL, x_BL, torch.zeros_like(x_BL))

    q_prob_BL = on_open(q_BL.exp())
    o = model.options
    extra: dict[str, torch.Tensor] = {}
    if o.value_spread > 0:  # every open slot's value, weighted by a tempered q
        w_BL = on_open((scores_BL.float() / o.value_spread_temperature).masked_fill(~safe_BL, float("-inf")).softmax(-1))
        extra["value_spread"] = (w_BL * on_open(v_BL)).sum(1)
    if o.margin_teacher > 0:  # KL(teacher || p) toward the model's own margin order
        margin_BL = confidence_features(logp_BLV.detach())[..., 1]
        t_BL = (margin_BL / o.margin_teacher_temperature).masked_fill(~safe_BL, float("-inf")).log_softmax(-1)
        extra["teacher_kl"] = (on_open(t_BL.exp()) * (on_open(t_BL) - on_open(p_BL))).sum(1)
    if not o.p_from_elbo:  # the bound trains q toward p, not p toward q (p learns from its teacher)
        p_BL = p_BL.detach()
    p_BL, q_BL, v_BL = on_open(p_BL), on_open(q_BL), on_open(v_BL)
    n_open_B = open_BL.sum(1).clamp_min(1)
    mean_B = (logits_BL * open_BL).sum(1) / n_open_B
    var_B = (((logits_BL - mean_B[:, None]) ** 2) * open_BL).sum(1) / n_open_B
    zero_B = torch.zeros_like(mean_B)
    return {
        "F": (q_prob_BL * (v_BL + p_BL - q_BL)).sum(1),
        "value": (q_prob_BL * v_BL).sum(1),
        "order": (q_prob_BL * p_BL).sum(1),
        "value_uniform": v_BL.sum(1) / n_open_B,
        "q_entropy": -(q_prob_BL * q_BL).sum(1),
        "p_entropy": masked_entropy(logits_BL, open_BL),
        "log_open": torch.where(has_B, n_open_B.float().log(), zero_B),
        "kl": (q_prob_BL * (q_BL - p_BL)).sum(1),
        "logit_std": var_B.sqrt(),
        "has_B": has_B,
        **extra,
    }


def exact_next_estimate(
    model: LearnedOrderModel, batch: TokenBatch, *, k: int, rloo: bool = False
) -> dict[str, torch.Tensor]:
    """LO-ARM's ELBO estimator (its Algorithm 1) from ``k`` prefixes of q per item.

    One step ``i`` is drawn uniformly from ``0 .. n-1`` per item (the same for its
    ``k`` prefixes); each prefix ``z_<i`` is the start of a Plackett-Luce order
    drawn from q by Gumbel-top-k. ``F(z_<i, x)`` (:func:`next_slot_terms`) is an
    unbiased estimate of the ELBO per predicted slot (``n * F`` of the ELBO).

    Args:
        model: the learned-order model (backbone, order head, posterior).
        batch: the items.
        k: prefixes per item (global torch RNG).
        rloo: add the RLOO surrogate on ``log q(z_<i | x)`` and the annealed
            entropy terms on q and p to ``loss`` (when gradients are on).

    Returns:
        scalars averaged over items: ``loss`` (negative ELBO per slot, plus
        zero-valued gradient terms), ``elbo_slot``; per-slot ``p_entropy``,
        ``q_entropy``, ``log_open``, ``logit_std``; per-item (``n *`` the step's
        term) ``order_nll`` (E_q[-log p(z)]), ``uniform_order_nll`` (log n!, a
        uniform policy's), ``order_cost`` (E_q[log q - log p]), ``value_nll``
        (values along q's orders) and ``uniform_value_nll`` (along uniform orders,
        same model, same pass); ``first_<kind>``: q's probability of filling a slot
        of that kind first.
    """
    B = batch.batch_size
    device = batch.values.device
    n_B = batch.target.sum(1)
    rep, scores_RL, order, _ = model.posterior_orders(batch, k)
    step_B = (torch.rand(B, device=device) * n_B).long()
    step_B = torch.minimum(step_B, (n_B - 1).clamp_min(0))
    step_R = step_B.repeat_interleave(k)
    terms = next_slot_terms(model, rep, order, step_R, scores_RL)
    n_R = n_B.repeat_interleave(k).float()
    active_R = (n_R > 0).float()
    w_R = active_R / active_R.sum().clamp_min(1.0)
    F_R = terms["F"]
    loss = -(F_R * w_R).sum()
    if rloo and torch.is_grad_enabled():
        logq_R = plackett_luce_prefix_log_prob(scores_RL, order, step_R)
        f_BK = F_R.detach().view(B, k)
        baseline_BK = (f_BK.sum(1, keepdim=True) - f_BK) / (k - 1)
        adv_R = (f_BK - baseline_BK).reshape(-1)
        loss = loss - (adv_R * w_R * (logq_R - logq_R.detach())).sum()
        for beta, name in ((model.q_entropy_weight(), "q_entropy"), (model.p_entropy_weight(), "p_entropy")):
            if beta != 0:
                ent = (terms[name] * w_R).sum()
                loss = loss - beta * (ent - ent.detach())
        if model.options.entropy_bonus > 0:
            ent = ((terms["q_entropy"] + terms["p_entropy"]) * w_R).sum()
            loss = loss - model.options.entropy_bonus * (ent - ent.detach())
    if torch.is_grad_enabled():  # the terms outside the bound add gradient, not value
        if "value_spread" in terms:
            spread = (terms["value_spread"] * w_R).sum()
            loss = loss - model.options.value_spread * (spread - spread.detach())
        if "teacher_kl" in terms:
            kl = (terms["teacher_kl"] * w_R).sum()
            loss = loss + model.options.margin_teacher * (kl - kl.detach())

    def mean(x_R: torch.Tensor) -> torch.Tensor:
        return (x_R.detach().float() * w_R).sum()

    out = {
        "loss": loss,
        "elbo_slot": mean(F_R),
        "p_entropy": mean(terms["p_entropy"]),
        "q_entropy": mean(terms["q_entropy"]),
        "log_open": mean(terms["log_open"]),
        "logit_std": mean(terms["logit_std"]),
        "order_nll": mean(-n_R * terms["order"]),
        "uniform_order_nll": mean(n_R * terms["log_open"]),
        "order_cost": mean(n_R * terms["kl"]),
        "value_nll": mean(-n_R * terms["value"]),
        "uniform_value_nll": mean(-n_R * terms["value_uniform"]),
        "prior_weight": torch.full((), model.prior_weight() if model.prior_active else 0.0, device=device),
    }
    if "teacher_kl" in terms:
        out["teacher_kl"] = mean(terms["teacher_kl"])
    with torch.no_grad():  # q's first pick: its Plackett-Luce distribution over all predicted slots
        first_BL = scores_RL[::k].float().masked_fill(~batch.target, float("-inf")).softmax(-1).nan_to_num(0.0)
        has_B = (n_B > 0).float()
        for kind_id, kind in enumerate(model.spec.kinds):
            mass_B = (first_BL * (batch.kinds == kind_id)).sum(1)
            out[f"first_{kind.name}"] = (mass_B * has_B).sum() / has_B.sum().clamp_min(1.0)
    return out


def elbo_estimate(
    model: LearnedOrderModel, batch: TokenBatch, *, k: int, steps: int = 1, rloo: bool = False
) -> dict[str, torch.Tensor]:
    """ELBO pieces from ``k`` orders of q per item and ``steps`` stratified steps per order.

    The predicted steps ``0 .. n-1`` of an item are cut into ``steps`` contiguous
    strata; one step is drawn uniformly inside each (the same steps for the item's
    k orders: common random numbers) and ``sum_strata size * [log p(x_{z_t} | ...)
    + log p(z_t | ...)]`` is an unbiased estimate of log p(x, z). ``steps = 1`` is
    the plain single-step estimator; ``steps = n`` is exact.

    Args:
        model: the learned-order model (backbone, order head, posterior).
        batch: the items.
        k: orders per item drawn from q (global torch RNG).
        steps: stratified steps per order.
        rloo: add the RLOO surrogate and entropy bonus to ``loss`` (when gradients are on).

    Returns:
        scalars: ``loss`` (negative ELBO per predicted slot, plus zero-valued
        gradient terms), ``elbo_slot``, ``p_entropy``, ``q_entropy``, ``log_open``
        (log of the number of open slots) and ``logit_std``, averaged over rows.
    """
    B = batch.batch_size
    device = batch.values.device
    n_pred_B = batch.target.sum(1)
    rep, scores_RL, order, logq_R = model.posterior_orders(batch, k)
    R = rep.batch_size
    m_M = torch.arange(steps, device=device)
    lo_BM = (m_M[None, :] * n_pred_B[:, None]) // steps
    size_BM = ((m_M[None, :] + 1) * n_pred_B[:, None]) // steps - lo_BM
    step_BM = lo_BM + (torch.rand(B, steps, device=device) * size_BM).long()
    step_BM = torch.minimum(step_BM, (lo_BM + size_BM - 1).clamp_min(0))
    step_S = step_BM.repeat_interleave(k, 0).reshape(-1)  # row r * steps + m
    size_S = size_BM.repeat_interleave(k, 0).reshape(-1).float()
    rows = repeat_items(rep, steps) if steps > 1 else rep
    if steps > 1:
        orders = OrderBatch(order.perm.repeat_interleave(steps, 0), order.block.repeat_interleave(steps, 0))
    else:
        orders = order
    scores_SL = scores_RL.repeat_interleave(steps, 0) if steps > 1 else scores_RL
    one = one_step(model, rows, orders, step_S)
    logp_R = (size_S * (one["value"] + one["order"])).view(R, steps).sum(1)  # unbiased log p(x, z)
    n_R = n_pred_B.repeat_interleave(k).float()
    active_R = n_R > 0
    elbo_slot_R = (logp_R - logq_R.detach()) / n_R.clamp_min(1.0)
    w_R = active_R.float() / active_R.float().sum().clamp_min(1.0)
    loss = -(elbo_slot_R * w_R).sum()
    live_S = one["has_B"] & (size_S > 0)
    w_S = live_S.float() / live_S.float().sum().clamp_min(1.0)
    q_entropy_S = masked_entropy(scores_SL, one["open_BL"])
    if rloo and torch.is_grad_enabled():
        f_BK = (logp_R - logq_R).detach().view(B, k)
        active_B = n_pred_B > 0
        weight_B = active_B.float() / n_pred_B.clamp_min(1).float()
        scale = B / max(int(active_B.sum()), 1)  # mean over the items that have slots
        loss = loss + scale * rloo_surrogate(logq_R.view(B, k), f_BK, weight_B)
        if model.options.entropy_bonus > 0:
            ent = ((one["p_entropy"] + q_entropy_S) * w_S).sum()
            loss = loss - model.options.entropy_bonus * (ent - ent.detach())
    return {
        "loss": loss,
        "elbo_slot": (elbo_slot_R.detach() * w_R).sum(),
        "p_entropy": (one["p_entropy"].detach() * w_S).sum(),
        "q_entropy": (q_entropy_S.detach() * w_S).sum(),
        "log_open": (one["log_open"] * w_S).sum(),
        "logit_std": (one["logit_std"].detach() * w_S).sum(),
    }
