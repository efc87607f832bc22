"""The fixed feature extractor of the image metrics: part of the metric, not of the run.

FD and KID are only comparable between runs that use the same features. A classifier
trained inside each run comes out differently on different CPUs (thread counts and
kernels change its arithmetic), so its FD floor moves between machines (5.70 on one,
5.41 on another). The extractor is therefore fitted once, deterministically (one
thread, ``torch.use_deterministic_algorithms``, fixed seeds), and its weights ship with
the project in ``seqify_image/extractors/<name>.npz`` beside a manifest
``<name>.json`` that records:

- ``fingerprint``: sha256 of the weights (names, dtypes, shapes and bytes, in name
  order), written into every results.json that uses it;
- what it was trained on (the dataset's training split under split seed 0, the
  sources of those images), and its settings: clean images (no degraded copies, so
  that the features see blur and banding, where tokenizers differ), random shifts;
- its accuracy on the test split (``n_correct`` of ``n``) and on the validation split,
  which a test re-checks exactly;
- the real-vs-real floor (validation against test images, neither seen in training).

Features are computed in float64, so that one set of samples gets the same FD and KID
on every machine (the weights are fixed; float64 convolutions leave round-off far
below the printed digits).

Refitting is an explicit, separate command that overwrites the shipped files::

    python -m seqify_image.extractor fit --dataset mnist      # then commit the files
    python -m seqify_image.extractor check                   # re-check every manifest

A dataset without a shipped extractor (an image folder of yours) falls back to a
classifier fitted on the run's training split (:func:`seqify_image.classifier.get_classifier`),
and results.json says so: its FDs compare only between runs on one machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from seqify.errors import DataError

from seqify_image.classifier import ClassifierOptions, TrainedClassifier, build_network

__all__ = ["EXTRACTOR_DIR", "SHIPPED", "extractor_options", "fit_extractor", "load_shipped", "shipped_name",
           "weights_fingerprint"]

EXTRACTOR_DIR = Path(__file__).parent / "extractors"
#: dataset -> the name of its shipped extractor (files ``EXTRACTOR_DIR / f"{name}.npz"`` and ``.json``)
SHIPPED: dict[str, str] = {"mnist": "mnist-28", "digits": "digits-8"}
#: the split the shipped extractors were trained on: the training split of split seed 0, default sizes
TRAIN_SPLIT = {"split_seed": 0, "n_val": None, "n_test": None}


def extractor_options(dataset: str) -> ClassifierOptions:
    """How the shipped extractor of ``dataset`` is trained: clean images (``degrade=0``),
    shifts of up to 2 pixels (1 on the 8x8 digits), a wider network than the per-run
    classifier, 4,000 Adam steps of 64 images."""
    return ClassifierOptions(steps=4000, batch_size=64, lr=2e-3, width=32, features=64,
                             shift=1 if dataset == "digits" else 2, degrade=0.0, seed=0)


def shipped_name(dataset: str) -> str | None:
    """The name of the shipped extractor of ``dataset`` (None: there is none)."""
    name = SHIPPED.get(dataset)
    return name if name and (EXTRACTOR_DIR / f"{name}.npz").is_file() else None


def weights_fingerprint(arrays: dict[str, np.ndarray]) -> str:
    """sha256 (first 16 hex digits) of ``arrays`` taken in name order: each name, dtype,
    shape and the array's bytes (C order). The same weights give the same fingerprint
    whatever file holds them."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _splits(dataset: str):
    from seqify.data import RowReport

    from seqify_image.data import load_image_splits

    return load_image_splits(dataset, None, resolution=None, limit=None, invert=False, report=RowReport(),
                             **TRAIN_SPLIT)


def _accuracy(clf: TrainedClassifier, items: list[Any]) -> dict[str, Any]:
    _, probs = clf.predict_items(items)
    correct = int((probs.argmax(1) == np.array([it.label for it in items])).sum())
    return {"n": len(items), "n_correct": correct, "accuracy": round(correct / len(items), 4)}


def _source_ids(items: list[Any]) -> list[int]:
    """The index of each item in its dataset (its source is ``"dataset:index"``)."""
    return sorted(int(str(it.source).rsplit(":", 1)[1]) for it in items)


def fit_extractor(dataset: str, out_dir: Path = EXTRACTOR_DIR) -> dict[str, Any]:
    """Fit the extractor of ``dataset`` on its training split, deterministically, and
    write ``<name>.npz`` and ``<name>.json`` into ``out_dir`` (atomically). Returns the
    manifest."""
    import torch

    from seqify.io import atomic_write_bytes, atomic_write_text

    from seqify_image.classifier import _train
    from seqify_image.metrics import feature_metrics

    if dataset not in SHIPPED:
        raise DataError(f"no shipped extractor is defined for dataset {dataset!r} (known: {sorted(SHIPPED)})")
    name = SHIPPED[dataset]
    splits = _splits(dataset)
    opts = extractor_options(dataset)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    try:
        n_classes = max(int(it.label) for it in splits.train) + 1
        clf = _train(splits.train, splits.test, opts, splits.train[0].shape[0], n_classes)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    arrays = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in clf.net.state_dict().items()}
    fingerprint = weights_fingerprint(arrays)
    buf = __import__("io").BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(Path(out_dir) / f"{name}.npz", buf.getvalue())
    shipped = _from_arrays(arrays, opts, clf.resolution, n_classes, {})
    feats_val, _ = shipped.predict_items(splits.val)
    feats_test, _ = shipped.predict_items(splits.test)
    floor = feature_metrics(feats_val, feats_test, n_boot=0)
    manifest = {
        "name": name, "dataset": dataset, "resolution": clf.resolution, "n_classes": n_classes,
        "fingerprint": fingerprint,
        "network": "conv-pool-conv-pool-conv-avgpool(2x2) -> features (penultimate, ReLU) -> classes",
        "settings": opts.model_dump(),
        "trained_on": {"split": "train", **TRAIN_SPLIT, "n": len(splits.train),
                       "sources": _source_ids(splits.train)},
        "test": _accuracy(shipped, splits.test),
        "val": _accuracy(shipped, splits.val),
        "floor_val_vs_test": {"n_val": len(splits.val), "n_test": len(splits.test),
                              "fd": round(floor["fd"], 4), "kid": round(floor["kid"], 6)},
        "test_feature_sum": round(float(feats_test.sum()), 4),
        "fitted_with": {"torch": torch.__version__, "threads": 1, "deterministic_algorithms": True,
                        "seconds": round(time.perf_counter() - t0, 1)},
        "command": f"python -m seqify_image.extractor fit --dataset {dataset}",
    }
    atomic_write_text(Path(out_dir) / f"{name}.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


def _from_arrays(arrays: dict[str, np.ndarray], opts: ClassifierOptions, resolution: int, n_classes: int,
                 info: dict[str, Any]) -> TrainedClassifier:
    import torch

    net = build_network(n_classes, opts.width, opts.features)
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    net.double().eval()  # float64 features: the same figure on every machine
    return TrainedClassifier(net, resolution, n_classes, float(info.get("test", {}).get("accuracy", float("nan"))),
                             info)


_LOADED: dict[str, TrainedClassifier] = {}


def load_shipped(dataset: str, directory: Path = EXTRACTOR_DIR) -> TrainedClassifier | None:
    """The shipped extractor of ``dataset`` (None: the project ships none for it).

    Its ``info`` holds the manifest (without the training sources, which
    :func:`trained_sources` gives) and ``kind: "shipped"``. Raises DataError when the
    weights file does not match its manifest's fingerprint (a damaged or hand-edited
    file is never used)."""
    name = SHIPPED.get(dataset)
    weights, manifest_path = Path(directory) / f"{name}.npz", Path(directory) / f"{name}.json"
    if name is None or not weights.is_file():
        return None
    key = str(weights)
    if key in _LOADED:
        return _LOADED[key]
    try:
        manifest = json.loads(manifest_path.read_text())
        with np.load(weights, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{weights}: the shipped feature extractor cannot be read ({exc})") from None
    found = weights_fingerprint(arrays)
    if found != manifest.get("fingerprint"):
        raise DataError(f"{weights}: weights fingerprint {found} differs from the manifest's "
                        f"{manifest.get('fingerprint')} ({manifest_path}): the file is damaged or was refitted "
                        "without its manifest; refit with python -m seqify_image.extractor fit")
    opts = ClassifierOptions(**manifest["settings"])
    info = {k: v for k, v in manifest.items() if k != "trained_on"}
    info["trained_on"] = {k: v for k, v in manifest["trained_on"].items() if k != "sources"}
    info["kind"] = "shipped"
    info["file"] = weights.name
    clf = _from_arrays(arrays, opts, int(manifest["resolution"]), int(manifest["n_classes"]), info)
    clf._trained_sources = frozenset(manifest["trained_on"]["sources"])  # type: ignore[attr-defined]
    _LOADED[key] = clf
    return clf


def trained_sources(clf: TrainedClassifier) -> frozenset[int]:
    """The dataset indices of the images a shipped extractor was trained on (empty for
    a classifier fitted in the run)."""
    return getattr(clf, "_trained_sources", frozenset())


def check_shipped(directory: Path = EXTRACTOR_DIR) -> list[str]:
    """Re-check every shipped extractor against its manifest: fingerprint, test and
    validation accuracy (exact counts), the floor. Returns the problems (empty: all hold)."""
    problems = []
    for dataset, name in SHIPPED.items():
        if not (Path(directory) / f"{name}.npz").is_file():
            problems.append(f"{name}: not shipped")
            continue
        clf = load_shipped(dataset, directory)
        splits = _splits(dataset)
        for split, items in (("test", splits.test), ("val", splits.val)):
            got = _accuracy(clf, items)
            if got["n_correct"] != clf.info[split]["n_correct"]:
                problems.append(f"{name}: {got['n_correct']} of {got['n']} {split} images right, the manifest "
                                f"records {clf.info[split]['n_correct']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqify_image.extractor", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="refit a shipped extractor (overwrites its files)")
    fit.add_argument("--dataset", choices=sorted(SHIPPED), required=True)
    fit.add_argument("--out", type=Path, default=EXTRACTOR_DIR, help="folder for <name>.npz and <name>.json")
    sub.add_parser("check", help="re-check the shipped extractors against their manifests")
    args = parser.parse_args(argv)
    if args.command == "fit":
        m = fit_extractor(args.dataset, args.out)
        print(f"{m['name']}: fingerprint {m['fingerprint']}, test {m['test']['n_correct']}/{m['test']['n']} "
              f"({m['test']['accuracy']}), val {m['val']['accuracy']}, floor FD {m['floor_val_vs_test']['fd']}, "
              f"{m['fitted_with']['seconds']} s")
        return 0
    problems = check_shipped()
    for p in problems:
        print(p)
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
