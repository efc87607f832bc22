"""What the two learned-order models share: the variational posterior q and its
structural prior, the training progress and its schedules, the optimizer groups, and
the Generator members built on an exact ``walk`` along an order (``score``,
``estimate``, ``sample``).

:class:`~seqify_learned.model.LearnedOrderModel` (the masked generator, LO-ARM's
exact-next estimator) and :class:`~seqify_learned.causal_model.CausalLearnedOrderModel`
(the causal generator, a whole-order reward) subclass :class:`LearnedOrderBase`; each
adds its order policy p, ``walk``, ``loss_with_stats`` and ``sample_with_orders``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from seqify.nn import check_batch, clean_structure, evaluating, global_ids, gumbel_noise
from seqify.types import OrderBatch, Scores, TokenBatch, TokenizerSpec

from seqify_learned.options import LearnedOptions
from seqify_learned.plackett_luce import NEG, plackett_luce_log_prob, repeat_items, sample_plackett_luce
from seqify_learned.posterior import PosteriorGraph, PosteriorTransformer

__all__ = ["LearnedOrderBase", "head_items"]


def head_items(batch: TokenBatch, n: int) -> TokenBatch:
    """The first ``n`` items of a batch (a view; nothing is copied or mutated)."""
    if batch.batch_size <= n:
        return batch
    return batch.rows(slice(0, n))


#: the estimator parts a training step reports when present (besides the entropies and the bound)
STAT_PARTS = ("order_nll", "uniform_order_nll", "order_cost", "value_nll", "uniform_value_nll", "prior_weight",
              "teacher_kl")

class LearnedOrderBase(nn.Module):
    """The members both learned-order models share (see the module docstring).

    A subclass sets ``options``, ``spec`` and ``generator``, calls :meth:`_build_posterior`
    in its ``__init__``, and implements ``order_parameters``, ``walk``,
    ``loss_with_stats`` and ``sample_with_orders``.
    """

    options: LearnedOptions
    spec: TokenizerSpec
    generator: nn.Module
    #: how ``walk`` scores an order exactly (the modelability note says it)
    scoring: str = "exact"

    def _build_posterior(
        self, d_model: int, order_prior: Callable[[TokenBatch], torch.Tensor | None] | None
    ) -> None:
        """q's network, the prior it is seeded with, and the training progress."""
        self.order_prior = order_prior
        self.prior_active = False  # whether q's last scores had a prior (a statistic)
        self.register_buffer("uses_prior", torch.tensor(order_prior is not None))
        self._uses_prior = order_prior is not None  # the buffer's value, read without a device sync
        posterior_cls = PosteriorGraph if self.options.backbone == "graph" else PosteriorTransformer
        self.posterior = posterior_cls(
            self.spec, d_model=self.options.policy_d_model, n_layers=self.options.policy_layers,
            n_heads=self.options.policy_heads,
        )
        self.register_buffer("offsets_K", torch.tensor(self.spec.vocab_offsets, dtype=torch.long), persistent=False)
        self.progress = 0.0

    @property
    def estimator_name(self) -> str:
        """The training estimator, as ``__repr__`` names it (the option; the causal model's is its own)."""
        return self.options.estimator

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        o = self.options
        return (
            f"{type(self).__name__}(params={n / 1e6:.2f}M, generator={self.generator!r}, posterior={self.posterior!r}, "
            f"estimator={self.estimator_name!r}, orders_per_item={o.orders_per_item}, warm_start={o.warm_start}, "
            f"entropy_bonus={o.entropy_bonus}, q_entropy_bonus={o.q_entropy_bonus}, p_entropy_bonus={o.p_entropy_bonus}, "
            f"policy_lr_scale={o.policy_lr_scale}, policy_weight_decay={o.policy_weight_decay}, score_clip={o.score_clip})"
        )

    def order_parameters(self) -> list[nn.Parameter]:  # pragma: no cover - abstract
        """The order policy p's and the posterior q's parameters (not the generator's)."""
        raise NotImplementedError

    def walk(self, batch: TokenBatch, order: OrderBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # pragma: no cover
        """Exact per-slot ``(value_BL, order_BL, correct_BL)`` along ``order``."""
        raise NotImplementedError

    def sample_with_orders(self, template: TokenBatch, *, rng: torch.Generator, temperature: float = 1.0,
                           top_k: int | None = None, top_p: float | None = None):  # pragma: no cover
        """``(samples, orders, entropy_T)``."""
        raise NotImplementedError

    def loss_with_stats(self, batch: TokenBatch, order: OrderBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # pragma: no cover
        """The training loss and this step's statistics."""
        raise NotImplementedError

    def _stats(self, parts: dict[str, torch.Tensor], *, phase: int) -> dict[str, torch.Tensor]:
        """The training series of one step from an estimator's parts: detached 0-dim
        tensors on the parts' device (no host sync), ``phase`` among them."""
        stats = {
            "policy_entropy": parts["p_entropy"],
            "q_entropy": parts["q_entropy"],
            "policy_entropy_deficit": parts["log_open"] - parts["p_entropy"],
            "q_entropy_deficit": parts["log_open"] - parts["q_entropy"],
            "order_logit_std": parts["logit_std"],
            "elbo_nats_per_slot": parts["elbo_slot"],
        }
        for name in STAT_PARTS:
            if name in parts:
                stats[name] = parts[name]
        stats.update({name: v for name, v in parts.items() if name.startswith("first_")})
        device = parts["elbo_slot"].device
        return {name: v.detach() for name, v in stats.items()} | {"phase": torch.full((), float(phase), device=device)}

    def _upgrade_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint written before the prior existed: its missing ``uses_prior``
        means q was trained without one."""
        if "uses_prior" not in state:
            state["uses_prior"] = torch.tensor(False)
            self.order_prior = None
        self._uses_prior = bool(state["uses_prior"])
        return state

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """As :meth:`torch.nn.Module.load_state_dict`, and older checkpoints still load
        (a missing ``uses_prior`` means q was trained without a prior)."""
        return super().load_state_dict(self._upgrade_state(dict(state_dict)), strict=strict, assign=assign)

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups: the generator at ``lr`` with ``weight_decay``; the
        order policy and posterior at ``lr * policy_lr_scale`` with ``policy_weight_decay``
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

    # ----------------------------------------------------------------- the posterior q

    def _clip(self, raw: torch.Tensor) -> torch.Tensor:
        c = self.options.score_clip
        return c * torch.tanh(raw.float() / c)

    def prior_weight(self, progress: float | None = None) -> float:
        """The weight of the tokenizer's prior in q's scores at ``progress`` (default:
        the current progress while training, the end of training otherwise): 1 until
        ``prior_anneal_start``, then linear to ``prior_final`` at the end."""
        if progress is None:
            progress = self.progress if self.training else 1.0
        o = self.options
        if progress <= o.prior_anneal_start:
            return 1.0
        span = max(1.0 - o.prior_anneal_start, 1e-9)
        return 1.0 + (o.prior_final - 1.0) * min(1.0, (progress - o.prior_anneal_start) / span)

    def prior_scores(self, batch: TokenBatch) -> torch.Tensor | None:
        """``[B, L]`` the prior's Plackett-Luce scores ``-rank / prior_temperature`` (rank
        among the predicted slots by the tokenizer's priority, ties by slot index), or
        None when q has no prior."""
        if not self._uses_prior:
            return None
        if self.order_prior is None:
            raise ValueError(
                "this learned-order model was trained with its tokenizer's order prior, which it was not given: "
                "build it with LearnedOrder.wrap(generator, spec, tokenizer=...)"
            )
        priority_BL = self.order_prior(batch)
        if priority_BL is None:
            return None
        priority_BL = priority_BL.to(batch.values.device).float().masked_fill(~batch.target, float("inf"))
        rank_BL = priority_BL.argsort(dim=1, stable=True).argsort(dim=1).float()
        return -rank_BL / self.options.prior_temperature

    def posterior_scores(self, batch: TokenBatch) -> torch.Tensor:
        """``[B, L]`` q's Plackett-Luce scores: the learned residual (bounded), plus the
        annealed prior's scores when there is one; ``NEG`` outside the predicted slots."""
        scores_BL = self._clip(self.posterior(batch))
        prior_BL = self.prior_scores(batch)
        self.prior_active = prior_BL is not None
        if prior_BL is not None:
            weight = self.prior_weight()
            if weight > 0:
                scores_BL = scores_BL + weight * prior_BL
        return scores_BL.masked_fill(~batch.target, NEG)

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

    def first_pick_stats(self, batch: TokenBatch, scores_BL: torch.Tensor) -> dict[str, torch.Tensor]:
        """``first_<kind>``: q's probability of filling a slot of that kind first
        (its Plackett-Luce distribution over all predicted slots), averaged over the
        items that have a slot to predict (detached 0-dim tensors)."""
        with torch.no_grad():
            first_BL = scores_BL.float().masked_fill(~batch.target, float("-inf")).softmax(-1).nan_to_num(0.0)
            has_B = batch.target.any(1).float()
            out = {}
            for kind_id, kind in enumerate(self.spec.kinds):
                mass_B = (first_BL * (batch.kinds == kind_id)).sum(1)
                out[f"first_{kind.name}"] = (mass_B * has_B).sum() / has_B.sum().clamp_min(1.0)
        return out

    def true_ids(self, batch: TokenBatch) -> torch.Tensor:
        """``[B, L]`` global vocabulary ids of the batch's values."""
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

    # ----------------------------------------------------------------- training entry points

    def loss(self, batch: TokenBatch, order: OrderBatch) -> torch.Tensor:
        """Training loss in nats per predicted slot (the first element of :meth:`loss_with_stats`).

        Args:
            batch: training items.
            order: orders from the orderer (used only during the warm start).
        """
        return self.loss_with_stats(batch, order)[0]

    def progress_note(self) -> str:
        """Whether the policy is learning, from the last training step's statistics (a
        one-step estimate, for the progress line): order NLL against a uniform order's
        (nats per item), q's entropy deficit (nats per slot) and the spread of p's logits."""
        stats = getattr(self, "last_stats", None)
        if not stats or "order_nll" not in stats:
            return "policy: no statistics yet"
        get = {name: float(v) for name, v in stats.items()}
        return (f"policy: order NLL {get['order_nll']:.1f} vs uniform {get['uniform_order_nll']:.1f} nats, "
                f"q entropy deficit {get['q_entropy_deficit']:.3f} nats/slot, p logit spread {get['order_logit_std']:.3f}")

    # ----------------------------------------------------------------- exact scoring

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

    def sample(
        self, template: TokenBatch, orderer: Any = None, *, rng: torch.Generator, temperature: float = 1.0,
        top_k: int | None = None, top_p: float | None = None,
    ) -> TokenBatch:
        """Fill the non-given slots of ``template`` (:meth:`sample_with_orders` without
        the orders).

        Args:
            template: structure and given values (other values are ignored).
            orderer: accepted for the Generator protocol and ignored: the order is the model's.
            rng: CPU generator for all sampling noise.
            temperature: value softmax temperature; 0 picks the most likely value.
            top_k, top_p: restrict each value draw (:func:`seqify.nn.truncate_logits`; None: off).
        """
        return self.sample_with_orders(template, rng=rng, temperature=temperature, top_k=top_k, top_p=top_p)[0]
