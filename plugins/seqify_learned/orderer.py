"""The ``learned`` orderer: an LO-ARM-style generation order trained with the generator.

It is a trainable orderer (:class:`~seqify.protocols.TrainableOrderer`): the runner
wraps the generator with :meth:`LearnedOrder.wrap` and trains, scores, samples and
checkpoints the wrapper, and this orderer's ``modelability`` and ``diagnostics`` replace
the default measurement and add order diagnostics. It needs a generator with
``caps.hidden_states`` (the masked generator: :class:`~seqify_learned.model.LearnedOrderModel`,
LO-ARM's exact-next estimator) or the causal generator's block layout
(:class:`~seqify_learned.causal_model.CausalLearnedOrderModel`, a whole-order reward).
When a cell names no generator, it runs on one with hidden states.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel

from seqify.protocols import BaseTrainableOrderer, GeneratorCaps
from seqify.types import OrderBatch, TokenBatch, TokenizerSpec

from seqify_learned.base import LearnedOrderBase
from seqify_learned.causal_model import CausalLearnedOrderModel, causal_option_conflicts, has_block_layout
from seqify_learned.diagnostics import OrderProfile, plot_order_profile, plot_policy_entropy
from seqify_learned.model import LearnedOrderModel
from seqify_learned.options import LearnedOptions

__all__ = ["LearnedOrder"]

#: settings only the causal generator's learned order reads, with their defaults
_CAUSAL_ONLY = {"causal_layout": "block", "policy_trunk_grad": 1.0}

_GRAPH_COORDS = ("i", "j")
#: settings used only after training (scoring, sampling, diagnostics)
_EVAL_ONLY = ("eval_orders", "greedy_order", "diagnostic_items")


class LearnedOrder(BaseTrainableOrderer):
    """Learned generation order (LO-ARM): an order policy on the generator's backbone,
    trained jointly with it through a variational bound with a Plackett-Luce posterior
    q(z | x). On the masked generator: LO-ARM's exact next-slot estimator with RLOO on
    the prefix (or the issue-4 one-step estimator); on the causal generator: K whole
    orders per item, each scored exactly in one pass, RLOO on the whole order. Either
    optionally after a random-order warm start.

    Args:
        **options: fields of :class:`~seqify_learned.options.LearnedOptions`
            (estimator="exact-next", orders_per_item=2, steps_per_order=1, warm_start=0.0,
            entropy_bonus=0.0, q_entropy_bonus=0.0, p_entropy_bonus=0.0, entropy_anneal=0.5, policy_lr_scale=1.0,
            score_clip=10, eval_orders=8, backbone="transformer", policy_d_model=64, policy_layers=2,
            policy_heads=4, greedy_order=False, diagnostic_items=256).
    """

    name = "learned"
    stochastic: ClassVar[bool] = True
    config_model: ClassVar[type[BaseModel]] = LearnedOptions

    def __init__(self, **options: Any):
        self.options = LearnedOptions(**options)

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.options.model_dump().items())
        return f"LearnedOrder({settings})"

    @property
    def train_signature(self) -> str:
        """The settings that change what is trained (cells differing only in evaluation
        settings such as ``greedy_order`` or ``eval_orders`` share one trained model)."""
        keep = self.options.model_dump(exclude=set(_EVAL_ONLY))
        return "LearnedOrder(" + ", ".join(f"{k}={v!r}" for k, v in keep.items()) + ")"

    # ----------------------------------------------------------------- TrainableOrderer protocol

    def check(self, spec: TokenizerSpec, caps: GeneratorCaps) -> str | None:
        """None when the learned order can run with this tokenizer and generator, else why not."""
        if spec.variable_length:
            return (
                "orderer 'learned' chooses among all slots, but this tokenizer is variable-length: "
                "the number of slots is not known before generation"
            )
        if getattr(spec, "grows", False):
            return ("orderer 'learned' orders all of an item's slots at once, but this tokenizer grows its items "
                    "step by step as they are decoded (next_slots): the slots are not known before generation")
        if not caps.hidden_states and not (caps.any_order and caps.blocks and not caps.adaptive):
            return (
                "orderer 'learned' reads its order policy off the generator's states: it needs a generator with "
                "caps.hidden_states (encode() and hidden_size; 'masked') or a causal any-order generator with the "
                "block layout (caps.any_order and caps.blocks; 'causal')"
            )
        if not caps.hidden_states:
            conflict = causal_option_conflicts(self.options)
            if conflict is not None:
                return f"orderer 'learned': {conflict}"
        else:
            causal_only = [f"{name}={getattr(self.options, name)!r}" for name, default in _CAUSAL_ONLY.items()
                           if getattr(self.options, name) != default]
            if self.options.orders_per_item < 2:
                causal_only.append(f"orders_per_item={self.options.orders_per_item}")
            if causal_only:
                return (f"orderer 'learned': {', '.join(causal_only)}: a setting of the learned order on the 'causal' "
                        "generator (its pass's layout, one whole order per item); the masked generator's estimator "
                        "reads its own states and needs K >= 2 orders per item (RLOO)")
        o = self.options
        if o.estimator == "one-step":
            exact_only = [f"{name}={getattr(o, name)}" for name in ("margin_teacher", "value_spread")
                          if getattr(o, name) > 0] + (["p_from_elbo=False"] if not o.p_from_elbo else [])
            if exact_only:
                return (f"orderer 'learned': {', '.join(exact_only)} act through the exact-next estimator's "
                        "next-slot term; the one-step estimator would ignore them (use estimator='exact-next')")
        if self.options.backbone == "graph":
            if tuple(spec.coord_names) != _GRAPH_COORDS:
                return (
                    "orderer 'learned' with backbone='graph' needs a graph tokenization with coordinates "
                    f"('i', 'j') (node slot (i, i), edge slot (i, j)); this tokenizer has {tuple(spec.coord_names)} "
                    "(use backbone='transformer')"
                )
            if importlib.util.find_spec("torch_geometric") is None:
                return "orderer 'learned' with backbone='graph' needs torch-geometric, which is not installed"
        return None

    def generator_preference(self, caps: GeneratorCaps) -> int:
        """1 for a generator with hidden states (the masked generator, the learned order's
        default), 0 for others: when a cell names no generator, it runs on the masked one."""
        return 1 if caps.hidden_states else 0

    def train_orders(self, batch: TokenBatch, *, progress: float, rng: torch.Generator) -> OrderBatch:
        """Uniformly random orders: the warm start trains the generator on them."""
        priority_BL = torch.rand(batch.values.shape, generator=rng).to(batch.values.device)
        return OrderBatch.from_priorities(batch, priority_BL)

    def wrap(self, generator: torch.nn.Module, spec: TokenizerSpec, tokenizer: Any = None) -> LearnedOrderBase:
        """The generator with this order policy and posterior (what the runner trains):
        a :class:`LearnedOrderModel` for a generator with hidden states (``encode``), a
        :class:`CausalLearnedOrderModel` for one with the causal block layout.

        Args:
            generator: the generator (``caps.hidden_states``, or the causal generator).
            spec: the tokenizer's spec.
            tokenizer: the cell's tokenizer; its ``order_prior`` seeds q when
                ``prior="tokenizer"`` (a tokenizer loaded through the registry without the
                member gets the default, the slots' own order; an ``order_prior`` that
                returns None, or no tokenizer: no prior).
        """
        order_prior = None
        if self.options.prior == "tokenizer" and tokenizer is not None:
            order_prior = getattr(tokenizer, "order_prior", None)
        if not callable(getattr(generator, "encode", None)) and has_block_layout(generator):
            return CausalLearnedOrderModel(generator, spec, self.options, order_prior=order_prior)
        return LearnedOrderModel(generator, spec, self.options, order_prior=order_prior)

    @torch.no_grad()
    def modelability(
        self, model: LearnedOrderBase, table: Any, *, n: int, batch_size: int, device: torch.device, seed: int,
        orders_per_item: int = 1, on_batch: Any = None,
    ) -> dict[str, Any]:
        """Importance-weighted log-likelihood estimate and ELBO on the first ``n`` items.

        Each item is scored along ``eval_orders`` orders from q, each exactly (sequential
        unmasking on the masked generator, one pass of its layout, block or stream, on the causal one); the
        items are repeated K times in one batch.

        Args:
            model: the trained :class:`LearnedOrderModel` or :class:`CausalLearnedOrderModel`.
            table: the test split (a TokenTable).
            n: items to score.
            batch_size: rows per forward pass (items per pass = batch_size // K).
            device: where to run.
            seed: seeds q's orders.
            orders_per_item: accepted for the Orderer protocol and ignored: the
                ``eval_orders`` setting is the number of orders per item.
            on_batch: called with the number of items after each chunk (progress).
        """
        model = _require(model)
        model.eval()
        K = self.options.eval_orders
        rng = torch.Generator().manual_seed(seed)
        n = min(n, len(table))
        chunk = max(1, batch_size // K)
        keys = ("iw", "elbo", "value", "order", "log_q", "correct", "tokens")
        totals = {k: 0.0 for k in keys}
        per_item_iw: list[float] = []
        for start in range(0, n, chunk):
            idx = torch.arange(start, min(n, start + chunk))
            batch = table.batch(idx, device)
            est = model.estimate(batch, K, rng=rng)  # float32: no autocast when scoring
            for k in keys:
                totals[k] += float(est[k].sum())
            per_item_iw.extend((-est["iw"]).tolist())
            if on_batch is not None:
                on_batch(len(idx))
        items = max(n, 1)
        tokens = max(totals["tokens"], 1.0)
        nats = -totals["iw"] / items
        bound = -totals["elbo"] / items
        std = math.sqrt(sum((x - nats) ** 2 for x in per_item_iw) / max(len(per_item_iw) - 1, 1))
        return {
            "nats_per_token": -totals["iw"] / tokens,
            "nats_per_item": nats,
            "bits_per_item": nats / math.log(2),
            "top1_accuracy": totals["correct"] / (tokens * K),
            "sem_nats_per_item": std / math.sqrt(items),
            "tokens_per_item": totals["tokens"] / items,
            "n_items": n,
            "kind": "estimate",
            "note": (
                f"importance-weighted estimate of -log p(x) = -log E_q[p(x, z) / q(z | x)] over generation orders z, "
                f"with {K} orders per item from the posterior q, each log p(x, z) exact by {model.scoring} "
                "(values and order choices); an upper bound on the NLL in expectation, tighter than the bound. "
                "bound_*: the ELBO E_q[log p(x, z) - log q(z | x)], a lower bound on log p(x), so its NLL is an upper "
                "bound; bound = value_nats + order_nats - q_entropy_nats (per item)"
            ),
            "bound_nats_per_item": bound,
            "bound_bits_per_item": bound / math.log(2),
            "bound_nats_per_token": -totals["elbo"] / tokens,
            "bound_kind": "bound",
            "value_nats_per_item": -totals["value"] / items,
            "order_nats_per_item": -totals["order"] / items,
            "q_entropy_nats_per_item": -totals["log_q"] / items,
            "eval_orders": K,
        }

    @torch.no_grad()
    def diagnostics(
        self, model: LearnedOrderBase, table: Any, *, out: Path, train_log: dict[str, Any] | None,
        device: torch.device, seed: int,
    ) -> dict[str, Any]:
        """Sample generation orders from the policy on test templates; plot and summarize.

        Templates are the first ``diagnostic_items`` test items with every non-given
        slot open (given slots stay given, as in completion). Writes
        ``policy_entropy.png`` and ``order_profile.png`` into ``out``.

        Args:
            model: the trained :class:`LearnedOrderModel` or :class:`CausalLearnedOrderModel`.
            table: the test split (a TokenTable).
            out: folder for the pictures.
            train_log: the training log (series of the policy statistics).
            device: where to run.
            seed: seeds the sampled orders and values.
        """
        model = _require(model)
        out = Path(out)
        n = min(self.options.diagnostic_items, len(table))
        rng = torch.Generator().manual_seed(seed)
        profile = OrderProfile(model.spec)
        chunk = 128
        for start in range(0, n, chunk):
            batch = table.batch(torch.arange(start, min(n, start + chunk)), device)
            template = batch.with_values(batch.values.masked_fill(~batch.given, 0))
            _, orders, entropy_T = model.sample_with_orders(template, rng=rng, temperature=1.0)
            profile.add(template, orders, entropy_T.tolist())
        summary = profile.summary()
        plot_policy_entropy(train_log, out / "policy_entropy.png", warm_start=self.options.warm_start)
        plot_order_profile(summary, out / "order_profile.png")
        final = {}
        for name in ("policy_entropy", "q_entropy", "order_logit_std", "elbo_nats_per_slot", "order_nll",
                     "uniform_order_nll", "order_cost", "value_nll", "uniform_value_nll"):
            points = ((train_log or {}).get("series") or {}).get(name) or []
            final[f"final_{name}"] = points[-1][1] if points else None
        return {
            "n_templates": n,
            "greedy_order": self.options.greedy_order,
            **final,
            **summary,
            "files": {"policy_entropy": "policy_entropy.png", "order_profile": "order_profile.png"},
        }


def _require(model: Any) -> LearnedOrderBase:
    if not isinstance(model, LearnedOrderBase):
        raise TypeError(
            "orderer 'learned' needs the model its wrap() returned (a LearnedOrderModel or CausalLearnedOrderModel), "
            f"got {type(model).__name__}"
        )
    return model
