"""A causal any-order transformer in the style of sigma-GPT and RAR.

The sequence follows the order: position 0 holds a BOS token and position ``t > 0``
holds the value of slot ``perm[t-1]`` with that slot's structure embedding (kind,
coordinates, slot index). Every position also carries a *target* embedding of the
slot it must predict, ``perm[t]`` (the double positional encoding of sigma-GPT, the
target-aware position of RAR), so one model trains and generates in any order and
keeps a KV cache at inference.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import ConfigDict
from torch import nn

from seqify.errors import NotApplicableError
from seqify.protocols import GeneratorCaps, Orderer
from seqify.types import OrderBatch, Scores, TokenBatch, TokenizerSpec

from seqify.nn import (
    KVCache,
    SlotEmbedding,
    TransformerConfig,
    TransformerStack,
    build_config,
    check_batch,
    check_temperature,
    clean_structure,
    describe,
    evaluating,
    global_ids,
    gumbel_noise,
    init_weights,
    pick_values,
    restricted_log_softmax,
)

__all__ = ["CausalConfig", "CausalTransformer"]


class CausalConfig(TransformerConfig):
    """Settings of the causal (sigma-GPT / RAR style) transformer."""

    model_config = ConfigDict(extra="forbid")


def _check_blocks_of_one(order: OrderBatch) -> None:
    predicted_B = (order.block >= 0).sum(1)
    if bool((predicted_B != order.num_blocks.clamp_min(0)).any()):
        b = int((predicted_B != order.num_blocks.clamp_min(0)).nonzero()[0, 0])
        biggest = int(torch.bincount(order.block[b][order.block[b] >= 0]).max())
        raise NotApplicableError(
            f"the causal generator predicts one slot per step, but item {b}'s order has a block "
            f"of {biggest} slots; use the 'masked' generator for blocks larger than one"
        )


def _refuse_adaptive(orderer: Orderer) -> None:
    if getattr(orderer, "adaptive", False):
        raise NotApplicableError(
            f"orderer {getattr(orderer, 'name', orderer)!r} is adaptive: it picks each slot from "
            "predictions for every open slot, which the causal generator does not make; "
            "use the 'masked' generator"
        )


class CausalTransformer(nn.Module):
    """Next-slot prediction in any order, with a KV cache for sampling.

    Args:
        spec: the tokenizer's spec (vocabulary per kind, coordinate axes, max_len).
        config: a :class:`CausalConfig` (None: defaults; a dict is validated).
    """

    config_model: ClassVar[type[CausalConfig]] = CausalConfig
    caps: ClassVar[GeneratorCaps] = GeneratorCaps(
        any_order=True, blocks=False, adaptive=False, variable_length=True
    )

    def __init__(self, spec: TokenizerSpec, config: CausalConfig | None = None):
        super().__init__()
        self.spec = spec
        self.config = build_config(self.config_model, config)
        d = self.config.d_model
        self.bos_id = spec.total_vocab
        self.value_embed = nn.Embedding(spec.total_vocab + 1, d)  # + BOS
        self.source_embed = SlotEmbedding(spec, d)  # the slot whose value a position holds
        self.target_embed = SlotEmbedding(spec, d)  # the slot a position must predict
        self.stack = TransformerStack(self.config)
        self.head = nn.Linear(d, spec.total_vocab)
        self.register_buffer("kind_mask_KV", spec.kind_mask(), persistent=False)
        self.register_buffer("offsets_K", torch.tensor(spec.vocab_offsets, dtype=torch.long), persistent=False)
        init_weights(self, self.config.n_layers)

    def __repr__(self) -> str:
        return describe(self, self.config, self.spec)

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ----------------------------------------------------------------- internals

    def _prepare(self, batch: TokenBatch):
        """Global ids and the slot-level source / target structure embeddings."""
        values_BL, kinds_BL, coords_BLC = clean_structure(batch)
        gid_BL = global_ids(values_BL, kinds_BL, self.offsets_K)
        source_BLD = self.source_embed(kinds_BL, coords_BLC)
        target_BLD = self.target_embed(kinds_BL, coords_BLC)
        return gid_BL, kinds_BL, source_BLD, target_BLD

    def _inputs(self, gid_BL, source_BLD, target_BLD, perm_BL, start: int, stop: int) -> torch.Tensor:
        """Input embeddings ``[B, stop - start, D]`` of order positions ``start .. stop-1``."""
        B, L, D = source_BLD.shape
        t_T = torch.arange(start, stop, device=perm_BL.device)
        target_slot_BT = perm_BL[:, start:stop]
        source_slot_BT = perm_BL[:, (t_T - 1).clamp_min(0)]
        value_BT = gid_BL.gather(1, source_slot_BT)
        x_BTD = self.value_embed(value_BT) + source_BLD.gather(1, source_slot_BT[..., None].expand(-1, -1, D))
        if start == 0:
            bos_D = self.value_embed.weight[self.bos_id]
            x_BTD = torch.where((t_T == 0)[None, :, None], bos_D.to(x_BTD.dtype), x_BTD)
        return x_BTD + target_BLD.gather(1, target_slot_BT[..., None].expand(-1, -1, D))

    def _allowed(self, kinds_BL: torch.Tensor, slot_BT: torch.Tensor) -> torch.Tensor:
        return self.kind_mask_KV[kinds_BL.gather(1, slot_BT)]

    def _resolve_order(self, batch: TokenBatch, order: OrderBatch | None, orderer: Orderer | None) -> OrderBatch:
        if order is None:
            if orderer is None:
                raise ValueError("score needs an order or an orderer")
            _refuse_adaptive(orderer)
            order = orderer.infer_orders(batch, rng=torch.Generator().manual_seed(0))
        order = order.to(batch.values.device)
        order.validate(batch)
        _check_blocks_of_one(order)
        return order

    # ----------------------------------------------------------------- training / scoring

    def forward(self, batch: TokenBatch, order: OrderBatch, *, positions: int | None = None) -> torch.Tensor:
        """Log-probabilities ``[B, T, V]`` (float32) of the target slot at each order position.

        Position ``t`` predicts slot ``order.perm[:, t]`` from the values of the slots
        before it in the order; values outside that slot's kind are -inf.

        Args:
            batch: the items (values of the slots before each position are used).
            order: blocks-of-one orders for ``batch``.
            positions: run only the first ``positions`` order positions (default all).
        """
        T = batch.length if positions is None else positions
        gid_BL, kinds_BL, source_BLD, target_BLD = self._prepare(batch)
        x_BTD = self._inputs(gid_BL, source_BLD, target_BLD, order.perm, 0, T)
        h_BTD = self.stack(x_BTD, causal=True)
        logits_BTV = self.head(h_BTD)
        return restricted_log_softmax(logits_BTV, self._allowed(kinds_BL, order.perm[:, :T]))

    def loss(self, batch: TokenBatch, order: OrderBatch) -> torch.Tensor:
        """Mean cross-entropy (nats) over the predicted slots of the batch.

        Args:
            batch: training items (padding and given slots are never predicted).
            order: blocks-of-one orders (given first, padding last).
        """
        _check_blocks_of_one(order)
        perm_BL = order.perm
        gid_BL, kinds_BL, source_BLD, target_BLD = self._prepare(batch)
        x_BLD = self._inputs(gid_BL, source_BLD, target_BLD, perm_BL, 0, batch.length)
        h_BLD = self.stack(x_BLD, causal=True)
        predicted_BL = batch.target.gather(1, perm_BL)  # at each position: is its target predicted
        h_ND = h_BLD[predicted_BL]
        if h_ND.shape[0] == 0:
            raise ValueError("loss: the batch has no slot to predict (every slot is given or padding)")
        target_slot_BL = perm_BL
        allowed_NV = self._allowed(kinds_BL, target_slot_BL)[predicted_BL]
        truth_N = gid_BL.gather(1, target_slot_BL)[predicted_BL]
        logp_NV = restricted_log_softmax(self.head(h_ND), allowed_NV)
        return F.nll_loss(logp_NV, truth_N)

    def score(
        self, batch: TokenBatch, order: OrderBatch | None = None, orderer: Orderer | None = None
    ) -> tuple[Scores, OrderBatch]:
        """Exact log p(x_slot | earlier slots in the order) of every predicted slot.

        One forward pass. Pass ``order``, or a static ``orderer`` whose orders are
        drawn with a fixed seed (adaptive orderers need the 'masked' generator).
        ``order`` wins when both are given.

        Args:
            batch: the items to score.
            order: blocks-of-one orders for ``batch``.
            orderer: used when ``order`` is None.
        """
        check_batch(self.spec, batch, who="causal")
        order = self._resolve_order(batch, order, orderer)
        with evaluating(self):
            logp_BLV = self.forward(batch, order)
        values_BL, kinds_BL, _ = clean_structure(batch)
        gid_BL = global_ids(values_BL, kinds_BL, self.offsets_K)
        perm_BL = order.perm
        truth_BL = gid_BL.gather(1, perm_BL)
        logp_pos_BL = logp_BLV.gather(2, truth_BL[..., None]).squeeze(2)
        correct_pos_BL = logp_BLV.argmax(-1) == truth_BL
        scored_BL = batch.target
        logp_out = torch.zeros_like(logp_pos_BL).scatter(1, perm_BL, logp_pos_BL)
        correct_out = torch.zeros_like(correct_pos_BL).scatter(1, perm_BL, correct_pos_BL)
        return Scores(logp_out.masked_fill(~scored_BL, 0.0), correct_out & scored_BL, scored_BL.clone()), order

    # ----------------------------------------------------------------- sampling

    def sample(
        self,
        template: TokenBatch,
        orderer: Orderer,
        *,
        rng: torch.Generator,
        temperature: float = 1.0,
        use_cache: bool = True,
    ) -> TokenBatch:
        """Fill the non-given slots of ``template``, one slot per step, in the orderer's order.

        Args:
            template: structure and given values (other values are ignored).
            orderer: a static orderer; its order is drawn once with ``rng``.
            rng: CPU generator for the order and the sampling noise.
            temperature: softmax temperature; 0 picks the most likely value.
            use_cache: keep a KV cache and feed one token per step (same samples as without).
        """
        _refuse_adaptive(orderer)
        order = orderer.infer_orders(template, rng=rng)
        samples, _ = self.generate(template, order, rng=rng, temperature=temperature, use_cache=use_cache)
        return samples

    def generate(
        self,
        template: TokenBatch,
        order: OrderBatch,
        *,
        rng: torch.Generator,
        temperature: float = 1.0,
        use_cache: bool = True,
        return_logp: bool = False,
    ) -> tuple[TokenBatch, torch.Tensor | None]:
        """Generate in a given order; optionally also return the step log-probabilities.

        Args:
            template: structure and given values (other values are ignored).
            order: blocks-of-one orders for ``template``.
            rng: CPU generator for the sampling noise (one ``[B, V]`` draw per step).
            temperature: softmax temperature; 0 picks the most likely value.
            use_cache: KV cache (one token per step) or full recomputation of the prefix.
            return_logp: also return ``[B, L, V]`` float32 log-probabilities (temperature
                1) each slot was sampled from (zeros for slots never predicted).

        Returns:
            The samples (slots after an END token become padding) and the log-probabilities or None.
        """
        temperature = check_temperature(temperature)
        check_batch(self.spec, template, values_of=template.given, who="causal")
        order = self._resolve_order(template, order, None)
        spec, device = self.spec, template.values.device
        B, L = template.values.shape
        V = spec.total_vocab
        perm_BL = order.perm
        given_BL, pad_BL = template.given, template.pad
        arange_B = torch.arange(B, device=device)

        values_BL, kinds_BL, coords_BLC = clean_structure(template)
        values_BL = values_BL.masked_fill(~given_BL, 0)
        n_given_B = given_BL.sum(1)
        n_real_B = (~pad_BL).sum(1)
        prefix = int(n_given_B.min())
        end = int(n_real_B.max())
        ended_B = torch.zeros(B, dtype=torch.bool, device=device)
        after_end_BL = torch.zeros(B, L, dtype=torch.bool, device=device)
        logp_out_BLV = torch.zeros(B, L, V, device=device) if return_logp else None
        end_gid = None
        if spec.variable_length:
            end_gid = spec.vocab_offsets[spec.end_kind] + spec.end_value

        with evaluating(self):
            gid_BL = global_ids(values_BL, kinds_BL, self.offsets_K)
            _, _, source_BLD, target_BLD = self._prepare(template)
            cache = KVCache(self.config.n_layers, L) if use_cache else None
            h_BD = None
            if use_cache and prefix < end:
                x_BTD = self._inputs(gid_BL, source_BLD, target_BLD, perm_BL, 0, prefix + 1)
                h_BD = self.stack(x_BTD, causal=True, cache=cache)[:, -1]
            for t in range(prefix, end):
                if not use_cache:
                    x_BTD = self._inputs(gid_BL, source_BLD, target_BLD, perm_BL, 0, t + 1)
                    h_BD = self.stack(x_BTD, causal=True)[:, -1]
                slot_B = perm_BL[:, t]
                logp_BV = restricted_log_softmax(self.head(h_BD), self.kind_mask_KV[kinds_BL[arange_B, slot_B]])
                noise_BV = gumbel_noise((B, V), rng, device) if temperature > 0 else None
                choice_B = pick_values(logp_BV, temperature, noise_BV)
                is_given_B = given_BL[arange_B, slot_B]
                is_pad_B = pad_BL[arange_B, slot_B] | ended_B
                choice_B = torch.where(is_given_B, gid_BL[arange_B, slot_B], choice_B)
                choice_B = torch.where(is_pad_B, torch.zeros_like(choice_B), choice_B)
                gid_BL[arange_B, slot_B] = choice_B
                after_end_BL[arange_B, slot_B] = ended_B & ~pad_BL[arange_B, slot_B]
                if return_logp:
                    predicted_B = ~is_given_B & ~is_pad_B
                    logp_out_BLV[arange_B, slot_B] = torch.where(predicted_B[:, None], logp_BV, 0.0)
                if end_gid is not None:
                    ended_B = ended_B | ((choice_B == end_gid) & ~is_pad_B & ~is_given_B)
                    done_B = ended_B | (t + 1 >= n_real_B)
                    if bool(done_B.all()):
                        after_end_BL |= ended_B[:, None] & (order.rank() > t) & ~pad_BL
                        break
                if use_cache and t + 1 < end:
                    x_BTD = self._inputs(gid_BL, source_BLD, target_BLD, perm_BL, t + 1, t + 2)
                    h_BD = self.stack(x_BTD, causal=True, cache=cache)[:, -1]

        new_pad_BL = pad_BL | after_end_BL
        out_values_BL = (gid_BL - self.offsets_K[kinds_BL]).masked_fill(new_pad_BL, 0)
        out_values_BL = torch.where(given_BL, template.values, out_values_BL)
        samples = TokenBatch(
            out_values_BL,
            template.kinds.masked_fill(after_end_BL, 0),
            template.coords.masked_fill(after_end_BL[..., None], 0),
            given_BL & ~after_end_BL,
            new_pad_BL,
            [dict(m) for m in template.meta],
        )
        return samples, logp_out_BLV
