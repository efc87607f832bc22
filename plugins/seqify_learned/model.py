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

Modules: :mod:`~seqify_learned.plackett_luce` (q's order distribution),
:mod:`~seqify_learned.posterior` (q's networks), :mod:`~seqify_learned.estimators` (the
two ELBO estimators), :mod:`~seqify_learned.base` (q, its prior, scoring and the
training entry points, shared with the causal generator's
:class:`~seqify_learned.causal_model.CausalLearnedOrderModel`); this one holds the
model that ties them to the masked generator. The public names of those modules are
importable from here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from seqify.errors import NotApplicableError
from seqify.nn import check_batch, check_temperature, clean_structure, evaluating, gumbel_noise, pick_values
from seqify.types import OrderBatch, TokenBatch, TokenizerSpec

from seqify_learned import estimators
from seqify_learned.base import LearnedOrderBase, head_items
from seqify_learned.estimators import confidence_features
from seqify_learned.options import LearnedOptions
from seqify_learned.plackett_luce import (
    masked_entropy,
    plackett_luce_log_prob,
    plackett_luce_prefix_log_prob,
    repeat_items,
    rloo_surrogate,
    sample_plackett_luce,
)
from seqify_learned.posterior import PosteriorGraph, PosteriorTransformer, slot_graph

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
    "confidence_features",
]

#: the confidence features of a slot's value distribution (:func:`confidence_features`)
_N_CONFIDENCE = 3

#: the training statistics the estimators report, by series name (see ``loss_with_stats``)


class LearnedOrderModel(LearnedOrderBase):
    """A masked generator with a learned order policy and a variational order posterior.

    A :class:`~seqify.protocols.TrainableModel`: it has the Generator methods
    (``loss``, ``score``, ``sample``) so the runner trains, scores, samples and
    checkpoints it in place of the bare generator, and the training hooks
    ``set_progress`` and ``loss_with_stats``.

    Args:
        generator: a generator with ``caps.hidden_states`` (the
            :class:`~seqify.protocols.HiddenStates` members ``encode(batch, known_BL) ->
            (hidden_BLD, logp_BLV)`` and ``hidden_size``) and a ``loss(batch, order)``
            for the warm start (``MaskedTransformer``).
        spec: the tokenizer's spec.
        options: a :class:`~seqify_learned.options.LearnedOptions` (None: defaults).
        order_prior: the tokenizer's :meth:`~seqify.protocols.Tokenizer.order_prior`
            (priorities, lower first), added to q's scores as ``-rank / prior_temperature``
            (times the annealed weight); None: q starts uniform. Not saved with the
            weights: a model trained with it records so (``uses_prior``) and refuses to
            score without it.
    """

    scoring = "sequential unmasking"

    def __init__(
        self, generator: nn.Module, spec: TokenizerSpec, options: LearnedOptions | None = None, *,
        order_prior: Callable[[TokenBatch], torch.Tensor | None] | None = None,
    ):
        super().__init__()
        d_model = getattr(generator, "hidden_size", None)
        if not callable(getattr(generator, "encode", None)) or not isinstance(d_model, int):
            raise NotApplicableError(
                "the learned orderer reads the generator's hidden states: it needs the HiddenStates members "
                "encode(batch, known_BL) -> (hidden_BLD, logp_BLV) and hidden_size (caps.hidden_states; "
                f"the 'masked' generator has them), which {type(generator).__name__} lacks"
            )
        if spec.variable_length:
            raise NotApplicableError("the learned orderer needs a fixed-length tokenizer")
        self.options = options if options is not None else LearnedOptions()
        self.spec = spec
        self.generator = generator
        self.order_head = nn.Linear(d_model, 1)
        nn.init.zeros_(self.order_head.weight)  # p starts uniform; a seeded q gives it a gradient at once
        nn.init.zeros_(self.order_head.bias)
        self._build_posterior(d_model, order_prior)
        # built after q, so that q's initial weights are drawn as before these existed
        self.n_kinds = len(spec.kinds)
        self.feature_mlp: nn.Module | None = None
        if self.options.policy_features:  # confidence features a linear head cannot compute (margin, entropy)
            self.feature_mlp = nn.Sequential(
                nn.Linear(_N_CONFIDENCE + self.n_kinds, 32), nn.GELU(), nn.Linear(32, 1)
            )
            nn.init.zeros_(self.feature_mlp[2].weight)  # a zero residual: p still starts from the head alone
            nn.init.zeros_(self.feature_mlp[2].bias)
        self.margin_scale: nn.Parameter | None = None
        if self.options.margin_init > 0:  # p = margin_init x margin at step 0 (plays like margin inference)
            self.margin_scale = nn.Parameter(torch.tensor(float(self.options.margin_init)))

    def order_parameters(self) -> list[nn.Parameter]:
        """The order policy's head (and its confidence MLP and margin scale) and the
        posterior q (not the generator)."""
        params = list(self.order_head.parameters())
        if self.feature_mlp is not None:
            params += list(self.feature_mlp.parameters())
        if self.margin_scale is not None:
            params.append(self.margin_scale)
        return params + list(self.posterior.parameters())

    def _upgrade_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint written before the confidence MLP and the prior existed still
        loads: its missing MLP keeps its zero output layer (p then is exactly the old
        head), and a missing ``uses_prior`` means q was trained without a prior."""
        state = super()._upgrade_state(state)
        own = self.state_dict()
        for name in own:
            if name.startswith("feature_mlp.") and name not in state:
                state[name] = own[name]
        return state

    # ----------------------------------------------------------------- pieces

    def order_logits(
        self, hidden_BLD: torch.Tensor, logp_BLV: torch.Tensor | None = None, kinds_BL: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[B, L]`` order logits of the policy p.

        The linear head on the hidden states plus, with ``policy_features``, a small MLP
        over each slot's confidence (:func:`confidence_features` of ``logp_BLV``,
        detached) and kind, bounded together to ``+-score_clip`` (tanh); plus
        ``margin_scale x margin`` when ``margin_init`` is set (unbounded, so a sharp
        margin policy stays sharp).

        Args:
            hidden_BLD: the backbone's hidden states.
            logp_BLV: the generator's log-probabilities (needed with policy_features / margin_init).
            kinds_BL: the slots' kinds (needed with policy_features).
        """
        raw_BL = self.order_head(hidden_BLD).squeeze(-1).float()
        needs = self.feature_mlp is not None or self.margin_scale is not None
        if needs and logp_BLV is None:
            raise ValueError("order_logits: this policy reads the slots' confidence; pass logp_BLV")
        conf_BLC = confidence_features(logp_BLV.detach()) if needs else None
        if self.feature_mlp is not None:
            if kinds_BL is None:
                raise ValueError("order_logits: this policy reads the slots' kinds; pass kinds_BL")
            kind_BLK = nn.functional.one_hot(kinds_BL.clamp(0, self.n_kinds - 1), self.n_kinds).float()
            raw_BL = raw_BL + self.feature_mlp(torch.cat([conf_BLC, kind_BLK], -1)).squeeze(-1)
        logits_BL = self._clip(raw_BL)
        if self.margin_scale is not None:
            logits_BL = logits_BL + self.margin_scale * conf_BLC[..., 1]
        return logits_BL

    # ----------------------------------------------------------------- training

    def loss_with_stats(self, batch: TokenBatch, order: OrderBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss in nats per predicted slot, averaged over items, and this step's statistics.

        Warm start (``progress < warm_start``): the generator's own any-order loss
        under ``order`` (random orders from the orderer); the policy and posterior get
        no gradient. Then: the negative ELBO per predicted slot, by the ``estimator``
        option (:meth:`exact_next_estimate`, LO-ARM's; or :meth:`elbo_estimate`, the
        one-step one). Its value is the negative ELBO estimate; the RLOO and entropy
        terms add gradient, not value.

        The statistics (training mode only; ``{}`` in eval mode) are detached 0-dim
        tensors left on the batch's device, so a step never waits on the host:
        ``policy_entropy``, ``q_entropy`` and their ``*_deficit`` (log of the open
        slots minus the entropy), ``order_logit_std``, ``elbo_nats_per_slot``,
        ``order_nll``, ``uniform_order_nll``, ``order_cost``, ``value_nll``,
        ``uniform_value_nll``, ``first_<kind>`` and ``phase`` (0 in the warm start, 1
        after). In the warm start and with the one-step estimator they come from an
        extra exact-next pass on the first 16 items, without gradient.

        Args:
            batch: training items.
            order: orders from the orderer (used only during the warm start).
        """
        if int(batch.target.sum()) == 0:
            raise ValueError("loss: the batch has no slot to predict (every slot is given or padding)")
        k = self.options.orders_per_item
        if self.warm:
            loss = self.generator.loss(batch, order)
            if not self.training:
                return loss, {}
            with torch.no_grad():
                self.last_stats = self._stats(self.exact_next_estimate(head_items(batch, 16), k=2), phase=0)
            return loss, self.last_stats
        if self.options.estimator == "exact-next":
            if self.options.orders_share_batch and self.training:
                batch = head_items(batch, max(1, -(-batch.batch_size // k)))
            parts = self.exact_next_estimate(batch, k=k, rloo=True)
            if not self.training:
                return parts["loss"], {}
            self.last_stats = self._stats(parts, phase=1)
            return parts["loss"], self.last_stats
        parts = self.elbo_estimate(batch, k=k, rloo=True, steps=self.options.steps_per_order)
        if not self.training:
            return parts["loss"], {}
        with torch.no_grad():  # the same diagnostics as exact-next, on a few items
            diag = self.exact_next_estimate(head_items(batch, 16), k=2)
        self.last_stats = self._stats({**diag, "elbo_slot": parts["elbo_slot"]}, phase=1)
        return parts["loss"], self.last_stats

    def next_slot_terms(
        self, batch: TokenBatch, order: OrderBatch, step_B: torch.Tensor, scores_BL: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """LO-ARM's exact next-slot term at step ``step_B`` of ``order``
        (:func:`seqify_learned.estimators.next_slot_terms`)."""
        return estimators.next_slot_terms(self, batch, order, step_B, scores_BL)

    def exact_next_estimate(self, batch: TokenBatch, *, k: int, rloo: bool = False) -> dict[str, torch.Tensor]:
        """LO-ARM's ELBO estimator from ``k`` prefixes of q per item
        (:func:`seqify_learned.estimators.exact_next_estimate`)."""
        return estimators.exact_next_estimate(self, batch, k=k, rloo=rloo)

    def elbo_estimate(
        self, batch: TokenBatch, *, k: int, steps: int = 1, rloo: bool = False
    ) -> dict[str, torch.Tensor]:
        """The one-step ELBO estimator from ``k`` orders of q per item and ``steps``
        stratified steps per order (:func:`seqify_learned.estimators.elbo_estimate`)."""
        return estimators.elbo_estimate(self, batch, k=k, steps=steps, rloo=rloo)

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
        gid_BL = self.true_ids(batch)
        _, kinds_BL, _ = clean_structure(batch)
        with evaluating(self):
            known_BL = batch.given.clone()
            for t in range(int(batch.target.sum(1).max())):
                hidden_BLD, logp_BLV = self.generator.encode(batch, known_BL)
                open_BL = batch.target & ~known_BL
                safe_BL = open_BL | ~open_BL.any(1, keepdim=True)
                logits_BL = self.order_logits(hidden_BLD, logp_BLV, kinds_BL)
                olp_BL = logits_BL.masked_fill(~safe_BL, float("-inf")).log_softmax(-1)
                chosen_BL = slot_block_BL == t
                true_BL = logp_BLV.gather(2, gid_BL[..., None]).squeeze(2).float()
                value_BL = torch.where(chosen_BL, true_BL, value_BL)
                order_BL = torch.where(chosen_BL, olp_BL, order_BL)
                correct_BL = torch.where(chosen_BL, logp_BLV.argmax(-1) == gid_BL, correct_BL)
                known_BL = known_BL | chosen_BL
        scored_BL = batch.target
        return value_BL.masked_fill(~scored_BL, 0.0), order_BL.masked_fill(~scored_BL, 0.0), correct_BL & scored_BL

    # ----------------------------------------------------------------- sampling

    def sample_with_orders(
        self, template: TokenBatch, *, rng: torch.Generator, temperature: float = 1.0,
        top_k: int | None = None, top_p: float | None = None,
    ) -> tuple[TokenBatch, OrderBatch, torch.Tensor]:
        """Fill the non-given slots of ``template``: one backbone pass per slot.

        At each step the order policy picks the next slot (Gumbel-max with noise from
        ``rng``, or its argmax when ``greedy_order``), then that slot's value is drawn at
        ``temperature`` (0: the most likely value). Given slots are kept.

        Args:
            template: structure and given values (other values are ignored).
            rng: CPU generator for all sampling noise.
            temperature: value softmax temperature; 0 picks the most likely value.
            top_k, top_p: restrict each value draw (:func:`seqify.nn.truncate_logits`; None: off).

        Returns:
            ``(samples, orders, entropy_T)``: the filled batch, the generation orders
            chosen (CPU, blocks of one), and the order policy's mean entropy (nats) at
            each of the ``T`` steps over the rows still open (CPU float32).
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
        entropies: list[torch.Tensor] = []
        with evaluating(self):
            for step in range(int(open_BL.sum(1).max())):
                hidden_BLD, logp_BLV = self.generator.encode(template.with_values(values_BL), known_BL)
                logits_BL = self.order_logits(hidden_BLD, logp_BLV, kinds_BL)
                active_B = open_BL.any(1)
                entropies.append(masked_entropy(logits_BL, open_BL)[active_B].mean())
                masked_BL = logits_BL.masked_fill(~open_BL, float("-inf"))
                if not self.options.greedy_order:
                    masked_BL = masked_BL + gumbel_noise((B, L), rng, device)
                slot_B = masked_BL.argmax(1)
                noise_BV = gumbel_noise((B, V), rng, device) if temperature > 0 else None
                gid_B = pick_values(logp_BLV[rows_B, slot_B], temperature, noise_BV, top_k=top_k, top_p=top_p)
                local_B = gid_B - self.offsets_K[kinds_BL[rows_B, slot_B]]
                r, s = rows_B[active_B], slot_B[active_B]
                values_BL = values_BL.clone()
                values_BL[r, s] = local_B[active_B]
                known_BL[r, s] = True
                open_BL[r, s] = False
                step_BL[r, s] = float(step)
        orders = OrderBatch.from_priorities(template, step_BL).to("cpu")
        entropy_T = torch.stack(entropies).float().cpu() if entropies else torch.zeros(0)
        values_BL = torch.where(template.given, template.values, values_BL).masked_fill(template.pad, 0)
        return template.with_values(values_BL), orders, entropy_T
