"""The image datum: a grayscale picture in [0, 1] and its class label when known."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ImageItem"]


@dataclass(frozen=True, eq=False)
class ImageItem:
    """One image.

    Args:
        pixels: ``[H, W]`` float32 array with values in [0, 1] (0 = black).
        label: the class (a digit for MNIST), or None when unknown.
        source: where it came from (a file path or ``dataset:index``), for messages.
    """

    pixels: np.ndarray
    label: int | None = None
    source: str = ""

    def __post_init__(self) -> None:
        p = self.pixels
        if not isinstance(p, np.ndarray) or p.ndim != 2:
            raise ValueError(f"image {self.source or '?'}: pixels must be an [H, W] array, got "
                             f"{getattr(p, 'shape', type(p).__name__)}")
        if p.dtype != np.float32:
            raise ValueError(f"image {self.source or '?'}: pixels must be float32 in [0, 1], got {p.dtype}")
        if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
            raise ValueError(f"image {self.source or '?'}: pixel values must be finite and in [0, 1]")

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])

    def __repr__(self) -> str:
        return f"ImageItem({self.shape[0]}x{self.shape[1]}, label={self.label}, source={self.source!r})"
