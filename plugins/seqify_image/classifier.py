"""A small digit classifier that stands in for Inception: it gives the features the
Frechet distance compares and the labels the class histogram counts.

Trained once per dataset (its full training split, at the dataset's resolution) with a
fixed seed, and cached on disk under ``seqify.io.cache_dir() / "image_classifier"``,
keyed on the training items' bytes (:func:`seqify.dataset.items_fingerprint`), the
settings and :data:`CLASSIFIER_VERSION`. Weights are saved with
:func:`seqify.io.save_checkpoint` (tensors and JSON strings only).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from seqify.io import cache_dir, load_checkpoint, save_checkpoint

from seqify_image.imaging import stack_pixels
from seqify_image.items import ImageItem

__all__ = ["CLASSIFIER_VERSION", "ClassifierOptions", "build_network", "TrainedClassifier", "get_classifier"]

#: bump when the network or its training changes: cached classifiers are then retrained
CLASSIFIER_VERSION = 2


class ClassifierOptions(BaseModel):
    """How the evaluation classifier is trained."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(2000, ge=1, description="optimizer steps (Adam)")
    batch_size: int = Field(64, ge=1, description="images per step")
    lr: float = Field(2e-3, gt=0, description="peak learning rate (cosine decay to 5%)")
    width: int = Field(16, ge=4, description="channels of the first convolution (then twice as many)")
    features: int = Field(64, ge=2, description="size of the penultimate layer (the FD features)")
    shift: int = Field(2, ge=0, description="random shifts of up to this many pixels while training (0: none)")
    degrade: float = Field(
        0.5, ge=0, le=1,
        description="share of each batch shown degraded as tokenizers degrade images: taken to a random lower "
                    "resolution (down to a quarter) and back, or quantized to 2..8 intensity levels, so that the "
                    "features judge the digit rather than blur or banding",
    )
    seed: int = Field(0, description="seeds the weights and the batches")


def build_network(n_classes: int, width: int, features: int) -> Any:
    """The classifier network (a torch module; torch is imported only here)."""
    import torch
    from torch import nn

    class DigitClassifier(nn.Module):
        """conv-pool-conv-pool-conv-avgpool(2x2) -> ``features`` (penultimate) -> classes."""

        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
                nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
                nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                nn.Linear(8 * width, features), nn.ReLU(),
            )
            self.head = nn.Linear(features, n_classes)

        def features(self, x_N1HW: torch.Tensor) -> torch.Tensor:
            return self.body((x_N1HW - 0.5) / 0.5)

        def forward(self, x_N1HW: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x_N1HW))

    return DigitClassifier()


@dataclass
class TrainedClassifier:
    """A trained classifier and how it was made.

    Args:
        net: the torch module (``features`` and ``forward``), in eval mode on the CPU.
        resolution: the side of the images it was trained on (others are resized).
        n_classes: number of outputs (labels are 0..n_classes-1).
        test_accuracy: accuracy on the dataset's test split.
        info: settings, training time, cache file, whether it came from the cache.
    """

    net: Any
    resolution: int
    n_classes: int
    test_accuracy: float
    info: dict[str, Any]

    def __repr__(self) -> str:
        return (f"TrainedClassifier(resolution={self.resolution}, n_classes={self.n_classes}, "
                f"test_accuracy={self.test_accuracy:.4f})")

    def predict(self, pixels_NHW: np.ndarray, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """Penultimate features ``[N, F]`` and class probabilities ``[N, K]`` (float64)
        of images at ``resolution``."""
        import torch

        feats, probs = [], []
        dtype = next(self.net.parameters()).dtype  # float64 for the shipped extractors
        with torch.no_grad():
            for start in range(0, len(pixels_NHW), batch_size):
                x_N1HW = torch.from_numpy(np.ascontiguousarray(pixels_NHW[start : start + batch_size]))[:, None]
                f_NF = self.net.features(x_N1HW.to(dtype))
                feats.append(f_NF.double().numpy())
                probs.append(torch.softmax(self.net.head(f_NF), dim=-1).double().numpy())
        if not feats:
            return np.zeros((0, self.net.head.in_features)), np.zeros((0, self.n_classes))
        return np.concatenate(feats), np.concatenate(probs)

    def predict_items(self, items: list[ImageItem]) -> tuple[np.ndarray, np.ndarray]:
        """``predict`` on items, each resized to ``resolution`` when its size differs."""
        return self.predict(stack_pixels(items, self.resolution))


_MEMO: dict[str, TrainedClassifier] = {}
_LOCK = threading.Lock()


def _key(train: list[ImageItem], opts: ClassifierOptions, resolution: int, n_classes: int) -> str:
    from seqify.dataset import items_fingerprint

    payload = json.dumps({"v": CLASSIFIER_VERSION, "items": items_fingerprint(train), "opts": opts.model_dump(),
                          "resolution": resolution, "n_classes": n_classes}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:20]


def get_classifier(train: list[ImageItem], test: list[ImageItem], options: ClassifierOptions | None = None) -> TrainedClassifier:
    """The classifier for a dataset: from memory, else from the disk cache, else trained.

    Args:
        train: the labelled training images (all at one resolution).
        test: the test images; their accuracy is reported.
        options: training settings (default :class:`ClassifierOptions`).

    Raises ValueError when the items carry no labels or only one class (the caller
    reports that instead of an FD).
    """
    opts = options or ClassifierOptions()
    labelled = [it for it in train if it.label is not None]
    if not labelled:
        raise ValueError("the training images have no labels, so no classifier can be trained for the features "
                         "(an image folder without class sub-folders, or an array file without labels)")
    labels = sorted({int(it.label) for it in labelled})  # type: ignore[arg-type]
    if len(labels) < 2:
        raise ValueError(f"the training images all have label {labels[0]}: a classifier needs two classes or more")
    if labels[0] < 0:
        raise ValueError(f"negative label {labels[0]}: labels must be class ids 0, 1, ...")
    resolution = labelled[0].shape[0]
    n_classes = labels[-1] + 1
    key = _key(labelled, opts, resolution, n_classes)
    with _LOCK:
        if key in _MEMO:
            return _MEMO[key]
        path = cache_dir() / "image_classifier" / f"{key}.pt"
        clf = _load(path, opts, resolution, n_classes)
        if clf is None:
            clf = _train(labelled, test, opts, resolution, n_classes)
            save_checkpoint(path, {"model": clf.net.state_dict(), "info_json": json.dumps(clf.info)})
            clf.info["cache_file"] = str(path)
        if "fingerprint" not in clf.info:
            from seqify_image.extractor import weights_fingerprint

            clf.info["fingerprint"] = weights_fingerprint(
                {k: v.detach().cpu().numpy() for k, v in clf.net.state_dict().items()})
        clf.info.setdefault("kind", "fitted in this run")
        _MEMO[key] = clf
        return clf


def _load(path: Any, opts: ClassifierOptions, resolution: int, n_classes: int) -> TrainedClassifier | None:
    if not path.is_file():
        return None
    try:
        state = load_checkpoint(path)
        info = json.loads(state["info_json"])
        net = build_network(n_classes, opts.width, opts.features)
        net.load_state_dict(state["model"])
    except Exception:  # a damaged cache file is retrained, never trusted
        return None
    net.eval()
    return TrainedClassifier(net, resolution, n_classes, float(info["test_accuracy"]),
                             {**info, "cache_file": str(path), "from_cache": True})


def _shift_batch(x_N1HW: Any, shift: int, gen: Any) -> Any:
    """Each image moved by up to ``shift`` pixels in each direction (zero padding)."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = x_N1HW.shape
    padded = F.pad(x_N1HW, (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    rows_NH = (dy[:, None] + torch.arange(h)[None, :])
    cols_NW = (dx[:, None] + torch.arange(w)[None, :])
    idx_n = torch.arange(n)[:, None, None]
    return padded[idx_n, 0, rows_NH[:, :, None], cols_NW[:, None, :]][:, None]


def _degrade_batch(x_N1HW: Any, share: float, gen: Any) -> Any:
    """A random ``share`` of the images taken to a random lower resolution and back
    (area filter down, bilinear up, as :func:`seqify_image.imaging.resize` does), or
    (a third of those) quantized to a random number of levels from 2 to 8."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = x_N1HW.shape
    pick = torch.rand(n, generator=gen) < share
    if not bool(pick.any()):
        return x_N1HW
    out = x_N1HW.clone()
    chosen = pick.nonzero().squeeze(1)
    quant = torch.rand(len(chosen), generator=gen) < 1 / 3
    blur_idx, quant_idx = chosen[~quant], chosen[quant]
    if len(blur_idx):
        side = int(torch.randint(max(2, h // 4), h, (1,), generator=gen))
        small = F.interpolate(out[blur_idx], size=(side, side * w // h or 1), mode="area")
        out[blur_idx] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
    if len(quant_idx):
        levels = int(torch.randint(2, 9, (1,), generator=gen))
        out[quant_idx] = torch.floor(out[quant_idx] * (levels - 1) + 0.5) / (levels - 1)
    return out


def _train(train: list[ImageItem], test: list[ImageItem], opts: ClassifierOptions, resolution: int,
           n_classes: int) -> TrainedClassifier:
    import math

    import torch
    import torch.nn.functional as F

    t0 = time.perf_counter()
    x_N1HW = torch.from_numpy(stack_pixels(train, resolution))[:, None]
    y_N = torch.tensor([int(it.label) for it in train], dtype=torch.long)  # type: ignore[arg-type]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)
        net = build_network(n_classes, opts.width, opts.features)
    gen = torch.Generator().manual_seed(opts.seed + 1)
    optim = torch.optim.Adam(net.parameters(), lr=opts.lr)
    net.train()
    n = len(train)
    perm, cursor = torch.randperm(n, generator=gen), 0
    for step in range(opts.steps):
        if cursor + min(opts.batch_size, n) > n:
            perm, cursor = torch.randperm(n, generator=gen), 0
        idx = perm[cursor : cursor + opts.batch_size]
        cursor += len(idx)
        xb = x_N1HW[idx]
        if opts.degrade:
            xb = _degrade_batch(xb, opts.degrade, gen)
        if opts.shift:
            xb = _shift_batch(xb, opts.shift, gen)
        for group in optim.param_groups:
            group["lr"] = opts.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / opts.steps)))
        loss = F.cross_entropy(net(xb), y_N[idx])
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
    net.eval()
    clf = TrainedClassifier(net, resolution, n_classes, float("nan"), {})
    test_l = [it for it in test if it.label is not None]
    if test_l:
        _, probs = clf.predict_items(test_l)
        acc = float((probs.argmax(1) == np.array([it.label for it in test_l])).mean())
    else:
        acc = float("nan")
    clf.test_accuracy = acc
    clf.info = {"test_accuracy": acc, "n_test": len(test_l), "n_train": n, "n_classes": n_classes,
                "resolution": resolution, "train_seconds": round(time.perf_counter() - t0, 2),
                "final_train_loss": round(float(loss.detach()), 4), "settings": opts.model_dump(),
                "version": CLASSIFIER_VERSION, "from_cache": False}
    return clf
