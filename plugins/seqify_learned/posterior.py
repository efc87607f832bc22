"""The variational order posterior q(z | x): networks that read the fully observed datum
in one pass and give each slot a Plackett-Luce score.

:class:`PosteriorTransformer` (a small bidirectional transformer, any tokenization) and
:class:`PosteriorGraph` (TransformerConv layers over :func:`slot_graph`, for graph
tokenizations with coordinates ``("i", "j")``; needs torch-geometric).
"""

from __future__ import annotations

import torch
from torch import nn

from seqify.errors import NotApplicableError
from seqify.nn import SlotEmbedding, TransformerConfig, TransformerStack, clean_structure, global_ids, init_weights
from seqify.types import TokenBatch, TokenizerSpec

__all__ = ["PosteriorTransformer", "PosteriorGraph", "slot_graph"]


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
