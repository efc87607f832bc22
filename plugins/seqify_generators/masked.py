"""A bidirectional any-order (masked) transformer.

Every slot is embedded as its value when known (given, or already generated) or a
MASK token otherwise, plus its structure (kind, coordinates, slot index); full
attention over the non-padding slots gives a value distribution at every slot. It
trains with the any-order / masked-diffusion objective, scores exactly by sequential
unmasking, decodes several slots per step (blocks) and lets an adaptive orderer pick
each next slot from its predictions.

Class conditioning (``condition = true``) adds the item's class embedding to every
slot's input, with a null class for dropped labels (label dropout ``cond_drop`` while
training) that classifier-free guidance samples from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import ConfigDict
from torch import nn

from seqify.errors import NotApplicableError
from seqify.protocols import GeneratorCaps, Orderer
from seqify.types import OrderBatch, Scores, TokenBatch, TokenizerSpec

from seqify_generators.sizes import TRANSFORMER_SIZES

from seqify.nn import (
    ClassEmbedding,
    ConditionConfig,
    SamplingControls,
    SlotEmbedding,
    draw_values,
    guided_logits,
    with_null_rows,
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
    axis_head_mask,
)

__all__ = ["MaskedConfig", "MaskedTransformer"]


class MaskedConfig(TransformerConfig, ConditionConfig):
    """Settings of the bidirectional masked any-order transformer."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class _Prepared:
    """What stays fixed while slots are revealed one block at a time."""

    gid_BL: torch.Tensor  # global ids of the (true or template) values
    structure_BLD: torch.Tensor  # kind + coordinates + slot index embeddings
    key_mask_BL: torch.Tensor | None  # False on padding (None: no padding)
    attn_mask: torch.Tensor | None  # per-head structure-aware mask (axis_heads), padding included
    allowed_BLV: torch.Tensor  # each slot's kind range in the global vocabulary
    class_B1D: torch.Tensor | None = None  # a conditional model's class embedding, added to every slot


class MaskedTransformer(nn.Module):
    """Predicts every masked slot at once from the known ones; any order, blocks, adaptive.

    Args:
        spec: the tokenizer's spec (vocabulary per kind, coordinate axes, max_len).
        config: a :class:`MaskedConfig` (None: defaults; a dict is validated).
        conditions: number of condition classes the data declares (the runner passes
            the modality's :meth:`~seqify.protocols.Modality.num_conditions`); used when
            ``config.condition`` is on, which then needs at least one.
    """

    config_model: ClassVar[type[MaskedConfig]] = MaskedConfig
    caps: ClassVar[GeneratorCaps] = GeneratorCaps(
        any_order=True, blocks=True, adaptive=True, variable_length=False, hidden_states=True
    )
    sizes: ClassVar[dict[str, dict[str, Any]]] = TRANSFORMER_SIZES
    #: below the causal generator: the default only for orderers that need its capabilities
    default_priority: ClassVar[int] = 10
    #: condition classes (0: unconditional; set from ``conditions=`` when ``config.condition`` is on)
    conditions: int = 0
    #: no default has changed since checkpoints recorded the generator's settings
    legacy_config: ClassVar[dict[str, Any]] = {}

    def __init__(self, spec: TokenizerSpec, config: MaskedConfig | None = None, *, conditions: int = 0):
        super().__init__()
        self.spec = spec
        self.config = build_config(self.config_model, config)
        d = self.config.d_model
        #: condition classes of a class-conditional model (0: unconditional)
        self.conditions = int(conditions) if self.config.condition else 0
        if self.config.condition and self.conditions < 1:
            raise ValueError("masked: condition = true needs condition classes, but the data declares none "
                             "(the modality gives no per-item condition for this dataset)")
        self.mask_id = spec.total_vocab
        self.value_embed = nn.Embedding(spec.total_vocab + 1, d)  # + MASK
        self.slot_embed = SlotEmbedding(spec, d)
        self.stack = TransformerStack(self.config)
        self.head = nn.Linear(d, spec.total_vocab)
        self.register_buffer("kind_mask_KV", spec.kind_mask(), persistent=False)
        self.register_buffer("offsets_K", torch.tensor(spec.vocab_offsets, dtype=torch.long), persistent=False)
        if self.conditions:  # created last: an unconditional model draws the same initial weights as before
            self.class_embed = ClassEmbedding(self.conditions, d, self.config.cond_drop)
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

    def _prepare(self, batch: TokenBatch, *, drop: bool = False, required: bool = True) -> _Prepared:
        """What stays fixed while slots are revealed; a conditional model's class from
        ``batch.cond`` (``drop``: label dropout; ``required``: a batch without ``cond``
        is an error, else the null class)."""
        values_BL, kinds_BL, coords_BLC = clean_structure(batch)
        pad_BL = batch.pad
        key_mask_BL = None
        if bool(pad_BL.any()):
            # an all-padding row would leave its queries nothing to attend to
            key_mask_BL = ~pad_BL | pad_BL.all(1, keepdim=True)
        attn_mask = axis_head_mask(coords_BLC, self.config.n_heads, key_mask_BL) if self.config.axis_heads else None
        return _Prepared(
            global_ids(values_BL, kinds_BL, self.offsets_K),
            self.slot_embed(kinds_BL, coords_BLC),
            key_mask_BL,
            attn_mask,
            self.kind_mask_KV[kinds_BL],
            self._class_embedding(batch, drop=drop, required=required),
        )

    def _class_embedding(self, batch: TokenBatch, *, drop: bool, required: bool) -> torch.Tensor | None:
        if not self.conditions:
            return None
        label_B = self.class_embed.labels(batch, drop=drop, required=required, who="masked")
        return self.class_embed(label_B)[:, None]

    def _hidden(self, prep: _Prepared, gid_BL: torch.Tensor, known_BL: torch.Tensor) -> torch.Tensor:
        value_BL = torch.where(known_BL, gid_BL, torch.full_like(gid_BL, self.mask_id))
        x_BLD = self.value_embed(value_BL) + prep.structure_BLD
        if prep.class_B1D is not None:
            x_BLD = x_BLD + prep.class_B1D
        if prep.attn_mask is not None:
            return self.stack(x_BLD, attn_mask=prep.attn_mask)
        return self.stack(x_BLD, key_mask_BL=prep.key_mask_BL)

    def _logp(self, prep: _Prepared, gid_BL: torch.Tensor, known_BL: torch.Tensor) -> torch.Tensor:
        return restricted_log_softmax(self.head(self._hidden(prep, gid_BL, known_BL)), prep.allowed_BLV)

    def _logits(self, prep: _Prepared, gid_BL: torch.Tensor, known_BL: torch.Tensor,
                sampling: SamplingControls) -> torch.Tensor:
        """Logits ``[R, L, V]`` for sampling: ``R = B``, or ``2B`` under guidance (``prep``
        then holds the null-class copies after the items; the state is repeated for them)."""
        if sampling.guided:
            gid_BL, known_BL = torch.cat([gid_BL, gid_BL]), torch.cat([known_BL, known_BL])
        return self.head(self._hidden(prep, gid_BL, known_BL))

    def _resolve_order(self, batch: TokenBatch, order: OrderBatch) -> OrderBatch:
        order = order.to(batch.values.device)
        order.validate(batch)
        return order

    # ----------------------------------------------------------------- training / scoring

    def forward(self, batch: TokenBatch, known_BL: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probabilities ``[B, L, V]`` (float32) of every slot given the known ones.

        Args:
            batch: the items; values are read only where ``known_BL`` is True.
            known_BL: bool, slots whose values the model sees (default: the given slots);
                every other slot is masked. Values outside a slot's kind are -inf.
        """
        known_BL = batch.given if known_BL is None else known_BL
        prep = self._prepare(batch)
        return self._logp(prep, prep.gid_BL, known_BL & ~batch.pad)

    @property
    def hidden_size(self) -> int:
        """Width of the hidden states :meth:`encode` returns."""
        return self.config.d_model

    def encode(self, batch: TokenBatch, known_BL: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states ``[B, L, D]`` and log-probabilities ``[B, L, V]`` given the known slots.

        For components that put extra heads on this backbone (e.g. a learned order
        policy reads the hidden states).
        """
        prep = self._prepare(batch)
        hidden_BLD = self._hidden(prep, prep.gid_BL, known_BL & ~batch.pad)
        return hidden_BLD, restricted_log_softmax(self.head(hidden_BLD), prep.allowed_BLV)

    def loss(self, batch: TokenBatch, order: OrderBatch) -> torch.Tensor:
        """Any-order (masked-diffusion) loss in nats per masked slot, averaged over items.

        For each item a cut ``c`` is drawn uniformly from its predicted blocks
        ``0 .. n_blocks - 1``; blocks ``< c`` and the given slots are visible, every
        other predicted slot is masked. Every masked slot is predicted, or, when
        ``order.next_block_only`` is set, only the slots of block ``c`` (the block a
        parallel decoder fills next; later blocks stay masked but are not scored).

        Args:
            batch: training items.
            order: orders for ``batch`` (any blocks).
        """
        device = batch.values.device
        slot_block_BL = order.slot_block()
        n_blocks_B = order.num_blocks.clamp_min(0)
        cut_B = (torch.rand(batch.batch_size, device=device) * n_blocks_B).long()
        cut_B = torch.minimum(cut_B, (n_blocks_B - 1).clamp_min(0))
        target_BL = batch.target
        known_BL = batch.given | ((slot_block_BL >= 0) & (slot_block_BL < cut_B[:, None]))
        masked_BL = target_BL & (slot_block_BL >= cut_B[:, None])
        if order.next_block_only:
            masked_BL = target_BL & (slot_block_BL == cut_B[:, None])
        prep = self._prepare(batch, drop=self.training)
        h_BLD = self._hidden(prep, prep.gid_BL, known_BL & ~batch.pad)
        h_ND = h_BLD[masked_BL]
        if h_ND.shape[0] == 0:
            raise ValueError("loss: the batch has no slot to predict (every slot is given or padding)")
        logp_NV = restricted_log_softmax(self.head(h_ND), prep.allowed_BLV[masked_BL])
        nll_N = -logp_NV.gather(1, prep.gid_BL[masked_BL][:, None]).squeeze(1)
        item_N = masked_BL.nonzero()[:, 0]
        B = batch.batch_size
        total_B = torch.zeros(B, device=device).index_add(0, item_N, nll_N)
        count_B = masked_BL.sum(1)
        has_B = count_B > 0
        return (total_B[has_B] / count_B[has_B]).mean()

    def score(
        self, batch: TokenBatch, order: OrderBatch | None = None, orderer: Orderer | None = None
    ) -> tuple[Scores, OrderBatch]:
        """Exact log-likelihood of every predicted slot by sequential unmasking.

        With ``order``: one forward pass per block (the blocks of all items in
        lockstep), each slot scored from the given slots and the earlier blocks, then
        the block's true values are revealed. With an adaptive ``orderer``: one pass per
        slot, the orderer picks the next slot from the predictions, which is scored and
        revealed; the chosen order is returned. A static ``orderer`` is used through
        its ``infer_orders`` with a fixed seed. ``order`` wins when both are given.

        Args:
            batch: the items to score.
            order: orders for ``batch``.
            orderer: used when ``order`` is None.
        """
        check_batch(self.spec, batch, who="masked")
        if order is None:
            if orderer is None:
                raise ValueError("score needs an order or an orderer")
            if getattr(orderer, "adaptive", False):
                return self._score_adaptive(batch, orderer)
            order = orderer.infer_orders(batch, rng=torch.Generator().manual_seed(0))
        order = self._resolve_order(batch, order)
        B, L = batch.values.shape
        logp_BL = torch.zeros(B, L, device=batch.values.device)
        correct_BL = torch.zeros(B, L, dtype=torch.bool, device=batch.values.device)
        slot_block_BL = order.slot_block()
        with evaluating(self):
            prep = self._prepare(batch)
            known_BL = batch.given.clone()
            for k in range(int(order.num_blocks.max().clamp_min(0))):
                in_block_BL = slot_block_BL == k
                logp_BLV = self._logp(prep, prep.gid_BL, known_BL)
                true_BL = logp_BLV.gather(2, prep.gid_BL[..., None]).squeeze(2)
                logp_BL = torch.where(in_block_BL, true_BL, logp_BL)
                correct_BL = torch.where(in_block_BL, logp_BLV.argmax(-1) == prep.gid_BL, correct_BL)
                known_BL = known_BL | in_block_BL
        scored_BL = batch.target
        return Scores(logp_BL.masked_fill(~scored_BL, 0.0), correct_BL & scored_BL, scored_BL.clone()), order

    def _score_adaptive(self, batch: TokenBatch, orderer: Orderer) -> tuple[Scores, OrderBatch]:
        device = batch.values.device
        B, L = batch.values.shape
        arange_B = torch.arange(B, device=device)
        logp_BL = torch.zeros(B, L, device=device)
        correct_BL = torch.zeros(B, L, dtype=torch.bool, device=device)
        step_BL = torch.zeros(B, L, device=device)
        with evaluating(self):
            prep = self._prepare(batch)
            known_BL = batch.given.clone()
            open_BL = batch.target.clone()
            for step in range(int(open_BL.sum(1).max())):
                logp_BLV = self._logp(prep, prep.gid_BL, known_BL)
                slot_B, active_B = self._select(orderer, logp_BLV, open_BL)
                truth_B = prep.gid_BL[arange_B, slot_B]
                logp_B = logp_BLV[arange_B, slot_B, truth_B]
                correct_B = logp_BLV[arange_B, slot_B].argmax(-1) == truth_B
                rows_A, slots_A = arange_B[active_B], slot_B[active_B]
                logp_BL[rows_A, slots_A] = logp_B[active_B]
                correct_BL[rows_A, slots_A] = correct_B[active_B]
                step_BL[rows_A, slots_A] = float(step)
                known_BL[rows_A, slots_A] = True
                open_BL[rows_A, slots_A] = False
        scored_BL = batch.target
        order = OrderBatch.from_priorities(batch, step_BL)
        return Scores(logp_BL.masked_fill(~scored_BL, 0.0), correct_BL & scored_BL, scored_BL.clone()), order

    @staticmethod
    def _select(orderer: Orderer, logp_BLV: torch.Tensor, open_BL: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The adaptive orderer's next slot per row, and which rows still have one."""
        active_B = open_BL.any(1)
        slot_B = orderer.select(logp_BLV, open_BL).to(open_BL.device).long()
        arange_B = torch.arange(open_BL.shape[0], device=open_BL.device)
        bad_B = active_B & ~open_BL[arange_B, slot_B.clamp(0, open_BL.shape[1] - 1)]
        bad_B |= active_B & ((slot_B < 0) | (slot_B >= open_BL.shape[1]))
        if bool(bad_B.any()):
            b = int(bad_B.nonzero()[0, 0])
            raise ValueError(
                f"orderer {getattr(orderer, 'name', orderer)!r} selected slot {int(slot_B[b])} for item {b}, "
                "which is not a slot still to fill"
            )
        return slot_B.clamp(0, open_BL.shape[1] - 1), active_B

    # ----------------------------------------------------------------- sampling

    def sample(
        self,
        template: TokenBatch,
        orderer: Orderer,
        *,
        rng: torch.Generator,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        guidance: float = 0.0,
        guidance_schedule: str = "constant",
    ) -> TokenBatch:
        """Fill the non-given slots of ``template``, one block (or adaptive pick) per pass.

        Args:
            template: structure and given values (other values are ignored); a
                conditional model reads each item's class from ``template.cond`` (none:
                the null class, i.e. unconditional samples).
            orderer: static (its order is drawn once with ``rng``; each block is
                sampled from one forward pass) or adaptive (picks one slot per pass,
                from the guided predictions under guidance).
            rng: CPU generator for the order and the sampling noise.
            temperature: softmax temperature; 0 picks the most likely value.
            top_k, top_p: restrict each draw (:func:`seqify.nn.truncate_logits`; None: off).
            guidance: classifier-free guidance scale of a conditional model (0: off).
            guidance_schedule: "constant", or "linear" from 0 at the first pass to
                ``guidance`` at the last (VAR's ramp over blocks or adaptive picks).
        """
        temperature = check_temperature(temperature)
        sampling = SamplingControls(temperature, top_k, top_p, float(guidance), guidance_schedule)
        if sampling.guided and not self.conditions:
            raise ValueError("masked: classifier-free guidance needs a class-conditional model (condition = true)")
        if self.spec.variable_length:
            raise NotApplicableError(
                "the masked generator cannot generate variable-length items (the number of "
                "slots must be known up front); use the 'causal' generator"
            )
        check_batch(self.spec, template, values_of=template.given, who="masked")
        if getattr(orderer, "adaptive", False):
            gid_BL = self._sample_adaptive(template, orderer, rng, sampling)
        else:
            order = self._resolve_order(template, orderer.infer_orders(template, rng=rng))
            gid_BL = self._sample_blocks(template, order, rng, sampling)
        _, kinds_BL, _ = clean_structure(template)
        values_BL = (gid_BL - self.offsets_K[kinds_BL]).masked_fill(template.pad, 0)
        values_BL = torch.where(template.given, template.values, values_BL)
        return template.with_values(values_BL)

    def _sample_blocks(self, template: TokenBatch, order: OrderBatch, rng: torch.Generator,
                       sampling: SamplingControls):
        device = template.values.device
        B, L = template.values.shape
        V = self.spec.total_vocab
        slot_block_BL = order.slot_block()
        rank_BL = order.rank()
        given_B = template.given.sum(1)
        with evaluating(self):
            prep = self._prepare(with_null_rows(template) if sampling.guided else template, required=False)
            gid_BL = prep.gid_BL[:B].clone()
            known_BL = template.given.clone()
            K = int(order.num_blocks.max().clamp_min(0))
            for k in range(K):
                in_block_BL = slot_block_BL == k
                logits_RLV = self._logits(prep, gid_BL, known_BL, sampling)
                noise_BLV = None
                if sampling.temperature > 0:
                    # noise indexed by position inside the block: [B, largest block, V]
                    start_B = given_B + ((order.block >= 0) & (order.block < k)).sum(1)
                    size = int(in_block_BL.sum(1).max())
                    within_BL = (rank_BL - start_B[:, None]).clamp(0, size - 1)
                    noise_BSV = gumbel_noise((B, size, V), rng, device)
                    noise_BLV = noise_BSV.gather(1, within_BL[..., None].expand(B, L, V))
                _, choice_BL = draw_values(logits_RLV, prep.allowed_BLV, rng, sampling, step=k, n_steps=K,
                                           noise_NxV=noise_BLV)
                gid_BL = torch.where(in_block_BL, choice_BL[:B], gid_BL)
                known_BL = known_BL | in_block_BL
        return gid_BL

    def _sample_adaptive(self, template: TokenBatch, orderer: Orderer, rng: torch.Generator,
                         sampling: SamplingControls):
        device = template.values.device
        B, _ = template.values.shape
        V = self.spec.total_vocab
        arange_B = torch.arange(B, device=device)
        with evaluating(self):
            prep = self._prepare(with_null_rows(template) if sampling.guided else template, required=False)
            gid_BL = prep.gid_BL[:B].clone()
            known_BL = template.given.clone()
            open_BL = template.target.clone()
            n_steps = int(open_BL.sum(1).max())
            for step in range(n_steps):
                logits_RLV = self._logits(prep, gid_BL, known_BL, sampling)
                if sampling.guided:  # the orderer picks from the guided predictions
                    logits_RLV = guided_logits(logits_RLV, sampling.scale(step, n_steps))
                logp_BLV = restricted_log_softmax(logits_RLV, prep.allowed_BLV[:B])
                slot_B, active_B = self._select(orderer, logp_BLV, open_BL)
                noise_BV = gumbel_noise((B, V), rng, device) if sampling.temperature > 0 else None
                choice_B = pick_values(logp_BLV[arange_B, slot_B], sampling.temperature, noise_BV,
                                       top_k=sampling.top_k, top_p=sampling.top_p)
                rows_A, slots_A = arange_B[active_B], slot_B[active_B]
                gid_BL[rows_A, slots_A] = choice_B[active_B]
                known_BL[rows_A, slots_A] = True
                open_BL[rows_A, slots_A] = False
        return gid_BL
