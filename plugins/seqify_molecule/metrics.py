"""Sample metrics as in GDSS / MOSES: validity, uniqueness, novelty and FCD.

- validity: the fraction of samples whose copy passes ``Chem.SanitizeMol`` with no
  correction of any kind and whose canonical SMILES parses again; empty molecules
  and undecodable samples (None) are invalid. Disconnected fragments are allowed
  (GDSS "validity w/o correction"); ``valid_connected`` also asks for one fragment.
- uniqueness: distinct canonical SMILES / valid samples.
- novelty: distinct valid SMILES not among the reference molecules / distinct valid
  SMILES (the MOSES denominator). The molecule modality's reference is every
  non-test molecule of the dataset (:data:`NOVELTY_NOTE`), not only seqify's training
  split: GDSS with the MoFlow split, whose numbers the published tables report, takes
  every molecule outside the test ids as training data, so a molecule of seqify's
  carved-out validation split is not novel.
- FCD: fcd-torch 1.0.7 (its ChemNet weights ship with the wheel, so it runs offline)
  between the canonical SMILES of every valid sample (duplicates kept, as MOSES does)
  and the test split. The reference statistics (mu, sigma) are cached on disk. The
  distance is fcd-torch's ``calculate_frechet_distance`` (scipy sqrtm); when that
  raises on a degenerate covariance (its "Imaginary component" error, seen with few
  samples), :func:`frechet_distance` (the same formula through eigenvalues, equal to
  ~1e-9 relative where both work) is used instead and ``fcd_method`` says so.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from seqify_molecule.chem import sanitized_smiles
from seqify.io import atomic_write_bytes, cache_dir

__all__ = ["FCD_NOTE", "NOVELTY_NOTE", "FCDScorer", "canonical_samples", "frechet_distance", "molecule_metrics", "write_samples_smi"]

FCD_NOTE = (
    "FCD depends strongly on the number of samples (QM9 training molecules scored against "
    "the test split give ~0.41 with 1,000 samples and ~0.04 with 10,000); compare only FCDs "
    "computed with the same fcd_n_samples and reference set"
)
NOVELTY_NOTE = (
    "novelty is measured against every non-test molecule of the dataset (train + validation "
    "splits, and the molecules a data limit left out), as GDSS does with the MoFlow split, where "
    "every molecule outside the test ids is training data; a sample equal to a validation molecule is not novel"
)
_FCD_VERSION = "fcd_torch==1.0.7/ChemNet_v0.13"


def canonical_samples(samples: list[Any]) -> list[str | None]:
    """Canonical SMILES of each valid sample, None for invalid ones (same order)."""
    return [sanitized_smiles(m) for m in samples]


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2) for two Gaussians.

    tr sqrt(S1 S2) is the sum of the square roots of the eigenvalues of S1 S2, which
    equal those of the symmetric PSD matrix S1^1/2 S2 S1^1/2 (tiny negative
    round-off eigenvalues are clipped to 0).
    """
    diff = np.asarray(mu1, dtype=np.float64) - np.asarray(mu2, dtype=np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    w, V = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T
    inner = root1 @ s2 @ root1
    ev = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(ev, 0.0, None)).sum())
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


class FCDScorer:
    """Fréchet ChemNet Distance with fcd-torch, with cached reference statistics.

    Args:
        device: torch device for ChemNet (default "cpu").
        batch_size: SMILES per ChemNet forward pass (default 512).
        cache: cache reference statistics under ``$SEQIFY_CACHE/fcd`` (default True).
        exact_sqrtm: use fcd-torch's ``calculate_frechet_distance`` (scipy sqrtm),
            falling back to :func:`frechet_distance` only when it raises (default
            True); False always uses :func:`frechet_distance`.
    """

    def __init__(self, *, device: str = "cpu", batch_size: int = 512, cache: bool = True, exact_sqrtm: bool = True):
        self.device, self.batch_size, self.cache, self.exact_sqrtm = device, batch_size, cache, exact_sqrtm
        self._fcd = None

    def __repr__(self) -> str:
        return (
            f"FCDScorer(device={self.device!r}, batch_size={self.batch_size}, cache={self.cache}, "
            f"exact_sqrtm={self.exact_sqrtm})"
        )

    def _model(self):
        if self._fcd is None:
            from fcd_torch import FCD

            self._fcd = FCD(device=self.device, n_jobs=1, batch_size=self.batch_size)
        return self._fcd

    def stats(self, smiles: list[str]) -> dict[str, np.ndarray]:
        """``mu [512]`` and ``sigma [512, 512]`` of ChemNet activations (needs >= 2 valid SMILES)."""
        if len(smiles) < 2:
            raise ValueError(f"FCD needs at least 2 molecules, got {len(smiles)}")
        act_N512 = self._model().get_predictions(list(smiles))
        return {"mu": act_N512.mean(0), "sigma": np.cov(act_N512.T)}

    def reference_stats(self, smiles: list[str], dataset: str) -> dict[str, np.ndarray]:
        """Statistics of a reference set, cached on disk by dataset name and SMILES-list hash."""
        digest = hashlib.sha1(json.dumps([_FCD_VERSION, list(smiles)]).encode()).hexdigest()[:16]
        path = cache_dir() / "fcd" / f"{dataset}-{digest}.npz"
        if self.cache and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as data:
                    return {"mu": data["mu"], "sigma": data["sigma"]}
            except (OSError, ValueError, KeyError):
                pass  # damaged: recompute
        stats = self.stats(smiles)
        if self.cache:
            buf = io.BytesIO()
            np.savez(buf, mu=stats["mu"], sigma=stats["sigma"])
            try:
                atomic_write_bytes(path, buf.getvalue())
            except OSError:
                pass
        return stats

    def distance(self, generated: list[str], reference: list[str], *, dataset: str = "custom") -> float:
        """FCD between generated SMILES and a reference set (all must be valid SMILES)."""
        return self.distance_and_method(generated, reference, dataset=dataset)[0]

    def distance_and_method(
        self, generated: list[str], reference: list[str], *, dataset: str = "custom"
    ) -> tuple[float, str]:
        """FCD and which formula computed it (see the module docstring)."""
        ref = self.reference_stats(reference, dataset)
        gen = self.stats(generated)
        args = (ref["mu"], ref["sigma"], gen["mu"], gen["sigma"])
        if self.exact_sqrtm:
            from fcd_torch.utils import calculate_frechet_distance

            try:
                return float(calculate_frechet_distance(*args)), "fcd_torch.calculate_frechet_distance"
            except ValueError as exc:
                return frechet_distance(*args), f"eigenvalue formula (fcd-torch's sqrtm failed: {exc})"
        return frechet_distance(*args), "eigenvalue formula"


_default_scorer: FCDScorer | None = None


def _scorer() -> FCDScorer:
    global _default_scorer
    if _default_scorer is None:
        _default_scorer = FCDScorer()
    return _default_scorer


def molecule_metrics(
    samples: list[Any],
    train: list[str],
    test: list[str],
    *,
    dataset: str = "custom",
    fcd: bool = True,
    scorer: FCDScorer | None = None,
) -> dict[str, Any]:
    """Validity, uniqueness, novelty and FCD of decoded samples.

    Args:
        samples: RDKit molecules (unsanitized) or None, one per generated item.
        train: the novelty reference (canonical SMILES): the molecule modality passes
            every non-test molecule of the dataset (see :data:`NOVELTY_NOTE`).
        test: test items (canonical SMILES), the FCD reference.
        dataset: names the cached FCD reference statistics.
        fcd: compute FCD (default True).
        scorer: the FCD scorer (default: a shared CPU one).
    """
    canon = canonical_samples(samples)
    valid = [s for s in canon if s is not None]
    unique = set(valid)
    train_set = set(train)
    n = len(samples)
    out: dict[str, Any] = {
        "n_samples": n,
        "n_valid": len(valid),
        "validity": len(valid) / n if n else 0.0,
        "valid_connected": sum(1 for s in valid if "." not in s) / n if n else 0.0,
        "n_unique": len(unique),
        "uniqueness": len(unique) / len(valid) if valid else 0.0,
        "novelty": len(unique - train_set) / len(unique) if unique else 0.0,
        "novelty_n_reference": len(train_set),
        "novelty_note": NOVELTY_NOTE,
        "metric_rules": (
            "validity: sanitizes with no correction (fragments allowed), over all samples; "
            "uniqueness: distinct/valid; novelty: distinct not among the non-test molecules "
            "(train + validation) / distinct valid (both 0 when there is no valid sample)"
        ),
    }
    if fcd:
        out["fcd_n_samples"] = len(valid)
        out["fcd_n_reference"] = len(test)
        out["fcd_note"] = FCD_NOTE
        if len(valid) < 2 or len(test) < 2:
            out["fcd"] = None
            out["fcd_error"] = f"FCD needs at least 2 valid samples and 2 reference molecules ({len(valid)} valid)"
        else:
            out["fcd"], out["fcd_method"] = (scorer or _scorer()).distance_and_method(
                valid, list(test), dataset=dataset
            )
    return out


def write_samples_smi(samples: list[Any], path: Path) -> Path:
    """One line per sample in generation order: canonical SMILES if valid, else ``INVALID``."""
    lines = [s if s is not None else "INVALID" for s in canonical_samples(samples)]
    return atomic_write_bytes(Path(path), ("\n".join(lines) + ("\n" if lines else "")).encode())
