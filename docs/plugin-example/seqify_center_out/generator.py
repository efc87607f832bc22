"""A generator with its own settings schema, written against the public API only.

``BagOfSlots`` predicts each slot from the *average* of what is known so far (the
values and places of the given and already generated slots) and the place of the
slot to predict: a small MLP, no attention. It trains and scores in any order with
blocks of one, and interprets every budget's size name through its own ``sizes``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from seqify.errors import NotApplicableError
from seqify.nn import SlotEmbedding, check_batch, check_temperature, gumbel_noise, pick_values, restricted_log_softmax
from seqify.protocols import BaseGenerator, GeneratorCaps
from seqify.types import OrderBatch, Scores, TokenBatch, TokenizerSpec


class BagConfig(BaseModel):
    """Settings of :class:`BagOfSlots` (not a transformer's: no d_model, no layers)."""

    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(64, ge=4, description="width of the slot embeddings and of the MLP")
    pool: Literal["mean", "sum"] = Field("mean", description="how the known slots' embeddings are pooled")


class BagOfSlots(nn.Module, BaseGenerator):
    """p(x_slot | known slots) from the mean embedding of the known slots.

    Args:
        spec: the tokenizer's spec.
        config: a :class:`BagConfig` (None: defaults).
    """

    config_model: ClassVar[type[BaseModel]] = BagConfig
    caps: ClassVar[GeneratorCaps] = GeneratorCaps(any_order=True, blocks=False, adaptive=False)
    #: a budget's size name -> this generator's own settings
    sizes: ClassVar[dict[str, dict[str, Any]]] = {
        "micro": {"hidden": 32}, "tiny": {"hidden": 64}, "small": {"hidden": 128},
        "base": {"hidden": 256}, "large": {"hidden": 512},
    }

    def __init__(self, spec: TokenizerSpec, config: BagConfig | None = None):
        super().__init__()
        self.spec = spec
        self.config = config if isinstance(config, BagConfig) else BagConfig.model_validate(config or {})
        h = self.config.hidden
        self.value = nn.Embedding(spec.total_vocab, h)
        self.known_place = SlotEmbedding(spec, h)
        self.target_place = SlotEmbedding(spec, h)
        self.mlp = nn.Sequential(nn.Linear(2 * h, h), nn.GELU(), nn.Linear(h, spec.total_vocab))
        self.register_buffer("kind_mask_KV", spec.kind_mask(), persistent=False)
        self.register_buffer("offsets_K", torch.tensor(spec.vocab_offsets), persistent=False)

    def __repr__(self) -> str:
        return f"BagOfSlots(hidden={self.config.hidden}, vocab={self.spec.total_vocab})"

    def _logp(self, batch: TokenBatch, order: OrderBatch) -> torch.Tensor:
        """``[B, L, V]``: at order position t, log p(value of slot perm[t] | slots before t)."""
        perm_BL = order.perm
        gid_BL = (batch.values + self.offsets_K[batch.kinds]).masked_fill(batch.pad, 0)
        known_BLH = self.value(gid_BL) + self.known_place(batch.kinds, batch.coords)
        known_BLH = known_BLH.masked_fill(batch.pad[..., None], 0.0)
        in_order_BLH = known_BLH.gather(1, perm_BL[..., None].expand_as(known_BLH))
        before_BLH = torch.cumsum(in_order_BLH, 1) - in_order_BLH  # strictly earlier slots only
        count_BL1 = torch.arange(batch.length, device=perm_BL.device).clamp_min(1)[None, :, None]
        target_BLH = self.target_place(batch.kinds, batch.coords)
        target_BLH = target_BLH.gather(1, perm_BL[..., None].expand_as(target_BLH))
        pooled_BLH = before_BLH / count_BL1 if self.config.pool == "mean" else before_BLH
        logits_BLV = self.mlp(torch.cat([pooled_BLH, target_BLH], -1))
        allowed_BLV = self.kind_mask_KV[batch.kinds.gather(1, perm_BL)]
        return restricted_log_softmax(logits_BLV, allowed_BLV)

    @staticmethod
    def _blocks_of_one(order: OrderBatch) -> None:
        if bool(((order.block >= 0).sum(1) != order.num_blocks.clamp_min(0)).any()):
            raise NotApplicableError("BagOfSlots predicts one slot per step: give it blocks of one")

    def loss(self, batch: TokenBatch, order: OrderBatch) -> torch.Tensor:
        """Mean cross-entropy (nats) over the predicted slots."""
        self._blocks_of_one(order)
        logp_BLV = self._logp(batch, order)
        gid_BL = batch.values + self.offsets_K[batch.kinds]
        truth_BL = gid_BL.gather(1, order.perm)
        predicted_BL = batch.target.gather(1, order.perm)
        return F.nll_loss(logp_BLV[predicted_BL], truth_BL[predicted_BL])

    def score(self, batch: TokenBatch, order: OrderBatch | None = None, orderer: Any = None):
        """Exact log p(x_slot | earlier slots) of every predicted slot (one pass)."""
        check_batch(self.spec, batch, who="BagOfSlots")
        if order is None:
            if orderer is None or orderer.adaptive:
                raise NotApplicableError("BagOfSlots needs a fixed order (it is not adaptive)")
            order = orderer.infer_orders(batch, rng=torch.Generator().manual_seed(0))
        order = order.to(batch.values.device)
        order.validate(batch)
        self._blocks_of_one(order)
        with torch.no_grad():
            logp_BLV = self._logp(batch, order)
        gid_BL = batch.values + self.offsets_K[batch.kinds]
        truth_BL = gid_BL.gather(1, order.perm)
        logp_pos_BL = logp_BLV.gather(2, truth_BL[..., None])[..., 0]
        correct_pos_BL = logp_BLV.argmax(-1) == truth_BL
        scored_BL = batch.target
        logp_BL = torch.zeros_like(logp_pos_BL).scatter(1, order.perm, logp_pos_BL).masked_fill(~scored_BL, 0.0)
        correct_BL = torch.zeros_like(correct_pos_BL).scatter(1, order.perm, correct_pos_BL) & scored_BL
        return Scores(logp_BL, correct_BL, scored_BL.clone()), order

    @torch.no_grad()
    def sample(self, template: TokenBatch, orderer: Any, *, rng: torch.Generator, temperature: float = 1.0):
        """Fill the open slots one at a time in the orderer's order."""
        temperature = check_temperature(temperature)
        if orderer.adaptive:
            raise NotApplicableError("BagOfSlots needs a fixed order (it is not adaptive)")
        order = orderer.infer_orders(template, rng=rng).to(template.values.device)
        self._blocks_of_one(order)
        B, L = template.values.shape
        arange_B = torch.arange(B, device=template.values.device)
        values_BL = template.values.masked_fill(~template.given, 0)
        for t in range(int(template.given.sum(1).min()), L):
            logp_BLV = self._logp(template.with_values(values_BL), order)
            slot_B = order.perm[:, t]
            noise_BV = gumbel_noise((B, self.spec.total_vocab), rng, values_BL.device) if temperature > 0 else None
            gid_B = pick_values(logp_BLV[:, t], temperature, noise_BV)
            value_B = gid_B - self.offsets_K[template.kinds[arange_B, slot_B]]
            open_B = template.target[arange_B, slot_B]
            values_BL[arange_B[open_B], slot_B[open_B]] = value_B[open_B]
        return template.with_values(torch.where(template.given, template.values, values_BL))
