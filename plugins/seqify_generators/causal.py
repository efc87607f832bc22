"""A causal any-order transformer in the style of sigma-GPT and RAR.

The sequence follows the order: position 0 holds a BOS token and position ``t > 0``
holds the value of slot ``perm[t-1]`` with that slot's structure embedding (kind,
coordinates, slot index). Every position also carries a *target* embedding of the
slot it must predict, ``perm[t]`` (the double positional encoding of sigma-GPT, the
target-aware position of RAR), so one model trains and generates in any order and
keeps a KV cache at inference.

Orders with blocks larger than one (several slots predicted from the same context)
need another layout, since in the single stream a position's input holds the value
of the slot before it, which would leak a block's earlier values into its later
slots. The *merged* block layout (the default) keeps one token per slot: after BOS,
one group of tokens per block, token ``i`` of group ``k`` carrying the value of the
``i``-th slot of block ``k - 1`` (group 0: of the ``i``-th given slot) and the target
structure of the ``i``-th slot of block ``k``; a token attends to BOS, the earlier
groups and its own group. Sampling feeds group ``k`` once block ``k - 1`` is drawn,
one pass per block, every token stored in the KV cache. The *split* layout (checkpoints
from before; the learned order's prefix states) has a BOS token, one *value token* per
slot (its value and source structure embedding, in order) and one *query token* per
slot (its target structure embedding only). Value tokens attend causally to BOS and
earlier value tokens; the query of a slot in block ``k`` attends to BOS, the given
slots' and blocks ``< k``'s value tokens, and itself. Its sampler also takes one pass
per block: the previous block's value tokens (stored) and this block's queries (not
stored) ride in the same pass.
Blocks of one always use the single stream (half the tokens).

Class conditioning (``condition = true``) puts the item's class embedding in the BOS
position (VAR's class-as-start-token), with a null class for dropped labels (label
dropout ``cond_drop`` while training) that classifier-free guidance samples from.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, model_validator
from torch import nn

from seqify.errors import NotApplicableError
from seqify.protocols import GeneratorCaps, Orderer
from seqify.types import OrderBatch, Scores, TokenBatch, TokenizerSpec

from seqify_generators.sizes import TRANSFORMER_SIZES

from seqify.nn import (
    ClassEmbedding,
    ConditionConfig,
    KVCache,
    SamplingControls,
    SlotEmbedding,
    block_causal_mask,
    draw_values,
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
    init_weights,
    restricted_log_softmax,
)

__all__ = ["CausalConfig", "CausalTransformer"]


class CausalConfig(TransformerConfig, ConditionConfig):
    """Settings of the causal (sigma-GPT / RAR style) transformer."""

    model_config = ConfigDict(extra="forbid")

    slot_inputs: bool = Field(
        True, description="add a projection of the tokenizer's slot inputs (Tokenizer.slot_inputs: VAR's f_hat "
        "canvas for next-scale tokens) to each slot's target embedding when the tokenizer gives them; orders must "
        "then decode every lower level first (next-scale, raster)")
    block_layout: Literal["auto", "merged", "split"] = Field(
        "auto", description="layout of orders with blocks larger than one: 'merged' (one token per slot: the "
        "token of a block's i-th slot also carries the value of the previous block's i-th slot, so sampling "
        "takes one pass per block), 'split' (a value token and a query token per slot; the layout of "
        "checkpoints written before the merged one, and the one in which a block decoded earlier and a given "
        "slot look alike, as a growing tokenizer's steps need), or 'auto' (merged, but split for a spec that "
        "grows)")

    @model_validator(mode="after")
    def _no_axis_heads(self) -> "CausalConfig":
        if self.axis_heads:
            raise ValueError("axis_heads is not available in the causal generator (a position there holds one "
                             "slot's value and predicts another slot, so 'the same row' has no single meaning); "
                             "use the masked generator")
        return self


# attention levels of the block layout (see block_causal_mask): BOS is level 0, the given
# slots' value tokens level 1, block k's value tokens and queries level k + 2; keys no
# query may see through the level rule (query tokens, filler) get _HIDDEN.
_HIDDEN = 1 << 40


def _has_big_blocks(order: OrderBatch) -> bool:
    """True when some item's order predicts more than one slot in one block, or the
    orderer asked for the block layout (``OrderBatch.block_layout``)."""
    if order.block_layout:
        return True
    predicted_B = (order.block >= 0).sum(1)
    return bool((predicted_B != order.num_blocks.clamp_min(0)).any())


def _value_levels(block_BT: torch.Tensor, pos_BT: torch.Tensor, real_BT: torch.Tensor):
    """Query level and position, key level and position of value tokens.

    Args:
        block_BT: block id of the token's slot (-1 given, -2 padding).
        pos_BT: the slot's position in the order.
        real_BT: False for filler tokens (padding, not a slot of this row's block).
    """
    real_BT = real_BT & (block_BT >= -1)
    level_BT = block_BT + 2
    zero_BT, minus_BT = torch.zeros_like(level_BT), torch.full_like(pos_BT, -1)
    q_level_BT = torch.where(real_BT, level_BT, zero_BT)  # filler sees BOS only
    q_pos_BT = torch.where(real_BT, pos_BT, minus_BT)
    k_level_BT = torch.where(real_BT, level_BT, torch.full_like(level_BT, _HIDDEN))
    return q_level_BT, q_pos_BT, k_level_BT, q_pos_BT


def _bos_levels(B: int, device: torch.device):
    """Levels of the BOS token: level 0, position -1 (every token sees it)."""
    zero_B1 = torch.zeros(B, 1, dtype=torch.long, device=device)
    return zero_B1, zero_B1 - 1, zero_B1, zero_B1 - 1


def _query_levels(block_BT: torch.Tensor, real_BT: torch.Tensor):
    """Query level and position, key level and position of query tokens (seen by no other token)."""
    real_BT = real_BT & (block_BT >= 0)
    q_level_BT = torch.where(real_BT, block_BT + 2, torch.zeros_like(block_BT))
    minus_BT = torch.full_like(block_BT, -1)
    return q_level_BT, minus_BT, torch.full_like(block_BT, _HIDDEN), minus_BT


class _Merged:
    """Where each token of the merged block layout takes its value and its target.

    After BOS, group ``k`` (one per block) holds ``U_k`` tokens; token ``i`` of group
    ``k`` carries the value of the ``i``-th slot of block ``k - 1`` (for group 0: of the
    ``i``-th given slot) and the target structure of the ``i``-th slot of block ``k``,
    either part absent where that block is shorter (``U_k`` is the larger of the two
    blocks' sizes, the widest over the batch). A token sees BOS, every earlier group and
    its own group: the values it may know and no value of its own block.

    Args:
        order: a validated order (given first, padding last).
    """

    def __init__(self, order: OrderBatch):
        perm_BL, device = order.perm, order.perm.device
        B, L = perm_BL.shape
        n_given_B = (order.block == -1).sum(1)
        sizes_BK = order.block_sizes()
        K = sizes_BK.shape[1]
        prev_BK = torch.cat([n_given_B[:, None], sizes_BK[:, :-1]], dim=1)
        start_BK = n_given_B[:, None] + torch.cumsum(sizes_BK, dim=1) - sizes_BK
        prev_start_BK = torch.cat([torch.zeros_like(n_given_B)[:, None], start_BK[:, :-1]], dim=1)
        widths_K = torch.maximum(prev_BK, sizes_BK).amax(0)
        self.widths = [int(w) for w in widths_K.tolist()]
        self.offsets = [0]
        for w in self.widths:
            self.offsets.append(self.offsets[-1] + w)
        group_T = torch.repeat_interleave(torch.arange(K, device=device), widths_K)
        i_T = torch.arange(group_T.shape[0], device=device) - (torch.cumsum(widths_K, 0) - widths_K)[group_T]
        self.has_target_BT = i_T[None, :] < sizes_BK[:, group_T]
        self.has_value_BT = i_T[None, :] < prev_BK[:, group_T]
        zero = torch.zeros_like(self.has_target_BT, dtype=torch.long)
        self.target_pos_BT = torch.where(self.has_target_BT, start_BK[:, group_T] + i_T, zero).clamp(max=L - 1)
        self.value_pos_BT = torch.where(self.has_value_BT, prev_start_BK[:, group_T] + i_T, zero).clamp(max=L - 1)
        self.group_BT = group_T.expand(B, -1)
        # the token (after BOS: index 1 + ...) whose hidden state predicts each order position
        block_BL = order.block
        self.token_of_pos_BL = torch.zeros_like(block_BL)
        if K:
            k_BL = block_BL.clamp(0, K - 1)
            offsets_K = torch.tensor(self.offsets[:-1], dtype=torch.long, device=device)
            tok_BL = 1 + offsets_K[k_BL] + torch.arange(L, device=device) - start_BK.gather(1, k_BL)
            self.token_of_pos_BL = torch.where(block_BL >= 0, tok_BL, self.token_of_pos_BL)

    def levels(self, start: int, stop: int):
        """Query level and position, key level and position of tokens ``start .. stop-1`` (after BOS)."""
        real_BT = (self.has_target_BT | self.has_value_BT)[:, start:stop]
        level_BT = self.group_BT[:, start:stop] + 1
        zero_BT = torch.zeros_like(level_BT)
        pos_BT = torch.where(real_BT, zero_BT, zero_BT - 1)  # real tokens see their own group
        return (torch.where(real_BT, level_BT, zero_BT), pos_BT,
                torch.where(real_BT, level_BT, torch.full_like(level_BT, _HIDDEN)), pos_BT)


def _self_mask(T: int, S: int, count: int, device: torch.device) -> torch.Tensor:
    """``[T, S]`` bool: the last ``count`` of ``T`` new tokens attend to themselves, the last
    ``count`` of the ``S`` keys (with a cache the keys also count the cached positions)."""
    self_TS = torch.zeros(T, S, dtype=torch.bool, device=device)
    idx = torch.arange(count, device=device)
    self_TS[T - count + idx, S - count + idx] = True
    return self_TS


def _check_levels(level_BL: torch.Tensor, order: OrderBatch) -> None:
    """NotApplicableError unless every row's order decodes all slots of lower level
    (Tokenizer.slot_inputs) in blocks before any slot of a higher level."""
    block_BL = order.slot_block()
    level_BL = level_BL.clamp_min(0)
    B, n = block_BL.shape[0], int(level_BL.max()) + 1 if level_BL.numel() else 1
    big = block_BL.shape[1] + 1
    latest_Bn = torch.full((B, n), -1, dtype=torch.long, device=block_BL.device).scatter_reduce(
        1, level_BL, torch.where(block_BL >= -1, block_BL, -1), "amax")
    first_Bn = torch.full((B, n), big, dtype=torch.long, device=block_BL.device).scatter_reduce(
        1, level_BL, torch.where(block_BL >= 0, block_BL, big), "amin")
    lower_Bn = torch.cat([torch.full_like(latest_Bn[:, :1], -1), torch.cummax(latest_Bn, 1).values[:, :-1]], 1)
    bad_Bn = (lower_Bn >= first_Bn) & (first_Bn < big)
    if bool(bad_Bn.any()):
        row, level = (int(i) for i in bad_Bn.nonzero()[0])
        raise NotApplicableError(
            f"the causal generator reads the tokenizer's slot inputs (Tokenizer.slot_inputs, e.g. next-scale's "
            f"f_hat), which need every slot of a lower level decoded before any slot of the next: item {row}'s "
            f"order predicts a level-{level} slot in block {int(first_Bn[row, level])} but a lower-level slot only "
            f"in block {int(lower_Bn[row, level])}; use an order that decodes level by level (next-scale, raster), "
            "or set the generator option slot_inputs = false")


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
        conditions: number of condition classes the data declares (the runner passes
            the modality's :meth:`~seqify.protocols.Modality.num_conditions`); used when
            ``config.condition`` is on, which then needs at least one.
    """

    config_model: ClassVar[type[CausalConfig]] = CausalConfig
    caps: ClassVar[GeneratorCaps] = GeneratorCaps(
        any_order=True, blocks=True, adaptive=False, variable_length=True
    )
    sizes: ClassVar[dict[str, dict[str, Any]]] = TRANSFORMER_SIZES
    #: the default generator of every orderer it can serve
    default_priority: ClassVar[int] = 20
    #: condition classes (0: unconditional; set from ``conditions=`` when ``config.condition`` is on)
    conditions: int = 0
    #: checkpoints from before issue 19 trained blocks in the split layout, without slot inputs
    legacy_config: ClassVar[dict[str, Any]] = {"block_layout": "split", "slot_inputs": False}

    def __init__(self, spec: TokenizerSpec, config: CausalConfig | None = None, *, conditions: int = 0,
                 tokenizer: Any = None):
        super().__init__()
        self.spec = spec
        self.config = build_config(self.config_model, config)
        d = self.config.d_model
        #: condition classes of a class-conditional model (0: unconditional)
        self.conditions = int(conditions) if self.config.condition else 0
        if self.config.condition and self.conditions < 1:
            raise ValueError("causal: condition = true needs condition classes, but the data declares none "
                             "(the modality gives no per-item condition for this dataset)")
        grows = bool(getattr(spec, "grows", False))
        if grows and self.config.block_layout == "merged":
            raise ValueError("causal: block_layout 'merged' cannot serve a tokenizer that grows (each growth step "
                             "is sampled with the earlier steps given, and the merged layout tells given slots from "
                             "earlier blocks): use 'split' or 'auto'")
        #: the block layout in use ("merged" or "split"; see CausalConfig.block_layout)
        self.block_layout = ("split" if grows else "merged") if self.config.block_layout == "auto" else self.config.block_layout
        self.bos_id = spec.total_vocab
        self.value_embed = nn.Embedding(spec.total_vocab + 1, d)  # + BOS
        self.source_embed = SlotEmbedding(spec, d)  # the slot whose value a position holds
        self.target_embed = SlotEmbedding(spec, d)  # the slot a position must predict
        # the tokenizer's slot inputs (VAR's f_hat for next-scale tokens), projected onto the target embedding
        input_dim = int(getattr(tokenizer, "slot_input_dim", 0) or 0) if self.config.slot_inputs else 0
        self.input_proj = nn.Linear(input_dim, d) if input_dim > 0 else None
        self._slot_inputs_of = tokenizer.slot_inputs if input_dim > 0 else None
        self.stack = TransformerStack(self.config)
        self.head = nn.Linear(d, spec.total_vocab)
        self.register_buffer("kind_mask_KV", spec.kind_mask(), persistent=False)
        self.register_buffer("offsets_K", torch.tensor(spec.vocab_offsets, dtype=torch.long), persistent=False)
        if self.conditions:  # created last: an unconditional model draws the same initial weights as before
            self.class_embed = ClassEmbedding(self.conditions, d, self.config.cond_drop)
        init_weights(self, self.config.n_layers)

    def __repr__(self) -> str:
        return describe(self, self.config, self.spec)

    def _labels(self, batch: TokenBatch, *, drop: bool = False, required: bool = True) -> torch.Tensor | None:
        """``[B]`` class ids of a conditional model (null class for none), or None when unconditional."""
        if not self.conditions:
            return None
        return self.class_embed.labels(batch, drop=drop, required=required, who="causal")

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ----------------------------------------------------------------- internals

    def _prepare(self, batch: TokenBatch, order: OrderBatch | None = None):
        """Global ids and the slot-level source / target structure embeddings; with
        ``order``, the target embeddings also carry the slot inputs (:meth:`_input_embedding`)."""
        values_BL, kinds_BL, coords_BLC = clean_structure(batch)
        gid_BL = global_ids(values_BL, kinds_BL, self.offsets_K)
        source_BLD = self.source_embed(kinds_BL, coords_BLC)
        target_BLD = self.target_embed(kinds_BL, coords_BLC)
        if order is not None and self.input_proj is not None:
            target_BLD = target_BLD + self._input_embedding(batch, order)
        return gid_BL, kinds_BL, source_BLD, target_BLD

    @property
    def uses_slot_inputs(self) -> bool:
        """True when the tokenizer's slot inputs feed the target embeddings."""
        return self.input_proj is not None

    def _input_embedding(self, batch: TokenBatch, order: OrderBatch | None) -> torch.Tensor:
        """``[B, L, D]`` projection of the tokenizer's slot inputs for the batch's values;
        with ``order``, first checks that it decodes every lower level before a slot."""
        inputs_BLF, level_BL = self._slot_inputs_of(batch)
        if order is not None:
            _check_levels(level_BL.to(order.perm.device), order)
        # a given slot's input could read lower-level slots still to be predicted: given slots get none
        return self.input_proj(inputs_BLF.to(self.input_proj.weight.dtype)).masked_fill(batch.given[..., None], 0.0)

    def _inputs(self, gid_BL, source_BLD, target_BLD, perm_BL, start: int, stop: int,
                label_B: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings ``[B, stop - start, D]`` of order positions ``start .. stop-1``
        (``label_B``: the class of a conditional model, in the BOS position)."""
        B, L, D = source_BLD.shape
        t_T = torch.arange(start, stop, device=perm_BL.device)
        target_slot_BT = perm_BL[:, start:stop]
        source_slot_BT = perm_BL[:, (t_T - 1).clamp_min(0)]
        value_BT = gid_BL.gather(1, source_slot_BT)
        x_BTD = self.value_embed(value_BT) + source_BLD.gather(1, source_slot_BT[..., None].expand(-1, -1, D))
        if start == 0 and label_B is not None:
            x_BTD = torch.where((t_T == 0)[None, :, None], self._bos(B, x_BTD, label_B), x_BTD)
        elif start == 0:
            bos_D = self.value_embed.weight[self.bos_id]
            x_BTD = torch.where((t_T == 0)[None, :, None], bos_D.to(x_BTD.dtype), x_BTD)
        return x_BTD + target_BLD.gather(1, target_slot_BT[..., None].expand(-1, -1, D))

    def _allowed(self, kinds_BL: torch.Tensor, slot_BT: torch.Tensor) -> torch.Tensor:
        return self.kind_mask_KV[kinds_BL.gather(1, slot_BT)]

    def _value_tokens(self, gid_BL, source_BLD, slot_BT) -> torch.Tensor:
        """Block layout: value + source structure of each slot in ``slot_BT``."""
        D = source_BLD.shape[2]
        return self.value_embed(gid_BL.gather(1, slot_BT)) + source_BLD.gather(1, slot_BT[..., None].expand(-1, -1, D))

    def _query_tokens(self, target_BLD, slot_BT) -> torch.Tensor:
        """Block layout: target structure of each slot in ``slot_BT`` (no value)."""
        D = target_BLD.shape[2]
        return target_BLD.gather(1, slot_BT[..., None].expand(-1, -1, D))

    def _bos(self, B: int, like: torch.Tensor, label_B: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, 1, D]`` BOS input: the class embedding of a conditional model, else the BOS token."""
        if label_B is not None:
            return self.class_embed(label_B).to(like.dtype)[:, None]
        return self.value_embed.weight[self.bos_id].to(like.dtype).expand(B, 1, -1)

    def _block_hidden(self, gid_BL, source_BLD, target_BLD, order: OrderBatch,
                      label_B: torch.Tensor | None = None) -> torch.Tensor:
        """Block layouts, all at once: hidden state ``[B, L, D]`` that predicts each order position.

        Split layout: BOS, the L value tokens in order, the L query tokens in order.
        Merged layout: BOS and one group of tokens per block (:class:`_Merged`).
        """
        if self.block_layout == "split":
            return self.block_states(gid_BL, source_BLD, target_BLD, order, label_B=label_B)[:, 1 + order.perm.shape[1] :]
        layout = _Merged(order)
        T = layout.offsets[-1]
        x_BTD = self._merged_tokens(gid_BL, source_BLD, target_BLD, order.perm, layout, 0, T)
        x_BTD = torch.cat([self._bos(x_BTD.shape[0], x_BTD, label_B), x_BTD], dim=1)
        bos = _bos_levels(x_BTD.shape[0], x_BTD.device)
        q_level, q_pos, k_level, k_pos = (torch.cat([bos[i], lev], 1) for i, lev in enumerate(layout.levels(0, T)))
        h_BTD = self.stack(x_BTD, attn_mask=block_causal_mask(q_level, k_level, q_pos_BT=q_pos, k_pos_BS=k_pos))
        D = h_BTD.shape[2]
        return h_BTD.gather(1, layout.token_of_pos_BL[..., None].expand(-1, -1, D))

    def _merged_tokens(self, gid_BL, source_BLD, target_BLD, perm_BL, layout: "_Merged", start: int, stop: int):
        """Merged layout: input embeddings ``[B, stop - start, D]`` of tokens ``start .. stop-1`` after BOS."""
        D = source_BLD.shape[2]
        value_slot_BT = perm_BL.gather(1, layout.value_pos_BT[:, start:stop])
        target_slot_BT = perm_BL.gather(1, layout.target_pos_BT[:, start:stop])
        value_BTD = self._value_tokens(gid_BL, source_BLD, value_slot_BT)
        target_BTD = target_BLD.gather(1, target_slot_BT[..., None].expand(-1, -1, D))
        has_value_BT1 = layout.has_value_BT[:, start:stop, None]
        has_target_BT1 = layout.has_target_BT[:, start:stop, None]
        return torch.where(has_value_BT1, value_BTD, 0.0) + torch.where(has_target_BT1, target_BTD, 0.0)

    def block_states(self, gid_BL, source_BLD, target_BLD, order: OrderBatch, *,
                     label_B: torch.Tensor | None = None) -> torch.Tensor:
        """Block layout, all at once: every hidden state ``[B, 1 + 2L, D]``.

        Index 0 is BOS, ``1 + t`` the value token of order position ``t`` and ``1 + L + t``
        its query token. The value token of position ``t`` has seen BOS, the given slots'
        value tokens and those of earlier blocks and of its own block up to itself;
        the query token of ``t`` has seen what its block may (the given slots and the
        earlier blocks). With blocks of one, the state at index ``t`` (BOS, or the value
        token of position ``t - 1``) has seen the values of the slots before position
        ``t`` but not which slot comes next: a *prefix state* (what the learned order's
        policy on this generator reads).

        Args:
            gid_BL: global ids of the slots' values.
            source_BLD, target_BLD: the slots' source and target structure embeddings (:meth:`_prepare`).
            order: orders for the batch (blocks of any size).
            label_B: a conditional model's class per item (BOS holds its embedding).
        """
        perm_BL, block_BL = order.perm, order.block
        B, L = perm_BL.shape
        pos_BL = torch.arange(L, device=perm_BL.device).expand(B, L)
        x_values_BLD = self._value_tokens(gid_BL, source_BLD, perm_BL)
        x_BTD = torch.cat([self._bos(B, x_values_BLD, label_B), x_values_BLD, self._query_tokens(target_BLD, perm_BL)],
                          dim=1)
        real_BL = torch.ones_like(perm_BL, dtype=torch.bool)
        value = _value_levels(block_BL, pos_BL, real_BL)
        query = _query_levels(block_BL, real_BL)
        bos = _bos_levels(B, perm_BL.device)
        q_level, q_pos, k_level, k_pos = (torch.cat([bos[i], value[i], query[i]], dim=1) for i in range(4))
        mask = block_causal_mask(q_level, k_level, q_pos_BT=q_pos, k_pos_BS=k_pos)
        T = 1 + 2 * L
        return self.stack(x_BTD, attn_mask=mask | _self_mask(T, T, L, mask.device))

    def _hidden(self, gid_BL, source_BLD, target_BLD, order: OrderBatch, T: int,
                label_B: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, T, D]`` hidden state that predicts slot ``order.perm[:, t]`` at order position ``t``."""
        if _has_big_blocks(order):
            return self._block_hidden(gid_BL, source_BLD, target_BLD, order, label_B)[:, :T]
        x_BTD = self._inputs(gid_BL, source_BLD, target_BLD, order.perm, 0, T, label_B)
        return self.stack(x_BTD, causal=True)

    def _resolve_order(self, batch: TokenBatch, order: OrderBatch | None, orderer: Orderer | None) -> OrderBatch:
        if order is None:
            if orderer is None:
                raise ValueError("score needs an order or an orderer")
            _refuse_adaptive(orderer)
            order = orderer.infer_orders(batch, rng=torch.Generator().manual_seed(0))
        order = order.to(batch.values.device)
        order.validate(batch)
        return order

    # ----------------------------------------------------------------- training / scoring

    def forward(self, batch: TokenBatch, order: OrderBatch, *, positions: int | None = None) -> torch.Tensor:
        """Log-probabilities ``[B, T, V]`` (float32) of the target slot at each order position.

        Position ``t`` predicts slot ``order.perm[:, t]`` from the values of the slots
        in earlier blocks of the order (for blocks of one: the slots before it); values
        outside that slot's kind are -inf.

        Args:
            batch: the items (values of the slots in earlier blocks are used).
            order: orders for ``batch`` (blocks of any size).
            positions: return only the first ``positions`` order positions (default all;
                blocks of one also run only those).

        A conditional model reads each item's class from ``batch.cond`` (no label dropout).
        """
        T = batch.length if positions is None else positions
        gid_BL, kinds_BL, source_BLD, target_BLD = self._prepare(batch, order)
        h_BTD = self._hidden(gid_BL, source_BLD, target_BLD, order, T, self._labels(batch))
        logits_BTV = self.head(h_BTD)
        return restricted_log_softmax(logits_BTV, self._allowed(kinds_BL, order.perm[:, :T]))

    def loss(self, batch: TokenBatch, order: OrderBatch) -> torch.Tensor:
        """Mean cross-entropy (nats) over the predicted slots of the batch.

        Args:
            batch: training items (padding and given slots are never predicted).
            order: orders (given first, padding last); a slot is predicted from the
                given slots and the earlier blocks.

        A conditional model reads each item's class from ``batch.cond``, replaced by
        the null class with probability ``cond_drop`` while training.
        """
        perm_BL = order.perm
        gid_BL, kinds_BL, source_BLD, target_BLD = self._prepare(batch, order)
        label_B = self._labels(batch, drop=self.training)
        h_BLD = self._hidden(gid_BL, source_BLD, target_BLD, order, batch.length, label_B)
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
        """Exact log p(x_slot | given slots and earlier blocks) of every predicted slot.

        One forward pass; the log-likelihood of an item is the sum over its blocks of
        the log-probability of each of the block's slots given the earlier blocks. Pass
        ``order``, or a static ``orderer`` whose orders are drawn with a fixed seed
        (adaptive orderers need the 'masked' generator). ``order`` wins when both are given.

        Args:
            batch: the items to score.
            order: orders for ``batch`` (blocks of any size).
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
        top_k: int | None = None,
        top_p: float | None = None,
        guidance: float = 0.0,
        guidance_schedule: str = "constant",
    ) -> TokenBatch:
        """Fill the non-given slots of ``template``, one block per step, in the orderer's order.

        Args:
            template: structure and given values (other values are ignored); a
                conditional model reads each item's class from ``template.cond`` (none:
                the null class, i.e. unconditional samples).
            orderer: a static orderer; its order is drawn once with ``rng``.
            rng: CPU generator for the order and the sampling noise.
            temperature: softmax temperature; 0 picks the most likely value.
            use_cache: keep a KV cache and feed only the new tokens each step (same samples as without).
            top_k, top_p: restrict each draw (:func:`seqify.nn.truncate_logits`; None: off).
            guidance: classifier-free guidance scale of a conditional model (0: off).
            guidance_schedule: "constant", or "linear" from 0 at the first step to
                ``guidance`` at the last (VAR's ramp; steps are blocks, or slots for
                blocks of one).
        """
        _refuse_adaptive(orderer)
        order = orderer.infer_orders(template, rng=rng)
        samples, _ = self.generate(template, order, rng=rng, temperature=temperature, use_cache=use_cache,
                                   top_k=top_k, top_p=top_p, guidance=guidance, guidance_schedule=guidance_schedule)
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
        top_k: int | None = None,
        top_p: float | None = None,
        guidance: float = 0.0,
        guidance_schedule: str = "constant",
    ) -> tuple[TokenBatch, torch.Tensor | None]:
        """Generate in a given order; optionally also return the step log-probabilities.

        Blocks of one are sampled one order position per step (single stream); orders
        with larger blocks one block per step, the blocks of all items in lockstep (block
        layout; not for variable-length specs, whose END token needs one slot per step).

        Args:
            template: structure and given values (other values are ignored).
            order: orders for ``template`` (blocks of any size).
            rng: CPU generator for the sampling noise (one ``[B, V]`` draw per step for
                blocks of one, one ``[B, W, V]`` draw per block of at most W slots otherwise).
            temperature: softmax temperature; 0 picks the most likely value.
            use_cache: KV cache (only the new tokens each step) or full recomputation.
            return_logp: also return ``[B, L, V]`` float32 log-probabilities (temperature
                1, after guidance) each slot was sampled from (zeros for slots never predicted).
            top_k, top_p, guidance, guidance_schedule: as in :meth:`sample`.

        Returns:
            The samples (slots after an END token become padding) and the log-probabilities or None.
        """
        temperature = check_temperature(temperature)
        sampling = SamplingControls(temperature, top_k, top_p, float(guidance), guidance_schedule)
        check_batch(self.spec, template, values_of=template.given, who="causal")
        order = self._resolve_order(template, order, None)
        if sampling.guided and not self.conditions:
            raise ValueError("causal: classifier-free guidance needs a class-conditional model (condition = true)")
        rows = template.batch_size
        level_BL = None
        if self.input_proj is not None:  # before the null-class copies, so a refusal names the item
            level_BL = self._slot_inputs_of(template)[1].to(order.perm.device)
            _check_levels(level_BL, order)
        if sampling.guided:  # the null-class copy of every item, sampled in lockstep with it
            template, order = with_null_rows(template), _twice_order(order)
            level_BL = None if level_BL is None else torch.cat([level_BL, level_BL])
        label_B = self._labels(template, required=False)
        big_blocks = _has_big_blocks(order)
        if big_blocks and self.spec.variable_length:
            raise NotApplicableError(
                "the causal generator cannot sample blocks larger than one for a variable-length "
                "tokenizer: the END token decides the length one slot at a time (use blocks of one "
                "in a prefix-closed order such as 'raster')"
            )
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
            refresh = pos_level_BL = None
            if self.input_proj is not None:  # slot inputs follow the values decoded so far
                structure_BLD = target_BLD
                pos_level_BL = level_BL.to(device).gather(1, perm_BL)

                def refresh() -> torch.Tensor:
                    decoded_BL = (gid_BL - self.offsets_K[kinds_BL]).masked_fill(pad_BL, 0)
                    return structure_BLD + self._input_embedding(template.with_values(decoded_BL), None)

                target_BLD = refresh()
            if big_blocks:
                self._generate_blocks(
                    gid_BL, kinds_BL, source_BLD, target_BLD, order, n_given_B,
                    rng=rng, sampling=sampling, use_cache=use_cache, logp_out_BLV=logp_out_BLV, label_B=label_B,
                    refresh=refresh, pos_level_BL=pos_level_BL,
                )
            else:
                cache = KVCache(self.config.depth, L) if use_cache else None
                h_BD = None
                if use_cache and prefix < end:
                    x_BTD = self._inputs(gid_BL, source_BLD, target_BLD, perm_BL, 0, prefix + 1, label_B)
                    h_BD = self.stack(x_BTD, causal=True, cache=cache)[:, -1]
                for t in range(prefix, end):
                    if (refresh is not None and not use_cache and t > prefix
                            and bool((pos_level_BL[:, t] != pos_level_BL[:, t - 1]).any())):
                        target_BLD = refresh()  # a new level: its inputs read the level just finished
                    if not use_cache:
                        x_BTD = self._inputs(gid_BL, source_BLD, target_BLD, perm_BL, 0, t + 1, label_B)
                        h_BD = self.stack(x_BTD, causal=True)[:, -1]
                    slot_B = perm_BL[:, t]
                    logp_BV, choice_B = draw_values(self.head(h_BD), self.kind_mask_KV[kinds_BL[arange_B, slot_B]],
                                                    rng, sampling, step=t - prefix, n_steps=end - prefix)
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
                        if refresh is not None and bool((pos_level_BL[:, t + 1] != pos_level_BL[:, t]).any()):
                            target_BLD = refresh()
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
            template.coord_names,
            template.cond,
        )
        if sampling.guided:  # the conditional rows; the null-class copies hold the same values
            samples = samples.rows(slice(0, rows))
            logp_out_BLV = None if logp_out_BLV is None else logp_out_BLV[:rows]
        return samples, logp_out_BLV

    def _generate_blocks(
        self,
        gid_BL: torch.Tensor,
        kinds_BL: torch.Tensor,
        source_BLD: torch.Tensor,
        target_BLD: torch.Tensor,
        order: OrderBatch,
        n_given_B: torch.Tensor,
        *,
        rng: torch.Generator,
        sampling: SamplingControls,
        use_cache: bool,
        logp_out_BLV: torch.Tensor | None,
        label_B: torch.Tensor | None = None,
        refresh: Any = None,
        pos_level_BL: torch.Tensor | None = None,
    ) -> None:
        """Block layout sampling: fill the predicted slots of ``gid_BL`` block by block, in place.

        Block ``k`` of every item is sampled at step ``k``; an item whose block ``k`` has
        fewer slots than the widest one (or that has no block ``k``) gets filler tokens
        that no other token sees. With the cache, one transformer pass per block. Merged
        layout: the pass of block ``k`` feeds group ``k`` (block ``k - 1``'s values with
        block ``k``'s targets; group 0 after BOS), all of it stored. Split layout: the
        pass of block ``k`` feeds the value tokens of block ``k - 1`` (for block 0: BOS
        and the given value tokens), which the cache stores, followed by block ``k``'s
        query tokens, which it does not store; the queries see the value tokens of the
        same pass through the block-causal mask. Either way ``K`` blocks take ``K`` passes.

        Args:
            gid_BL: global ids, the given slots' filled in; the sampled ones are written here.
            kinds_BL: kind of every slot (padding zeroed).
            source_BLD, target_BLD: slot structure embeddings (value and query tokens).
            order: a validated order with some block larger than one.
            n_given_B: number of given slots per item.
            rng: CPU generator for the noise, one ``[B, W, V]`` draw per block.
            sampling: temperature, top-k / top-p and guidance (rows ``B/2 ..`` are
                then the null-class copies).
            use_cache: KV cache, or the whole block layout recomputed for each block.
            logp_out_BLV: where to write the sampled slots' log-probabilities, or None.
            label_B: a conditional model's class per row (BOS holds its embedding).
            refresh: None, or a function giving the target embeddings with the slot inputs of
                the values decoded so far (called before a block whose level differs from the
                previous block's in some row; a block never mixes levels, ``_check_levels``).
            pos_level_BL: with ``refresh``, the level of the slot at each order position.
        """
        device = gid_BL.device
        B, L = gid_BL.shape
        V, D = self.spec.total_vocab, source_BLD.shape[2]
        perm_BL, block_BL = order.perm, order.block
        sizes_BK = order.block_sizes()
        K = sizes_BK.shape[1]
        if K == 0:
            return
        start_BK = n_given_B[:, None] + torch.cumsum(sizes_BK, dim=1) - sizes_BK  # order position of each block
        widths_K = [int(w) for w in sizes_BK.max(dim=0).values.tolist()]
        rows_BL = torch.arange(B, device=device)[:, None].expand(B, L)
        merged = self.block_layout == "merged"
        cache = keys_level_BS = keys_pos_BS = pending = layout = None
        if use_cache:
            keys_level_BS = torch.zeros(B, 0, dtype=torch.long, device=device)
            keys_pos_BS = torch.zeros(B, 0, dtype=torch.long, device=device)
        if use_cache and merged:
            layout = _Merged(order)
            cache = KVCache(self.config.depth, 1 + layout.offsets[-1])
        elif use_cache:
            # split layout, one pass per block: the tokens to store (BOS and the given value tokens,
            # then the previous block's value tokens) ride in the same pass as the block's queries
            G = int(n_given_B.max())
            cache = KVCache(self.config.depth, 1 + G + sum(widths_K))
            pos_BG = torch.arange(G, device=device).expand(B, G)
            value = _value_levels(block_BL[:, :G], pos_BG, pos_BG < n_given_B[:, None])
            bos = _bos_levels(B, device)
            x_BGD = self._value_tokens(gid_BL, source_BLD, perm_BL[:, :G])
            pending = (torch.cat([self._bos(B, x_BGD, label_B), x_BGD], dim=1),
                       *(torch.cat([bos[i], value[i]], 1) for i in range(4)))
        for k in range(K):
            W = widths_K[k]
            within_W = torch.arange(W, device=device)
            real_BW = within_W[None, :] < sizes_BK[:, k : k + 1]
            pos_BW = torch.where(real_BW, start_BK[:, k : k + 1] + within_W, 0).clamp(max=L - 1)
            slot_BW = perm_BL.gather(1, pos_BW)
            block_BW = torch.full_like(pos_BW, k)
            if refresh is not None and k > 0:
                level_BW = pos_level_BL.gather(1, pos_BW)
                if bool((level_BW[:, 0] != pos_level_BL.gather(1, start_BK[:, k - 1 : k].clamp(max=L - 1))[:, 0]).any()):
                    target_BLD = refresh()
            if use_cache and merged:
                # group k: block k - 1's values (just sampled) with block k's targets, all stored
                a, b = layout.offsets[k], layout.offsets[k + 1]
                x_BTD = self._merged_tokens(gid_BL, source_BLD, target_BLD, perm_BL, layout, a, b)
                levels = layout.levels(a, b)
                if k == 0:
                    x_BTD = torch.cat([self._bos(B, x_BTD, label_B), x_BTD], dim=1)
                    levels = tuple(torch.cat([bos, lev], 1) for bos, lev in zip(_bos_levels(B, device), levels))
                q_level, q_pos, k_level, k_pos = levels
                keys_level_BS = torch.cat([keys_level_BS, k_level], dim=1)
                keys_pos_BS = torch.cat([keys_pos_BS, k_pos], dim=1)
                mask = block_causal_mask(q_level, keys_level_BS, q_pos_BT=q_pos, k_pos_BS=keys_pos_BS)
                h_BWD = self.stack(x_BTD, cache=cache, attn_mask=mask)[:, (k == 0) :][:, :W]
            elif use_cache:
                x_BPD, p_q_level, p_q_pos, p_k_level, p_k_pos = pending
                P = x_BPD.shape[1]
                q_level, q_pos, k_level, k_pos = _query_levels(block_BW, real_BW)
                keys_level_BS = torch.cat([keys_level_BS, p_k_level], dim=1)
                keys_pos_BS = torch.cat([keys_pos_BS, p_k_pos], dim=1)
                mask = block_causal_mask(
                    torch.cat([p_q_level, q_level], dim=1), torch.cat([keys_level_BS, k_level], dim=1),
                    q_pos_BT=torch.cat([p_q_pos, q_pos], dim=1), k_pos_BS=torch.cat([keys_pos_BS, k_pos], dim=1),
                )
                mask = mask | _self_mask(P + W, keys_level_BS.shape[1] + W, W, device)
                x_BTD = torch.cat([x_BPD, self._query_tokens(target_BLD, slot_BW)], dim=1)
                h_BWD = self.stack(x_BTD, cache=cache, attn_mask=mask, store=P)[:, P:]
            else:
                h_BLD = self._block_hidden(gid_BL, source_BLD, target_BLD, order, label_B)
                h_BWD = h_BLD.gather(1, pos_BW[..., None].expand(-1, -1, D))
            logp_BWV, choice_BW = draw_values(self.head(h_BWD), self._allowed(kinds_BL, slot_BW), rng, sampling,
                                              step=k, n_steps=K)
            rows_N, slots_N = rows_BL[:, :W][real_BW], slot_BW[real_BW]
            gid_BL[rows_N, slots_N] = choice_BW[real_BW]
            if logp_out_BLV is not None:
                logp_out_BLV[rows_N, slots_N] = logp_BWV[real_BW]
            if use_cache and not merged and k + 1 < K:  # this block's value tokens go into the next pass
                pending = (self._value_tokens(gid_BL, source_BLD, slot_BW), *_value_levels(block_BW, pos_BW, real_BW))


def _twice_order(order: OrderBatch) -> OrderBatch:
    """The orders of :func:`seqify.nn.with_null_rows`'s batch: each row's order twice."""
    return OrderBatch(torch.cat([order.perm, order.perm]), torch.cat([order.block, order.block]),
                      next_block_only=order.next_block_only, block_layout=order.block_layout)
