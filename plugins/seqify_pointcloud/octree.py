"""The ``octree`` tokenizer: child-occupancy codes of an octree, breadth-first, coarse to fine.

The root cell is the normalized [-1, 1]^3 box. A cell at level d (``2^d`` cells per
axis) that holds points is split into 8 octants; octant ``k`` has bit 0 = upper half in
x, bit 1 = upper half in y, bit 2 = upper half in z. Each occupied cell at levels
0 .. depth-1 emits one 8-bit code whose bit ``k`` says whether octant ``k`` holds points
(1 .. 255: an occupied cell always has an occupied child). Cells are visited
breadth-first, children in octant order, which is z-order (Morton order) inside each
level (as OctGPT orders them). The sequence is 1 root code, then one code per occupied
cell of level 1, 2, ..., depth - 1, then an END token.

Values: one kind "code" of 256 values, value ``c - 1`` for code ``c`` and value 255 for
END (``end_kind=0``, ``end_value=255``). Variable length: only prefix-closed orders
(raster) can generate it; the other orderers say so (``StaticOrderer.check``).

Coordinates: the slot's position in the sequence only. A (level, index within the
level) coordinate would depend on the codes before it: a generator that sees the
coordinates of the slot it predicts (the causal generator does) would be told where
each level ends while training, which a blank template for unconditional generation
cannot know, so samples would be drawn under coordinates unlike any it trained on.

Decoding: the centres of the occupied cells at ``depth`` (the leaves), one point per
cell, so a cloud of N points decodes to at most N points (fewer where points share a
leaf); metrics resample every cloud to a common count (see
:mod:`seqify_pointcloud.metrics`). A code sequence that does not form a complete tree
(too few codes for the cells announced, or codes left over) decodes to None; with
``decode="lenient"`` it decodes as far as the codes go instead (cells left without a
code stay as points at their coarser centre; extra codes are ignored) and is marked
``source == INCOMPLETE``, which the modality counts (``incomplete`` in the metrics).
A model must count: level d + 1 has as many codes as there are set bits in level d's
codes. A tiny model at the quick budget gets the total length about right but the
counts wrong, so strict decoding fails on nearly every sample.
At depth ``d`` the leaves are the bins of the ``coords`` tokenizer with ``2^d`` bins,
so both tokenizers have the same resolution at depth 6 / 64 bins.

``fit`` learns ``max_len``: the longest training sequence (END included) plus 10%
(capped at the largest tree a cloud of the training size can have); the state is
``{"max_len": L}``. Before fitting, the spec carries that cap for 2,048 points.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from seqify.config import validate_model
from seqify.protocols import BaseTokenizer
from seqify.types import KindSpec, TokenizerSpec, TokenSet

from seqify_pointcloud.items import PointCloudItem
from seqify_pointcloud.tokenizers import bin_centres, item_points, morton_codes, quantize

__all__ = ["OctreeTokenizer", "OctreeOptions", "octree_codes", "octree_cells", "octree_points_lenient",
           "max_codes", "END", "INCOMPLETE"]

#: the END token's value (codes 1..255 are values 0..254)
END = 255
#: ``PointCloudItem.source`` of a lenient decoding of codes that are not a complete tree
INCOMPLETE = "decoded (incomplete octree)"
#: octant k -> (x, y, z) offset of the child cell
_OCTANTS = np.array([[(k >> 0) & 1, (k >> 1) & 1, (k >> 2) & 1] for k in range(8)], dtype=np.int64)


class OctreeOptions(BaseModel):
    """Settings of the ``octree`` tokenizer."""

    model_config = ConfigDict(extra="forbid")

    depth: int = Field(6, ge=1, le=10, description="levels below the root: leaves are 2^depth cells per axis")
    decode: Literal["strict", "lenient"] = Field(
        "strict",
        description="strict: codes that do not form exactly a complete tree decode to None; lenient: decode the "
                    "tree as far as the codes go (see octree_points)",
    )


def max_codes(depth: int, n_points: int) -> int:
    """The most codes a cloud of ``n_points`` points can need at ``depth`` (END excluded):
    level d holds at most min(8^d, n_points) occupied cells."""
    return sum(min(8**d, n_points) for d in range(depth))


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


def octree_cells(codes: np.ndarray, depth: int) -> np.ndarray | None:
    """The occupied leaf cells ``[M, 3]`` (x, y, z) a code sequence describes, in Morton
    order; None when the codes do not form a complete tree of ``depth`` levels."""
    codes = np.asarray(codes, dtype=np.int64)
    if ((codes < 1) | (codes > 255)).any():
        return None
    cells = np.zeros((1, 3), dtype=np.int64)
    at = 0
    for _ in range(depth):
        n = cells.shape[0]
        if at + n > codes.shape[0]:
            return None
        occupied = ((codes[at : at + n, None] >> np.arange(8)) & 1).astype(bool)  # [n, 8]
        at += n
        cells = (cells[:, None, :] * 2 + _OCTANTS[None])[occupied]  # row-major: parent order, then octant
    if at != codes.shape[0]:
        return None
    return cells


def octree_points_lenient(codes: np.ndarray, depth: int) -> tuple[np.ndarray, bool]:
    """Points of a code sequence read as far as it goes, and whether it was a complete tree.

    Level by level, the cells of a level take the next codes in order; when the codes
    run out, the cells left without one stay as points at their own (coarser) cell
    centre, and a tree that stops above ``depth`` gives the centres of its deepest
    cells. Codes after the last level are ignored.
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
    """Octree occupancy codes, breadth-first, with END (see the module docstring)."""

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
        longest, most_points = 0, 0
        for item in items:
            pts = item_points(item)
            longest = max(longest, len(octree_codes(pts, self.depth)) + 1)
            most_points = max(most_points, pts.shape[0])
        self.max_len = min(max_codes(self.depth, most_points) + 1, int(math.ceil(longest * 1.1)))

    def state_dict(self) -> dict[str, Any]:
        return {} if self.max_len is None else {"max_len": int(self.max_len)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"max_len"}:
            raise ValueError(f"octree tokenizer: expected a state with 'max_len', got keys {sorted(state)} "
                             "(a checkpoint of another tokenizer?)")
        self.max_len = int(state["max_len"])

    @property
    def spec(self) -> TokenizerSpec:
        """One kind "code" (255 codes + END), coordinate (position), variable length."""
        L = self.max_len if self.max_len is not None else max_codes(self.depth, 2048) + 1
        return TokenizerSpec(
            kinds=(KindSpec("code", 256),),
            coord_names=("position",),
            coord_sizes=(L,),
            max_len=L,
            variable_length=True,
            end_kind=0,
            end_value=END,
            lossless=False,
        )

    def blank(self) -> TokenSet:
        """``max_len`` open slots (generation stops at END)."""
        L = self.spec.max_len
        return TokenSet(torch.zeros(L, dtype=torch.long), torch.zeros(L, dtype=torch.long),
                        torch.arange(L).unsqueeze(1), torch.zeros(L, dtype=torch.bool))

    def encode(self, item: PointCloudItem) -> TokenSet:
        """Codes then END. Raises ValueError for a bad cloud or a sequence longer than ``max_len``."""
        codes = octree_codes(item_points(item), self.depth)
        L = codes.shape[0] + 1
        if L > self.spec.max_len:
            raise ValueError(f"point cloud {getattr(item, 'source', '')!r}: {codes.shape[0]} octree codes + END "
                             f"is more than max_len {self.spec.max_len} (learned by fit)")
        values = torch.from_numpy(np.append(codes.astype(np.int64) - 1, END))
        return TokenSet(values, torch.zeros(L, dtype=torch.long), torch.arange(L).unsqueeze(1),
                        torch.zeros(L, dtype=torch.bool))

    def decode(self, tokens: TokenSet) -> PointCloudItem | None:
        """Leaf-cell centres of the codes before the first END (all slots when there is
        none). strict: None when they do not form a complete tree; lenient: the tree as
        far as the codes go (:func:`octree_points_lenient`), with ``source`` set to
        :data:`INCOMPLETE` when it was not complete (None only without any code)."""
        values = tokens.values.detach().cpu().numpy().astype(np.int64)
        ends = np.flatnonzero(values == END)
        values = values[: ends[0]] if ends.size else values
        if values.size == 0 or (values < 0).any() or (values > 254).any():
            return None
        if self.decode_mode == "lenient":
            points, complete = octree_points_lenient(values + 1, self.depth)
            return PointCloudItem(points, None, "decoded" if complete else INCOMPLETE)
        cells = octree_cells(values + 1, self.depth)
        if cells is None or cells.shape[0] == 0:
            return None
        return PointCloudItem(bin_centres(cells, 2**self.depth), None, "decoded")
