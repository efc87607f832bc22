"""The ``pixels`` tokenizer: one slot per pixel, its intensity quantized to a few levels.

No training. The baseline every learned image tokenizer is compared with: as many
slots as pixels, a tiny vocabulary, and a loss that is known exactly (the
quantization, at most half a level step per pixel, plus the resize).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from seqify.config import validate_model
from seqify.protocols import BaseTokenizer
from seqify.types import KindSpec, TokenizerSpec, TokenSet

from seqify_image.imaging import resize
from seqify_image.items import ImageItem

__all__ = ["PixelTokenizer", "PixelTokenizerOptions", "DEFAULT_PIXEL_RESOLUTION"]

#: the tokenizer's resolution when none is given; the 8x8 ``digits`` get 8 (never enlarged)
DEFAULT_PIXEL_RESOLUTION: dict[str | None, int] = {None: 14, "digits": 8}


class PixelTokenizerOptions(BaseModel):
    """Settings of the pixel tokenizer."""

    model_config = ConfigDict(extra="forbid")

    resolution: int | None = Field(
        None, ge=2, le=256,
        description="side of the square pixel grid, one slot per pixel (None: 14, or 8 for the 8x8 'digits')",
    )
    levels: int = Field(4, ge=2, le=256, description="intensity levels per pixel (the vocabulary size)")


class PixelTokenizer(BaseTokenizer):
    """One slot per pixel of the image resized to ``resolution`` x ``resolution``.

    A pixel of intensity ``x`` in [0, 1] gets level ``q = floor(x * (levels - 1) + 0.5)``
    (the nearest of ``levels`` evenly spaced values ``q / (levels - 1)``, which include
    black 0 and white 1, so MNIST's background and strokes survive exactly); decoding
    gives each pixel its level's value, so the error per pixel is at most half a level
    step, ``0.5 / (levels - 1)``. ``levels = 2`` is binarization at 0.5.

    Slots are in raster order with coordinates (row, col); nothing is given. Items of
    another size are first resized with Pillow (box filter when shrinking, bilinear
    when enlarging).

    Args:
        resolution: side of the pixel grid (None: 14, or 8 for ``dataset="digits"``).
        levels: intensity levels (default 4).
        dataset: the dataset being run (the runner passes it; picks the default resolution).
    """

    name = "pixels"
    takes_dataset: ClassVar[bool] = True
    config_model: ClassVar[type[BaseModel]] = PixelTokenizerOptions

    def __init__(self, *, resolution: int | None = None, levels: int = 4, dataset: str | None = None) -> None:
        opts: PixelTokenizerOptions = validate_model(  # type: ignore[assignment]
            PixelTokenizerOptions, {"resolution": resolution, "levels": levels}, prefix="tokenizer"
        )
        self.resolution = int(opts.resolution or DEFAULT_PIXEL_RESOLUTION.get(dataset, DEFAULT_PIXEL_RESOLUTION[None]))
        self.levels = int(opts.levels)
        r = self.resolution
        rows_L = torch.arange(r * r) // r
        cols_L = torch.arange(r * r) % r
        self._coords_L2 = torch.stack([rows_L, cols_L], dim=1)
        self._kinds_L = torch.zeros(r * r, dtype=torch.long)
        self._given_L = torch.zeros(r * r, dtype=torch.bool)
        labels = tuple(f"{q / (self.levels - 1):.3g}" for q in range(self.levels))
        self._spec = TokenizerSpec(
            kinds=(KindSpec("level", self.levels, labels=labels),),
            coord_names=("row", "col"),
            coord_sizes=(r, r),
            max_len=r * r,
            lossless=False,
        )

    def __repr__(self) -> str:
        return f"PixelTokenizer(resolution={self.resolution}, levels={self.levels})"

    @property
    def spec(self) -> TokenizerSpec:
        """``levels`` values of one kind "level", coordinates (row, col), resolution^2 slots."""
        return self._spec

    @property
    def level_values(self) -> np.ndarray:
        """``[levels]`` float32: the intensity each level decodes to."""
        return (np.arange(self.levels, dtype=np.float64) / (self.levels - 1)).astype(np.float32)

    def quantize(self, pixels_NHW: np.ndarray) -> np.ndarray:
        """Levels (int64, same shape) of intensities in [0, 1]."""
        scaled = np.asarray(pixels_NHW, dtype=np.float64) * (self.levels - 1) + 0.5
        return np.clip(np.floor(scaled), 0, self.levels - 1).astype(np.int64)

    def _pixels(self, item: Any, n: int | None = None) -> np.ndarray:
        if not isinstance(item, ImageItem):
            where = f"item {n}: " if n is not None else ""
            raise ValueError(f"{where}expected an ImageItem, got {type(item).__name__}: {item!r:.80}")
        r = self.resolution
        return item.pixels if item.shape == (r, r) else resize(item.pixels, r)

    def _tokenset(self, levels_L: torch.Tensor) -> TokenSet:
        # the structure tensors are shared by every token set and never written to
        return TokenSet(levels_L, self._kinds_L, self._coords_L2, self._given_L)

    def encode(self, item: ImageItem) -> TokenSet:
        """An :class:`ImageItem` to ``resolution^2`` level slots (raster order).

        Raises ValueError naming the problem for anything but an ImageItem.
        """
        levels_L = torch.from_numpy(self.quantize(self._pixels(item)).reshape(-1))
        return self._tokenset(levels_L)

    def encode_batch(self, items: list[ImageItem]) -> list[TokenSet]:
        """Encode many images at once (one quantization over the stacked pixels)."""
        if not items:
            return []
        pixels_NHW = np.stack([self._pixels(item, n) for n, item in enumerate(items)])
        levels_NL = torch.from_numpy(self.quantize(pixels_NHW).reshape(len(items), -1))
        return [self._tokenset(levels_NL[n]) for n in range(len(items))]

    def decode(self, tokens: TokenSet) -> ImageItem | None:
        """Slots back to an :class:`ImageItem` at ``resolution`` holding the level values
        (placed by their (row, col) coordinates); None unless every pixel is covered
        exactly once by a value in ``0..levels-1``."""
        r = self.resolution
        values_L = tokens.values.detach().cpu().long()
        coords_L2 = tokens.coords.detach().cpu().long()
        if values_L.shape != (r * r,) or coords_L2.shape != (r * r, 2):
            return None
        if bool((values_L < 0).any()) or bool((values_L >= self.levels).any()):
            return None
        if bool((coords_L2 < 0).any()) or bool((coords_L2 >= r).any()):
            return None
        flat_L = (coords_L2[:, 0] * r + coords_L2[:, 1]).numpy()
        if len(np.unique(flat_L)) != r * r:
            return None
        pixels = np.empty(r * r, dtype=np.float32)
        pixels[flat_L] = self.level_values[values_L.numpy()]
        return ImageItem(pixels.reshape(r, r), None, "decoded:pixels")

    def blank(self) -> TokenSet:
        """All ``resolution^2`` slots open (values 0), in the encoding layout."""
        return self._tokenset(torch.zeros(self.resolution ** 2, dtype=torch.long))
