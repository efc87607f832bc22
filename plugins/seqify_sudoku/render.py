"""Draw completed Sudoku grids to a PNG (matplotlib, Agg backend: never opens a window)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from seqify.io import atomic_write_bytes

__all__ = ["draw_grids"]

CLUE_COLOR = "black"
FILLED_COLOR = "tab:blue"
WRONG_COLOR = "red"
WRONG_BACKGROUND = "#ffd6d6"


def _draw_one(ax: Any, sample: str | None, item: Any | None) -> None:
    puzzle = item.puzzle if item is not None else None
    solution = item.solution if item is not None else None
    grid = sample if isinstance(sample, str) and len(sample) == 81 else None
    wrong = 0
    for k in range(81):
        r, c = divmod(k, 9)
        clue = puzzle is not None and puzzle[k] != "0"
        if clue:
            text, color = puzzle[k], CLUE_COLOR
        elif grid is not None:
            text, color = grid[k], FILLED_COLOR
            if solution is not None and grid[k] != solution[k]:
                wrong += 1
                color = WRONG_COLOR
                ax.add_patch(_rect(c, r, WRONG_BACKGROUND))
        else:
            continue
        if text in "0.":
            continue
        ax.text(c + 0.5, r + 0.5, text, ha="center", va="center", fontsize=9, color=color,
                fontweight="bold" if clue else "normal")
    for i in range(10):
        width = 1.6 if i % 3 == 0 else 0.4
        ax.plot([0, 9], [i, i], color="black", linewidth=width)
        ax.plot([i, i], [0, 9], color="black", linewidth=width)
    ax.set_xlim(0, 9)
    ax.set_ylim(9, 0)
    ax.set_aspect("equal")
    ax.axis("off")
    if grid is None:
        title = "undecodable"
    elif solution is None:
        title = "completion"
    else:
        title = "solved" if wrong == 0 else f"{wrong} wrong"
    ax.set_title(title, fontsize=10, color="black" if title in ("solved", "completion") else WRONG_COLOR)


def _rect(x: float, y: float, color: str) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), 1, 1, facecolor=color, edgecolor="none", zorder=0)


def draw_grids(
    samples: list[str | None], path: str | Path, *, test: list[Any] | None = None, max_grids: int = 6
) -> Path:
    """Draw up to ``max_grids`` completions and write them to ``path`` as a PNG.

    Args:
        samples: 81-digit strings (None: undecodable).
        path: where to write the PNG (written atomically).
        test: the test items the samples complete (``puzzle``, ``solution``); with
            them clues are black, filled cells blue and wrong cells red on a red
            background, and each title says "solved" or "k wrong".
        max_grids: at most this many grids (default 6).
    """
    # a Figure on an Agg canvas, not pyplot: no global backend switch, never a window
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = samples[:max_grids]
    n = max(len(shown), 1)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(3.0 * cols, 3.2 * rows), dpi=100)
    FigureCanvasAgg(fig)
    for k in range(n):
        ax = fig.add_subplot(rows, cols, k + 1)
        if k < len(shown):
            item = test[k] if test is not None and k < len(test) else None
            _draw_one(ax, shown[k], item)
        else:
            ax.axis("off")
            ax.set_title("no samples", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())
