"""Transformer building blocks for generators (public API for plugin authors).

Both generators embed a slot as (value or special token) + kind + one embedding per
coordinate axis + slot index, run pre-LayerNorm transformer blocks with fused
attention (``scaled_dot_product_attention``), and read a value distribution that is
always restricted to the slot's own kind.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from seqify.types import TokenBatch, TokenizerSpec

__all__ = [
    "TransformerConfig",
    "SlotEmbedding",
    "SelfAttention",
    "TransformerBlock",
    "TransformerStack",
    "LayerCache",
    "KVCache",
    "block_causal_mask",
    "axis_head_mask",
    "check_batch",
    "check_temperature",
    "clean_structure",
    "init_weights",
    "global_ids",
    "restricted_log_softmax",
    "gumbel_noise",
    "pick_values",
    "truncate_logits",
    "guided_logits",
    "SamplingControls",
    "draw_values",
    "ConditionConfig",
    "ClassEmbedding",
    "with_null_rows",
    "evaluating",
    "build_config",
    "describe",
]


class TransformerConfig(BaseModel):
    """Size of a generator's transformer; the defaults train on a laptop CPU."""

    model_config = ConfigDict(extra="forbid")

    d_model: int = Field(128, ge=8, description="width of the token representations")
    n_layers: int = Field(4, ge=1, description="number of transformer blocks")
    n_heads: int = Field(4, ge=1, description="attention heads per block (must divide d_model)")
    mlp_ratio: int = Field(4, ge=1, description="hidden width of the MLP as a multiple of d_model")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on attention and residual branches while training")
    axis_heads: bool = Field(False, description="structure-aware attention: in every block, head a attends only to "
                                                "the slots that share the query's value on coordinate axis a (Sudoku: "
                                                "row, column, box; images: row, column; molecular graphs: the slots "
                                                "of one atom); the other heads attend everywhere. Needs more heads "
                                                "than axes")
    loops: int = Field(1, ge=1, description="run the blocks this many times with shared weights (a looped "
                                           "transformer: depth without parameters)")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "TransformerConfig":
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        return self

    @property
    def depth(self) -> int:
        """Blocks a forward pass runs through (``n_layers * loops``; one KV cache layer each)."""
        return self.n_layers * self.loops


def axis_head_mask(coords_BLC: torch.Tensor, n_heads: int, key_mask_BL: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, H, L, L]`` bool attention mask of structure-aware heads (True = may attend).

    Head ``a < C`` lets slot ``i`` attend to slot ``j`` only when they share the value of
    coordinate axis ``a`` (``coords[i, a] == coords[j, a]``); heads ``C ..`` attend to
    every slot. ``key_mask_BL`` (False on padding) applies to every head; a slot always
    sees itself, so no row is empty.

    Args:
        coords_BLC: slot coordinates (``C`` axes).
        n_heads: heads per block; must exceed ``C`` (at least one head stays global).
        key_mask_BL: bool, False for keys no query may attend to.
    """
    B, L, C = coords_BLC.shape
    if n_heads <= C:
        raise ValueError(f"axis_heads: {C} coordinate axes need more than {C} heads (one per axis plus at least "
                         f"one global head), got n_heads={n_heads}")
    same_BCLL = coords_BLC.permute(0, 2, 1)[:, :, :, None] == coords_BLC.permute(0, 2, 1)[:, :, None, :]
    rest_BHLL = torch.ones(B, n_heads - C, L, L, dtype=torch.bool, device=coords_BLC.device)
    mask_BHLL = torch.cat([same_BCLL, rest_BHLL], dim=1)
    if key_mask_BL is not None:
        mask_BHLL = mask_BHLL & key_mask_BL[:, None, None, :]
    return mask_BHLL | torch.eye(L, dtype=torch.bool, device=coords_BLC.device)


def build_config(config_model: type[TransformerConfig], config: object) -> TransformerConfig:
    """``config`` as an instance of ``config_model`` (None: defaults; a dict is validated)."""
    if config is None:
        return config_model()
    if isinstance(config, config_model):
        return config
    if isinstance(config, dict):
        return config_model.model_validate(config)
    if isinstance(config, BaseModel):
        return config_model.model_validate(config.model_dump())
    raise TypeError(f"config must be a {config_model.__name__}, a dict or None, got {type(config).__name__}")


def describe(module: nn.Module, config: BaseModel, spec: TokenizerSpec) -> str:
    """One-line ``__repr__``: class, size, settings and vocabulary."""
    n = sum(p.numel() for p in module.parameters())
    size = f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"
    settings = ", ".join(f"{k}={v}" for k, v in config.model_dump().items())
    return f"{type(module).__name__}(params={size}, {settings}, vocab={spec.total_vocab}, max_len={spec.max_len})"


class SlotEmbedding(nn.Module):
    """Where a slot sits: kind + one table per coordinate axis + slot index.

    Args:
        spec: the tokenizer's spec (number of kinds, coordinate sizes, maximum length).
        d_model: embedding width.
    """

    def __init__(self, spec: TokenizerSpec, d_model: int):
        super().__init__()
        self.kind = nn.Embedding(len(spec.kinds), d_model)
        self.coords = nn.ModuleList(nn.Embedding(max(size, 1), d_model) for size in spec.coord_sizes)
        self.index = nn.Embedding(max(spec.max_len, 1), d_model)

    def forward(self, kinds_BL: torch.Tensor, coords_BLC: torch.Tensor) -> torch.Tensor:
        """``[B, L, D]`` structure embedding of every slot (slot index = column)."""
        L = kinds_BL.shape[1]
        x_BLD = self.kind(kinds_BL) + self.index(torch.arange(L, device=kinds_BL.device))
        for axis, table in enumerate(self.coords):
            x_BLD = x_BLD + table(coords_BLC[..., axis])
        return x_BLD


class LayerCache:
    """Keys and values one attention layer has seen, in preallocated buffers.

    Args:
        capacity: the most positions the cache will hold.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.length = 0
        self.k_BHTd: torch.Tensor | None = None
        self.v_BHTd: torch.Tensor | None = None

    def __repr__(self) -> str:
        return f"LayerCache(length={self.length}, capacity={self.capacity})"

    def append(self, k_BHTd: torch.Tensor, v_BHTd: torch.Tensor, keep: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new keys and values; return all keys and values so far.

        Args:
            k_BHTd, v_BHTd: keys and values of the ``T`` new positions.
            keep: store only the first ``keep`` new positions (default all); the others
                are returned for this call (e.g. queries that later positions never see)
                and overwritten by the next call. They are staged in the buffer's free
                room, so no copy of the cache is made when the capacity allows.
        """
        B, H, T, d = k_BHTd.shape
        keep = T if keep is None else keep
        if not 0 <= keep <= T:
            raise ValueError(f"KV cache: keep={keep} of {T} new positions")
        if self.k_BHTd is None:
            shape = (B, H, self.capacity, d)
            self.k_BHTd = k_BHTd.new_empty(shape)
            self.v_BHTd = v_BHTd.new_empty(shape)
        start, end = self.length, self.length + T
        if self.length + keep > self.capacity:
            raise RuntimeError(f"KV cache overflow: {self.length + keep} positions for a capacity of {self.capacity}")
        if end > self.capacity:  # no room to stage the positions not kept: store the kept ones, concatenate
            self.k_BHTd[:, :, start : start + keep] = k_BHTd[:, :, :keep].to(self.k_BHTd.dtype)
            self.v_BHTd[:, :, start : start + keep] = v_BHTd[:, :, :keep].to(self.v_BHTd.dtype)
            self.length = start + keep
            k = torch.cat([self.k_BHTd[:, :, : self.length], k_BHTd[:, :, keep:].to(self.k_BHTd.dtype)], dim=2)
            v = torch.cat([self.v_BHTd[:, :, : self.length], v_BHTd[:, :, keep:].to(self.v_BHTd.dtype)], dim=2)
            return k, v
        self.k_BHTd[:, :, start:end] = k_BHTd.to(self.k_BHTd.dtype)
        self.v_BHTd[:, :, start:end] = v_BHTd.to(self.v_BHTd.dtype)
        self.length = start + keep
        return self.k_BHTd[:, :, :end], self.v_BHTd[:, :, :end]

    def peek(self, k_BHTd: torch.Tensor, v_BHTd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached keys and values followed by the new ones, without storing the new ones."""
        return self.append(k_BHTd, v_BHTd, keep=0)


class KVCache:
    """One :class:`LayerCache` per transformer block.

    Args:
        n_layers: number of blocks.
        capacity: the most positions the cache will hold.
    """

    def __init__(self, n_layers: int, capacity: int):
        self.layers = [LayerCache(capacity) for _ in range(n_layers)]

    def __repr__(self) -> str:
        return f"KVCache(layers={len(self.layers)}, length={self.length})"

    @property
    def length(self) -> int:
        return self.layers[0].length


def block_causal_mask(
    q_block_BT: torch.Tensor,
    k_block_BS: torch.Tensor,
    *,
    q_pos_BT: torch.Tensor | None = None,
    k_pos_BS: torch.Tensor | None = None,
    key_mask_BS: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[B, 1, T, S]`` bool attention mask (True = may attend) from block ids.

    Query ``i`` sees key ``j`` when the key's block is earlier (``k_block < q_block``).
    When positions are given, it also sees the keys of its own block that are already
    known: ``k_block == q_block`` and ``k_pos <= q_pos`` (within-block causality). With
    a KV cache, the keys are the cached positions followed by the new ones, so
    ``k_block_BS`` covers all ``S`` of them and ``q_block_BT`` only the ``T`` new ones.
    Every query must see at least one key (a fully masked row gives NaN).

    Args:
        q_block_BT: block id of each query.
        k_block_BS: block id of each key.
        q_pos_BT, k_pos_BS: positions for within-block visibility (both or neither).
        key_mask_BS: bool, False for keys no query may attend to (padding).
    """
    if (q_pos_BT is None) != (k_pos_BS is None):
        raise ValueError("block_causal_mask: give both q_pos_BT and k_pos_BS, or neither")
    q_BT1, k_B1S = q_block_BT[:, :, None], k_block_BS[:, None, :]
    mask_BTS = k_B1S < q_BT1
    if q_pos_BT is not None:
        mask_BTS = mask_BTS | ((k_B1S == q_BT1) & (k_pos_BS[:, None, :] <= q_pos_BT[:, :, None]))
    if key_mask_BS is not None:
        mask_BTS = mask_BTS & key_mask_BS[:, None, :]
    return mask_BTS[:, None]


def _kept(store: bool | int, T: int) -> int:
    """How many of ``T`` new positions a cache keeps for ``store`` (True: all, False: none, n: the first n)."""
    if store is True:
        return T
    if store is False:
        return 0
    return int(store)


class SelfAttention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``.

    Args:
        d_model: width.
        n_heads: heads.
        dropout: attention-weight dropout while training.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(
        self,
        x_BTD: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        cache: LayerCache | None = None,
        store: bool | int = True,
    ) -> torch.Tensor:
        B, T, D = x_BTD.shape
        H = self.n_heads
        q, k, v = self.qkv(x_BTD).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.append(k, v, keep=_kept(store, T))
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            # the CPU flash kernel's bf16 backward is several times slower than float32's
            # (measured on AVX512-BF16, torch 2.13): bf16 matmuls, float32 attention
            with torch.autocast("cpu", enabled=False):
                y_BHTd = F.scaled_dot_product_attention(
                    q.float(), k.float(), v.float(), attn_mask=mask,
                    dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal,
                ).to(q.dtype)
        else:
            y_BHTd = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
            )
        return self.proj(y_BHTd.transpose(1, 2).reshape(B, T, D))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attn(ln(x)), then x + mlp(ln(x)) with a GELU MLP."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.ln_attn = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.ln_mlp = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            nn.GELU(),
            nn.Linear(mlp_ratio * d_model, d_model),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x_BTD, *, mask=None, is_causal=False, cache: LayerCache | None = None, store: bool | int = True):
        x_BTD = x_BTD + self.drop(
            self.attn(self.ln_attn(x_BTD), mask=mask, is_causal=is_causal, cache=cache, store=store)
        )
        return x_BTD + self.drop(self.mlp(self.ln_mlp(x_BTD)))


class TransformerStack(nn.Module):
    """The blocks and the final LayerNorm.

    Args:
        config: sizes (see :class:`TransformerConfig`).
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(config.d_model, config.n_heads, config.mlp_ratio, config.dropout)
            for _ in range(config.n_layers)
        )
        self.ln_out = nn.LayerNorm(config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.loops = config.loops

    def forward(
        self,
        x_BTD: torch.Tensor,
        *,
        key_mask_BL: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        attn_mask: torch.Tensor | None = None,
        store: bool | int = True,
    ) -> torch.Tensor:
        """Hidden states ``[B, T, D]``.

        Args:
            x_BTD: input embeddings of the T new positions.
            key_mask_BL: bool, False for keys no query may attend to (padding).
            causal: each position attends only to itself and earlier positions.
            cache: a KV cache: the new positions follow the ``cache.length`` cached ones.
            attn_mask: bool ``[B, 1, T, S]`` (True = may attend), e.g. from
                :func:`block_causal_mask`, or ``[B, H, T, S]`` per head (e.g. from
                :func:`axis_head_mask`); S counts the cached positions and the new
                ones. Replaces ``key_mask_BL`` and ``causal``.
            store: with a cache, False attends to the cache and the new positions
                without storing the new ones (queries that later positions never see);
                an int ``n`` stores the first ``n`` new positions only (tokens that stay,
                followed by queries that do not, in one pass).
        """
        T = x_BTD.shape[1]
        mask, is_causal = None, False
        if attn_mask is not None:
            if causal or key_mask_BL is not None:
                raise ValueError("TransformerStack: attn_mask replaces key_mask_BL and causal; give one or the other")
            mask = attn_mask
        elif key_mask_BL is not None:
            mask = key_mask_BL[:, None, None, :]
        if causal:
            start = cache.length if cache is not None else 0
            if start == 0 and mask is None:
                is_causal = True  # fused causal kernel
            elif T > 1:
                q_pos = torch.arange(start, start + T, device=x_BTD.device)
                k_pos = torch.arange(start + T, device=x_BTD.device)
                causal_TS = k_pos[None, :] <= q_pos[:, None]
                mask = causal_TS if mask is None else (mask & causal_TS)
        x_BTD = self.drop(x_BTD)
        n = len(self.blocks)
        for i in range(n * self.loops):  # a looped transformer runs the same blocks again
            layer_cache = cache.layers[i] if cache is not None else None
            x_BTD = self.blocks[i % n](x_BTD, mask=mask, is_causal=is_causal, cache=layer_cache, store=store)
        return self.ln_out(x_BTD)


def init_weights(module: nn.Module, n_layers: int) -> None:
    """GPT-2 style init: N(0, 0.02), zero biases, residual projections scaled down."""
    for name, p in module.named_parameters():
        if p.dim() >= 2:
            std = 0.02
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                std = 0.02 / math.sqrt(2 * n_layers)
            nn.init.normal_(p, mean=0.0, std=std)
        elif name.endswith("bias"):
            nn.init.zeros_(p)


def clean_structure(batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Values, kinds and coordinates with padding zeroed (pads may hold anything)."""
    pad_BL = batch.pad
    values_BL = batch.values.masked_fill(pad_BL, 0)
    kinds_BL = batch.kinds.masked_fill(pad_BL, 0)
    coords_BLC = batch.coords.masked_fill(pad_BL[..., None], 0)
    return values_BL, kinds_BL, coords_BLC


def global_ids(values_BL: torch.Tensor, kinds_BL: torch.Tensor, offsets_K: torch.Tensor) -> torch.Tensor:
    """Ids inside each kind -> ids in the concatenated vocabulary."""
    return offsets_K[kinds_BL] + values_BL


def restricted_log_softmax(logits_NV: torch.Tensor, allowed_NV: torch.Tensor) -> torch.Tensor:
    """Float32 log-probabilities normalized over the allowed ids only (others -inf)."""
    return logits_NV.float().masked_fill(~allowed_NV, float("-inf")).log_softmax(dim=-1)


def gumbel_noise(shape: tuple[int, ...], rng: torch.Generator, device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise drawn on CPU from ``rng`` (reproducible), moved to ``device``."""
    u = torch.rand(shape, generator=rng, dtype=torch.float32)
    u = u.clamp_min(torch.finfo(torch.float32).tiny)
    return (-torch.log(-torch.log(u))).to(device)


def pick_values(
    logp_NV: torch.Tensor, temperature: float, noise_NV: torch.Tensor | None, *,
    top_k: int | None = None, top_p: float | None = None,
) -> torch.Tensor:
    """Sample ids (Gumbel-max at ``temperature``), or the argmax when temperature is 0.

    Every generator draws its values here. With ``top_k`` / ``top_p`` the draw is
    restricted (:func:`truncate_logits`) after the temperature is applied, as
    Hugging Face's samplers order them (VAR has no temperature); without them (the
    default) the draw is the plain Gumbel-max of earlier releases, bit for bit.

    Args:
        logp_NV: log-probabilities (or logits) over the last axis; -inf where not allowed.
        temperature: softmax temperature; 0 picks the most likely value.
        noise_NV: standard Gumbel noise of the same shape (None: the argmax).
        top_k: draw only among the ``top_k`` most likely values (ties kept).
        top_p: draw only among the smallest set of most likely values whose
            probability reaches ``top_p`` (nucleus sampling).
    """
    if temperature == 0 or noise_NV is None:
        return logp_NV.argmax(dim=-1)
    scaled_NV = logp_NV / temperature
    if top_k is not None or top_p is not None:
        scaled_NV = truncate_logits(scaled_NV, top_k=top_k, top_p=top_p)
    return (scaled_NV + noise_NV).argmax(dim=-1)


def truncate_logits(logits_NV: torch.Tensor, *, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """``logits_NV`` with -inf outside the values a top-k / top-p draw may pick.

    Top-k keeps the ``top_k`` largest logits of each row (and any tied with the k-th,
    as VAR's ``sample_with_top_k_top_p_``); top-p then keeps, of what is left, the
    smallest set of largest values whose probability (softmax over the row) reaches
    ``top_p``: a value is kept when the mass of the values above it is below
    ``top_p``, so the most likely value is always kept (VAR's rule, "remove where the
    ascending cumulative mass is at most 1 - p", is the same set). Not in place.

    Args:
        logits_NV: logits or log-probabilities over the last axis (-inf: not allowed).
        top_k: >= 1, or None for no top-k.
        top_p: in (0, 1], or None for no top-p (1 keeps every allowed value).
    """
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if top_k < logits_NV.shape[-1]:
            kth_N1 = logits_NV.topk(top_k, dim=-1).values[..., -1:]
            logits_NV = logits_NV.masked_fill(logits_NV < kth_N1, float("-inf"))
    if top_p is not None:
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if top_p < 1:
            sorted_NV, index_NV = logits_NV.sort(dim=-1, descending=True)
            probs_NV = sorted_NV.float().softmax(dim=-1)
            above_NV = probs_NV.cumsum(dim=-1) - probs_NV  # mass of the values ranked above each
            drop_sorted_NV = above_NV >= top_p
            drop_sorted_NV[..., 0] = False
            drop_NV = torch.zeros_like(drop_sorted_NV).scatter(-1, index_NV, drop_sorted_NV)
            logits_NV = logits_NV.masked_fill(drop_NV, float("-inf"))
    return logits_NV


def guided_logits(logits_2NV: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance as VAR computes it: ``(1 + s) * cond - s * uncond``.

    Args:
        logits_2NV: the conditional rows, then as many unconditional (null class) rows,
            along the first axis.
        scale: the guidance scale ``s`` at this step (0: the conditional logits).
    """
    cond_NV, uncond_NV = logits_2NV.chunk(2, dim=0)
    return (1 + scale) * cond_NV - scale * uncond_NV


@dataclass(frozen=True)
class SamplingControls:
    """How a generator draws values: temperature, top-k, top-p and classifier-free guidance.

    Args:
        temperature: softmax temperature; 0 picks the most likely value.
        top_k, top_p: restrict each draw (:func:`truncate_logits`); None: no restriction.
        guidance: classifier-free guidance scale ``s`` of a conditional model
            (:func:`guided_logits`); 0: plain conditional sampling, no second pass.
        guidance_schedule: "constant" (``s`` at every step) or "linear" (VAR's ramp:
            ``s * step / (n_steps - 1)``, from 0 at the first step or block to ``s``
            at the last; a single step gets ``s``).
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    guidance: float = 0.0
    guidance_schedule: Literal["constant", "linear"] = "constant"

    def __post_init__(self) -> None:
        check_temperature(self.temperature)
        if self.top_k is not None and int(self.top_k) < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < float(self.top_p) <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not math.isfinite(self.guidance) or self.guidance < 0:
            raise ValueError(f"guidance must be a finite number >= 0, got {self.guidance}")
        if self.guidance_schedule not in ("constant", "linear"):
            raise ValueError(f"guidance_schedule must be 'constant' or 'linear', got {self.guidance_schedule!r}")

    @property
    def guided(self) -> bool:
        """True when each step needs the unconditional (null class) rows too."""
        return self.guidance > 0

    def scale(self, step: int, n_steps: int) -> float:
        """The guidance scale at ``step`` of ``n_steps`` (blocks, or slots for blocks of one)."""
        if self.guidance_schedule == "constant" or n_steps <= 1:
            return self.guidance
        return self.guidance * min(max(step, 0), n_steps - 1) / (n_steps - 1)

    def twice(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` repeated for the null-class rows when guided (the identity otherwise)."""
        return torch.cat([x, x], dim=0) if self.guided else x


def draw_values(
    logits_NxV: torch.Tensor, allowed_NxV: torch.Tensor, rng: torch.Generator, sampling: SamplingControls, *,
    step: int = 0, n_steps: int = 1, noise_NxV: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One sampling step shared by the generators: guidance, restricted log-softmax, draw.

    When ``sampling.guided``, the first half of the rows are the conditional ones and
    the second half the same items under the null class; they are combined
    (:func:`guided_logits`) before the draw, and the log-probabilities and choices come
    back repeated for both halves (so both halves keep the same values).

    Args:
        logits_NxV: logits, rows first (any axes between the rows and the values).
        allowed_NxV: bool, the values each position may take.
        rng: CPU generator of the Gumbel noise (one draw of the guided shape).
        sampling: the controls.
        step, n_steps: where this step is, for a ramped guidance schedule.
        noise_NxV: noise to use instead of a fresh draw (the shape of the guided rows).

    Returns:
        ``(logp_NxV, choice_Nx)``: float32 log-probabilities the values were drawn from
        (at temperature 1, after guidance, before top-k / top-p) and the chosen ids.
    """
    if sampling.guided:
        logits_NxV = guided_logits(logits_NxV, sampling.scale(step, n_steps))
        allowed_NxV = allowed_NxV[: logits_NxV.shape[0]]
    logp_NxV = restricted_log_softmax(logits_NxV, allowed_NxV)
    if noise_NxV is None and sampling.temperature > 0:
        noise_NxV = gumbel_noise(tuple(logp_NxV.shape), rng, logp_NxV.device)
    choice_Nx = pick_values(logp_NxV, sampling.temperature, noise_NxV, top_k=sampling.top_k, top_p=sampling.top_p)
    return sampling.twice(logp_NxV), sampling.twice(choice_Nx)


def check_temperature(temperature: float) -> float:
    temperature = float(temperature)
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    return temperature


class ConditionConfig(BaseModel):
    """Class conditioning of a generator (VAR's class label with label dropout)."""

    condition: bool = Field(False, description="condition on each item's class (the modality's declared condition, "
                                               "e.g. the MNIST digit): needed for classifier-free guidance; "
                                               "false: unconditional, as before")
    cond_drop: float = Field(0.1, ge=0.0, lt=1.0, description="while training, the share of items whose class is "
                                                             "replaced by the null class (VAR: 0.1), which "
                                                             "classifier-free guidance samples from")


class ClassEmbedding(nn.Module):
    """Embeddings of ``n`` condition classes and one null class (index ``n``).

    The null class stands for a dropped label (label dropout while training, so that
    the same model also predicts unconditionally) and for an item without a condition
    (-1), as VAR's ``class_emb`` of ``num_classes + 1`` rows.

    Args:
        n: number of condition classes (ids ``0 .. n-1``).
        d_model: width.
        drop: the share of labels replaced by the null class in :meth:`labels` with ``drop=True``.
    """

    def __init__(self, n: int, d_model: int, drop: float = 0.1):
        super().__init__()
        if n < 1:
            raise ValueError(f"a class embedding needs at least one class, got {n}")
        self.n, self.drop = int(n), float(drop)
        self.table = nn.Embedding(self.n + 1, d_model)

    def __repr__(self) -> str:
        return f"ClassEmbedding(n={self.n}, drop={self.drop})"

    def labels(self, batch: TokenBatch, *, drop: bool = False, required: bool = True, who: str = "generator") -> torch.Tensor:
        """``[B]`` class ids of the batch, -1 (none) mapped to the null class ``n``.

        Args:
            batch: its ``cond`` holds the classes.
            drop: replace each label by the null class with probability ``self.drop``
                (torch's global stream: training's ``dropout`` stream).
            required: a batch without ``cond`` is an error (True) or all null class (False:
                unconditional sampling from a conditional model).
            who: name used in messages.
        """
        B, device = batch.batch_size, batch.values.device
        if batch.cond is None:
            if required:
                raise ValueError(f"{who}: the model is class-conditional ({self.n} classes) but the batch carries "
                                 "no condition (TokenBatch.cond)")
            return torch.full((B,), self.n, dtype=torch.long, device=device)
        cond_B = batch.cond.to(device).long()
        bad_B = cond_B >= self.n
        if bool(bad_B.any()):
            b = int(bad_B.nonzero()[0, 0])
            raise ValueError(f"{who}: item {b} has condition {int(cond_B[b])}, outside the model's {self.n} classes")
        label_B = torch.where(cond_B < 0, torch.full_like(cond_B, self.n), cond_B)
        if drop and self.drop > 0:
            label_B = torch.where(torch.rand(B, device=device) < self.drop, torch.full_like(label_B, self.n), label_B)
        return label_B

    def forward(self, label_B: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` embedding of each label (``n``: the null class)."""
        return self.table(label_B)


def with_null_rows(batch: TokenBatch) -> TokenBatch:
    """The batch followed by a copy of itself without condition (cond -1: the null
    class), the rows classifier-free guidance reads its unconditional logits from."""
    B = batch.batch_size
    cond_B = batch.cond if batch.cond is not None else torch.full((B,), -1, dtype=torch.long, device=batch.values.device)
    return TokenBatch(
        torch.cat([batch.values, batch.values]), torch.cat([batch.kinds, batch.kinds]),
        torch.cat([batch.coords, batch.coords]), torch.cat([batch.given, batch.given]),
        torch.cat([batch.pad, batch.pad]), [*batch.meta, *batch.meta], batch.coord_names,
        torch.cat([cond_B, torch.full_like(cond_B, -1)]),
    )


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients inside; the previous mode is restored after."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def check_batch(spec: TokenizerSpec, batch: TokenBatch, *, values_of: torch.Tensor | None = None, who: str = "generator") -> None:
    """Raise ValueError naming the item and slot when a batch does not fit ``spec``.

    Args:
        spec: the tokenizer spec the generator was built for.
        batch: the batch to check (padding is ignored).
        values_of: ``[B, L]`` bool, slots whose values must lie in their kind's range
            (default: every non-padding slot).
        who: name used in messages.
    """
    B, L = batch.values.shape
    if L > spec.max_len:
        raise ValueError(f"{who}: batch has {L} slots per item, more than the spec's max_len {spec.max_len}")
    C = len(spec.coord_sizes)
    if batch.coords.dim() != 3 or batch.coords.shape[2] != C:
        raise ValueError(f"{who}: batch coords have shape {tuple(batch.coords.shape)}, expected [B, L, {C}]")
    real_BL = ~batch.pad
    values_of = real_BL if values_of is None else values_of & real_BL
    sizes_K = torch.tensor([k.size for k in spec.kinds], device=batch.values.device)
    n_kinds = len(spec.kinds)
    bad_kind_BL = real_BL & ((batch.kinds < 0) | (batch.kinds >= n_kinds))
    kinds_BL = batch.kinds.clamp(0, n_kinds - 1)
    bad_value_BL = values_of & ((batch.values < 0) | (batch.values >= sizes_K[kinds_BL]))
    if C:
        limits_C = torch.tensor(spec.coord_sizes, device=batch.values.device)
        bad_coord_BL = real_BL & ((batch.coords < 0) | (batch.coords >= limits_C)).any(-1)
    else:
        bad_coord_BL = torch.zeros_like(real_BL)
    bad_BL = bad_kind_BL | bad_value_BL | bad_coord_BL
    if not bool(bad_BL.any()):
        return
    b, i = (int(x) for x in bad_BL.nonzero()[0])
    if bool(bad_kind_BL[b, i]):
        reason = f"kind {int(batch.kinds[b, i])} is not one of the spec's {n_kinds} kinds"
    elif bool(bad_coord_BL[b, i]):
        reason = f"coords {batch.coords[b, i].tolist()} are outside the sizes {list(spec.coord_sizes)}"
    else:
        kind = spec.kinds[int(batch.kinds[b, i])]
        reason = f"value {int(batch.values[b, i])} is outside kind {kind.name!r} (size {kind.size})"
    raise ValueError(f"{who}: item {b}, slot {i}: {reason}")
