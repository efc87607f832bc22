"""The learned-order model: a masked generator, an order policy on its backbone, and a
variational order posterior.

Generative model (LO-ARM, Wang et al. 2025)::

    p(x, z) = prod_t p(z_t | z_<t, x_{z_<t}) * p(x_{z_t} | z_<=t, x_{z_<t})

The value distribution is the masked generator's; the order policy
p(z_t | ...) is a softmax, over the slots still to fill, of *order logits* read by a
linear head from the same hidden states (one shared backbone). Given slots are known
from the start and never chosen.

Variational posterior q(z | x): a Plackett-Luce distribution whose per-slot scores come
from ONE pass of a small bidirectional network over the fully observed datum, so a
whole order is one Gumbel-top-k draw and log q(z | x) is exact:
``sum_t [s_{z_t} - logsumexp_{j not chosen before t} s_j]``.

Training maximizes the ELBO ``E_q[log p(x, z) - log q(z | x)]``. The default estimator
is LO-ARM's (``estimator="exact-next"``): with ``F(z_<i, x) = sum_{j open} q(j | z_<i, x)
[log p(x_j | .) + log p(z_i = j | .) - log q(j | z_<i, x)]``, the ELBO is
``n * E_{i ~ U(0..n-1)} E_{z_<i ~ q} F(z_<i, x)``. F is exact over the next slot from one
backbone pass; its gradient is exact (every open slot trains the values, weighted by
q; p's order head is fitted to q; q gets the next-step term directly), and only the
prefix's ``log q(z_<i | x)`` takes a score-function gradient, with the leave-one-out
baseline over K prefixes at the same step (RLOO). The issue-4 estimator
(``estimator="one-step"``) is kept for comparison: one sampled next slot per order,
scaled by the number of slots, RLOO on the whole order's log q.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from seqify.errors import NotApplicableError
from seqify.nn import (
    SlotEmbedding,
    TransformerConfig,
    TransformerStack,
    check_batch,
    check_temperature,
    clean_structure,
    evaluating,
    global_ids,
    gumbel_noise,
    init_weights,
    pick_values,
)
from seqify.types import OrderBatch, Scores, TokenBatch, TokenizerSpec

from seqify_learned.options import LearnedOptions

__all__ = [
    "LearnedOrderModel",
    "PosteriorTransformer",
    "PosteriorGraph",
    "plackett_luce_log_prob",
    "plackett_luce_prefix_log_prob",
    "sample_plackett_luce",
    "rloo_surrogate",
    "masked_entropy",
    "repeat_items",
    "slot_graph",
]

#: a finite stand-in for -inf in score tensors (keeps logcumsumexp and its gradient finite)
NEG = -1.0e4


# --------------------------------------------------------------------------- helpers


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


def slot_graph(batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The fully observed graph over the slots of an ``(i, j)`` tokenization.

    Nodes are the slots of all items (flattened ``b * L + l``). Each edge slot (i != j)
    is linked to its two node slots (i, i) and (j, j), both directions (types 0: edge
    slot -> node slot, 1: node slot -> edge slot); two node slots are linked both ways
    (type 2) when their edge slot's value is not 0 (0 = "no bond"). Padding is isolated.

    Returns:
        ``edge_index [2, E]`` and ``edge_type [E]`` (long).
    """
    B, L = batch.values.shape
    device = batch.values.device
    values_BL, _, coords_BLC = clean_structure(batch)
    ci_BL, cj_BL = coords_BLC[..., 0], coords_BLC[..., 1]
    real_BL = ~batch.pad
    node_BL = real_BL & (ci_BL == cj_BL)
    edge_BL = real_BL & (ci_BL != cj_BL)
    n_atoms = int(coords_BLC.max()) + 1 if coords_BLC.numel() else 1
    node_of_BN = torch.full((B, n_atoms), -1, dtype=torch.long, device=device)
    nb, nl = node_BL.nonzero(as_tuple=True)
    node_of_BN[nb, ci_BL[nb, nl]] = nl
    eb, el = edge_BL.nonzero(as_tuple=True)
    ni, nj = node_of_BN[eb, ci_BL[eb, el]], node_of_BN[eb, cj_BL[eb, el]]
    e_flat = eb * L + el
    src, dst, kind = [], [], []
    for n in (ni, nj):
        ok = n >= 0
        n_flat = eb[ok] * L + n[ok]
        src += [e_flat[ok], n_flat]
        dst += [n_flat, e_flat[ok]]
        kind += [torch.zeros_like(n_flat), torch.ones_like(n_flat)]
    bond = (values_BL[eb, el] != 0) & (ni >= 0) & (nj >= 0)
    a_flat, b_flat = eb[bond] * L + ni[bond], eb[bond] * L + nj[bond]
    src += [a_flat, b_flat]
    dst += [b_flat, a_flat]
    kind += [torch.full_like(a_flat, 2), torch.full_like(b_flat, 2)]
    return torch.stack([torch.cat(src), torch.cat(dst)]), torch.cat(kind)


# --------------------------------------------------------------------------- posteriors


class _PosteriorBase(nn.Module):
    """Shared input embedding of the fully observed datum: value + given flag + structure."""

    def __init__(self, spec: TokenizerSpec, d_model: int):
        super().__init__()
        self.spec = spec
        self.d_model = d_model
        self.value_embed = nn.Embedding(spec.total_vocab, d_model)
        self.given_embed = nn.Embedding(2, d_model)
        self.slot_embed = SlotEmbedding(spec, d_model)
        self.out = nn.Linear(d_model, 1)
        self.register_buffer("offsets_K", torch.tensor(spec.vocab_offsets, dtype=torch.long), persistent=False)

    def _embed(self, batch: TokenBatch) -> torch.Tensor:
        values_BL, kinds_BL, coords_BLC = clean_structure(batch)
        gid_BL = global_ids(values_BL, kinds_BL, self.offsets_K)
        return self.value_embed(gid_BL) + self.given_embed(batch.given.long()) + self.slot_embed(kinds_BL, coords_BLC)

    def _zero_out(self) -> None:
        # q starts uniform (a uniformly random order), continuing the warm start smoothly
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)


class PosteriorTransformer(_PosteriorBase):
    """q's scores from a small bidirectional transformer over the full datum (one pass).

    Args:
        spec: the tokenizer's spec.
        d_model: width (default 64).
        n_layers: transformer blocks (default 2).
        n_heads: attention heads (default 4).
    """

    def __init__(self, spec: TokenizerSpec, d_model: int = 64, n_layers: int = 2, n_heads: int = 4):
        super().__init__(spec, d_model)
        self.config = TransformerConfig(d_model=d_model, n_layers=n_layers, n_heads=n_heads)
        self.stack = TransformerStack(self.config)
        init_weights(self, n_layers)
        self._zero_out()

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return f"PosteriorTransformer(params={n / 1e3:.1f}k, d_model={self.d_model}, n_layers={self.config.n_layers})"

    def forward(self, batch: TokenBatch) -> torch.Tensor:
        """``[B, L]`` raw (unclipped) Plackett-Luce scores."""
        pad_BL = batch.pad
        key_mask_BL = (~pad_BL | pad_BL.all(1, keepdim=True)) if bool(pad_BL.any()) else None
        h_BLD = self.stack(self._embed(batch), key_mask_BL=key_mask_BL)
        return self.out(h_BLD).squeeze(-1).float()


class PosteriorGraph(_PosteriorBase):
    """q's scores from TransformerConv layers over :func:`slot_graph` (torch-geometric).

    For graph tokenizations (coords ``("i", "j")``): edge slots talk to their atoms'
    node slots, and bonded atoms to each other.

    Args:
        spec: the tokenizer's spec (coordinates must be ``("i", "j")``).
        d_model: width (default 64).
        n_layers: TransformerConv layers (default 2).
        n_heads: attention heads (default 4; must divide d_model).
    """

    def __init__(self, spec: TokenizerSpec, d_model: int = 64, n_layers: int = 2, n_heads: int = 4):
        if tuple(spec.coord_names) != ("i", "j"):
            raise NotApplicableError(
                f"the graph posterior needs a graph tokenization with coordinates ('i', 'j'), got {tuple(spec.coord_names)}"
            )
        if d_model % n_heads:
            raise ValueError(f"policy_d_model ({d_model}) must be a multiple of policy_heads ({n_heads})")
        from torch_geometric.nn import TransformerConv

        super().__init__(spec, d_model)
        self.n_layers = n_layers
        self.edge_embed = nn.Embedding(3, d_model)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.convs = nn.ModuleList(
            TransformerConv(d_model, d_model // n_heads, heads=n_heads, concat=True, edge_dim=d_model)
            for _ in range(n_layers)
        )
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, d_model))
            for _ in range(n_layers)
        )
        self.ln_out = nn.LayerNorm(d_model)
        self._zero_out()

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return f"PosteriorGraph(params={n / 1e3:.1f}k, d_model={self.d_model}, n_layers={self.n_layers})"

    def forward(self, batch: TokenBatch) -> torch.Tensor:
        """``[B, L]`` raw (unclipped) Plackett-Luce scores."""
        B, L = batch.values.shape
        h_ND = self._embed(batch).reshape(B * L, self.d_model)
        edge_index_2E, edge_type_E = slot_graph(batch)
        edge_attr_ED = self.edge_embed(edge_type_E)
        for norm, conv, mlp in zip(self.norms, self.convs, self.mlps):
            h_ND = h_ND + conv(norm(h_ND), edge_index_2E, edge_attr_ED)
            h_ND = h_ND + mlp(h_ND)
        return self.out(self.ln_out(h_ND)).reshape(B, L).float()


# --------------------------------------------------------------------------- the model


class LearnedOrderModel(nn.Module):
    """A masked generator with a learned order policy and a variational order posterior.

    It has the Generator methods (``loss``, ``score``, ``sample``) so the runner
    trains, scores, samples and checkpoints it in place of the bare generator.

    Args:
        generator: a masked any-order generator with ``encode(batch, known_BL) ->
            (hidden_BLD, logp_BLV)`` and a ``loss(batch, order)`` (``MaskedTransformer``).
        spec: the tokenizer's spec.
        options: a :class:`~seqify_learned.options.LearnedOptions` (None: defaults).
    """

    def __init__(self, generator: nn.Module, spec: TokenizerSpec, options: LearnedOptions | None = None):
        super().__init__()
        if not callable(getattr(generator, "encode", None)):
            raise NotApplicableError(
                f"the learned orderer needs a generator with encode(batch, known) -> (hidden, logp) "
                f"(the 'masked' generator); {type(generator).__name__} has none"
            )
        d_model = getattr(getattr(generator, "config", None), "d_model", None)
        if not isinstance(d_model, int):
            raise NotApplicableError(
                f"the learned orderer reads the width of the generator's hidden states from "
                f"generator.config.d_model; {type(generator).__name__} has no such setting"
            )
        if spec.variable_length:
            raise NotApplicableError("the learned orderer needs a fixed-length tokenizer")
        self.options = options if options is not None else LearnedOptions()
        self.spec = spec
        self.generator = generator
        self.order_head = nn.Linear(d_model, 1)
        nn.init.zeros_(self.order_head.weight)  # the policy starts uniform (a random order)
        nn.init.zeros_(self.order_head.bias)
        posterior_cls = PosteriorGraph if self.options.backbone == "graph" else PosteriorTransformer
        self.posterior = posterior_cls(
            spec, d_model=self.options.policy_d_model, n_layers=self.options.policy_layers,
            n_heads=self.options.policy_heads,
        )
        self.register_buffer("offsets_K", torch.tensor(spec.vocab_offsets, dtype=torch.long), persistent=False)
        self.progress = 0.0
        #: per-step training statistics, read by the training loop after each step
        self.train_stats: dict[str, float] = {}
        #: the orders chosen by the last ``sample`` call (CPU), for diagnostics
        self.last_orders: OrderBatch | None = None
        #: mean entropy (nats) of the order policy at each step of the last ``sample`` call
        self.last_policy_entropy: list[float] = []

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        o = self.options
        return (
            f"LearnedOrderModel(params={n / 1e6:.2f}M, generator={self.generator!r}, posterior={self.posterior!r}, "
            f"estimator={o.estimator!r}, orders_per_item={o.orders_per_item}, warm_start={o.warm_start}, "
            f"entropy_bonus={o.entropy_bonus}, q_entropy_bonus={o.q_entropy_bonus}, "
            f"p_entropy_bonus={o.p_entropy_bonus}, "
            f"policy_lr_scale={o.policy_lr_scale}, policy_weight_decay={o.policy_weight_decay}, "
            f"score_clip={o.score_clip})"
        )

    def order_parameters(self) -> list[nn.Parameter]:
        """The order policy's head and the posterior q (not the generator)."""
        return list(self.order_head.parameters()) + list(self.posterior.parameters())

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups: the generator at ``lr`` with ``weight_decay``; the
        order head and posterior at ``lr * policy_lr_scale`` with ``policy_weight_decay``
        (default: ``weight_decay``, so the defaults train exactly as one group would; 0
        keeps decay from pulling the order scores back to uniform). Each group carries
        its ``lr_scale`` so a schedule can set ``group["lr"] = lr_at(step) * group["lr_scale"]``.

        Args:
            lr: the generator's (peak) learning rate.
            weight_decay: the generator's weight decay.
        """
        scale = self.options.policy_lr_scale
        policy_decay = weight_decay if self.options.policy_weight_decay is None else self.options.policy_weight_decay
        return [
            {"params": list(self.generator.parameters()), "lr": lr, "weight_decay": weight_decay, "lr_scale": 1.0},
            {"params": self.order_parameters(), "lr": lr * scale, "weight_decay": policy_decay, "lr_scale": scale},
        ]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def set_progress(self, fraction: float) -> None:
        """Fraction of training done, in [0, 1]; below ``warm_start`` only the generator trains."""
        self.progress = float(fraction)

    @property
    def warm(self) -> bool:
        """True while training is in the warm-start phase."""
        return self.progress < self.options.warm_start

    # ----------------------------------------------------------------- pieces

    def _clip(self, raw: torch.Tensor) -> torch.Tensor:
        c = self.options.score_clip
        return c * torch.tanh(raw.float() / c)

    def order_logits(self, hidden_BLD: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` order logits of the policy p, bounded to ``+-score_clip`` (tanh)."""
        return self._clip(self.order_head(hidden_BLD).squeeze(-1))

    def posterior_scores(self, batch: TokenBatch) -> torch.Tensor:
        """``[B, L]`` q's Plackett-Luce scores (bounded; ``NEG`` outside the predicted slots)."""
        return self._clip(self.posterior(batch)).masked_fill(~batch.target, NEG)

    def posterior_orders(self, batch: TokenBatch, k: int, *, rng: torch.Generator | None = None):
        """``k`` orders per item from q.

        Args:
            batch: the items (fully observed).
            k: orders per item.
            rng: CPU generator for the Gumbel noise (None: the global torch RNG on the
                batch's device, as in training).

        Returns:
            ``(repeated batch, scores [B*k, L], orders, log q [B*k])``; rows ``b*k ..
            b*k+k-1`` belong to item ``b``.
        """
        scores_BL = self.posterior_scores(batch)
        rep = repeat_items(batch, k)
        scores_RL = scores_BL.repeat_interleave(k, 0)
        if rng is None:
            u = torch.rand(scores_RL.shape, device=scores_RL.device).clamp_min(torch.finfo(torch.float32).tiny)
            gumbel_RL = -torch.log(-torch.log(u))
        else:
            gumbel_RL = gumbel_noise(tuple(scores_RL.shape), rng, scores_RL.device)
        order = sample_plackett_luce(rep, scores_RL, gumbel_RL)
        return rep, scores_RL, order, plackett_luce_log_prob(scores_RL, order)

    def _true_gid(self, batch: TokenBatch) -> torch.Tensor:
        values_BL, kinds_BL, _ = clean_structure(batch)
        return global_ids(values_BL, kinds_BL, self.offsets_K)

    @staticmethod
    def _check_order(batch: TokenBatch, order: OrderBatch) -> OrderBatch:
        order = order.to(batch.values.device)
        order.validate(batch)
        if not torch.equal(order.num_blocks.clamp_min(0), batch.target.sum(1)):
            raise ValueError(
                "the learned-order model generates one slot per step: the order must be blocks of one"
            )
        return order

    def _one_step(self, batch: TokenBatch, order: OrderBatch, step_B: torch.Tensor) -> dict[str, torch.Tensor]:
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
        hidden_BLD, logp_BLV = self.generator.encode(batch, known_BL)
        logits_BL = self.order_logits(hidden_BLD)
        has_B = open_BL.any(1)
        safe_open_BL = open_BL | ~has_B[:, None]
        order_logp_BL = logits_BL.masked_fill(~safe_open_BL, float("-inf")).log_softmax(-1)
        rows_B = torch.arange(B, device=batch.values.device)
        gid_BL = self._true_gid(batch)
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

    # ----------------------------------------------------------------- training

    def loss(self, batch: TokenBatch, order: OrderBatch) -> torch.Tensor:
        """Training loss in nats per predicted slot, averaged over items.

        Warm start (``progress < warm_start``): the generator's own any-order loss
        under ``order`` (random orders from the orderer); the policy and posterior get
        no gradient. Then: the negative ELBO per predicted slot, by the ``estimator``
        option (:meth:`exact_next_estimate`, LO-ARM's; or :meth:`elbo_estimate`, the
        one-step one). Its value is the negative ELBO estimate; the RLOO and entropy
        terms add gradient, not value.

        Args:
            batch: training items.
            order: orders from the orderer (used only during the warm start).
        """
        if int(batch.target.sum()) == 0:
            raise ValueError("loss: the batch has no slot to predict (every slot is given or padding)")
        k = self.options.orders_per_item
        if self.warm:
            loss = self.generator.loss(batch, order)
            if self.training:
                with torch.no_grad():
                    self._record_stats(self.exact_next_estimate(_head(batch, 16), k=2), phase=0)
            return loss
        if self.options.estimator == "exact-next":
            parts = self.exact_next_estimate(batch, k=k, rloo=True)
            if self.training:
                self._record_stats(parts, phase=1)
            return parts["loss"]
        parts = self.elbo_estimate(batch, k=k, rloo=True, steps=self.options.steps_per_order)
        if self.training:
            with torch.no_grad():  # the same diagnostics as exact-next, on a few items
                diag = self.exact_next_estimate(_head(batch, 16), k=2)
            self._record_stats({**diag, "elbo_slot": parts["elbo_slot"]}, phase=1)
        return parts["loss"]

    def _annealed(self, weight: float) -> float:
        o = self.options
        if weight == 0 or self.progress >= o.entropy_anneal:
            return 0.0
        span = max(o.entropy_anneal - o.warm_start, 1e-9)
        return weight * min(1.0, max(0.0, (o.entropy_anneal - self.progress) / span))

    def q_entropy_weight(self) -> float:
        """The annealed weight of the extra entropy term on q at the current progress:
        ``q_entropy_bonus`` at the end of the warm start, falling linearly to 0 at
        ``entropy_anneal`` (0 from then on)."""
        return self._annealed(self.options.q_entropy_bonus)

    def p_entropy_weight(self) -> float:
        """The annealed weight of the entropy term on p (``p_entropy_bonus``, same schedule)."""
        return self._annealed(self.options.p_entropy_bonus)

    def next_slot_terms(
        self, batch: TokenBatch, order: OrderBatch, step_B: torch.Tensor, scores_BL: torch.Tensor
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
        hidden_BLD, logp_BLV = self.generator.encode(batch, known_BL)
        logits_BL = self.order_logits(hidden_BLD)
        p_BL = logits_BL.masked_fill(~safe_BL, float("-inf")).log_softmax(-1)
        q_BL = scores_BL.float().masked_fill(~safe_BL, float("-inf")).log_softmax(-1)
        v_BL = logp_BLV.gather(2, self._true_gid(batch)[..., None]).squeeze(2).float()

        def on_open(x_BL: torch.Tensor) -> torch.Tensor:
            return torch.where(open_BL, x_BL, torch.zeros_like(x_BL))

        q_prob_BL = on_open(q_BL.exp())
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
        }

    def exact_next_estimate(self, batch: TokenBatch, *, k: int, rloo: bool = False) -> dict[str, torch.Tensor]:
        """LO-ARM's ELBO estimator (its Algorithm 1) from ``k`` prefixes of q per item.

        One step ``i`` is drawn uniformly from ``0 .. n-1`` per item (the same for its
        ``k`` prefixes); each prefix ``z_<i`` is the start of a Plackett-Luce order
        drawn from q by Gumbel-top-k. ``F(z_<i, x)`` (:meth:`next_slot_terms`) is an
        unbiased estimate of the ELBO per predicted slot (``n * F`` of the ELBO).

        Args:
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
        rep, scores_RL, order, _ = self.posterior_orders(batch, k)
        step_B = (torch.rand(B, device=device) * n_B).long()
        step_B = torch.minimum(step_B, (n_B - 1).clamp_min(0))
        step_R = step_B.repeat_interleave(k)
        terms = self.next_slot_terms(rep, order, step_R, scores_RL)
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
            for beta, name in ((self.q_entropy_weight(), "q_entropy"), (self.p_entropy_weight(), "p_entropy")):
                if beta != 0:
                    ent = (terms[name] * w_R).sum()
                    loss = loss - beta * (ent - ent.detach())
            if self.options.entropy_bonus > 0:
                ent = ((terms["q_entropy"] + terms["p_entropy"]) * w_R).sum()
                loss = loss - self.options.entropy_bonus * (ent - ent.detach())

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
        }
        with torch.no_grad():  # q's first pick: its Plackett-Luce distribution over all predicted slots
            first_BL = scores_RL[::k].float().masked_fill(~batch.target, float("-inf")).softmax(-1).nan_to_num(0.0)
            has_B = (n_B > 0).float()
            for kind_id, kind in enumerate(self.spec.kinds):
                mass_B = (first_BL * (batch.kinds == kind_id)).sum(1)
                out[f"first_{kind.name}"] = (mass_B * has_B).sum() / has_B.sum().clamp_min(1.0)
        return out

    def elbo_estimate(self, batch: TokenBatch, *, k: int, steps: int = 1, rloo: bool = False) -> dict[str, torch.Tensor]:
        """ELBO pieces from ``k`` orders of q per item and ``steps`` stratified steps per order.

        The predicted steps ``0 .. n-1`` of an item are cut into ``steps`` contiguous
        strata; one step is drawn uniformly inside each (the same steps for the item's
        k orders: common random numbers) and ``sum_strata size * [log p(x_{z_t} | ...)
        + log p(z_t | ...)]`` is an unbiased estimate of log p(x, z). ``steps = 1`` is
        the plain single-step estimator; ``steps = n`` is exact.

        Args:
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
        rep, scores_RL, order, logq_R = self.posterior_orders(batch, k)
        R = rep.batch_size
        m_M = torch.arange(steps, device=device)
        lo_BM = (m_M[None, :] * n_pred_B[:, None]) // steps
        size_BM = ((m_M[None, :] + 1) * n_pred_B[:, None]) // steps - lo_BM
        step_BM = lo_BM + (torch.rand(B, steps, device=device) * size_BM).long()
        step_BM = torch.minimum(step_BM, (lo_BM + size_BM - 1).clamp_min(0))
        step_S = step_BM.repeat_interleave(k, 0).reshape(-1)  # row r * steps + m
        size_S = size_BM.repeat_interleave(k, 0).reshape(-1).float()
        rows = repeat_items(rep, steps) if steps > 1 else rep
        orders = OrderBatch(order.perm.repeat_interleave(steps, 0), order.block.repeat_interleave(steps, 0)) if steps > 1 else order
        scores_SL = scores_RL.repeat_interleave(steps, 0) if steps > 1 else scores_RL
        one = self._one_step(rows, orders, step_S)
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
            if self.options.entropy_bonus > 0:
                ent = ((one["p_entropy"] + q_entropy_S) * w_S).sum()
                loss = loss - self.options.entropy_bonus * (ent - ent.detach())
        return {
            "loss": loss,
            "elbo_slot": (elbo_slot_R.detach() * w_R).sum(),
            "p_entropy": (one["p_entropy"].detach() * w_S).sum(),
            "q_entropy": (q_entropy_S.detach() * w_S).sum(),
            "log_open": (one["log_open"] * w_S).sum(),
            "logit_std": (one["logit_std"].detach() * w_S).sum(),
        }

    def _record_stats(self, parts: dict[str, torch.Tensor], *, phase: int) -> None:
        stats = {
            "policy_entropy": parts["p_entropy"],
            "q_entropy": parts["q_entropy"],
            "policy_entropy_deficit": parts["log_open"] - parts["p_entropy"],
            "q_entropy_deficit": parts["log_open"] - parts["q_entropy"],
            "order_logit_std": parts["logit_std"],
            "elbo_nats_per_slot": parts["elbo_slot"],
        }
        for name in ("order_nll", "uniform_order_nll", "order_cost", "value_nll", "uniform_value_nll"):
            if name in parts:
                stats[name] = parts[name]
        stats.update({name: v for name, v in parts.items() if name.startswith("first_")})
        self.train_stats = {name: float(v) for name, v in stats.items()} | {"phase": float(phase)}

    # ----------------------------------------------------------------- exact scoring

    def walk(self, batch: TokenBatch, order: OrderBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Exact per-slot log-probabilities along ``order`` by sequential unmasking.

        One backbone pass per step (all rows in lockstep).

        Returns:
            ``value_BL`` log p(x_i | ...), ``order_BL`` log p(z_t = i | ...) at each
            predicted slot ``i`` (0 elsewhere), and ``correct_BL`` (most likely value = true).
        """
        order = self._check_order(batch, order)
        B, L = batch.values.shape
        device = batch.values.device
        value_BL = torch.zeros(B, L, device=device)
        order_BL = torch.zeros(B, L, device=device)
        correct_BL = torch.zeros(B, L, dtype=torch.bool, device=device)
        slot_block_BL = order.slot_block()
        gid_BL = self._true_gid(batch)
        with evaluating(self):
            known_BL = batch.given.clone()
            for t in range(int(batch.target.sum(1).max())):
                hidden_BLD, logp_BLV = self.generator.encode(batch, known_BL)
                open_BL = batch.target & ~known_BL
                safe_BL = open_BL | ~open_BL.any(1, keepdim=True)
                olp_BL = self.order_logits(hidden_BLD).masked_fill(~safe_BL, float("-inf")).log_softmax(-1)
                chosen_BL = slot_block_BL == t
                true_BL = logp_BLV.gather(2, gid_BL[..., None]).squeeze(2).float()
                value_BL = torch.where(chosen_BL, true_BL, value_BL)
                order_BL = torch.where(chosen_BL, olp_BL, order_BL)
                correct_BL = torch.where(chosen_BL, logp_BLV.argmax(-1) == gid_BL, correct_BL)
                known_BL = known_BL | chosen_BL
        scored_BL = batch.target
        return value_BL.masked_fill(~scored_BL, 0.0), order_BL.masked_fill(~scored_BL, 0.0), correct_BL & scored_BL

    def score(
        self, batch: TokenBatch, order: OrderBatch | None = None, orderer: Any = None
    ) -> tuple[Scores, OrderBatch]:
        """Exact per-slot ``log p(x_{z_t} | ...) + log p(z_t | ...)`` along one order.

        The order is ``order`` when given (blocks of one), else one draw from q with a
        fixed seed. Summed over slots, ``Scores.logp`` is log p(x, z) (values and
        order), not log p(x).

        Args:
            batch: the items to score.
            order: an order for ``batch`` (None: drawn from q).
            orderer: accepted for the Generator protocol and ignored: the order is the model's.
        """
        check_batch(self.spec, batch, who="learned")
        if order is None:
            with evaluating(self):
                _, _, order, _ = self.posterior_orders(batch, 1, rng=torch.Generator().manual_seed(0))
        value_BL, order_BL, correct_BL = self.walk(batch, order)
        scored_BL = batch.target
        return Scores((value_BL + order_BL).masked_fill(~scored_BL, 0.0), correct_BL, scored_BL.clone()), order

    @torch.no_grad()
    def estimate(self, batch: TokenBatch, k: int, *, rng: torch.Generator) -> dict[str, torch.Tensor]:
        """Per-item log-likelihood estimates from ``k`` orders of q (each scored exactly).

        Returns float64 ``[B]`` tensors: ``iw`` = logsumexp_k [log p(x, z_k) - log q(z_k|x)]
        - log k (importance-weighted estimate of log p(x)), ``elbo`` = mean_k of the same
        (a lower bound), ``value`` / ``order`` / ``log_q`` = mean_k of log p(x | z),
        log p(z) and log q(z | x); ``correct`` = right top-1 values summed over the k
        orders; ``tokens`` = predicted slots.
        """
        with evaluating(self):
            rep, _, order, logq_R = self.posterior_orders(batch, k, rng=rng)
            value_RL, order_RL, correct_RL = self.walk(rep, order)
        B = batch.batch_size
        value_BK = value_RL.double().sum(1).view(B, k)
        order_BK = order_RL.double().sum(1).view(B, k)
        logq_BK = logq_R.double().view(B, k)
        f_BK = value_BK + order_BK - logq_BK
        return {
            "iw": torch.logsumexp(f_BK, 1) - math.log(k),
            "elbo": f_BK.mean(1),
            "value": value_BK.mean(1),
            "order": order_BK.mean(1),
            "log_q": logq_BK.mean(1),
            "correct": correct_RL.sum(1).view(B, k).sum(1).double(),
            "tokens": batch.target.sum(1).double(),
        }

    # ----------------------------------------------------------------- sampling

    def sample(self, template: TokenBatch, orderer: Any = None, *, rng: torch.Generator, temperature: float = 1.0) -> TokenBatch:
        """Fill the non-given slots of ``template``: one backbone pass per slot.

        At each step the order policy picks the next slot (Gumbel-max with noise from
        ``rng``, or its argmax when ``greedy_order``), then that slot's value is drawn at
        ``temperature`` (0: the most likely value). Given slots are kept. The chosen
        orders are left in ``last_orders``.

        Args:
            template: structure and given values (other values are ignored).
            orderer: accepted for the Generator protocol and ignored.
            rng: CPU generator for all sampling noise.
            temperature: value softmax temperature; 0 picks the most likely value.
        """
        temperature = check_temperature(temperature)
        check_batch(self.spec, template, values_of=template.given, who="learned")
        device = template.values.device
        B, L = template.values.shape
        V = self.spec.total_vocab
        rows_B = torch.arange(B, device=device)
        _, kinds_BL, _ = clean_structure(template)
        values_BL = template.values.masked_fill(~template.given, 0)
        known_BL = template.given.clone()
        open_BL = template.target.clone()
        step_BL = torch.zeros(B, L, device=device)
        entropies: list[float] = []
        with evaluating(self):
            for step in range(int(open_BL.sum(1).max())):
                hidden_BLD, logp_BLV = self.generator.encode(template.with_values(values_BL), known_BL)
                logits_BL = self.order_logits(hidden_BLD)
                active_B = open_BL.any(1)
                entropies.append(float(masked_entropy(logits_BL, open_BL)[active_B].mean()))
                masked_BL = logits_BL.masked_fill(~open_BL, float("-inf"))
                if not self.options.greedy_order:
                    masked_BL = masked_BL + gumbel_noise((B, L), rng, device)
                slot_B = masked_BL.argmax(1)
                noise_BV = gumbel_noise((B, V), rng, device) if temperature > 0 else None
                gid_B = pick_values(logp_BLV[rows_B, slot_B], temperature, noise_BV)
                local_B = gid_B - self.offsets_K[kinds_BL[rows_B, slot_B]]
                r, s = rows_B[active_B], slot_B[active_B]
                values_BL = values_BL.clone()
                values_BL[r, s] = local_B[active_B]
                known_BL[r, s] = True
                open_BL[r, s] = False
                step_BL[r, s] = float(step)
        self.last_orders = OrderBatch.from_priorities(template, step_BL).to("cpu")
        self.last_policy_entropy = entropies
        values_BL = torch.where(template.given, template.values, values_BL).masked_fill(template.pad, 0)
        return template.with_values(values_BL)


def _head(batch: TokenBatch, n: int) -> TokenBatch:
    """The first ``n`` items of a batch (a view; nothing is copied or mutated)."""
    if batch.batch_size <= n:
        return batch
    return TokenBatch(
        batch.values[:n], batch.kinds[:n], batch.coords[:n], batch.given[:n], batch.pad[:n], batch.meta[:n]
    )
