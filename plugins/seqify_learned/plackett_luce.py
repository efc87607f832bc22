"""Plackett-Luce orders over the predicted slots: log-probabilities, sampling, and the
score-function pieces the learned order trains with.

A Plackett-Luce distribution with per-slot scores ``s`` draws an order by picking, at
each step, an open slot with probability ``softmax(s)`` over the slots still open; a
whole order is one Gumbel-top-k draw and its log-probability is exact:
``sum_t [s_{z_t} - logsumexp_{j not chosen before t} s_j]``.
"""

from __future__ import annotations

import torch

from seqify.types import OrderBatch, TokenBatch

__all__ = [
    "NEG",
    "plackett_luce_log_prob",
    "plackett_luce_prefix_log_prob",
    "sample_plackett_luce",
    "masked_entropy",
    "rloo_surrogate",
    "repeat_items",
]

#: a finite stand-in for -inf in score tensors (keeps logcumsumexp and its gradient finite)
NEG = -1.0e4


def repeat_items(batch: TokenBatch, k: int) -> TokenBatch:
    """Each item repeated ``k`` times in a row: rows ``b*k .. b*k+k-1`` are item ``b``."""
    idx = torch.arange(batch.batch_size, device=batch.values.device).repeat_interleave(k)
    meta = [batch.meta[i] for i in idx.tolist()] if batch.meta else []
    return TokenBatch(batch.values[idx], batch.kinds[idx], batch.coords[idx], batch.given[idx], batch.pad[idx], meta)


def _plackett_luce_steps(scores_BL: torch.Tensor, order: OrderBatch) -> torch.Tensor:
    """``[B, L]`` log q of each step of ``order``: ``s_{z_t} - logsumexp_{j in z_t..z_end} s_j``
    at the predicted entries (block >= 0), 0 elsewhere."""
    pred_BL = order.block >= 0
    s_BL = scores_BL.float().gather(1, order.perm).masked_fill(~pred_BL, NEG)
    tail_BL = torch.logcumsumexp(s_BL.flip(1), dim=1).flip(1)  # logsumexp over entries >= t
    return torch.where(pred_BL, s_BL - tail_BL, torch.zeros_like(s_BL))


def plackett_luce_log_prob(scores_BL: torch.Tensor, order: OrderBatch) -> torch.Tensor:
    """``[B]`` exact log q(z | x) of a Plackett-Luce order over the predicted slots.

    ``sum_t [s_{z_t} - logsumexp_{j in z_t..z_end} s_j]`` over the predicted entries of
    ``order`` (block >= 0); given and padding slots take no part.

    Args:
        scores_BL: per-slot Plackett-Luce scores (float).
        order: blocks-of-one orders; its predicted entries are the permuted slots.
    """
    return _plackett_luce_steps(scores_BL, order).sum(1)


def plackett_luce_prefix_log_prob(scores_BL: torch.Tensor, order: OrderBatch, step_B: torch.Tensor) -> torch.Tensor:
    """``[B]`` exact log q(z_<step | x): the Plackett-Luce log-probability of the first
    ``step_B`` predicted entries of ``order`` (0 for an empty prefix).

    Args:
        scores_BL: per-slot Plackett-Luce scores (float).
        order: blocks-of-one orders.
        step_B: prefix length per row.
    """
    steps_BL = _plackett_luce_steps(scores_BL, order)
    return torch.where(order.block < step_B[:, None], steps_BL, torch.zeros_like(steps_BL)).sum(1)


def sample_plackett_luce(batch: TokenBatch, scores_BL: torch.Tensor, gumbel_BL: torch.Tensor) -> OrderBatch:
    """One Plackett-Luce order per row by Gumbel-top-k: predicted slots by descending
    ``score + gumbel``; given slots first, padding last (blocks of one)."""
    key_BL = (scores_BL.detach().float() + gumbel_BL.float()).masked_fill(~batch.target, 0.0)
    return OrderBatch.from_priorities(batch, -key_BL)


def masked_entropy(logits_BL: torch.Tensor, mask_BL: torch.Tensor) -> torch.Tensor:
    """``[B]`` entropy (nats) of ``softmax(logits)`` restricted to ``mask``; 0 for empty rows."""
    has_B = mask_BL.any(1)
    safe_BL = mask_BL | ~has_B[:, None]
    logp_BL = logits_BL.float().masked_fill(~safe_BL, float("-inf")).log_softmax(-1)
    ent_B = -(logp_BL.exp() * logp_BL.masked_fill(~safe_BL, 0.0)).sum(-1)
    return torch.where(has_B, ent_B, torch.zeros_like(ent_B))


def rloo_surrogate(logq_BK: torch.Tensor, f_BK: torch.Tensor, weight_B: torch.Tensor) -> torch.Tensor:
    """Scalar whose gradient is the RLOO score-function estimate of -d/dphi E_q[f] (value 0).

    ``-(1/B) sum_b weight_b * mean_k (f_bk - mean_{j != k} f_bj) * d log q(z_bk | x_b)``.

    Args:
        logq_BK: log q of the K orders of each item (differentiable).
        f_BK: the reward ``log p(x, z) - log q(z | x)`` per order (detached here).
        weight_B: per-item weight (1 / predicted slots: the loss is per slot).
    """
    K = f_BK.shape[1]
    if K < 2:
        raise ValueError("the leave-one-out baseline needs at least 2 orders per item")
    f_BK = f_BK.detach()
    baseline_BK = (f_BK.sum(1, keepdim=True) - f_BK) / (K - 1)
    adv_BK = (f_BK - baseline_BK) * weight_B.detach()[:, None]
    return -(adv_BK * (logq_BK - logq_BK.detach())).mean()
