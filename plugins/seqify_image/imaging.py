"""Small image helpers shared by the image components: resizing with Pillow and
stacking :class:`~seqify_image.items.ImageItem` pixels into arrays (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["resize", "stack_pixels", "to_unit_gray"]

#: ITU-R 601-2 luma weights, the ones Pillow's ``convert("L")`` uses
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def resize(pixels_HW: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """``[H, W]`` float image in [0, 1] resized to ``size`` with Pillow, as float32.

    Shrinking averages the covered area (box filter, the "area" filter of other
    libraries); enlarging interpolates bilinearly. The input is never modified; an
    image already at ``size`` comes back as a float32 copy.

    Args:
        pixels_HW: the image.
        size: the new side (square) or ``(height, width)``.
    """
    from PIL import Image

    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    arr = np.asarray(pixels_HW, dtype=np.float32)
    if arr.shape == (h, w):
        return arr.copy()
    shrink = h <= arr.shape[0] and w <= arr.shape[1]
    method = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    out = np.asarray(Image.fromarray(np.ascontiguousarray(arr)).resize((w, h), method), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def stack_pixels(items: list[Any], size: int | None = None) -> np.ndarray:
    """``[N, S, S]`` float32 pixels of ``ImageItem``-like objects (``.pixels``), each
    resized to ``size`` (None: every item must already share one shape)."""
    arrays = []
    for item in items:
        p = item.pixels
        arrays.append(resize(p, size) if size is not None and p.shape != (size, size) else np.asarray(p, np.float32))
    if not arrays:
        s = size or 0
        return np.zeros((0, s, s), dtype=np.float32)
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images of different sizes {sorted(shapes)}: give a size to resize them to")
    return np.stack(arrays).astype(np.float32, copy=False)


def to_unit_gray(arr: np.ndarray, *, what: str) -> np.ndarray:
    """One image array (``[H, W]`` or ``[H, W, C]``, C in 1, 3, 4) to ``[H, W]``
    float32 in [0, 1].

    uint8 is divided by 255, uint16 by 65535, bool becomes 0 / 1; floats must already
    lie in [0, 1]. Colour is turned to gray with Pillow's luma weights (alpha dropped).
    Raises ValueError naming ``what`` and the problem.
    """
    a = np.asarray(arr)
    if a.ndim not in (2, 3):
        raise ValueError(f"{what}: shape {tuple(a.shape)} is not [H, W] or [H, W, C]")
    if a.ndim == 3 and a.shape[2] not in (1, 3, 4):
        raise ValueError(f"{what}: {a.shape[2]} channels (expected 1, 3 or 4)")
    if a.dtype == np.uint8:
        f = a.astype(np.float64) / 255.0
    elif a.dtype == np.uint16:
        f = a.astype(np.float64) / 65535.0
    elif a.dtype == np.bool_:
        f = a.astype(np.float64)
    elif a.dtype.kind in "iu":
        raise ValueError(f"{what}: integer type {a.dtype} (use uint8 0..255 or float 0..1)")
    elif a.dtype.kind == "f":
        f = a.astype(np.float64)
    else:
        raise ValueError(f"{what}: unsupported element type {a.dtype}")
    if f.ndim == 3:
        f = f[:, :, 0] if f.shape[2] == 1 else f[:, :, :3] @ _LUMA
    return _check_unit(f, what)


def _check_unit(a: np.ndarray, what: str) -> np.ndarray:
    if a.size == 0:
        raise ValueError(f"{what}: empty image")
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: non-finite pixel values")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"{what}: float pixels must lie in [0, 1], found {lo:g}..{hi:g}")
    return a.astype(np.float32)
