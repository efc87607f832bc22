"""The ``coords`` tokenizer: three quantized coordinates per point, points in a chosen order.

Each coordinate of a normalized cloud (in [-1, 1]) is quantized to ``bins`` levels:
``q = clip(floor((c + 1) / 2 * bins), 0, bins - 1)``; decoding returns the bin centre
``(q + 0.5) * 2 / bins - 1``, so each coordinate is off by at most half a bin
(``1 / bins``). A point becomes three slots, z then y then x (PolyGen's per-vertex
order), of kinds "x", "y", "z"; its coordinates are (point index in the sorted order,
axis: 0 x, 1 y, 2 z). The points are sorted by ``sort``:

- ``zyx``: lexicographically by quantized z, then y, then x (PolyGen, PointGrow);
- ``morton``: by the z-order (Morton) code of the quantized coordinates, bits
  interleaved z, y, x from the most significant down (octree order at the finest level);
- ``random``: a random permutation seeded by a hash of the item's bytes (the set as a
  set; deterministic per item, so tokens can be cached).

Fixed length: ``3 * n_points`` slots. ``n_points`` is the one thing ``fit`` learns: the
cloud size of the training items (loaders resample every cloud to the same count);
it is the tokenizer's state (``{"n_points": N}``) so that ``seqify sample`` restores it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from seqify.config import validate_model
from seqify.protocols import BaseTokenizer
from seqify.types import KindSpec, TokenizerSpec, TokenSet

from seqify_pointcloud.items import PointCloudItem

__all__ = ["CoordsTokenizer", "CoordsOptions", "quantize", "bin_centres", "morton_codes", "point_order",
           "item_points"]

#: slot order inside a point: z, y, x (axis ids: 0 x, 1 y, 2 z)
AXES_IN_SLOT_ORDER = (2, 1, 0)


class CoordsOptions(BaseModel):
    """Settings of the ``coords`` tokenizer."""

    model_config = ConfigDict(extra="forbid")

    bins: int = Field(64, ge=2, le=4096, description="quantization levels per axis over [-1, 1]")
    sort: Literal["zyx", "morton", "random"] = Field(
        "zyx", description="point order: zyx (lexicographic, PolyGen), morton (z-order) or random (seeded per item)"
    )


def item_points(item: Any) -> np.ndarray:
    """The ``[N, 3]`` float array of a :class:`PointCloudItem` (or of an array), checked:
    finite and inside [-1, 1] (a little slack for rounding). Raises ValueError."""
    pts = getattr(item, "points", item)
    try:
        pts = np.asarray(pts, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"expected a PointCloudItem, got {type(item).__name__}") from None
    if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] == 0:
        raise ValueError(f"point cloud {getattr(item, 'source', '')!r}: expected [N, 3] points, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError(f"point cloud {getattr(item, 'source', '')!r}: NaN or infinite coordinates")
    if np.abs(pts).max() > 1.0 + 1e-4:
        raise ValueError(
            f"point cloud {getattr(item, 'source', '')!r}: coordinates up to {np.abs(pts).max():.3g} lie outside "
            "[-1, 1] (normalize it first: seqify_pointcloud.items.normalize_box)"
        )
    return pts


def quantize(points: np.ndarray, bins: int) -> np.ndarray:
    """int64 bin index per coordinate of points in [-1, 1]."""
    return np.clip(np.floor((np.asarray(points, dtype=np.float64) + 1.0) * 0.5 * bins), 0, bins - 1).astype(np.int64)


def bin_centres(q: np.ndarray, bins: int) -> np.ndarray:
    """float32 centres in [-1, 1] of bin indices."""
    return ((np.asarray(q, dtype=np.float64) + 0.5) * (2.0 / bins) - 1.0).astype(np.float32)


def morton_codes(q: np.ndarray, bits: int) -> np.ndarray:
    """Z-order codes of ``[N, 3]`` (x, y, z) integer cells: bit b of x, y, z goes to bit
    3b, 3b + 1, 3b + 2, so z is the most significant axis at every level."""
    q = np.asarray(q, dtype=np.int64)
    code = np.zeros(q.shape[0], dtype=np.int64)
    for b in range(bits):
        for axis in range(3):
            code |= ((q[:, axis] >> b) & 1) << (3 * b + axis)
    return code


def point_order(q: np.ndarray, sort: str, *, bins: int, key: bytes = b"") -> np.ndarray:
    """Permutation of the points (rows of ``q``, quantized (x, y, z)) for ``sort``."""
    if sort == "zyx":
        return np.lexsort((q[:, 0], q[:, 1], q[:, 2]))  # last key is the primary one: z, then y, then x
    if sort == "morton":
        bits = max(1, int(np.ceil(np.log2(bins))))
        return np.argsort(morton_codes(q, bits), kind="stable")
    if sort == "random":
        seed = int.from_bytes(hashlib.sha1(key).digest()[:8], "little")
        return np.random.default_rng(seed).permutation(q.shape[0])
    raise ValueError(f"unknown sort {sort!r} (zyx, morton or random)")


class CoordsTokenizer(BaseTokenizer):
    """Three quantized coordinate slots per point (see the module docstring)."""

    name = "coords"
    config_model: ClassVar[type[BaseModel]] = CoordsOptions

    def __init__(self, bins: int = 64, sort: str = "zyx"):
        opts: CoordsOptions = validate_model(CoordsOptions, {"bins": bins, "sort": sort}, "tokenizer")  # type: ignore[assignment]
        self.bins, self.sort = opts.bins, opts.sort
        self.n_points: int | None = None

    def __repr__(self) -> str:
        return f"CoordsTokenizer(bins={self.bins}, sort={self.sort!r})"

    # ----------------------------------------------------------------- state

    def fit(self, items: list[Any], *, device: Any = None, seed: int = 0) -> None:
        """Learn the cloud size (the most common one among ``items``; clouds of other
        sizes are refused by ``encode`` and so reported and skipped)."""
        counts = Counter(int(item_points(item).shape[0]) for item in items)
        if not counts:
            raise ValueError("coords tokenizer: fit needs at least one point cloud")
        self.n_points = counts.most_common(1)[0][0]

    def state_dict(self) -> dict[str, Any]:
        return {} if self.n_points is None else {"n_points": int(self.n_points)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"n_points"}:
            raise ValueError(f"coords tokenizer: expected a state with 'n_points', got keys {sorted(state)} "
                             "(a checkpoint of another tokenizer?)")
        self.n_points = int(state["n_points"])

    def _n(self) -> int:
        if self.n_points is None:
            raise ValueError("coords tokenizer: call fit (or load_state_dict) first: it learns the cloud size")
        return self.n_points

    # ------------------------------------------------------------------ spec

    @property
    def spec(self) -> TokenizerSpec:
        """Kinds x, y, z (``bins`` values each), coordinates (point, axis), ``3 N`` slots."""
        n = self._n()
        return TokenizerSpec(
            kinds=(KindSpec("x", self.bins), KindSpec("y", self.bins), KindSpec("z", self.bins)),
            coord_names=("point", "axis"),
            coord_sizes=(n, 3),
            max_len=3 * n,
            lossless=False,
        )

    def _layout(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        axes = torch.tensor(AXES_IN_SLOT_ORDER, dtype=torch.long).repeat(n)  # [3n]
        point = torch.arange(n, dtype=torch.long).repeat_interleave(3)
        return axes.clone(), torch.stack([point, axes], dim=1)

    def blank(self) -> TokenSet:
        """All ``3 N`` slots open, values 0."""
        kinds, coords = self._layout(self._n())
        L = kinds.shape[0]
        return TokenSet(torch.zeros(L, dtype=torch.long), kinds, coords, torch.zeros(L, dtype=torch.bool))

    # ------------------------------------------------------------- encoding

    def encode(self, item: PointCloudItem) -> TokenSet:
        """A normalized cloud of ``N`` points to ``3 N`` slots. Raises ValueError for a
        cloud of another size, outside [-1, 1] or with NaNs."""
        n = self._n()
        pts = item_points(item)
        if pts.shape[0] != n:
            raise ValueError(f"point cloud {getattr(item, 'source', '')!r} has {pts.shape[0]} points; "
                             f"this tokenizer was fitted on clouds of {n}")
        q = quantize(pts, self.bins)
        key = np.ascontiguousarray(np.asarray(getattr(item, "points", pts))).tobytes()
        q = q[point_order(q, self.sort, bins=self.bins, key=key)]
        values = torch.from_numpy(q[:, list(AXES_IN_SLOT_ORDER)].reshape(-1).copy())
        kinds, coords = self._layout(n)
        return TokenSet(values, kinds, coords, torch.zeros(3 * n, dtype=torch.bool))

    def decode(self, tokens: TokenSet) -> PointCloudItem | None:
        """Bin centres of the slots, placed by their (point, axis) coordinates, so any
        slot layout decodes; None when a value is outside ``[0, bins)`` or some point
        lacks a coordinate."""
        values = tokens.values.detach().cpu().numpy().astype(np.int64)
        coords = tokens.coords.detach().cpu().numpy().astype(np.int64)
        if values.size == 0 or coords.shape[1] != 2:
            return None
        if (values < 0).any() or (values >= self.bins).any():
            return None
        point, axis = coords[:, 0], coords[:, 1]
        if (axis < 0).any() or (axis > 2).any() or (point < 0).any():
            return None
        n = int(point.max()) + 1
        q = np.full((n, 3), -1, dtype=np.int64)
        q[point, axis] = values
        if (q < 0).any():
            return None
        return PointCloudItem(bin_centres(q, self.bins), None, "decoded")
