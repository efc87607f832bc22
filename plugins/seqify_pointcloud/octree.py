"""The ``octree`` tokenizer: child-occupancy codes of an octree, level by level, coarse to fine.

The root cell is the normalized [-1, 1]^3 box. A cell at level d (``2^d`` cells per
axis) that holds points is split into 8 octants; octant ``k`` has bit 0 = upper half in
x, bit 1 = upper half in y, bit 2 = upper half in z. Each occupied cell at levels
0 .. depth-1 emits one 8-bit code whose bit ``k`` says whether octant ``k`` holds points
(1 .. 255: an occupied cell always has an occupied child). Cells are visited
breadth-first, children in octant order, which is z-order (Morton order) inside each
level (as OctGPT orders them). The sequence is 1 root code, then one code per occupied
cell of level 1, 2, ..., depth - 1. There is no END token: the grammar fixes the
length (level d + 1 holds one code per set bit of level d's codes).

Values: one kind "code" of 255 values, value ``c - 1`` for code ``c``.

Coordinates: every slot carries the structure of its cell, the same in ``encode`` and
while sampling: ``scale`` (the level d), ``x``, ``y``, ``z`` (the cell's lowest corner
on the grid of the finest coded level, ``2^(depth-1)`` per axis, so one value means one
place at every level) and ``octant`` (which child of its parent the cell is; 0 for the
root).

Growing (``spec.grows``): ``blank()`` is the root slot, and :meth:`OctreeTokenizer.next_slots`
reads the codes decoded so far and returns the next level's slots, one per announced
child, each with its coordinates, until level depth - 1 is coded (:mod:`seqify.grow`
asks the generator to fill them given everything before). Every sampled sequence is
therefore a complete tree. ``max_len`` bounds the length: when the children a level
announces would leave too little room for the levels below it (each needs at least as
many codes as the one above), they are thinned to fit, round-robin over the parents
(each parent keeps its first announced child, then each its second, ...), so every
parent keeps at least one; :func:`octree_walk` applies the same rule when decoding, and
a decoded sample that needed it is marked ``source == THINNED`` (the modality counts
them). No training tree is ever thinned (a sequence of at most ``max_len`` codes always
fits).

Decoding: the centres of the occupied cells at ``depth`` (the leaves), one point per
cell, so a cloud of N points decodes to at most N points (fewer where points share a
leaf); metrics resample every cloud to a common count (see
:mod:`seqify_pointcloud.metrics`). A code sequence that does not form a complete tree
(too few codes for the cells announced, or codes left over: not from the grow loop)
decodes to None; with ``decode="lenient"`` it decodes as far as the codes go instead
(cells left without a code stay as points at their coarser centre; extra codes are
ignored) and is marked ``source == INCOMPLETE``, which the modality counts
(``incomplete`` in the metrics). At depth ``d`` the leaves are the bins of the
``coords`` tokenizer with ``2^d`` bins, so both tokenizers have the same resolution at
depth 6 / 64 bins.

``fit`` learns ``max_len``: one and a half times the longest training sequence (room
for a model that over-counts), at most the full tree (``8^0 + ... + 8^(depth-1)``);
the state is ``{"max_len": L, "layout": 2}`` (layout 1 was the sequence with END and
position-only coordinates; its checkpoints are refused). Before fitting, the spec
carries the largest tree a cloud of 2,048 points can have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from seqify.config import validate_model
from seqify.protocols import BaseTokenizer
from seqify.types import KindSpec, TokenizerSpec, TokenSet

from seqify_pointcloud.items import PointCloudItem
from seqify_pointcloud.tokenizers import bin_centres, item_points, morton_codes, quantize

__all__ = ["OctreeTokenizer", "OctreeOptions", "OctreeWalk", "octree_codes", "octree_walk", "octree_cells",
           "octree_points_lenient", "level_coords", "max_codes", "full_tree", "INCOMPLETE", "THINNED", "LAYOUT"]

#: ``PointCloudItem.source`` of a lenient decoding of codes that are not a complete tree
INCOMPLETE = "decoded (incomplete octree)"
#: ``PointCloudItem.source`` of a complete tree whose children were thinned to fit ``max_len``
THINNED = "decoded (octree thinned to max_len)"
#: the token layout of this module (in the tokenizer's state: earlier checkpoints are refused)
LAYOUT = 2
#: octant k -> (x, y, z) offset of the child cell
_OCTANTS = np.array([[(k >> 0) & 1, (k >> 1) & 1, (k >> 2) & 1] for k in range(8)], dtype=np.int64)


class OctreeOptions(BaseModel):
    """Settings of the ``octree`` tokenizer."""

    model_config = ConfigDict(extra="forbid")

    depth: int = Field(6, ge=1, le=10, description="levels below the root: leaves are 2^depth cells per axis")
    decode: Literal["strict", "lenient"] = Field(
        "strict",
        description="strict: codes that do not form exactly a complete tree decode to None; lenient: decode the "
                    "tree as far as the codes go (see octree_points_lenient)",
    )


def max_codes(depth: int, n_points: int) -> int:
    """The most codes a cloud of ``n_points`` points can need at ``depth``:
    level d holds at most min(8^d, n_points) occupied cells."""
    return sum(min(8**d, n_points) for d in range(depth))


def full_tree(depth: int) -> int:
    """Codes of the full tree of ``depth`` levels (every cell occupied): 8^0 + ... + 8^(depth-1)."""
    return sum(8**d for d in range(depth))


def octree_codes(points: np.ndarray, depth: int) -> np.ndarray:
    """Breadth-first occupancy codes (uint8, 1..255) of points in [-1, 1]^3."""
    q = quantize(points, 2**depth)  # leaf cell of each point, (x, y, z)
    codes = []
    for d in range(depth):  # cells of level d + 1, grouped by their parent at level d
        child = np.unique(morton_codes(q >> (depth - d - 1), d + 1))
        parent, first = np.unique(child >> 3, return_index=True)
        bits = np.left_shift(1, child & 7)
        codes.append(np.bitwise_or.reduceat(bits, first))  # parents in Morton order = breadth-first
    return np.concatenate(codes).astype(np.uint8)


def _thin(parent_M: np.ndarray, room: int) -> np.ndarray:
    """Bool ``[M]``: the children kept when only ``room`` fit (``room`` >= the number of
    parents): round-robin over the parents, each parent's children in octant order."""
    M = parent_M.shape[0]
    first = np.searchsorted(parent_M, parent_M, side="left")  # parents are sorted (breadth-first)
    rank_M = np.arange(M) - first  # 0 for a parent's first child, 1 for its second, ...
    keep = np.zeros(M, dtype=bool)
    keep[np.lexsort((parent_M, rank_M))[:room]] = True
    return keep


@dataclass
class OctreeWalk:
    """What a code sequence describes, level by level (see :func:`octree_walk`).

    Args:
        cells: ``cells[d]`` ``[n_d, 3]`` the cells (x, y, z at level d) of each level
            known, 0 .. the deepest one reached (the leaves at ``depth`` when complete).
        octants: ``octants[d]`` ``[n_d]`` which child of its parent each cell is.
        used: codes read (those of levels 0 .. len(cells) - 2).
        thinned: whether some level's children were thinned to fit ``max_len``.
        complete: every level 0 .. depth - 1 coded and no code left over.
    """

    cells: list[np.ndarray]
    octants: list[np.ndarray]
    used: int
    thinned: bool
    complete: bool


def octree_walk(codes: np.ndarray, depth: int, max_len: int | None = None) -> OctreeWalk:
    """Read codes (1..255) level by level: the cells each level announces.

    Level d's cells take the next ``n_d`` codes; their set bits are the cells of level
    d + 1, breadth-first. With ``max_len``, the children of a level are thinned
    (:func:`_thin`) when more were announced than the room left allows (the codes still
    to come for levels d + 1 .. depth - 1, each at least as many as the level above,
    must fit in ``max_len``), so a tree grown under this rule always completes. Stops
    at the first level whose codes are not all there.
    """
    codes = np.asarray(codes, dtype=np.int64)
    cells, octants = [np.zeros((1, 3), dtype=np.int64)], [np.zeros(1, dtype=np.int64)]
    at, thinned = 0, False
    for d in range(depth):
        n = cells[-1].shape[0]
        if at + n > codes.shape[0]:
            break
        occupied_N8 = ((codes[at : at + n, None] >> np.arange(8)) & 1).astype(bool)
        at += n
        parent_M = np.nonzero(occupied_N8)[0]  # row-major: parent order, then octant
        octant_M = np.nonzero(occupied_N8)[1]
        left = depth - 1 - d  # levels still to code after this one
        if max_len is not None and left > 0:
            room = (max_len - at) // left
            if parent_M.shape[0] > room:
                keep = _thin(parent_M, room)
                parent_M, octant_M, thinned = parent_M[keep], octant_M[keep], True
        cells.append(cells[-1][parent_M] * 2 + _OCTANTS[octant_M])
        octants.append(octant_M)
    complete = len(cells) == depth + 1 and at == codes.shape[0]
    return OctreeWalk(cells, octants, at, thinned, complete)


def level_coords(walk: OctreeWalk, level: int, depth: int) -> torch.Tensor:
    """``[n, 5]`` slot coordinates of level ``level``'s cells: (scale, x, y, z, octant),
    x / y / z the cell's lowest corner on the grid of level ``depth - 1``."""
    cells = walk.cells[level] << (depth - 1 - level)
    out = np.concatenate([np.full((cells.shape[0], 1), level), cells, walk.octants[level][:, None]], axis=1)
    return torch.from_numpy(out.astype(np.int64))


def octree_cells(codes: np.ndarray, depth: int, max_len: int | None = None) -> np.ndarray | None:
    """The occupied leaf cells ``[M, 3]`` (x, y, z) a code sequence describes, in Morton
    order; None when the codes do not form a complete tree of ``depth`` levels."""
    codes = np.asarray(codes, dtype=np.int64)
    if ((codes < 1) | (codes > 255)).any():
        return None
    walk = octree_walk(codes, depth, max_len)
    return walk.cells[-1] if walk.complete else None


def octree_points_lenient(codes: np.ndarray, depth: int) -> tuple[np.ndarray, bool]:
    """Points of a code sequence read as far as it goes, and whether it was a complete tree.

    Level by level, the cells of a level take the next codes in order; when the codes
    run out, the cells left without one stay as points at their own (coarser) cell
    centre, and a tree that stops above ``depth`` gives the centres of its deepest
    cells. Codes after the last level are ignored. (No thinning: this reads sequences
    that did not come from the grow loop.)
    """
    codes = np.asarray(codes, dtype=np.int64)
    cells = np.zeros((1, 3), dtype=np.int64)
    points, at, level = [], 0, 0
    while level < depth:
        take = min(cells.shape[0], codes.shape[0] - at)
        if take <= 0:
            break
        occupied = ((codes[at : at + take, None] >> np.arange(8)) & 1).astype(bool)
        at += take
        if take < cells.shape[0]:  # cells without a code: kept at this level's resolution
            points.append(bin_centres(cells[take:], 2**level))
        cells = (cells[:take, None, :] * 2 + _OCTANTS[None])[occupied]
        level += 1
    points.append(bin_centres(cells, 2**level))
    out = np.concatenate(points, axis=0)
    complete = level == depth and at == codes.shape[0] and len(points) == 1
    return out, complete


class OctreeTokenizer(BaseTokenizer):
    """Octree occupancy codes, level by level, grown as decoded (see the module docstring)."""

    name = "octree"
    config_model: ClassVar[type[BaseModel]] = OctreeOptions

    def __init__(self, depth: int = 6, decode: str = "strict"):
        opts = validate_model(OctreeOptions, {"depth": depth, "decode": decode}, "tokenizer")
        self.depth, self.decode_mode = opts.depth, opts.decode  # type: ignore[attr-defined]
        self.max_len: int | None = None

    def __repr__(self) -> str:
        # the decoding mode is left out: it changes no token, so both modes share caches and models
        return f"OctreeTokenizer(depth={self.depth})"

    def fit(self, items: list[Any], *, device: Any = None, seed: int = 0) -> None:
        """Learn ``max_len`` from the longest training sequence (see the module docstring)."""
        if not items:
            raise ValueError("octree tokenizer: fit needs at least one point cloud")
        longest = max(len(octree_codes(item_points(item), self.depth)) for item in items)
        self.max_len = max(self.depth, min(full_tree(self.depth), int(math.ceil(longest * 1.5))))

    def state_dict(self) -> dict[str, Any]:
        return {} if self.max_len is None else {"max_len": int(self.max_len), "layout": LAYOUT}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) == {"max_len"}:
            raise ValueError("octree tokenizer: this state is of the earlier token layout (codes then END, position "
                             "coordinates); a model trained on it does not read the grown layout: train it again")
        if set(state) != {"max_len", "layout"}:
            raise ValueError(f"octree tokenizer: expected a state with 'max_len' and 'layout', got keys {sorted(state)} "
                             "(a checkpoint of another tokenizer?)")
        if int(state["layout"]) != LAYOUT:
            raise ValueError(f"octree tokenizer: state of token layout {state['layout']}, this version writes {LAYOUT}")
        if int(state["max_len"]) < self.depth:
            raise ValueError(f"octree tokenizer: max_len {state['max_len']} is less than depth {self.depth}")
        self.max_len = int(state["max_len"])

    @property
    def spec(self) -> TokenizerSpec:
        """One kind "code" (255 codes), coordinates (scale, x, y, z, octant), grown level by level."""
        L = self.max_len if self.max_len is not None else max_codes(self.depth, 2048)
        side = 2 ** (self.depth - 1)
        return TokenizerSpec(
            kinds=(KindSpec("code", 255),),
            coord_names=("scale", "x", "y", "z", "octant"),
            coord_sizes=(self.depth, side, side, side, 8),
            max_len=L,
            lossless=False,
            grows=True,
        )

    @staticmethod
    def _slots(coords: torch.Tensor) -> TokenSet:
        L = coords.shape[0]
        return TokenSet(torch.zeros(L, dtype=torch.long), torch.zeros(L, dtype=torch.long), coords,
                        torch.zeros(L, dtype=torch.bool))

    def blank(self) -> TokenSet:
        """The root slot (scale 0): the first step of growing a tree."""
        return self._slots(torch.zeros(1, 5, dtype=torch.long))

    def encode(self, item: PointCloudItem) -> TokenSet:
        """The codes, each slot with its cell's coordinates. Raises ValueError for a bad
        cloud or a sequence longer than ``max_len``."""
        codes = octree_codes(item_points(item), self.depth)
        if codes.shape[0] > self.spec.max_len:
            raise ValueError(f"point cloud {getattr(item, 'source', '')!r}: {codes.shape[0]} octree codes "
                             f"are more than max_len {self.spec.max_len} (learned by fit)")
        walk = octree_walk(codes, self.depth, self.spec.max_len)
        coords = torch.cat([level_coords(walk, d, self.depth) for d in range(self.depth)])
        out = self._slots(coords)
        out.values = torch.from_numpy(codes.astype(np.int64) - 1)
        return out

    def next_slots(self, tokens: TokenSet) -> TokenSet | None:
        """The open slots of the next level, one per child the codes so far announce
        (thinned to fit ``max_len``), or None when level ``depth - 1`` is coded.

        Raises ValueError when ``tokens`` stops inside a level, holds a value outside
        the codes, or a slot's coordinates are not those of its cell."""
        values = tokens.values.detach().cpu().numpy().astype(np.int64)
        if values.size == 0:
            return self.blank()
        if (values < 0).any() or (values > 254).any():
            bad = int(np.flatnonzero((values < 0) | (values > 254))[0])
            raise ValueError(f"octree tokenizer: slot {bad} holds value {int(values[bad])}, outside the codes 0 .. 254")
        walk = octree_walk(values + 1, self.depth, self.spec.max_len)
        if walk.used != values.size:
            raise ValueError(f"octree tokenizer: {values.size} codes end inside level {len(walk.cells) - 1} "
                             f"(levels 0 .. {len(walk.cells) - 2} hold {walk.used} codes); next_slots takes whole levels")
        expected = torch.cat([level_coords(walk, d, self.depth) for d in range(len(walk.cells) - 1)])
        coords = tokens.coords.detach().cpu().long()
        if tuple(coords.shape) != tuple(expected.shape) or not torch.equal(coords, expected):
            row = 0 if coords.shape != expected.shape else int((coords != expected).any(1).nonzero()[0])
            raise ValueError(f"octree tokenizer: slot {row} has coordinates "
                             f"{coords[row].tolist() if row < coords.shape[0] else None} (shape {tuple(coords.shape)}), "
                             f"the tree puts {expected[row].tolist()} there (shape {tuple(expected.shape)})")
        if walk.complete:
            return None
        return self._slots(level_coords(walk, len(walk.cells) - 1, self.depth))

    def decode(self, tokens: TokenSet) -> PointCloudItem | None:
        """Leaf-cell centres of the codes. strict: None when they do not form a complete
        tree; lenient: the tree as far as the codes go (:func:`octree_points_lenient`),
        with ``source`` set to :data:`INCOMPLETE` when it was not complete (None only
        without any code). A complete tree that was thinned has ``source``
        :data:`THINNED`."""
        values = tokens.values.detach().cpu().numpy().astype(np.int64)
        if values.size == 0 or (values < 0).any() or (values > 254).any():
            return None
        walk = octree_walk(values + 1, self.depth, self.spec.max_len)
        if walk.complete and walk.cells[-1].shape[0]:
            return PointCloudItem(bin_centres(walk.cells[-1], 2**self.depth), None,
                                  THINNED if walk.thinned else "decoded")
        if self.decode_mode == "lenient":
            points, _ = octree_points_lenient(values + 1, self.depth)
            return PointCloudItem(points, None, INCOMPLETE)
        return None
