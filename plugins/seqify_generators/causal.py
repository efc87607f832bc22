"""A causal any-order transformer in the style of sigma-GPT and RAR.

The sequence follows the order: position 0 holds a BOS token and position ``t > 0``
holds the value of slot ``perm[t-1]`` with that slot's structure embedding (kind,
coordinates, slot index). Every position also carries a *target* embedding of the
slot it must predict, ``perm[t]`` (the double positional encoding of sigma-GPT, the
target-aware position of RAR), so one model trains and generates in any order and
keeps a KV cache at inference.

Orders with blocks larger than one (several slots predicted from the same context)
use a second layout, since in the single stream a position's input holds the value
of the slot before it, which would leak a block's earlier values into its later
slots. The block layout has a BOS token, one *value token* per slot (its value and
source structure embedding, in order) and one *query token* per slot (its target
structure embedding only). Value tokens attend causally to BOS and earlier value
tokens; the query of a slot in block ``k`` attends to BOS, the given slots' and
blocks ``< k``'s value tokens, and itself. Sampling feeds a block's queries against
the KV cache without storing them, samples the block, then appends its value tokens.
Blocks of one always use the single stream (half the tokens).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, model_validator
from torch import nn

from seqify.errors import NotApplicableError
from seqify.protocols import GeneratorCaps, Orderer
from seqify.types import OrderBatch, Scores, TokenBatch, TokenizerSpec

from seqify_generators.sizes import TRANSFORMER_SIZES

from seqify.nn import (
    KVCache,
    SlotEmbedding,
    block_causal_mask,
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


def _self_mask(T: int, S: int, count: int, device: torch.device) -> torch.Tensor:
    """``[T, S]`` bool: the last ``count`` of ``T`` new tokens attend to themselves, the last
    ``count`` of the ``S`` keys (with a cache the keys also count the cached positions)."""
    self_TS = torch.zeros(T, S, dtype=torch.bool, device=device)
    idx = torch.arange(count, device=device)
    self_TS[T - count + idx, S - count + idx] = True
    return self_TS


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
        any_order=True, blocks=True, adaptive=False, variable_length=True
    )
    sizes: ClassVar[dict[str, dict[str, Any]]] = TRANSFORMER_SIZES
    #: the default generator of every orderer it can serve
    default_priority: ClassVar[int] = 20

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

    def _value_tokens(self, gid_BL, source_BLD, slot_BT) -> torch.Tensor:
        """Block layout: value + source structure of each slot in ``slot_BT``."""
        D = source_BLD.shape[2]
        return self.value_embed(gid_BL.gather(1, slot_BT)) + source_BLD.gather(1, slot_BT[..., None].expand(-1, -1, D))

    def _query_tokens(self, target_BLD, slot_BT) -> torch.Tensor:
        """Block layout: target structure of each slot in ``slot_BT`` (no value)."""
        D = target_BLD.shape[2]
        return target_BLD.gather(1, slot_BT[..., None].expand(-1, -1, D))

    def _bos(self, B: int, like: torch.Tensor) -> torch.Tensor:
        return self.value_embed.weight[self.bos_id].to(like.dtype).expand(B, 1, -1)

    def _block_hidden(self, gid_BL, source_BLD, target_BLD, order: OrderBatch) -> torch.Tensor:
        """Block layout, all at once: hidden state ``[B, L, D]`` of the query of each order position.

        The sequence is BOS, the L value tokens in order, the L query tokens in order.
        """
        return self.block_states(gid_BL, source_BLD, target_BLD, order)[:, 1 + order.perm.shape[1] :]

    def block_states(self, gid_BL, source_BLD, target_BLD, order: OrderBatch) -> torch.Tensor:
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
        """
        perm_BL, block_BL = order.perm, order.block
        B, L = perm_BL.shape
        pos_BL = torch.arange(L, device=perm_BL.device).expand(B, L)
        x_values_BLD = self._value_tokens(gid_BL, source_BLD, perm_BL)
        x_BTD = torch.cat([self._bos(B, x_values_BLD), x_values_BLD, self._query_tokens(target_BLD, perm_BL)], dim=1)
        real_BL = torch.ones_like(perm_BL, dtype=torch.bool)
        value = _value_levels(block_BL, pos_BL, real_BL)
        query = _query_levels(block_BL, real_BL)
        bos = _bos_levels(B, perm_BL.device)
        q_level, q_pos, k_level, k_pos = (torch.cat([bos[i], value[i], query[i]], dim=1) for i in range(4))
        mask = block_causal_mask(q_level, k_level, q_pos_BT=q_pos, k_pos_BS=k_pos)
        T = 1 + 2 * L
        return self.stack(x_BTD, attn_mask=mask | _self_mask(T, T, L, mask.device))

    def _hidden(self, gid_BL, source_BLD, target_BLD, order: OrderBatch, T: int) -> torch.Tensor:
        """``[B, T, D]`` hidden state that predicts slot ``order.perm[:, t]`` at order position ``t``."""
        if _has_big_blocks(order):
            return self._block_hidden(gid_BL, source_BLD, target_BLD, order)[:, :T]
        x_BTD = self._inputs(gid_BL, source_BLD, target_BLD, order.perm, 0, T)
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
        """
        T = batch.length if positions is None else positions
        gid_BL, kinds_BL, source_BLD, target_BLD = self._prepare(batch)
        h_BTD = self._hidden(gid_BL, source_BLD, target_BLD, order, T)
        logits_BTV = self.head(h_BTD)
        return restricted_log_softmax(logits_BTV, self._allowed(kinds_BL, order.perm[:, :T]))

    def loss(self, batch: TokenBatch, order: OrderBatch) -> torch.Tensor:
        """Mean cross-entropy (nats) over the predicted slots of the batch.

        Args:
            batch: training items (padding and given slots are never predicted).
            order: orders (given first, padding last); a slot is predicted from the
                given slots and the earlier blocks.
        """
        perm_BL = order.perm
        gid_BL, kinds_BL, source_BLD, target_BLD = self._prepare(batch)
        h_BLD = self._hidden(gid_BL, source_BLD, target_BLD, order, batch.length)
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
    ) -> TokenBatch:
        """Fill the non-given slots of ``template``, one block per step, in the orderer's order.

        Args:
            template: structure and given values (other values are ignored).
            orderer: a static orderer; its order is drawn once with ``rng``.
            rng: CPU generator for the order and the sampling noise.
            temperature: softmax temperature; 0 picks the most likely value.
            use_cache: keep a KV cache and feed only the new tokens each step (same samples as without).
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
                1) each slot was sampled from (zeros for slots never predicted).

        Returns:
            The samples (slots after an END token become padding) and the log-probabilities or None.
        """
        temperature = check_temperature(temperature)
        check_batch(self.spec, template, values_of=template.given, who="causal")
        order = self._resolve_order(template, order, None)
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
            if big_blocks:
                self._generate_blocks(
                    gid_BL, kinds_BL, source_BLD, target_BLD, order, n_given_B,
                    rng=rng, temperature=temperature, use_cache=use_cache, logp_out_BLV=logp_out_BLV,
                )
            else:
                cache = KVCache(self.config.depth, L) if use_cache else None
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
            template.coord_names,
        )
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
        temperature: float,
        use_cache: bool,
        logp_out_BLV: torch.Tensor | None,
    ) -> None:
        """Block layout sampling: fill the predicted slots of ``gid_BL`` block by block, in place.

        Block ``k`` of every item is sampled at step ``k``; an item whose block ``k`` has
        fewer slots than the widest one (or that has no block ``k``) gets filler tokens
        that no other token sees. With the cache: BOS and the given value tokens first;
        then per block, its query tokens against the cache (not stored), the sampled
        block, and its value tokens appended to the cache.

        Args:
            gid_BL: global ids, the given slots' filled in; the sampled ones are written here.
            kinds_BL: kind of every slot (padding zeroed).
            source_BLD, target_BLD: slot structure embeddings (value and query tokens).
            order: a validated order with some block larger than one.
            n_given_B: number of given slots per item.
            rng: CPU generator for the noise, one ``[B, W, V]`` draw per block.
            temperature: softmax temperature; 0 picks the most likely value.
            use_cache: KV cache, or the whole block layout recomputed for each block.
            logp_out_BLV: where to write the sampled slots' log-probabilities, or None.
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
        cache = keys_level_BS = keys_pos_BS = None
        if use_cache:
            G = int(n_given_B.max())
            cache = KVCache(self.config.depth, 1 + G + sum(widths_K[:-1]))
            pos_BG = torch.arange(G, device=device).expand(B, G)
            value = _value_levels(block_BL[:, :G], pos_BG, pos_BG < n_given_B[:, None])
            bos = _bos_levels(B, device)
            q_level, q_pos, keys_level_BS, keys_pos_BS = (torch.cat([bos[i], value[i]], dim=1) for i in range(4))
            x_BTD = self._value_tokens(gid_BL, source_BLD, perm_BL[:, :G])
            x_BTD = torch.cat([self._bos(B, x_BTD), x_BTD], dim=1)
            mask = block_causal_mask(q_level, keys_level_BS, q_pos_BT=q_pos, k_pos_BS=keys_pos_BS)
            self.stack(x_BTD, cache=cache, attn_mask=mask)
        for k in range(K):
            W = widths_K[k]
            within_W = torch.arange(W, device=device)
            real_BW = within_W[None, :] < sizes_BK[:, k : k + 1]
            pos_BW = torch.where(real_BW, start_BK[:, k : k + 1] + within_W, 0).clamp(max=L - 1)
            slot_BW = perm_BL.gather(1, pos_BW)
            block_BW = torch.full_like(pos_BW, k)
            if use_cache:
                q_level, q_pos, k_level, k_pos = _query_levels(block_BW, real_BW)
                mask = block_causal_mask(
                    q_level, torch.cat([keys_level_BS, k_level], dim=1),
                    q_pos_BT=q_pos, k_pos_BS=torch.cat([keys_pos_BS, k_pos], dim=1),
                )
                mask = mask | _self_mask(W, keys_level_BS.shape[1] + W, W, device)
                h_BWD = self.stack(self._query_tokens(target_BLD, slot_BW), cache=cache, attn_mask=mask, store=False)
            else:
                h_BLD = self._block_hidden(gid_BL, source_BLD, target_BLD, order)
                h_BWD = h_BLD.gather(1, pos_BW[..., None].expand(-1, -1, D))
            logp_BWV = restricted_log_softmax(self.head(h_BWD), self._allowed(kinds_BL, slot_BW))
            noise_BWV = gumbel_noise((B, W, V), rng, device) if temperature > 0 else None
            choice_BW = pick_values(logp_BWV, temperature, noise_BWV)
            rows_N, slots_N = rows_BL[:, :W][real_BW], slot_BW[real_BW]
            gid_BL[rows_N, slots_N] = choice_BW[real_BW]
            if logp_out_BLV is not None:
                logp_out_BLV[rows_N, slots_N] = logp_BWV[real_BW]
            if use_cache and k + 1 < K:
                q_level, q_pos, k_level, k_pos = _value_levels(block_BW, pos_BW, real_BW)
                keys_level_BS = torch.cat([keys_level_BS, k_level], dim=1)
                keys_pos_BS = torch.cat([keys_pos_BS, k_pos], dim=1)
                mask = block_causal_mask(q_level, keys_level_BS, q_pos_BT=q_pos, k_pos_BS=keys_pos_BS)
                self.stack(self._value_tokens(gid_BL, source_BLD, slot_BW), cache=cache, attn_mask=mask)
