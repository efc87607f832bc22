"""Graph orders over node slots (i, i) and edge slots (i, j), computed from coordinates alone.

Both need a tokenizer whose coordinates are ``(i, j)`` (the molecule ``graph``
tokenizer); the node numbering is the tokenizer's (BFS over the canonical ranking).
"""

from __future__ import annotations

import torch

from seqify.ordering import StaticOrderer
from seqify.protocols import GeneratorCaps
from seqify.types import TokenBatch, TokenizerSpec

__all__ = ["BFS", "NodesFirst"]

_GRAPH_COORDS = ("i", "j")


class _GraphOrderer(StaticOrderer):
    """Shared by the graph orders: refuses tokenizers without (i, j) coordinates."""

    def check(self, spec: TokenizerSpec, caps: GeneratorCaps) -> str | None:
        if tuple(spec.coord_names) != _GRAPH_COORDS:
            return (
                f"orderer {self.name!r} needs a graph tokenizer (coordinates (i, j)); "
                f"tokenizer has coordinates {tuple(spec.coord_names)}"
            )
        return super().check(spec, caps)

    @staticmethod
    def _node_edge(batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``lo [B, L]``, ``hi [B, L]`` (the smaller and larger of i, j) and ``is_node [B, L]``."""
        i_BL, j_BL = batch.coords[..., 0].long(), batch.coords[..., 1].long()
        return torch.minimum(i_BL, j_BL), torch.maximum(i_BL, j_BL), i_BL == j_BL


class BFS(_GraphOrderer):
    """Each node, then its edges to earlier nodes: (0,0), (1,1), (0,1), (2,2), (0,2), (1,2), ...

    Node j starts block ``j + j(j-1)/2`` of the sequence; the edge (i, j), i < j,
    comes ``1 + i`` places after node j. With the tokenizer's BFS atom numbering,
    every new atom is followed at once by its bonds to atoms already placed.
    """

    name = "bfs"

    def priority(self, batch, rng):
        lo_BL, hi_BL, is_node_BL = self._node_edge(batch)
        start_BL = hi_BL + hi_BL * (hi_BL - 1) // 2
        return (start_BL + torch.where(is_node_BL, 0, 1 + lo_BL)).float()


class NodesFirst(_GraphOrderer):
    """All node slots in index order, then all edge slots in canonical (slot) order."""

    name = "nodes-first"

    def priority(self, batch, rng):
        _, hi_BL, is_node_BL = self._node_edge(batch)
        B, L = batch.values.shape
        slot_BL = torch.arange(L, device=batch.values.device).expand(B, L)
        return torch.where(is_node_BL, hi_BL, L + slot_BL).float()
