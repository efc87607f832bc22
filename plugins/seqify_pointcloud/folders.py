"""The ``files`` dataset: a folder (or one file) of point clouds and meshes, split by its
layout (ShapeNet as PointFlow ships it, ModelNet40, loose files); bad files are reported
and skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from seqify.data import RowReport
from seqify.errors import DataError
from seqify.protocols import Splits

from seqify_pointcloud.items import NORMALIZATION, PointCloudItem, normalize_box, resample_points, seed_of
from seqify_pointcloud.readers import SUFFIXES, BadFile, read_cloud_file

__all__ = ["files_splits"]

_SPLIT_DIRS = ("train", "val", "test")


def _layout(root: Path, path: Path) -> tuple[str | None, str | None]:
    """(split, class) of a file from the folder layout: the nearest ancestor folder named
    train / val / test is its split and the folder above it its class; without one,
    the folder holding the file (below the root) is its class."""
    parts = path.relative_to(root).parts[:-1]
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].lower() in _SPLIT_DIRS:
            return parts[i].lower(), parts[i - 1] if i > 0 else None
    return None, parts[-1] if parts else None


def files_splits(
    root: Path, *, seed: int, n_points: int, limit: int | None, max_val: int, max_test: int,
    report: RowReport, progress: Callable[[int], None] | None = None,
) -> Splits:
    """Read a folder (or one file) of point clouds and meshes into splits.

    Layouts: ShapeNet as PointFlow ships it (``<synset>/{train,val,test}/<id>.npy``,
    15,000 x 3 per shape), ModelNet40 (``<class>/{train,test}/*.off``), or loose files.
    Files under a ``train`` / ``val`` / ``test`` folder keep that split (a layout with
    no validation files gives 5% of its training files, seeded, to validation); other
    files are split with the seed (10% test, 5% validation, at least one each). Each
    split is shuffled with the seed (so the first items of the test split, which the
    metrics compare against, mix the classes); validation and test are capped at
    ``max_val`` / ``max_test`` files, training at ``limit`` good clouds. Each cloud is
    resampled to ``n_points`` (a seeded subset, or repeats when it has fewer) and
    normalized (:func:`normalize_box`). A bad file is reported (path, line or 0,
    reason) and skipped.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"--data {str(root)!r} does not exist")
    if root.is_file():
        files, base = [root], root.parent
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        base = root
    if not files:
        raise DataError(f"{root}: no point-cloud files found (looked for {', '.join(SUFFIXES)}, recursively)")
    layout = {p: _layout(base, p) for p in files}
    class_names = sorted({c for _, c in layout.values() if c is not None})
    label_of = {c: i for i, c in enumerate(class_names)}
    rng = np.random.default_rng(seed_of("files-split", seed))
    by_split: dict[str, list[Path]] = {s: [] for s in _SPLIT_DIRS}
    loose = []
    for p in files:
        split = layout[p][0]
        (by_split[split] if split else loose).append(p)
    notes = []
    if loose:
        order = [loose[i] for i in rng.permutation(len(loose))]
        n_test = max(1, len(order) // 10) if len(order) >= 3 else 0
        n_val = max(1, len(order) // 20) if len(order) >= 3 else 0
        by_split["test"] += order[:n_test]
        by_split["val"] += order[n_test : n_test + n_val]
        by_split["train"] += order[n_test + n_val :]
        notes.append(f"{len(loose)} files outside train/val/test folders: seeded split 10% test, 5% val, rest train")
    if not by_split["val"] and len(by_split["train"]) >= 2:
        order = [by_split["train"][i] for i in rng.permutation(len(by_split["train"]))]
        n_val = max(1, len(order) // 20)
        by_split["val"], by_split["train"] = order[:n_val], order[n_val:]
        notes.append("no validation files in the layout: 5% of the training files (seeded) became validation")
    caps = {"train": limit, "val": max_val, "test": max_test}
    parts: dict[str, list[PointCloudItem]] = {}
    upsampled = 0
    for split in _SPLIT_DIRS:
        todo = [by_split[split][i] for i in rng.permutation(len(by_split[split]))]
        kept: list[PointCloudItem] = []
        cap = caps[split]
        for p in todo:
            if cap is not None and len(kept) >= cap:
                break
            report.seen()
            file_seed = seed_of("file", seed, p.relative_to(base).as_posix())
            try:
                clouds = read_cloud_file(p, n_points, file_seed)
                out = []
                for j, cloud in enumerate(clouds):
                    sub = np.random.default_rng(seed_of(file_seed, j))
                    upsampled += int(cloud.shape[0] < n_points)
                    out.append(normalize_box(resample_points(cloud, n_points, sub)))
            except BadFile as exc:
                report.add(str(p), exc.row, exc.reason)
                continue
            except ValueError as exc:  # normalize_box: degenerate clouds
                report.add(str(p), 0, str(exc))
                continue
            except Exception as exc:  # anything else a reader raises: still one bad file
                report.add(str(p), 0, f"cannot read: {type(exc).__name__}: {exc}")
                continue
            label = label_of.get(layout[p][1]) if layout[p][1] is not None else None
            for j, pts in enumerate(out):
                source = str(p) if len(out) == 1 else f"{p}[{j}]"
                kept.append(PointCloudItem(pts, label, source))
            if progress is not None:
                progress(1)
        parts[split] = kept[:cap] if cap is not None else kept
    for split in ("train", "test"):
        if not parts[split]:
            raise DataError(
                f"{root}: no readable point clouds for the {split} split ({report.skipped} files skipped; "
                f"first reasons: {'; '.join(str(b) for b in report.bad[:3]) or 'none'})"
            )
    summary = report.summary()
    info = {
        "dataset": "files",
        "path": str(root),
        "classes": class_names,
        "n_points": n_points,
        "n_train": len(parts["train"]),
        "n_val": len(parts["val"]),
        "n_test": len(parts["test"]),
        "split": "from the folder layout (train/val/test folders)" + (f"; {'; '.join(notes)}" if notes else ""),
        "caps": {"train": limit, "val": max_val, "test": max_test},
        "resampling": (f"each cloud to {n_points} points: a seeded random subset (e.g. of ShapeNet's 15,000), "
                       "or all points plus random repeats when it has fewer; meshes (.off/.obj/.ply with faces) "
                       f"are sampled uniformly by area with open3d, {n_points} points"),
        "clouds_upsampled_with_repeats": upsampled,
        "normalization": NORMALIZATION,
        "files_found": len(files),
        "files_read": summary["rows_read"],
        "files_skipped": summary["rows_skipped"],
        "skipped_by_reason": summary["skipped_by_reason"],
    }
    return Splits(parts["train"], parts["val"], parts["test"], info)
