"""Point clouds: the item type and the normalization every dataset applies.

Normalization (every dataset): each cloud is centred on the centre of its bounding
box and scaled by its largest half-extent, so it lies in the [-1, 1]^3 box and touches
+-1 along its longest axis (aspect ratio kept). Why per shape, and why a box: both
tokenizers quantize a fixed domain (``coords`` bins each axis of [-1, 1]; ``octree``
splits the [-1, 1]^3 root cell), so a per-shape box uses every bin along the longest
axis; and MMD / COV / 1-NNA values change about tenfold with the normalization, so
generated and reference clouds are compared in this same box (as LION and PVD
evaluate PointFlow's protocol). PointFlow's global (dataset mean / std) normalization
would leave shapes of different sizes using different parts of the grid.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["NORMALIZATION", "PointCloudItem", "normalize_box", "resample_points", "seed_of"]

#: how every cloud is normalized (goes to results.json as Splits.info["normalization"])
NORMALIZATION = (
    "per shape: centred on its bounding-box centre and divided by its largest half-extent, so every "
    "cloud lies in [-1, 1]^3 and touches +-1 along its longest axis (aspect ratio kept); chosen because "
    "both tokenizers quantize the fixed [-1, 1]^3 domain (a per-shape box uses every bin of the longest "
    "axis), and generated and reference clouds are compared in the same box (as LION / PVD evaluate "
    "PointFlow's protocol; absolute MMD values change ~10x with the normalization)"
)


@dataclass(eq=False)
class PointCloudItem:
    """One point cloud.

    Args:
        points: float32 ``[N, 3]`` (x, y, z), normalized into [-1, 1]^3 by the loaders.
        label: class index (``Splits.info["classes"]`` names it), or None.
        source: where it came from ("shapes/train/12", a file path, "decoded").
    """

    points: np.ndarray
    label: int | None = None
    source: str = ""

    def __repr__(self) -> str:
        return f"PointCloudItem({self.points.shape[0]} points, label={self.label}, source={self.source!r})"


def normalize_box(points: np.ndarray) -> np.ndarray:
    """Centre on the bounding-box centre, divide by the largest half-extent (see module doc).

    Raises:
        ValueError: no points, non-finite coordinates, or all points identical.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] == 0:
        raise ValueError(f"expected an [N, 3] array of points with N > 0, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("NaN or infinite coordinates")
    lo, hi = pts.min(0), pts.max(0)
    half = float((hi - lo).max()) / 2
    if not half > 1e-12:
        raise ValueError("degenerate: all points are identical (nothing to normalize)")
    out = (pts - (lo + hi) / 2) / half
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def resample_points(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows of ``points``: a random subset without replacement when there are at
    least ``n``, else all of them plus random repeats (duplicated points)."""
    m = points.shape[0]
    if m == n:
        return points
    if m > n:
        return points[np.sort(rng.choice(m, n, replace=False))]
    extra = rng.choice(m, n - m, replace=True)
    return np.concatenate([points, points[extra]], axis=0)



def seed_of(*parts: Any) -> int:
    """A 32-bit seed from ``parts`` (the first bytes of the SHA-1 of their text): the
    same on every machine and run, so each shape and each file gets its own stream."""
    h = hashlib.sha1("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:4], "little")
