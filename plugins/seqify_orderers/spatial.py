"""Spatial orders computed from slot coordinates alone, for any modality whose slots have them.

Which axes (2-D orders: spiral, zigzag, diagonal, column, hilbert):

* the grid axes are the ones named ``"row"`` and ``"col"`` when the tokenizer has
  both; otherwise, the two axes not named ``"scale"`` when there are exactly two
  (a graph's ``(i, j)``: ``i`` plays the row, ``j`` the column); otherwise the order
  does not apply and :meth:`check` says so, naming the tokenizer's coordinates;
* an axis named ``"scale"`` (next-scale tokens) orders scale by scale, ascending
  (scale 0, the coarsest, first), and the 2-D order applies inside each scale on
  that scale's own grid;
* every other axis (Sudoku's ``"box"``) is ignored.

The grid extent is read from the batch, per item (and per scale): ``H = 1 + max row``
and ``W = 1 + max col`` over the item's real (non-padding) slots, so smaller and
non-square grids than ``spec.coord_sizes`` work. Cells without a slot are skipped.

``morton`` interleaves the bits of every axis (no names needed); ``next-scale`` needs
the first axis to be ``"scale"``.

All orders are deterministic. Ties (two slots at the same place, e.g. a graph's
slots sharing (i, j) in another axis that is ignored) go by slot index. Given slots
come first and padding last (:meth:`OrderBatch.from_priorities` /
:meth:`OrderBatch.from_groups` place them).

The 2-D orders read the coordinate names off the batch (``TokenBatch.coord_names``,
the tokenizer's ``spec.coord_names``, which the runner's batches carry); an orderer
keeps no state from ``check``. A batch without names that has exactly two axes uses
them as (row, col); any other batch without names is an error that says so.
"""

from __future__ import annotations

import torch

from seqify.errors import NotApplicableError
from seqify.ordering import StaticOrderer
from seqify.protocols import GeneratorCaps
from seqify.types import OrderBatch, TokenBatch, TokenizerSpec

__all__ = ["Spiral", "Zigzag", "Diagonal", "Column", "Hilbert", "Morton", "NextScale", "grid_layout"]

_SCALE = "scale"


# --------------------------------------------------------------------------- helpers


def grid_layout(coord_names: tuple[str, ...] | list[str]) -> tuple[int, int, int | None] | str:
    """``(row axis, col axis, scale axis or None)`` for these coordinate names, or why not.

    Rule: axes named "row" and "col" when both exist; else the two axes not named
    "scale" when there are exactly two; an axis named "scale" groups the slots (coarse
    to fine); any other axis is ignored.
    """
    names = tuple(coord_names)
    scale = names.index(_SCALE) if _SCALE in names else None
    if "row" in names and "col" in names:
        return names.index("row"), names.index("col"), scale
    others = [a for a, n in enumerate(names) if n != _SCALE]
    if len(others) == 2:
        return others[0], others[1], scale
    return (
        "needs 2-D coordinates: axes named ('row', 'col'), or exactly two axes besides 'scale' "
        f"(such as a graph's ('i', 'j')); tokenizer has coordinates {names}"
    )


def lex_rank(keys: list[torch.Tensor]) -> torch.Tensor:
    """``[B, L]`` long: each slot's position when sorted by ``keys`` (most significant
    first, each ``[B, L]``), ties by slot index."""
    B, L = keys[0].shape
    device = keys[0].device
    perm_BL = torch.arange(L, device=device).expand(B, L).contiguous()
    for key_BL in reversed(keys):
        perm_BL = perm_BL.gather(1, torch.sort(key_BL.gather(1, perm_BL), dim=1, stable=True).indices)
    rank_BL = torch.empty_like(perm_BL)
    rank_BL.scatter_(1, perm_BL, torch.arange(L, device=device).expand(B, L).contiguous())
    return rank_BL


def _group_max(batch: TokenBatch, value_BL: torch.Tensor, group_BL: torch.Tensor) -> torch.Tensor:
    """``[B, L]``: at each slot, the max of ``value`` over the real slots of its item and group."""
    B, L = value_BL.shape
    G = int(group_BL.max()) + 1 if group_BL.numel() else 1
    real_BL = ~batch.pad.to(value_BL.device)
    out_BG = torch.zeros(B, G, dtype=value_BL.dtype, device=value_BL.device)
    out_BG.scatter_reduce_(1, group_BL, torch.where(real_BL, value_BL, torch.zeros_like(value_BL)), "amax")
    return out_BG.gather(1, group_BL)


def _needs_coords(name: str, spec: TokenizerSpec) -> str | None:
    if not spec.coord_names:
        return f"orderer {name!r} orders slots by their coordinates, but this tokenizer has none"
    return None


# ------------------------------------------------------------------- 2-D orders


class _GridOrderer(StaticOrderer):
    """A 2-D order applied per scale (see the module docstring for the axis rule).

    Subclasses implement :meth:`grid_keys`: sort keys (most significant first) of a
    cell at ``(r, c)`` of an ``H x W`` grid; all tensors ``[B, L]`` long.
    """

    def check(self, spec: TokenizerSpec, caps: GeneratorCaps) -> str | None:
        layout = grid_layout(spec.coord_names)
        if isinstance(layout, str):
            return f"orderer {self.name!r} {layout}"
        return super().check(spec, caps)

    def _resolve(self, batch: TokenBatch) -> tuple[int, int, int | None]:
        C = batch.coords.shape[-1]
        if batch.coord_names:
            if len(batch.coord_names) != C:
                raise NotApplicableError(
                    f"orderer {self.name!r}: the batch names {len(batch.coord_names)} coordinate axes "
                    f"{tuple(batch.coord_names)} but has {C}"
                )
            layout = grid_layout(batch.coord_names)
            if isinstance(layout, str):
                raise NotApplicableError(f"orderer {self.name!r} {layout}")
            return layout
        if C == 2:
            return 0, 1, None
        raise NotApplicableError(
            f"orderer {self.name!r} needs to know which of the batch's {C} coordinate axes are row and col, "
            "but the batch carries no coordinate names (build it with collate(..., coord_names=spec.coord_names))"
        )

    def grid_keys(self, r: torch.Tensor, c: torch.Tensor, H: torch.Tensor, W: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def priority(self, batch: TokenBatch, rng: torch.Generator) -> torch.Tensor:
        row_axis, col_axis, scale_axis = self._resolve(batch)
        coords = batch.coords.long()
        r_BL, c_BL = coords[..., row_axis], coords[..., col_axis]
        if scale_axis is None:
            scale_BL = torch.zeros_like(r_BL)
        else:
            scale_BL = torch.where(batch.pad.to(coords.device), 0, coords[..., scale_axis].clamp_min(0))
        H_BL = _group_max(batch, r_BL, scale_BL) + 1
        W_BL = _group_max(batch, c_BL, scale_BL) + 1
        keys = [scale_BL] + self.grid_keys(r_BL, c_BL, H_BL, W_BL)
        return lex_rank(keys).to(torch.float32)


class Spiral(_GridOrderer):
    """From the outer ring inward; each ring clockwise, starting at its top-left cell
    (along the top edge to the right, down the right edge, back along the bottom edge,
    up the left edge)."""

    name = "spiral"

    def grid_keys(self, r, c, H, W):
        k = torch.minimum(torch.minimum(r, c), torch.minimum(H - 1 - r, W - 1 - c))  # ring
        bottom, right = H - 1 - k, W - 1 - k
        w, h = right - k, bottom - k  # the ring's width and height, minus one
        pos = torch.where(
            r == k, c - k,  # top edge, left to right
            torch.where(
                c == right, w + (r - k),  # right edge, downwards
                torch.where(r == bottom, w + h + (right - c),  # bottom edge, right to left
                            2 * w + h + (bottom - r)),  # left edge, upwards
            ),
        )
        return [k, pos]


class Zigzag(_GridOrderer):
    """JPEG zigzag: anti-diagonals ``r + c`` in turn, alternating direction: (0,0),
    (0,1), (1,0), (2,0), (1,1), (0,2), ... (odd diagonals downwards, even ones upwards)."""

    name = "zigzag"

    def grid_keys(self, r, c, H, W):
        d = r + c
        return [d, torch.where(d % 2 == 1, r, -r)]


class Diagonal(_GridOrderer):
    """Anti-diagonals ``r + c`` in turn, each from its top row down."""

    name = "diagonal"

    def grid_keys(self, r, c, H, W):
        return [r + c, r]


class Column(_GridOrderer):
    """Column-major: down each column, columns left to right (the transpose of raster)."""

    name = "column"

    def grid_keys(self, r, c, H, W):
        return [c, r]


def hilbert_index(x: torch.Tensor, y: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Position of ``(x, y)`` on the Hilbert curve of an ``n x n`` square (``n`` a power of
    two, per element). The curve starts at (0, 0) and ends at (n - 1, 0)."""
    x, y, n = x.long().clone(), y.long().clone(), n.long()
    d = torch.zeros_like(x)
    top = int(n.max()) if n.numel() else 1
    s = top // 2
    while s >= 1:
        active = s < n
        rx = (x & s) != 0
        ry = (y & s) != 0
        quadrant = torch.where(rx, torch.where(ry, 2, 3), torch.where(ry, 1, 0))
        d = torch.where(active, d + s * s * quadrant, d)
        x_low, y_low = x % s, y % s
        flip = active & ~ry & rx
        x_low = torch.where(flip, s - 1 - x_low, x_low)
        y_low = torch.where(flip, s - 1 - y_low, y_low)
        swap = active & ~ry
        x, y = torch.where(swap, y_low, x_low), torch.where(swap, x_low, y_low)
        # inactive elements (s >= their n) have x, y < s: reducing mod s left them unchanged
        s //= 2
    return d


class Hilbert(_GridOrderer):
    """The Hilbert curve on the smallest power-of-two square covering the grid (absent
    cells skipped); it starts at the top-left cell and ends at the top-right corner of
    that square (the first step goes right on 4x4, 16x16, ... and down on 2x2, 8x8, ...)."""

    name = "hilbert"

    def grid_keys(self, r, c, H, W):
        side = torch.maximum(H, W).clamp_min(1)
        n = torch.ones_like(side)
        while bool((n < side).any()):
            n = torch.where(n < side, n * 2, n)
        return [hilbert_index(c, r, n)]


# ------------------------------------------------------------------------ morton


class Morton(StaticOrderer):
    """Z-order: the bits of all coordinate axes interleaved, from the highest bit level
    down; within a bit level the first axis is the most significant. On (row, col) that
    is (0,0), (0,1), (1,0), (1,1), (0,2), ...; it works for any number of axes."""

    name = "morton"

    def check(self, spec: TokenizerSpec, caps: GeneratorCaps) -> str | None:
        return _needs_coords(self.name, spec) or super().check(spec, caps)

    def priority(self, batch: TokenBatch, rng: torch.Generator) -> torch.Tensor:
        coords = batch.coords.long().clamp_min(0)
        B, L, C = coords.shape
        if C == 0 or L == 0:
            return torch.zeros(B, L, device=coords.device)
        coords = torch.where(batch.pad.to(coords.device)[..., None], 0, coords)
        levels = max(int(coords.max()).bit_length(), 1)
        # the interleaved bits, most significant first, packed 62 to a key
        keys, key, used = [], torch.zeros(B, L, dtype=torch.long, device=coords.device), 0
        for level in reversed(range(levels)):
            for axis in range(C):
                key = key * 2 + ((coords[..., axis] >> level) & 1)
                used += 1
                if used == 62:
                    keys.append(key)
                    key, used = torch.zeros_like(key), 0
        if used:
            keys.append(key)
        return lex_rank(keys).to(torch.float32)


# -------------------------------------------------------------------- next-scale


class NextScale(StaticOrderer):
    """VAR's next-scale order: one block per value of the first coordinate, which must be
    named "scale", coarse (0) to fine; inside a block, the tokenizer's own slot order
    (for VAR's scale-major, row-major layout the raster over (row, col)). Training asks
    for next-block-only prediction (a masked generator learns to predict the next scale
    from the coarser ones). The order inside a block only matters to a causal
    generator's value tokens; the slot order keeps it the order in which given slots
    come (canonical), so a growing tokenizer's earlier steps, given while the next scale
    is sampled, are read as in training."""

    name = "next-scale"
    produces_blocks = True
    #: a growing tokenizer whose first axis is "scale" grows whole scales, coarse to fine
    #: (the octree: one level per step), so each step is one or more of these blocks
    grows_in_steps = True

    def check(self, spec: TokenizerSpec, caps: GeneratorCaps) -> str | None:
        if not spec.coord_names or spec.coord_names[0] != _SCALE:
            return (
                f"orderer {self.name!r} makes one block per scale, so the first coordinate must be named "
                f"'scale' (next-scale tokens); tokenizer has coordinates {tuple(spec.coord_names)}"
            )
        return super().check(spec, caps)

    @staticmethod
    def _keys(batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``scale [B, L]`` and the slot index ``[B, L]`` (the order inside a scale)."""
        coords = batch.coords.long()
        if coords.shape[-1] == 0:
            raise NotApplicableError("orderer 'next-scale' needs a first coordinate named 'scale'; the batch has none")
        scale_BL = torch.where(batch.pad.to(coords.device), 0, coords[..., 0])
        B, L = scale_BL.shape
        return scale_BL, torch.arange(L, device=coords.device).expand(B, L)

    def priority(self, batch: TokenBatch, rng: torch.Generator) -> torch.Tensor:
        scale_BL, raster_BL = self._keys(batch)
        return lex_rank([scale_BL, raster_BL]).to(torch.float32)

    def infer_orders(self, batch: TokenBatch, *, rng: torch.Generator) -> OrderBatch:
        scale_BL, raster_BL = self._keys(batch)
        order = OrderBatch.from_groups(batch, scale_BL, raster_BL.to(torch.float64))
        return OrderBatch(order.perm, order.block, block_layout=True)

    def train_orders(self, batch: TokenBatch, *, progress: float, rng: torch.Generator) -> OrderBatch:
        order = self.infer_orders(batch, rng=rng)
        return OrderBatch(order.perm, order.block, next_block_only=True, block_layout=True)
