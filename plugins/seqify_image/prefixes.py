"""Generation with a prefix of ``flextok``'s tokens: sample quality against the number
of generated tokens ``k``, from one trained cell.

FlexTok's and One-D-Piece's main result is that one ordered 1-D tokenizer serves every
token budget: an autoregressive model generates the first ``k`` tokens, and the
decoder turns that prefix into an image. Here a finished ``flextok`` cell (its
``checkpoint.pt`` holds the fitted tokenizer and the trained generator) samples ``n``
token sequences once; for every ``k`` the first ``k`` tokens of each are decoded with
the tail replaced by the tokenizer's mask vector
(:meth:`~seqify_image.aligned.FlexTokTokenizer.decode_prefixes`) and judged with the
modality's sample metrics (FD and KID with bootstrap intervals in the shipped
extractor's features, and the floor between validation and test images).

- :func:`load_trained_cell`: a cell restored from its checkpoint (no fit, no training);
- :func:`sample_prefixes`: the ``[n, k]`` prefixes of one sampling, for each ``k``;
- :func:`prefix_generation`: the metrics for each ``k``, next to the reconstruction
  error of the test images' own ``k``-prefix.

``benchmarks/flextok_generation.py`` prints the table and draws the curve;
docs/aligned-tokenizers.md says where this differs from the papers.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["TrainedCell", "load_trained_cell", "prefix_lengths", "sample_prefixes", "prefix_generation"]


@dataclass
class TrainedCell:
    """A finished ``seqify bench`` cell restored from its checkpoint.

    ``cell`` holds the resolved components (``cell.orderer`` is the sampling order),
    ``data`` the loaded splits and the restored tokenizer (``data.tokenizer``), ``model``
    the trained generator (eval mode, on ``device``), ``seed`` the run's seed.
    """

    run: Path
    cell: Any
    data: Any
    model: torch.nn.Module
    device: torch.device
    seed: int


def load_trained_cell(run: Path, *, device: str = "cpu") -> TrainedCell:
    """Restore a finished cell: its data loaded again with every setting of the run, its
    tokenizer from the checkpoint (never fitted again), its generator's weights
    (``weights_only`` load), as ``seqify sample`` does.

    Args:
        run: the ``--out`` folder of a finished ``seqify bench`` run (``checkpoint.pt``).
        device: "cpu", "cuda" or "auto".

    Raises:
        SeqifyError: no checkpoint in ``run``, or one without the tokenizer's state.
    """
    from seqify.bench import BenchRequest, Reporter, build_model, pick_device, prepare_data, resolve_cell
    from seqify.errors import SeqifyError
    from seqify.io import load_checkpoint

    path = Path(run) / "checkpoint.pt"
    if not path.is_file():
        raise SeqifyError(f"{str(path)!r} not found: give the --out folder of a finished `seqify bench` run")
    state = load_checkpoint(path)
    if "tokenizer" not in state:
        raise SeqifyError(f"{str(path)!r} holds no tokenizer state (written by an older seqify): run the cell again")
    asked = json.loads(state["request_json"])
    req = BenchRequest(
        modality=asked["modality"], orderer=asked["orderer"], out=Path(run), dataset=asked["dataset"],
        data=Path(asked["data"]) if asked["data"] else None, tokenizer=asked["tokenizer"],
        generator=asked["generator"], budget=asked["budget"], seed=asked["seed"], device=device,
        overrides=json.loads(state["config_json"]), train_orderer=asked["train_orderer"],
    )
    cell = resolve_cell(req)
    dev = pick_device(device)
    data = prepare_data(cell, req, Reporter(), {}, device=dev, tokenizer_state=state["tokenizer"])
    model = build_model(cell, data.spec, req.seed)
    model.load_state_dict(state["model"])
    return TrainedCell(Path(run), cell, data, model.to(dev).eval(), dev, int(asked["seed"]))


def prefix_lengths(n_tokens: int, lengths: list[int] | None = None) -> list[int]:
    """The prefix lengths to measure, sorted: ``lengths``, or by default 1, 2, 4, ...
    and ``n_tokens``.

    Raises:
        ValueError: for an empty list, a length outside ``1..n_tokens``, or a repeat.
    """
    if lengths is None:
        return sorted({2**i for i in range(n_tokens.bit_length()) if 2**i <= n_tokens} | {n_tokens})
    lengths = [int(k) for k in lengths]
    bad = [k for k in lengths if not 1 <= k <= n_tokens]
    if not lengths or bad or len(set(lengths)) != len(lengths):
        why = ("none given" if not lengths else f"{bad} outside 1..{n_tokens}" if bad else "a length is repeated")
        raise ValueError(f"prefix lengths: each k must be a distinct token count in 1..{n_tokens} ({why}), "
                         f"got {lengths}")
    return sorted(lengths)


def _check_in_order(orderer: Any, tokenizer: Any, coord_names: tuple[str, ...]) -> None:
    """ValueError unless ``orderer`` generates the slots one at a time in position order."""
    from seqify.protocols import orderer_kind
    from seqify.types import collate

    name = getattr(orderer, "name", type(orderer).__name__)
    why = None
    if orderer_kind(orderer) != "static" or getattr(orderer, "stochastic", False):
        why = f"it is a {'stochastic' if orderer_kind(orderer) == 'static' else orderer_kind(orderer)} orderer"
    else:
        blank = tokenizer.blank()
        order = orderer.infer_orders(collate([blank, blank], coord_names=coord_names), rng=torch.Generator())
        position_L = blank.coords[:, 0].long()
        arange_L = torch.arange(len(blank))
        if not (torch.equal(position_L[order.perm[0]], arange_L) and torch.equal(order.block[0], arange_L)):
            why = "its order is not position 0, 1, 2, ... one token per step"
    if why:
        raise ValueError(f"prefix sampling needs an order that generates position 0, 1, 2, ... one token per step "
                         f"(e.g. 'raster'), so that a prefix is what the model generates first; orderer {name!r} "
                         f"does not: {why}")


@torch.no_grad()
def sample_prefixes(
    model: torch.nn.Module,
    tokenizer: Any,
    orderer: Any,
    *,
    n: int,
    lengths: list[int] | None = None,
    seed: int,
    batch_size: int = 250,
    device: torch.device | str = "cpu",
    temperature: float = 1.0,
    precision: str = "auto",
) -> dict[int, torch.Tensor]:
    """The first ``k`` tokens of ``n`` sampled sequences, ``[n, k]``, for each ``k``.

    One sampling of all ``n_tokens`` tokens serves every ``k``: in an order that
    generates position 0, 1, 2, ... one token per step (``raster`` on flextok's 1-D
    layout), a causal model draws token ``i`` from the tokens before it only, so the
    first ``k`` tokens of a full sample are exactly a ``k``-token sample: sampling
    only the first ``k`` positions of a batch from the same random state draws the
    same tokens (tests/test_image_prefixes.py checks it; the noise is drawn for the
    whole batch at each step, so another batching draws other values from the same
    distribution). Sampling is
    :func:`seqify.evaluate.sample_items` with ``seed`` as given: with the bench's
    sample seed (``seeding.stream_seed(run_seed, "sample")``), the same ``n`` and
    ``batch_size``, the full sequences are the cell's own samples.

    Args:
        model: the trained generator.
        tokenizer: a fitted ``flextok`` tokenizer (``blank``, ``sequences``).
        orderer: the sampling orderer; it must generate positions in order.
        n: sequences to sample (>= 1).
        lengths: the prefix lengths (default: 1, 2, 4, ... and ``n_tokens``); see
            :func:`prefix_lengths`.
        seed: seeds the sampling noise.
        batch_size: sequences per batch.
        device: where the model runs.
        temperature: softmax temperature (1: the model's distribution).
        precision: as ``TrainConfig.precision``.

    Raises:
        ValueError: for ``n < 1``, a bad length, or an orderer that does not generate
            positions in order.
    """
    from seqify.evaluate import sample_items

    if int(n) < 1:
        raise ValueError(f"prefix sampling: n must be at least 1, got {n}")
    T = tokenizer.spec.max_len
    lengths = prefix_lengths(T, lengths)
    coord_names = tuple(tokenizer.spec.coord_names)
    _check_in_order(orderer, tokenizer, coord_names)
    blank = tokenizer.blank()
    templates = [blank.with_values(blank.values) for _ in range(int(n))]
    filled = sample_items(model, templates, orderer, batch_size=batch_size, device=torch.device(device), seed=seed,
                          temperature=temperature, precision=precision, coord_names=coord_names)
    sequences_NT = tokenizer.sequences(filled)
    return {k: sequences_NT[:, :k].clone() for k in lengths}


def prefix_generation(
    trained: TrainedCell,
    *,
    n_samples: int = 2000,
    seed: int | None = None,
    lengths: list[int] | None = None,
    keep_images: int = 0,
) -> dict[str, Any]:
    """Sample quality against the number of generated tokens ``k``, from one trained cell.

    ``n_samples`` sequences are sampled once in the cell's order (which must generate
    position 0, 1, 2, ...; see :func:`sample_prefixes`); for each ``k`` their first
    ``k`` tokens are decoded (:meth:`FlexTokTokenizer.decode_prefixes`) and measured
    by the modality's ``evaluate`` (FD and KID against every test image with
    bootstrap intervals, the floor from validation images, confident share, classes).
    Beside them, the test images' own ``k``-prefix: the reconstruction MSE
    (:meth:`FlexTokTokenizer.prefix_reconstruction`) and the FD of those
    reconstructions against the test images (what a generator that drew exactly the
    test images' tokens would get; measured against the very images it reconstructs,
    so a lossless decoder would score 0, below the validation-vs-test floor).

    Args:
        trained: a restored ``flextok`` cell (:func:`load_trained_cell`).
        n_samples: sequences sampled (every ``k`` uses the same ones).
        seed: the run seed the sampling stream is drawn from (default: the cell's, so
            that with the cell's ``n_samples`` the full-length samples are its own).
        lengths: the prefix lengths (default: 1, 2, 4, ... and ``n_tokens``).
        keep_images: keep the decoded images of the first this many samples, for
            each ``k``, under ``images`` (for pictures).

    Returns:
        ``rows``: one dict per ``k`` (``k``, ``fd``, ``fd_interval``, ``kid``,
        ``kid_interval``, ``fd_floor``, ``confident_share``, ``classes_covered``,
        ``recon_mse``, ``recon_fd``); ``metrics``: the full metrics per ``k``;
        ``n_samples``, ``seed``, ``sample_seed``, ``n_test``, ``timings``, ``cell``.

    Raises:
        ValueError: a tokenizer without a prefix decoder (not ``flextok``), a bad length,
            or an order that does not generate positions in order.
    """
    from seqify import seeding

    from seqify_image.metrics import feature_metrics

    cell, data = trained.cell, trained.data
    tokenizer = data.tokenizer
    if not all(hasattr(tokenizer, m) for m in ("decode_prefixes", "sequences", "prefix_reconstruction")):
        raise ValueError(f"prefix generation needs a tokenizer whose prefixes decode (flextok), got "
                         f"{cell.names.get('tokenizer', type(tokenizer).__name__)!r}")
    modality = cell.modality
    run_seed = trained.seed if seed is None else int(seed)
    sample_seed = seeding.stream_seed(run_seed, "sample")
    lengths = prefix_lengths(tokenizer.spec.max_len, lengths)
    cfg = cell.config
    timings: dict[str, float] = {}
    t = time.perf_counter()
    prefixes = sample_prefixes(trained.model, tokenizer, cell.orderer, n=n_samples, lengths=lengths,
                               seed=sample_seed, batch_size=cfg.eval.batch_size, device=trained.device,
                               temperature=cfg.eval.temperature, precision=cfg.train.precision)
    timings["sample_s"] = time.perf_counter() - t

    splits = data.splits
    test = splits.test
    recon_mse = tokenizer.prefix_reconstruction(test, lengths)
    classifier, _ = modality._classifier(splits)
    feats_test = classifier.predict_items(test)[0] if classifier is not None else None
    test_codes_NT = tokenizer.sequences(tokenizer.encode_batch(test))
    rows, metrics, images = [], {}, {}
    t = time.perf_counter()
    for k in lengths:
        decoded = tokenizer.decode_prefixes(prefixes[k])
        found = modality.evaluate(decoded, splits)
        metrics[k] = found
        if keep_images:
            images[k] = decoded[:keep_images]
        recon_fd = None
        if feats_test is not None:
            recon = tokenizer.decode_prefixes(test_codes_NT[:, :k])
            recon_fd = feature_metrics(classifier.predict_items(recon)[0], feats_test, n_boot=0)["fd"]
        rows.append({"k": k, "fd": found.get("fd"), "fd_interval": found.get("fd_interval"), "kid": found.get("kid"),
                     "kid_interval": found.get("kid_interval"), "fd_floor": found.get("fd_floor"),
                     "confident_share": found.get("confident_share"), "classes_covered": found.get("classes_covered"),
                     "recon_mse": recon_mse[k], "recon_fd": recon_fd})
    timings["metrics_s"] = time.perf_counter() - t
    out = {"rows": rows, "metrics": {str(k): v for k, v in metrics.items()}, "n_samples": int(n_samples),
           "seed": run_seed, "sample_seed": sample_seed, "n_test": len(test), "n_tokens": tokenizer.spec.max_len,
           "temperature": cfg.eval.temperature, "cell": {**cell.names, "run": str(trained.run)},
           "timings": {k: round(v, 2) for k, v in timings.items()}}
    if keep_images:
        out["images"] = images
    return out

