"""Pictures and files of point clouds: a grid of 3-D scatter plots, ``samples.npz``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["draw_clouds", "write_samples_npz", "read_samples_npz"]


def draw_clouds(clouds: Sequence[Any], path: Path, *, n: int = 16, title: str = "", labels: Sequence[str] | None = None) -> Path:
    """Up to ``n`` clouds as matplotlib 3-D scatter plots (y drawn upwards), written to a
    PNG atomically; a cloud that is None is drawn as an empty panel marked "failed"."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from seqify.io import atomic_write_bytes

    shown = list(clouds[:n])
    k = max(1, len(shown))
    cols = min(4, k)
    rows = (k + cols - 1) // cols
    fig = plt.figure(figsize=(3 * cols, 3 * rows + (0.4 if title else 0)))
    for i, cloud in enumerate(shown):
        ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
        pts = None if cloud is None else np.asarray(getattr(cloud, "points", cloud))
        if pts is not None and pts.ndim == 2 and pts.shape[0]:
            # matplotlib's vertical axis is its z: show the data's y (up) there
            ax.scatter(pts[:, 0], pts[:, 2], pts[:, 1], s=2, c=pts[:, 1], cmap="viridis", depthshade=False)
            name = labels[i] if labels is not None and i < len(labels) else f"{pts.shape[0]} points"
        else:
            name = "failed (decoded to nothing)"
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1, 1)
        ax.set_zlim(-1, 1)
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=20, azim=-60)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_zticks([])
        ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return atomic_write_bytes(Path(path), buf.getvalue())


def write_samples_npz(clouds: Sequence[Any], path: Path) -> Path:
    """``samples.npz`` (no pickles): ``points`` float32 ``[total, 3]`` (every cloud's points,
    one after another), ``offsets`` int64 ``[K + 1]`` (cloud ``k`` is
    ``points[offsets[k]:offsets[k + 1]]``), ``valid`` bool ``[K]`` (False: the sample
    decoded to nothing and has no points)."""
    from seqify.io import atomic_write_bytes

    arrays, valid = [], []
    for cloud in clouds:
        pts = None if cloud is None else np.asarray(getattr(cloud, "points", cloud), dtype=np.float32)
        ok = pts is not None and pts.ndim == 2 and pts.shape[1:] == (3,)
        arrays.append(pts if ok else np.zeros((0, 3), dtype=np.float32))
        valid.append(ok)
    sizes = [a.shape[0] for a in arrays]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    points = np.concatenate(arrays, axis=0) if arrays else np.zeros((0, 3), dtype=np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, points=points, offsets=offsets, valid=np.array(valid, dtype=bool))
    return atomic_write_bytes(Path(path), buf.getvalue())


def read_samples_npz(path: Path) -> list[np.ndarray | None]:
    """The clouds :func:`write_samples_npz` wrote (None for failed samples)."""
    with np.load(path, allow_pickle=False) as f:
        points, offsets, valid = f["points"], f["offsets"], f["valid"]
    return [points[offsets[k] : offsets[k + 1]] if valid[k] else None for k in range(len(valid))]
