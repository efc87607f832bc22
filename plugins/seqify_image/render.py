"""Pictures of images (matplotlib on an Agg canvas: never a window, no pyplot state),
written atomically, and the samples file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from seqify.io import atomic_write_bytes

from seqify_image.imaging import resize
from seqify_image.items import ImageItem

__all__ = ["draw_grid", "draw_reconstructions", "write_samples_npz"]

#: colour of the tile of an undecodable sample (RGB in [0, 1])
UNDECODABLE_RGB = (0.85, 0.2, 0.2)


def _mosaic(tiles: list[np.ndarray | None], cols: int, side: int, gap: int = 1) -> np.ndarray:
    """``[H, W, 3]`` RGB mosaic of gray tiles (None: a red tile), gaps in mid-gray."""
    rows = max(1, (len(tiles) + cols - 1) // cols)
    out = np.full((rows * (side + gap) + gap, cols * (side + gap) + gap, 3), 0.5, dtype=np.float32)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        y, x = gap + r * (side + gap), gap + c * (side + gap)
        if tile is None:
            out[y : y + side, x : x + side] = UNDECODABLE_RGB
        else:
            out[y : y + side, x : x + side] = tile[:, :, None]
    return out


def _tile(item: ImageItem | None, side: int) -> np.ndarray | None:
    if item is None:
        return None
    return item.pixels if item.shape == (side, side) else resize(item.pixels, side)


def _save(fig: object, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # type: ignore[attr-defined]
    return atomic_write_bytes(path, buf.getvalue())


def draw_grid(samples: list[ImageItem | None], path: str | Path, *, max_images: int = 64, title: str = "") -> Path:
    """Up to ``max_images`` samples in a square-ish grid, written to ``path`` as a PNG.

    Undecodable samples (None) are red tiles; images of different sizes are resized
    to the largest. Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = list(samples[:max_images])
    side = max([s.shape[0] for s in shown if s is not None], default=8)
    cols = max(1, int(np.ceil(np.sqrt(max(len(shown), 1)))))
    mosaic = _mosaic([_tile(s, side) for s in shown], cols, side)
    fig = Figure(figsize=(6, 6 * mosaic.shape[0] / mosaic.shape[1] + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.9))
    ax.imshow(mosaic, interpolation="nearest", vmin=0, vmax=1)
    ax.axis("off")
    bad = sum(s is None for s in shown)
    text = title or f"{len(shown)} of {len(samples)} samples" + (f" ({bad} undecodable, red)" if bad else "")
    fig.suptitle(text, fontsize=10)
    return _save(fig, Path(path))


def draw_reconstructions(
    originals: list[ImageItem], decoded: list[ImageItem | None], path: str | Path, *, max_pairs: int = 16
) -> Path:
    """Originals (top row of each pair of rows) above their reconstructions (bottom
    row), up to ``max_pairs``, 8 per row; reconstructions are shown at the original's
    size. Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = min(len(originals), max_pairs)
    side = max([o.shape[0] for o in originals[:n]], default=8)
    per_row = min(8, max(n, 1))
    tiles: list[np.ndarray | None] = []
    for start in range(0, max(n, 1), per_row):
        chunk = range(start, min(start + per_row, n))
        row_o = [_tile(originals[i], side) for i in chunk]
        row_d = [_tile(decoded[i], side) for i in chunk]
        pad = [np.zeros((side, side), np.float32)] * (per_row - len(row_o))
        tiles += row_o + pad + row_d + pad
    mosaic = _mosaic(tiles, per_row, side)
    fig = Figure(figsize=(1.0 * per_row, 1.0 * per_row * mosaic.shape[0] / mosaic.shape[1] + 0.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.85))
    ax.imshow(mosaic, interpolation="nearest", vmin=0, vmax=1)
    ax.axis("off")
    fig.suptitle("originals (upper) and reconstructions (lower row of each pair)", fontsize=9)
    return _save(fig, Path(path))


def write_samples_npz(samples: list[ImageItem | None], path: str | Path) -> Path:
    """``samples.npz``: ``pixels`` ``[N, H, W]`` float32 (zeros for an undecodable
    sample) and ``decoded`` ``[N]`` bool; samples of different sizes are resized to
    the largest."""
    side = max([s.shape[0] for s in samples if s is not None], default=0)
    pixels = np.zeros((len(samples), side, side), dtype=np.float32)
    decoded = np.zeros(len(samples), dtype=bool)
    for i, s in enumerate(samples):
        if s is not None:
            pixels[i] = _tile(s, side)
            decoded[i] = True
    buf = io.BytesIO()
    np.savez_compressed(buf, pixels=pixels, decoded=decoded)
    return atomic_write_bytes(path, buf.getvalue())
