"""The ``pointcloud`` modality: unconditional generation of surface point clouds,
judged with PointFlow's MMD / COV / 1-NNA (Chamfer and EMD) against the test split,
with the real-vs-real floor (training clouds in place of samples) beside them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from seqify.config import budget_preset, validate_model
from seqify.data import RowReport
from seqify.errors import DataError, UnknownComponentError
from seqify.protocols import BaseModality, Splits
from seqify.types import TokenSet

__all__ = ["PointCloud", "PointCloudOptions", "POINTCLOUD_BUDGETS"]

#: Budget presets (``seqify.config.BenchConfig`` shape; ``modality`` holds this
#: modality's settings). smoke: seconds (tests). quick: one cell in under 10 minutes on
#: a 2-core CPU: 128 points per cloud (384 ``coords`` slots, ~350 ``octree`` codes at
#: depth 6), 2,000 training shapes, 600 steps of the tiny transformer, 128 samples against
#: 128 test shapes (coords / raster / causal measured 6.3 min on a busy machine, 5.6 of
#: them training; 183 s of CPU time). full: one GPU,
#: 512 points (PointFlow uses 2,048: at 6,144 ``coords`` slots a transformer is out of
#: reach, so full-budget numbers are not comparable with published ones).
POINTCLOUD_BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "train": {"steps": 20, "batch_size": 16, "warmup_steps": 2, "val_items": 16},
        "eval": {"n_test": 16, "n_samples": 16, "batch_size": 16},
        "data": {"limit": 64},
        "modality": {"n_points": 32, "n_val": 16, "n_test": 16, "emd_clouds": 8, "emd_points": 32},
        "size": "micro",
    },
    "quick": {
        "train": {"steps": 600, "batch_size": 32, "lr": 1e-3, "warmup_steps": 50, "val_items": 128},
        "eval": {"n_test": 128, "n_samples": 128, "batch_size": 128},
        "data": {"limit": 2000},
        "modality": {"n_points": 128, "n_val": 128, "n_test": 128, "emd_clouds": 64, "emd_points": 128},
        "size": "tiny",
    },
    "full": {
        "train": {"steps": 50_000, "batch_size": 64, "lr": 3e-4, "warmup_steps": 1000, "eval_every": 5000,
                  "val_items": 512},
        "eval": {"n_test": 1000, "n_samples": 1000, "batch_size": 250},
        "data": {"limit": 20_000},
        "modality": {"n_points": 512, "n_val": 500, "n_test": 1000, "emd_clouds": 128, "emd_points": 256},
        "size": "base",
    },
}


class PointCloudOptions(BaseModel):
    """Settings of the pointcloud modality (``modality.*``)."""

    model_config = ConfigDict(extra="forbid")

    n_points: int = Field(256, ge=8, le=16_384, description="points per cloud (every dataset is resampled to it)")
    n_val: int = Field(128, ge=1, description="shapes: validation clouds; files: at most this many")
    n_test: int = Field(256, ge=1, description="shapes: test clouds; files: at most this many")
    default_limit: int = Field(4000, ge=1, description="shapes: training clouds when no data.limit is set")
    rotation: Literal["yaw", "free", "none"] = Field(
        "yaw", description="shapes: yaw = upright, random rotation about the vertical (y) axis; free = any; none")
    metric_points: int | None = Field(
        None, ge=8, description="points per cloud for CD and 1-NNA (None: n_points); clouds are resampled to it")
    emd_clouds: int = Field(64, ge=0, description="EMD metrics on the first this-many samples and references (0: none)")
    emd_points: int = Field(128, ge=8, description="points per cloud for EMD (exact assignment, O(n^3))")
    floor: bool = Field(True, description="also compute the real-vs-real floor (training vs test clouds)")


class PointCloud(BaseModality):
    """Surface point clouds: a procedural ``shapes`` set, or your files (``--data``).

    See :mod:`seqify_pointcloud.shapes` and :mod:`seqify_pointcloud.folders` for the datasets,
    :mod:`seqify_pointcloud.items` for the normalization, and
    :mod:`seqify_pointcloud.metrics` for the exact metric definitions.
    """

    name = "pointcloud"
    datasets: ClassVar[tuple[str, ...]] = ("shapes", "files")
    file_datasets: ClassVar[tuple[str, ...]] = ("files",)
    task: ClassVar[Literal["complete", "generate"]] = "generate"
    config_model: ClassVar[type[BaseModel]] = PointCloudOptions
    default_tokenizer: ClassVar[str | None] = "coords"
    headline_metrics: ClassVar[tuple[str, ...]] = ("1nna_cd", "cov_cd", "mmd_cd")
    reconstruction_metric: ClassVar[str | None] = "chamfer"

    def __init__(self, **options: Any):
        self.options: PointCloudOptions = validate_model(PointCloudOptions, options, "modality")  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.options.model_dump().items())
        return f"PointCloud({fields})"

    # ------------------------------------------------------------------ data

    def load(
        self, dataset: str, path: Path | None, *, seed: int, limit: int | None, report: RowReport
    ) -> Splits:
        """``shapes`` (generated, cached) or ``files`` (``path``: a folder or one file).

        Args:
            dataset: "shapes" or "files".
            path: the folder for "files" (ShapeNet PointFlow layout, ModelNet40, loose files).
            seed: seeds generation, splits and resampling.
            limit: training clouds (shapes: exactly this many, default ``default_limit``;
                files: at most).
            report: unreadable / empty / NaN files are reported with their path and skipped.
        """
        opt = self.options
        if dataset not in self.datasets:
            raise UnknownComponentError("dataset", dataset, self.datasets, "modality 'pointcloud'")
        if dataset == "shapes":
            from seqify_pointcloud.shapes import shapes_splits

            return shapes_splits(seed=seed, n_points=opt.n_points, n_train=limit or opt.default_limit,
                                 n_val=opt.n_val, n_test=opt.n_test, rotation=opt.rotation)
        if path is None:
            raise DataError(
                "the pointcloud 'files' dataset needs --data PATH: a folder of .npy / .ply / .pcd / .xyz / .obj / "
                ".off files (ShapeNet as PointFlow ships it, <synset>/{train,val,test}/<id>.npy; ModelNet40, "
                "<class>/{train,test}/*.off; or loose files)"
            )
        from seqify_pointcloud.folders import files_splits

        return files_splits(Path(path), seed=seed, n_points=opt.n_points, limit=limit, max_val=opt.n_val,
                            max_test=opt.n_test, report=report)

    def budget(self, budget: str, *, dataset: str | None = None) -> dict[str, Any]:
        """Overrides for "smoke", "quick" or "full" (see :data:`POINTCLOUD_BUDGETS`)."""
        return budget_preset(POINTCLOUD_BUDGETS, budget, dataset)

    # ------------------------------------------------------------ evaluation

    def templates(
        self, tokenizer: Any, test_tokens: list[TokenSet], n: int, rng: torch.Generator
    ) -> list[TokenSet]:
        """``n`` copies of the tokenizer's blank layout (unconditional generation)."""
        blank = tokenizer.blank()
        if blank is None:
            if not test_tokens:
                raise ValueError(f"tokenizer {tokenizer!r} has no blank() layout and no test tokens were given")
            longest = max(test_tokens, key=len)
            blank = TokenSet(torch.zeros_like(longest.values), longest.kinds.clone(), longest.coords.clone(),
                             torch.zeros_like(longest.given))
        return [blank.with_values(blank.values) for _ in range(n)]

    def _metric_points(self) -> int:
        return self.options.metric_points or self.options.n_points

    def evaluate(
        self, samples: list[Any], splits: Splits, *, templates: list[TokenSet] | None = None
    ) -> dict[str, Any]:
        """PointFlow's MMD / COV / 1-NNA (CD, and EMD on a subset) of the samples against
        the first ``len(samples)`` test clouds, and the real-vs-real floor (``floor_*``:
        as many training clouds in place of the samples). Failed samples (None) count
        as described in :mod:`seqify_pointcloud.metrics`."""
        from seqify_pointcloud.metrics import generation_metrics
        from seqify_pointcloud.octree import INCOMPLETE, THINNED

        opt = self.options
        timings: dict[str, float] = {}
        t = time.perf_counter()
        out = generation_metrics(
            samples, splits.test, splits.train if opt.floor else None, points=self._metric_points(),
            emd_clouds=opt.emd_clouds, emd_points=opt.emd_points, timings=timings,
        )
        timings["total_s"] = time.perf_counter() - t
        out["incomplete"] = sum(1 for x in samples if x is not None and getattr(x, "source", "") == INCOMPLETE)
        out["thinned"] = sum(1 for x in samples if x is not None and getattr(x, "source", "") == THINNED)
        out["metric_timings"] = {k: round(v, 3) for k, v in timings.items()}
        out["protocol"] = (
            "PointFlow: CD = mean squared NN distance both ways, summed; EMD = mean Euclidean distance of the exact "
            "optimal assignment (scipy linear_sum_assignment) on the first emd_clouds clouds at emd_points points; "
            "MMD = mean over references of the nearest sample's distance; COV = share of references that are some "
            "sample's nearest; 1-NNA = leave-one-out 1-NN accuracy over samples + references (0.5 ideal); "
            "references = the first n_samples test clouds; floor_* = the same with training clouds as samples; "
            "failed samples are infinitely far from everything (cover nothing, count as identified by 1-NN); "
            "incomplete = samples an octree tokenizer with decode='lenient' decoded from an incomplete tree; "
            "thinned = complete octree samples whose children were thinned to fit the tokenizer's max_len; "
            "clouds normalized per shape into [-1, 1]^3 (see data.normalization)"
        )
        return out

    def render(self, samples: list[Any], path: Path, *, splits: Splits | None = None) -> Path:
        """Up to 16 samples as 3-D scatter plots (PNG, written atomically)."""
        from seqify_pointcloud.render import draw_clouds

        return draw_clouds(samples, path, n=16, title="generated point clouds")

    def save_samples(self, samples: list[Any], out_dir: Path, *, splits: Splits | None = None) -> list[Path]:
        """``samples.npz``: every sample's points (see :func:`seqify_pointcloud.render.write_samples_npz`)."""
        from seqify_pointcloud.render import write_samples_npz

        return [write_samples_npz(samples, Path(out_dir) / "samples.npz")]

    def reconstruction(
        self, originals: list[Any], decoded: list[Any], *, out: Path, splits: Splits | None = None
    ) -> dict[str, Any]:
        """Chamfer distance and EMD of decode(encode(x)) to x, averaged over the items.

        CD uses both clouds as they are (a decoded octree has one point per occupied
        leaf); EMD resamples the decoded cloud to the original's size (seeded subset or
        repeats) and uses the first ``emd_clouds`` items. A None decoding counts in
        ``failed`` and is left out of the means. Draws ``reconstruction.png`` (originals
        above, their reconstructions below). ``splits`` (the run's) is not needed.
        """
        from seqify_pointcloud.metrics import chamfer_pairs, emd, stack_clouds
        from seqify_pointcloud.render import draw_clouds

        cds, emds, sizes, failed = [], [], [], 0
        for k, (orig, back) in enumerate(zip(originals, decoded)):
            if back is None:
                failed += 1
                continue
            x = np.asarray(orig.points, dtype=np.float64)
            y = np.asarray(back.points, dtype=np.float64)
            sizes.append(y.shape[0])
            cds.append(float(chamfer_pairs(torch.from_numpy(x)[None], torch.from_numpy(y)[None])[0]))
            if len(emds) < max(self.options.emd_clouds, 0):
                y_eq, _ = stack_clouds([y], x.shape[0], seed=k)
                emds.append(emd(x, y_eq[0].numpy()))
        result: dict[str, Any] = {
            "chamfer": float(np.mean(cds)) if cds else None,
            "chamfer_max": float(np.max(cds)) if cds else None,
            "emd": float(np.mean(emds)) if emds else None,
            "emd_items": len(emds),
            "failed": failed,
            "n": len(originals),
            "mean_decoded_points": float(np.mean(sizes)) if sizes else None,
        }
        pairs = [(o, d) for o, d in zip(originals, decoded)][:4]
        if pairs:
            draw_clouds([o for o, _ in pairs] + [d for _, d in pairs], Path(out) / "reconstruction.png", n=8,
                        title="test clouds (top) and decode(encode(x)) (bottom)")
            result["files"] = {"reconstruction": "reconstruction.png"}
        return result
