"""Sample metrics for images without Inception weights.

The features are the penultimate layer of a small digit classifier: for MNIST and the
8x8 digits the fixed extractor the project ships (:mod:`seqify_image.extractor`; its
fingerprint goes into every results.json), else one trained on the run's own training
split (:mod:`seqify_image.classifier`). The Frechet distance (FD) is FID's formula and
KID the kernel inception distance (unbiased MMD^2 with the cubic polynomial kernel of
Binkowski et al., 2018), both with these features in place of Inception's: their values
compare only between runs that use the same extractor (same fingerprint), never with
published FIDs.

Intervals: +-1.96 bootstrap standard errors over the samples (the test images are the
fixed reference of every cell, so the interval is the spread the sample draw gives).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seqify_image.imaging import resize
from seqify_image.items import ImageItem

__all__ = [
    "CONFIDENT_THRESHOLD",
    "feature_metrics",
    "frechet_distance",
    "feature_stats",
    "kernel_distance",
    "extractor_info",
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


def _poly_kernel(a_MF: np.ndarray, b_NF: np.ndarray) -> np.ndarray:
    """KID's kernel ``(a . b / F + 1)^3``."""
    return (a_MF @ b_NF.T / a_MF.shape[1] + 1.0) ** 3


def kernel_distance(feats_a: np.ndarray, feats_b: np.ndarray, *, scale: float | None = None) -> float:
    """KID: the unbiased estimate of MMD^2 between two feature sets (``M, N >= 2`` rows)
    with the cubic polynomial kernel ``(x . y / F + 1)^3`` of Binkowski et al. (2018)
    and torch-fidelity / clean-fid, computed on the whole sets (not on subsets).

    Both sets are first divided by ``scale`` (default: the RMS of ``feats_b``, the
    reference), so that ``x . y / F`` is of order 1 as with Inception's features (a
    digit classifier's ReLU features are of order 5-10, where the cubic kernel would be
    dominated by a few large entries). Unbiased at any sample count, so it can be
    slightly negative when the sets match."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    m, n = len(a), len(b)
    if m < 2 or n < 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"KID needs two [N >= 2, F] feature sets of one width, got {a.shape} and {b.shape}")
    scale = _rms(b) if scale is None else scale
    a, b = a / scale, b / scale
    kaa, kbb = _poly_kernel(a, a), _poly_kernel(b, b)
    return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
                 - 2 * _poly_kernel(a, b).mean())


def _rms(f: np.ndarray) -> float:
    r = float(np.sqrt((np.asarray(f, np.float64) ** 2).mean()))
    return r if r > 0 else 1.0


#: the normal quantile of a two-sided 95% interval
_Z95 = 1.959963984540054


def feature_metrics(feats_s: np.ndarray, feats_ref: np.ndarray, *, n_boot: int = 200, seed: int = 0,
                    return_draws: bool = False) -> dict[str, Any]:
    """FD and KID of ``feats_s`` against the reference ``feats_ref``, with 95% intervals.

    The intervals are ``value +- 1.96 se``, ``se`` the standard deviation of the metric
    over ``n_boot`` bootstrap resamples of the rows of ``feats_s`` (with replacement;
    the reference stays fixed). A percentile interval would not do for FD: a resample
    holds about 63% distinct rows, and FD grows as the sample shrinks, so the resampled
    FDs sit above the estimate. In a resample, KID's within-set term averages over
    pairs of distinct original rows (so duplicates do not bias it).

    Returns ``fd``, ``kid`` and, when ``n_boot > 1``, ``fd_se``, ``kid_se``,
    ``fd_interval`` / ``kid_interval`` (``[low, high]``) and ``n_boot``. Each resample
    costs one ``M x M`` matrix-vector product and one ``F x F`` eigendecomposition.
    ``return_draws`` adds ``draws``: each resample's row indices, FD and KID (tests)."""
    s, r = np.asarray(feats_s, np.float64), np.asarray(feats_ref, np.float64)
    mu_r, sigma_r = feature_stats(r)
    scale = _rms(r)
    out: dict[str, Any] = {"fd": frechet_distance(*feature_stats(s), mu_r, sigma_r),
                           "kid": kernel_distance(s, r, scale=scale)}
    if n_boot <= 1:
        return out
    m, n = len(s), len(r)
    ss, rs = s / scale, r / scale
    k_ss = _poly_kernel(ss, ss)
    diag = np.diag(k_ss).copy()
    k_rr = _poly_kernel(rs, rs)
    rr_term = (k_rr.sum() - np.trace(k_rr)) / (n * (n - 1))
    sr_rows = _poly_kernel(ss, rs).mean(1)
    rng = np.random.default_rng(seed)
    fds, kids, draws = np.empty(n_boot), np.empty(n_boot), []
    for b in range(n_boot):
        idx = rng.integers(0, m, m)
        if return_draws:
            draws.append(idx)
        c = np.bincount(idx, minlength=m).astype(np.float64)  # how often each row is drawn
        mu = c @ s / m
        sigma = ((s * c[:, None]).T @ s - m * np.outer(mu, mu)) / (m - 1)
        fds[b] = frechet_distance(mu, sigma, mu_r, sigma_r)
        pairs = m * m - c @ c  # ordered pairs of draws that are distinct original rows
        kids[b] = (c @ k_ss @ c - (c * c) @ diag) / pairs + rr_term - 2 * (c @ sr_rows) / m
    out["fd_se"], out["kid_se"] = float(fds.std(ddof=1)), float(kids.std(ddof=1))
    out["fd_interval"] = [out["fd"] - _Z95 * out["fd_se"], out["fd"] + _Z95 * out["fd_se"]]
    out["kid_interval"] = [out["kid"] - _Z95 * out["kid_se"], out["kid"] + _Z95 * out["kid_se"]]
    out["n_boot"] = n_boot
    if return_draws:
        out["draws"] = {"indices": draws, "fd": fds, "kid": kids}
    return out


def _through_resolution(items: list[ImageItem], side: int) -> list[ImageItem]:
    """Images taken down (or up) to ``side`` and back to their own size."""
    return [ImageItem(resize(resize(it.pixels, side), it.shape), it.label, it.source) for it in items]


def extractor_info(classifier: Any, evaluated: list[ImageItem]) -> dict[str, Any]:
    """What a results.json records about the feature extractor: its kind ("shipped" or
    "fitted in this run"), name, fingerprint, test accuracy, and how many of the
    ``evaluated`` images (the run's test and validation images) it was trained on
    (0 for the standard splits; nonzero when a run moves ``split_seed`` or the split sizes)."""
    from seqify_image.extractor import trained_sources

    info = classifier.info
    seen = trained_sources(classifier)
    ids = [str(it.source).rsplit(":", 1) for it in evaluated]
    overlap = sum(1 for parts in ids if len(parts) == 2 and parts[1].isdigit() and int(parts[1]) in seen)
    out = {"kind": info.get("kind", "fitted in this run"), "name": info.get("name"),
           "fingerprint": info.get("fingerprint"), "test_accuracy": round(classifier.test_accuracy, 4),
           "trained_on_evaluated_images": overlap}
    if out["kind"] != "shipped":
        out["note"] = ("a classifier fitted on this run's training split: its features (and so FD and KID) "
                       "compare only with runs on the same machine, thread count and data")
    return out


def image_sample_metrics(
    samples: list[ImageItem | None],
    train: list[ImageItem],
    test: list[ImageItem],
    classifier: Any | None,
    *,
    val: list[ImageItem] | None = None,
    no_classifier_reason: str | None = None,
    floor_seed: int = 0,
    n_boot: int = 200,
    conditions: list[int | None] | None = None,
) -> dict[str, Any]:
    """Every sample metric of the image modality.

    Args:
        samples: decoded samples (None: undecodable); resized to the classifier's
            resolution when their size differs.
        train: real training images (the floor's images when there is no ``val``).
        test: real test images (the reference of every FD and KID).
        classifier: the feature extractor (a
            :class:`~seqify_image.classifier.TrainedClassifier`), or None when there
            is none (then FD, KID and the class metrics are None).
        val: real validation images: the floor draws as many of them as there are
            decoded samples (images the shipped extractor never saw).
        no_classifier_reason: why there is no classifier (goes into the metrics).
        floor_seed: seeds which images the floor draws and the bootstrap.
        n_boot: bootstrap resamples of the intervals (0: no intervals).
        conditions: the class each sample was drawn under (a conditional generator;
            aligned with ``samples``), or None.

    Returns:
        fd, kid: FD and KID between the features of the decoded samples and of every
            test image; fd_interval, kid_interval: their 95% intervals (bootstrap standard
            errors ``fd_se``, ``kid_se``; see :func:`feature_metrics`).
        fd_floor, kid_floor: the same for ``fd_floor_n`` real validation images (as
            many as decoded samples, or all of them): what a perfect generator would
            get at this sample count; floor_images says which split they came from.
        fd_floor_at_sample_resolution: (only when the samples are smaller than the
            data) the floor with those images first taken to the samples'
            resolution and back: what a perfect generator at that resolution would get.
        confident_share: share of all samples (undecodable ones count as not confident)
            whose top class has probability >= :data:`CONFIDENT_THRESHOLD`.
        class_histogram: label -> decoded samples the classifier assigns to it (zeros
            included: a dropped mode shows as a 0), and classes_covered.
        class_agreement: (with ``conditions``) the share of the samples drawn under a
            class that the classifier assigns to that class (undecodable ones count as
            disagreeing); n_conditioned: how many samples had a class.
        feature_extractor: :func:`extractor_info`.
        n_samples, n_decoded, undecodable, classifier_test_accuracy, sample_resolution,
        fd_note.
    """
    decoded = [s for s in samples if s is not None]
    n, k = len(samples), len(decoded)
    sample_sides = sorted({s.shape for s in decoded})
    out: dict[str, Any] = {
        "fd": None,
        "fd_interval": None,
        "kid": None,
        "kid_interval": None,
        "fd_floor": None,
        "kid_floor": None,
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
    out["feature_extractor"] = extractor_info(classifier, [*test, *(val or [])])
    n_classes = classifier.n_classes
    if k:
        feats_s, probs_s = classifier.predict_items(decoded)
        pred = probs_s.argmax(1)
        out["confident_share"] = float((probs_s.max(1) >= CONFIDENT_THRESHOLD).sum() / n)
        out["class_histogram"] = {str(c): int((pred == c).sum()) for c in range(n_classes)}
        out["classes_covered"] = int(len(np.unique(pred)))
    else:
        out["confident_share"] = 0.0
        pred = np.zeros(0, dtype=np.int64)
    if conditions is not None:
        if len(conditions) != n:
            raise ValueError(f"{len(conditions)} conditions for {n} samples")
        decoded_conditions = [c for s, c in zip(samples, conditions) if s is not None]
        hits = sum(int(p == c) for p, c in zip(pred.tolist(), decoded_conditions) if c is not None)
        conditioned = sum(c is not None for c in conditions)
        out["class_agreement"] = hits / conditioned if conditioned else None
        out["n_conditioned"] = conditioned
    if k < 2:
        out["fd_note"] = f"no FD: {k} decoded sample(s); a covariance needs at least 2"
        return out
    feats_t, _ = classifier.predict_items(test)
    found = feature_metrics(feats_s, feats_t, n_boot=n_boot, seed=floor_seed)
    out.update(fd=found["fd"], kid=found["kid"], fd_interval=found.get("fd_interval"),
               kid_interval=found.get("kid_interval"), fd_se=found.get("fd_se"), kid_se=found.get("kid_se"))
    pool, pool_name = (val, "validation") if val else (train, "training")
    rng = np.random.default_rng(floor_seed)
    m = min(k, len(pool))
    picked = [pool[i] for i in sorted(rng.choice(len(pool), size=m, replace=False))]
    feats_p = classifier.predict_items(picked)[0]
    out["fd_floor"] = _fd(feats_p, feats_t)
    out["kid_floor"] = kernel_distance(feats_p, feats_t) if m >= 2 else None
    out["fd_floor_n"] = m
    out["floor_images"] = pool_name
    ext = out["feature_extractor"]
    notes = [f"features: penultimate layer ({feats_t.shape[1]}) of the {ext['kind']} extractor "
             f"{ext.get('name') or ''} (fingerprint {ext.get('fingerprint')}), vs all {len(test)} test images; "
             f"intervals: +-1.96 bootstrap SE over the samples ({n_boot} resamples); KID on features divided by "
             f"the RMS of the test features; floor: {m} {pool_name} images"]
    if m < k:
        notes.append(f"the floor uses all {m} {pool_name} images, fewer than the {k} decoded samples")
    if ext["trained_on_evaluated_images"]:
        notes.append(f"the extractor was trained on {ext['trained_on_evaluated_images']} of the test and "
                     "validation images (this run's split differs from the one it was fitted on)")
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
