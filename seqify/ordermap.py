"""A picture of an order: the step at which each slot is generated, averaged over
items, drawn on the datum's layout (read from the slot coordinates alone).

- slots with "row" and "col" axes: a grid per value of a "scale" axis (one panel
  otherwise); other axes (Sudoku's "box") are ignored;
- exactly two other axes, e.g. a graph's (i, j): a matrix (atoms on the diagonal);
- anything else: a strip over the slot index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["OrderMap", "draw_order_map"]


class OrderMap:
    """Accumulates, per slot index, the generation step (its block: 0 = first) over items.

    Args:
        length: the most slots an item has.
    """

    def __init__(self, length: int):
        self.total_L = np.zeros(length, dtype=np.float64)
        self.count_L = np.zeros(length, dtype=np.int64)

    def add(self, slot_block_BL) -> None:
        """Add a batch's ``OrderBatch.slot_block()`` (given -1 and padding -2 are skipped)."""
        blocks = slot_block_BL.detach().cpu().numpy()
        L = min(blocks.shape[1], self.total_L.shape[0])
        predicted = blocks[:, :L] >= 0
        self.total_L[:L] += np.where(predicted, blocks[:, :L], 0).sum(0)
        self.count_L[:L] += predicted.sum(0)

    def mean_step(self) -> list[float | None]:
        """Mean step per slot index (None where no item predicted that slot)."""
        return [float(t / c) if c else None for t, c in zip(self.total_L, self.count_L)]


def draw_order_map(mean_step: list[float | None], coords_LC, coord_names: tuple[str, ...], path: str | Path,
                   *, title: str) -> Path:
    """Draw ``mean_step`` (per slot) on the layout given by ``coords_LC`` and write a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from seqify.io import atomic_write_bytes

    coords = np.asarray(coords_LC, dtype=np.int64)
    steps = np.array([np.nan if v is None else v for v in mean_step], dtype=np.float64)
    L = min(len(steps), coords.shape[0])
    steps, coords = steps[:L], coords[:L]
    names = list(coord_names)
    panels: list[tuple[str, np.ndarray]] = []
    if "row" in names and "col" in names:
        r, c = names.index("row"), names.index("col")
        scale = names.index("scale") if "scale" in names else None
        groups = sorted(set(coords[:, scale].tolist())) if scale is not None else [None]
        for g in groups:
            keep = np.ones(L, bool) if g is None else coords[:, scale] == g
            grid = np.full((coords[keep, r].max() + 1, coords[keep, c].max() + 1), np.nan)
            grid[coords[keep, r], coords[keep, c]] = steps[keep]
            panels.append(("" if g is None else f"scale {g}", grid))
    elif len(names) == 2:
        n = int(coords.max()) + 1 if L else 1
        grid = np.full((n, n), np.nan)
        grid[coords[:, 1], coords[:, 0]] = steps  # mirrored: an edge (i, j) shows at (j, i) too
        grid[coords[:, 0], coords[:, 1]] = steps
        panels.append((f"({names[0]}, {names[1]})", grid))
    else:
        panels.append(("slot index", steps[None, :]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1, 3.4), squeeze=False)
    vmin, vmax = np.nanmin(steps) if np.isfinite(steps).any() else 0, np.nanmax(steps) if np.isfinite(steps).any() else 1
    for ax, (label, grid) in zip(axes[0], panels):
        im = ax.imshow(grid, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto" if grid.shape[0] == 1 else "equal")
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="mean generation step (0 = first)")
    fig.suptitle(title, fontsize=10)
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
