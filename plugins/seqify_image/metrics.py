"""Sample metrics for images without Inception weights.

The features are the penultimate layer of a small digit classifier trained on the
dataset's own training split (:mod:`seqify_image.classifier`); the Frechet distance
between two sets of features is FID's formula with those features in place of
Inception's, so its values are comparable only between runs on the same dataset,
resolution and classifier settings, never with published FIDs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seqify_image.imaging import resize
from seqify_image.items import ImageItem

__all__ = [
    "CONFIDENT_THRESHOLD",
    "frechet_distance",
    "feature_stats",
    "image_sample_metrics",
    "reconstruction_metrics",
]

#: a sample counts as confident when the classifier gives its top class at least this probability
CONFIDENT_THRESHOLD = 0.9


def feature_stats(feats_NF: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[F]`` and covariance ``[F, F]`` (unbiased, float64) of ``N >= 2`` feature rows."""
    f = np.asarray(feats_NF, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature statistics need at least 2 rows of [N, F] features, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` between two Gaussians.

    ``tr((S1 S2)^(1/2))`` is computed by eigen-decomposition: with ``R = S1^(1/2)``
    (symmetric), ``S1 S2`` is similar to the symmetric ``R S2 R``, so the trace is the
    sum of the square roots of its eigenvalues (negative round-off clipped to 0). This
    is what ``scipy.linalg.sqrtm`` gives in the reference FID code, without its
    complex round-off parts or its failures on singular covariances (fewer samples
    than features).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: means {mu1.shape} / {mu2.shape}, covariances {s1.shape} / {s2.shape}")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    w1, v1 = np.linalg.eigh(s1)
    root1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    m = root1 @ s2 @ root1
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt, 0.0))


def _fd(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    return frechet_distance(*feature_stats(feats_a), *feature_stats(feats_b))


def _through_resolution(items: list[ImageItem], side: int) -> list[ImageItem]:
    """Images taken down (or up) to ``side`` and back to their own size."""
    return [ImageItem(resize(resize(it.pixels, side), it.shape), it.label, it.source) for it in items]


def image_sample_metrics(
    samples: list[ImageItem | None],
    train: list[ImageItem],
    test: list[ImageItem],
    classifier: Any | None,
    *,
    no_classifier_reason: str | None = None,
    floor_seed: int = 0,
) -> dict[str, Any]:
    """Every sample metric of the image modality.

    Args:
        samples: decoded samples (None: undecodable); resized to the classifier's
            resolution when their size differs.
        train: real training images (the floor draws as many as there are decoded samples).
        test: real test images (the reference of every FD).
        classifier: a :class:`~seqify_image.classifier.TrainedClassifier`, or None
            when none could be trained (then FD and the class metrics are None).
        no_classifier_reason: why there is no classifier (goes into the metrics).
        floor_seed: seeds which training images the floor draws.

    Returns:
        fd: Frechet distance between the classifier features of the decoded samples
            and of every test image.
        fd_floor: the same for as many real training images as decoded samples: what
            a perfect generator would get at this sample count (``fd_floor_n`` images).
        fd_floor_at_sample_resolution: (only when the samples are smaller than the
            data) the floor with the training images first taken to the samples'
            resolution and back: what a perfect generator at that resolution would get.
        confident_share: share of all samples (undecodable ones count as not confident)
            whose top class has probability >= :data:`CONFIDENT_THRESHOLD`.
        class_histogram: label -> decoded samples the classifier assigns to it (zeros
            included: a dropped mode shows as a 0), and classes_covered.
        n_samples, n_decoded, undecodable, classifier_test_accuracy, sample_resolution,
        fd_note.
    """
    decoded = [s for s in samples if s is not None]
    n, k = len(samples), len(decoded)
    sample_sides = sorted({s.shape for s in decoded})
    out: dict[str, Any] = {
        "fd": None,
        "fd_floor": None,
        "confident_share": None,
        "class_histogram": None,
        "classes_covered": None,
        "n_samples": n,
        "n_decoded": k,
        "undecodable": n - k,
        "classifier_test_accuracy": None,
        "confident_threshold": CONFIDENT_THRESHOLD,
        "sample_resolution": list(sample_sides[0]) if len(sample_sides) == 1 else [list(s) for s in sample_sides],
    }
    if classifier is None:
        out["fd_note"] = f"no FD: {no_classifier_reason or 'no classifier'}"
        return out
    out["classifier_test_accuracy"] = round(classifier.test_accuracy, 4)
    n_classes = classifier.n_classes
    if k:
        feats_s, probs_s = classifier.predict_items(decoded)
        pred = probs_s.argmax(1)
        out["confident_share"] = float((probs_s.max(1) >= CONFIDENT_THRESHOLD).sum() / n)
        out["class_histogram"] = {str(c): int((pred == c).sum()) for c in range(n_classes)}
        out["classes_covered"] = int(len(np.unique(pred)))
    else:
        out["confident_share"] = 0.0
    if k < 2:
        out["fd_note"] = f"no FD: {k} decoded sample(s); a covariance needs at least 2"
        return out
    feats_t, _ = classifier.predict_items(test)
    out["fd"] = _fd(feats_s, feats_t)
    rng = np.random.default_rng(floor_seed)
    m = min(k, len(train))
    picked = [train[i] for i in sorted(rng.choice(len(train), size=m, replace=False))]
    out["fd_floor"] = _fd(classifier.predict_items(picked)[0], feats_t)
    out["fd_floor_n"] = m
    notes = [f"features: penultimate layer ({feats_t.shape[1]}) of the dataset's digit classifier, vs all "
             f"{len(test)} test images; floor: {m} training images"]
    if m < k:
        notes.append(f"the floor uses all {m} training images, fewer than the {k} decoded samples")
    data_side = test[0].shape if test else None
    if len(sample_sides) == 1 and data_side is not None and sample_sides[0][0] < data_side[0]:
        low = _through_resolution(picked, sample_sides[0][0])
        out["fd_floor_at_sample_resolution"] = _fd(classifier.predict_items(low)[0], feats_t)
    out["fd_note"] = "; ".join(notes)
    return out


def reconstruction_metrics(
    originals: list[ImageItem], decoded: list[ImageItem | None], classifier: Any | None,
    *, no_classifier_reason: str | None = None,
) -> dict[str, Any]:
    """MSE and PSNR of ``decoded[i]`` against ``originals[i]`` on [0, 1] pixels, at the
    original's resolution (a decoded image of another size is resized to it);
    ``psnr = 10 log10(1 / mse)`` of the MSE over all pixels of all decodable pairs
    (None when the MSE is 0). With a classifier: its accuracy on the reconstructions
    and on the originals against the true labels (labelled pairs only)."""
    if len(originals) != len(decoded):
        raise ValueError(f"{len(originals)} originals but {len(decoded)} decoded images")
    pairs = [(o, d) for o, d in zip(originals, decoded) if d is not None]
    out: dict[str, Any] = {"n": len(originals), "undecodable": len(originals) - len(pairs)}
    if pairs:
        sq = [float(((resize(d.pixels, o.shape) - o.pixels.astype(np.float64)) ** 2).mean()) for o, d in pairs]
        mse = float(np.mean(sq))
        out["mse"] = mse
        out["psnr"] = float(10 * np.log10(1.0 / mse)) if mse > 0 else None
        out["psnr_note"] = "10 log10(1 / MSE), MSE over all pixels of all pairs, on [0, 1] images at the original size"
    else:
        out["mse"] = out["psnr"] = None
    out["classifier_accuracy"] = out["originals_classifier_accuracy"] = None
    labelled = [(o, d) for o, d in pairs if o.label is not None]
    if classifier is None:
        out["classifier_note"] = f"no classifier accuracy: {no_classifier_reason or 'no classifier'}"
    elif labelled:
        truth = np.array([o.label for o, _ in labelled])
        out["classifier_accuracy"] = float((classifier.predict_items([d for _, d in labelled])[1].argmax(1) == truth).mean())
        out["originals_classifier_accuracy"] = float(
            (classifier.predict_items([o for o, _ in labelled])[1].argmax(1) == truth).mean())
        out["n_labelled"] = len(labelled)
    return out
