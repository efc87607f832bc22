"""Point-cloud distances and PointFlow's generation metrics (MMD, COV, 1-NNA).

Distances between two clouds X, Y (normalized into [-1, 1]^3, see
:mod:`seqify_pointcloud.items`):

- Chamfer (CD), as PointFlow: ``mean_x min_y |x - y|^2 + mean_y min_x |x - y|^2``
  (squared distances, each direction averaged, the two summed).
- Earth mover's (EMD): the exact optimal one-to-one assignment of two clouds of equal
  size (``scipy.optimize.linear_sum_assignment`` on Euclidean distances), reported as
  the mean Euclidean distance between matched points (PointFlow's approximate match
  also sums Euclidean, not squared, distances per point).

Every cloud is first resampled to a common count (``points``): a seeded random subset,
or all points plus random repeats when it has fewer (octree samples decode to one point
per occupied leaf). CD matrices are computed in float32 with torch, a chunk of rows at a
time (``|x|^2 + |y|^2 - 2 x.y`` as one matrix product, clamped at 0, then the two
minimum reductions), symmetric matrices only above the diagonal: 128 x 128 clouds of
128 points take about 3 s on one busy core (1.5 s for a symmetric one; a KD-tree per
cloud, scipy's cKDTree, measured no faster). EMD needs one assignment per pair (about
1-2 ms at 128 points, 5 ms at 256), so it is
computed on the first ``emd_clouds`` samples and references only, each resampled to
``emd_points`` (stated in the results); symmetric matrices solve each pair once.

Metrics between generated clouds S and references R (the test split), as in
PointFlow's ``compute_all_metrics``, with D one of CD / EMD:

- MMD: mean over references of the smallest D to any sample (lower is better);
- COV: share of references that are the nearest reference of some sample (higher);
- 1-NNA: leave-one-out 1-nearest-neighbour accuracy of telling S from R over S u R
  (0.5 ideal, 1.0 when the two sets are told apart perfectly).

A sample that decoded to nothing (None) is a failure: it is infinitely far from every
cloud, so it is nobody's nearest neighbour and covers no reference, and 1-NN counts it
as correctly identified as a sample (the worst case for the generator). All three
metrics are therefore computed over every sample, failures included; ``valid`` is the
share that decoded.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any, Sequence

import numpy as np
import torch

__all__ = [
    "stack_clouds",
    "chamfer_matrix",
    "chamfer_pairs",
    "emd",
    "emd_matrix",
    "mmd_cov_1nna",
    "generation_metrics",
    "DistanceCache",
]


def _points_of(cloud: Any) -> np.ndarray | None:
    if cloud is None:
        return None
    pts = np.asarray(getattr(cloud, "points", cloud), dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] == 0 or not np.isfinite(pts).all():
        return None
    return pts


def stack_clouds(clouds: Sequence[Any], points: int, *, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """``[K, points, 3]`` float32 tensor and a ``[K]`` valid mask (None, empty or
    non-finite clouds are invalid and hold zeros). Cloud ``k`` is resampled with a
    generator seeded by ``(seed, k)``: a subset without replacement, or repeats."""
    out = np.zeros((len(clouds), points, 3), dtype=np.float32)
    valid = np.zeros(len(clouds), dtype=bool)
    for k, cloud in enumerate(clouds):
        pts = _points_of(cloud)
        if pts is None:
            continue
        m = pts.shape[0]
        if m != points:
            rng = np.random.default_rng([seed, k])
            idx = rng.choice(m, points, replace=False) if m > points else np.concatenate(
                [np.arange(m), rng.choice(m, points - m, replace=True)])
            pts = pts[np.sort(idx)]
        out[k], valid[k] = pts, True
    return torch.from_numpy(out), valid


def _sq_dists(x_aP3: torch.Tensor, y_bQ3: torch.Tensor) -> torch.Tensor:
    """``[a, P, b, Q]`` squared distances between every point of each x and each y."""
    a, P, _ = x_aP3.shape
    b, Q, _ = y_bQ3.shape
    xx = (x_aP3 * x_aP3).sum(-1).reshape(a * P, 1)
    yy = (y_bQ3 * y_bQ3).sum(-1).reshape(1, b * Q)
    d = torch.addmm(xx + yy, x_aP3.reshape(a * P, 3), y_bQ3.reshape(b * Q, 3).T, alpha=-2.0)
    return d.clamp_min_(0.0).view(a, P, b, Q)


@torch.no_grad()
def chamfer_matrix(
    x_AP3: torch.Tensor, y_BQ3: torch.Tensor | None = None, *, max_elems: int = 1 << 22
) -> np.ndarray:
    """``[A, B]`` float64 Chamfer distances between every x and every y (see module doc);
    with ``y`` None, the symmetric ``[A, A]`` matrix of x with itself (each pair once,
    zero diagonal)."""
    symmetric = y_BQ3 is None
    y_BQ3 = x_AP3 if symmetric else y_BQ3
    A, P, _ = x_AP3.shape
    B, Q, _ = y_BQ3.shape
    out = np.zeros((A, B), dtype=np.float64)
    if A == 0 or B == 0:
        return out
    rows = max(1, max_elems // max(1, P * B * Q))
    for i in range(0, A, rows):
        j0 = i if symmetric else 0  # symmetric: only the columns from the diagonal on
        d = _sq_dists(x_AP3[i : i + rows], y_BQ3[j0:])  # [r, P, B - j0, Q]
        x_to_y = d.min(dim=3).values.mean(dim=1)
        y_to_x = d.min(dim=1).values.mean(dim=2)
        out[i : i + rows, j0:] = (x_to_y + y_to_x).double().numpy()
    if symmetric:
        out = np.triu(out, 1)
        out = out + out.T
    return out


@torch.no_grad()
def chamfer_pairs(x_KP3: torch.Tensor, y_KQ3: torch.Tensor) -> np.ndarray:
    """``[K]`` Chamfer distance of x[k] to y[k] (clouds of any sizes P, Q)."""
    d = torch.cdist(x_KP3.double(), y_KQ3.double()) ** 2  # [K, P, Q]
    return (d.min(dim=2).values.mean(dim=1) + d.min(dim=1).values.mean(dim=1)).numpy()


def emd(x_P3: np.ndarray, y_P3: np.ndarray) -> float:
    """Exact EMD of two clouds of equal size: mean Euclidean distance under the optimal
    one-to-one assignment."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    x, y = np.asarray(x_P3, dtype=np.float64), np.asarray(y_P3, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"EMD needs clouds of equal size, got {x.shape} and {y.shape}")
    cost = cdist(x, y)
    r, c = linear_sum_assignment(cost)
    return float(cost[r, c].mean())


def emd_matrix(x_AP3: torch.Tensor | np.ndarray, y_BP3: torch.Tensor | np.ndarray | None = None) -> np.ndarray:
    """``[A, B]`` exact EMDs; with ``y`` None, the symmetric ``[A, A]`` matrix of x with
    itself (each pair solved once, zero diagonal)."""
    x = np.asarray(x_AP3, dtype=np.float64)
    if y_BP3 is None:
        A = x.shape[0]
        out = np.zeros((A, A))
        for i in range(A):
            for j in range(i + 1, A):
                out[i, j] = out[j, i] = emd(x[i], x[j])
        return out
    y = np.asarray(y_BP3, dtype=np.float64)
    return np.array([[emd(a, b) for b in y] for a in x], dtype=np.float64).reshape(x.shape[0], y.shape[0])


def mmd_cov_1nna(
    m_rs: np.ndarray, m_rr: np.ndarray, m_ss: np.ndarray, sample_valid: np.ndarray | None = None
) -> dict[str, float | None]:
    """MMD, COV and 1-NNA from the three distance matrices (references x samples,
    references x references, samples x samples); invalid samples are failures (module doc)."""
    R, S = m_rs.shape
    valid = np.ones(S, dtype=bool) if sample_valid is None else np.asarray(sample_valid, dtype=bool)
    m_rs = np.where(valid[None, :], m_rs, np.inf)
    m_ss = np.where(valid[None, :] & valid[:, None], m_ss, np.inf)
    # MMD: each reference's nearest sample
    nearest_sample = m_rs.min(axis=1) if S else np.full(R, np.inf)
    mmd = float(nearest_sample.mean()) if R and np.isfinite(nearest_sample).all() else None
    # COV: the references some valid sample has as its nearest
    covered = np.unique(m_rs[:, valid].argmin(axis=0)) if valid.any() and R else np.array([])
    cov = covered.size / R if R else None
    # 1-NNA over references (label 1) and samples (label 0), leave-one-out
    full = np.block([[m_rr, m_rs], [m_rs.T, m_ss]]).astype(np.float64)
    np.fill_diagonal(full, np.inf)
    labels = np.concatenate([np.ones(R, dtype=bool), np.zeros(S, dtype=bool)])
    pred = labels[full.argmin(axis=1)]
    pred[R:][~valid] = False  # a failed sample is "identified" as a sample: the worst case
    no_neighbour = ~np.isfinite(full.min(axis=1))
    pred[:R][no_neighbour[:R]] = True  # (only when every other cloud failed)
    nna = float((pred == labels).mean()) if R + S else None
    return {"mmd": mmd, "cov": cov, "1nna": nna}


class DistanceCache:
    """Reference-only distance matrices (references x references, train x train, train x
    references) on disk under ``seqify.io.cache_dir()``, keyed by the clouds' bytes and
    the metric settings, so the cells of a matrix compute them once."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def _path(self, key: str):
        from seqify.io import cache_dir

        return cache_dir() / "pointcloud" / f"dist-{key}.npz"

    def get(self, name: str, parts: Sequence[Any], compute) -> np.ndarray:
        h = hashlib.sha1(name.encode())
        for p in parts:
            arr = np.ascontiguousarray(p.numpy() if isinstance(p, torch.Tensor) else np.asarray(p))
            h.update(f"{arr.dtype}{arr.shape}".encode())
            h.update(arr.tobytes())
        path = self._path(h.hexdigest()[:24])
        if self.enabled and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as f:
                    return f["m"]
            except Exception:  # damaged: computed again
                pass
        m = compute()
        if self.enabled:
            from seqify.io import atomic_write_bytes

            buf = io.BytesIO()
            np.savez(buf, m=m)
            atomic_write_bytes(path, buf.getvalue())
        return m


def generation_metrics(
    samples: Sequence[Any],
    references: Sequence[Any],
    train: Sequence[Any] | None = None,
    *,
    points: int,
    emd_clouds: int = 64,
    emd_points: int = 128,
    cache: bool = True,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """MMD / COV / 1-NNA with CD (and EMD on a stated subset) of ``samples`` against
    ``references``, and the same for ``train`` against ``references`` (the real-vs-real
    floor, ``floor_*`` keys) when given. Uses ``n = min(len(samples), len(references))``
    of each (and of ``train``). Each distance matrix is computed once; the matrices
    between real clouds come from :class:`DistanceCache` when a run computed them before.
    """
    import time

    timings = timings if timings is not None else {}
    n = min(len(samples), len(references))
    cache_ = DistanceCache(cache)
    s_t, s_valid = stack_clouds(samples[:n], points, seed=1)
    r_t, r_valid = stack_clouds(references[:n], points, seed=2)
    if not r_valid.all():
        raise ValueError("a reference cloud is empty or not finite")
    t = time.perf_counter()
    m_rr = cache_.get(f"cd-rr-{points}", [r_t], lambda: chamfer_matrix(r_t))
    m_rs = chamfer_matrix(r_t, s_t)
    m_ss = chamfer_matrix(s_t)
    out: dict[str, Any] = {}
    for k, v in mmd_cov_1nna(m_rs, m_rr, m_ss, s_valid).items():
        out[f"{k}_cd"] = v
    e = min(n, emd_clouds)
    timings["cd_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if e:
        se_t, se_valid = stack_clouds(samples[:e], emd_points, seed=3)
        re_t, _ = stack_clouds(references[:e], emd_points, seed=4)
        e_rr = cache_.get(f"emd-rr-{emd_points}", [re_t], lambda: emd_matrix(re_t))
        e_rs, e_ss = np.full((e, e), np.inf), np.full((e, e), np.inf)
        if se_valid.any():
            ok = np.flatnonzero(se_valid)
            e_rs[:, ok] = emd_matrix(re_t, se_t[torch.from_numpy(ok)])
            e_ss[np.ix_(ok, ok)] = emd_matrix(se_t[torch.from_numpy(ok)])
        for k, v in mmd_cov_1nna(e_rs, e_rr, e_ss, se_valid).items():
            out[f"{k}_emd"] = v
    timings["emd_s"] = time.perf_counter() - t
    out["valid"] = float(s_valid.mean()) if n else 0.0
    if train is not None and len(train) >= n and n:
        t = time.perf_counter()
        t_t, _ = stack_clouds(train[:n], points, seed=5)
        f_rs = cache_.get(f"cd-rt-{points}", [r_t, t_t], lambda: chamfer_matrix(r_t, t_t))
        f_ss = cache_.get(f"cd-tt-{points}", [t_t], lambda: chamfer_matrix(t_t))
        for k, v in mmd_cov_1nna(f_rs, m_rr, f_ss).items():
            out[f"floor_{k}_cd"] = v
        if e:
            te_t, _ = stack_clouds(train[:e], emd_points, seed=6)
            fe_rs = cache_.get(f"emd-rt-{emd_points}", [re_t, te_t], lambda: emd_matrix(re_t, te_t))
            fe_ss = cache_.get(f"emd-tt-{emd_points}", [te_t], lambda: emd_matrix(te_t))
            for k, v in mmd_cov_1nna(fe_rs, e_rr, fe_ss).items():
                out[f"floor_{k}_emd"] = v
        timings["floor_s"] = time.perf_counter() - t
    out["n_samples"] = n
    out["n_reference"] = n
    out["points"] = points
    out["emd_clouds"] = e
    out["emd_points"] = emd_points
    return out
