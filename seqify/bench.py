"""One benchmark cell: load -> tokenize -> train -> modelability -> sample -> metrics.

``run_bench`` is the Python API behind ``seqify bench``; it returns a
:class:`BenchResult` and writes ``results.json``, ``checkpoint.pt`` and pictures
into the output folder, each atomically.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqify import __version__
from seqify.config import BUDGETS, BenchConfig, deep_merge, for_dataset, load_config_file, resolve_config, validate_model
from seqify.data import RowReport
from seqify.errors import ConfigError, NotApplicableError, SeqifyError, UnknownComponentError
from seqify.io import atomic_write_json, load_checkpoint, save_checkpoint
from seqify.plugins import get_registry
from seqify.protocols import call_supported, orderer_kind, tokenizer_fingerprint
from seqify.registry import Registry


#: the resumable training state in a cell's folder (deleted once results.json is written)
TRAIN_STATE = "train_state.pt"


class Reporter:
    """Progress callbacks; the CLI passes a rich implementation, the API a silent one."""

    def stage(self, name: str, total: int | None = None) -> None: ...

    def advance(self, n: int = 1, info: str = "") -> None: ...

    def log(self, message: str) -> None: ...


@dataclass
class BenchRequest:
    """The inputs of one cell, as given on the command line.

    Args:
        modality: registered modality name.
        orderer: registered orderer name.
        out: output folder.
        dataset: one of the modality's datasets (default: its first).
        data: a file for datasets no package ships.
        tokenizer: registered tokenizer for the modality (default: the modality's first).
        generator: registered generator (default: "masked" for adaptive or learned
            orderers, else "causal").
        budget: "smoke", "quick" or "full".
        steps: override the number of training steps.
        seed: seeds data splits, training, orders and sampling.
        device: "auto", "cpu" or "cuda".
        config_file: TOML/YAML/JSON with any BenchConfig fields.
        overrides: a dict merged last (Python API).
        model_cache: folder of trained models shared between cells (``seqify matrix``).
        train_orderer: train under this orderer instead of ``orderer`` (e.g. a masked
            model trained on random orders, then solved in raster order); scoring and
            sampling always follow ``orderer``.
        resume: resume training from ``out/train_state.pt`` when it holds this run's
            state (False: train from the start and overwrite it).
    """

    modality: str
    orderer: str
    out: Path
    dataset: str | None = None
    data: Path | None = None
    tokenizer: str | None = None
    generator: str | None = None
    budget: str = "quick"
    steps: int | None = None
    seed: int = 0
    device: str = "auto"
    config_file: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    model_cache: Path | None = None
    train_orderer: str | None = None
    resume: bool = True


@dataclass
class BenchResult:
    """What a cell wrote. Under ``torchrun`` only rank 0 writes: the other ranks get
    ``results`` None."""

    results: dict[str, Any] | None
    out: Path
    files: dict[str, str]

    @property
    def results_path(self) -> Path:
        return self.out / "results.json"


@dataclass
class Cell:
    """Resolved components of one cell, before any data is loaded."""

    modality: Any
    tokenizer: Any
    orderer: Any
    train_orderer: Any
    generator_cls: type
    names: dict[str, str]
    config: BenchConfig
    generator_config: Any


def _choose(kind: str, value: str | None, options: list[str]) -> str:
    if value is None:
        return options[0]
    if value not in options:
        raise UnknownComponentError(kind, value, options)
    return value


def default_generator(registry: Registry, orderer_name: str) -> str:
    """'masked' for orderers that pick slots from predictions (adaptive, learned), else 'causal'."""
    cls = registry.get("orderer", orderer_name)
    return "masked" if cls.adaptive or cls.learned else "causal"


def pick_dataset(modality: Any, req: "BenchRequest") -> str:
    """The dataset to run; ``--data`` is never ignored silently.

    With ``--data`` and no ``--dataset``, the modality's only file-reading dataset is
    picked; a dataset that reads no file, given with ``--data``, is an error.
    """
    datasets = list(modality.datasets)
    files = list(modality.file_datasets)
    if req.dataset is None and req.data is not None:
        if len(files) == 1:
            return files[0]
        if not files:
            raise ConfigError(f"--data {str(req.data)!r}: modality {req.modality!r} reads no data files "
                              f"(its datasets {', '.join(datasets)} come with seqify or its packages)")
        raise ConfigError(f"--data {str(req.data)!r}: say which dataset it holds with --dataset "
                          f"(one of {', '.join(files)})")
    dataset = _choose("dataset", req.dataset, datasets)
    if req.data is not None and dataset not in files:
        hint = f" (the datasets that read a file: {', '.join(files)})" if files else ""
        raise ConfigError(f"--data {str(req.data)!r} was given, but dataset {dataset!r} of modality "
                          f"{req.modality!r} reads no file and would ignore it{hint}")
    return dataset


def generator_settings(generator_cls: type, size: str, settings: dict[str, Any]) -> Any:
    """The generator's validated settings: its preset for ``size``, then ``settings`` on top."""
    sizes = generator_cls.sizes
    if sizes and size not in sizes:
        raise ConfigError(f"size: {size!r} is not a size of generator {generator_cls.__name__} "
                          f"(one of {', '.join(sizes)})")
    return validate_model(generator_cls.config_model, deep_merge(dict(sizes.get(size, {})), settings), "generator")


def resolve_cell(req: BenchRequest, registry: Registry | None = None) -> Cell:
    """Look up and configure every component; raise before any heavy work on bad input."""
    registry = registry or get_registry()
    if req.budget not in BUDGETS:
        raise UnknownComponentError("budget", req.budget, BUDGETS)
    if req.device not in ("auto", "cpu", "cuda"):
        raise UnknownComponentError("device", req.device, ["auto", "cpu", "cuda"])
    modality_cls = registry.get("modality", req.modality)
    modality = modality_cls()
    dataset = pick_dataset(modality, req)
    tok_names = registry.names("tokenizer", req.modality)
    if not tok_names:
        raise NotApplicableError(f"no tokenizer is registered for modality {req.modality!r}")
    default_tok = modality.default_tokenizer or tok_names[0]
    tokenizer_name = req.tokenizer or default_tok
    tokenizer_cls = registry.get("tokenizer", tokenizer_name, req.modality)
    orderer_cls = registry.get("orderer", req.orderer)
    train_orderer_cls = registry.get("orderer", req.train_orderer) if req.train_orderer else None
    generator_name = req.generator or default_generator(registry, req.orderer)
    generator_cls = registry.get("generator", generator_name)

    budget = for_dataset(modality.budget(req.budget), dataset, tokenizer_name, generator_name)
    file_data = load_config_file(req.config_file) if req.config_file else None
    cli = dict(req.overrides)
    if req.steps is not None:
        cli = {**cli, "train": {**cli.get("train", {}), "steps": req.steps}}
    config = resolve_config(budget, file_data, cli)
    if config.modality:
        model = modality_cls.config_model
        if model is None:
            raise ConfigError(f"modality {req.modality!r} takes no settings (got modality.{next(iter(config.modality))})")
        modality = modality_cls(**validate_model(model, config.modality, "modality").model_dump())
    generator_config = generator_settings(generator_cls, config.size, config.generator)
    orderer_opts = validate_model(orderer_cls.config_model, config.orderer, "orderer")
    try:
        orderer = orderer_cls(**orderer_opts.model_dump())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"orderer {req.orderer!r}: {exc}") from None
    train_orderer = orderer
    if train_orderer_cls is not None and req.train_orderer != req.orderer:
        train_orderer = train_orderer_cls()
    try:
        options = validate_model(tokenizer_cls.config_model, config.tokenizer, "tokenizer").model_dump(exclude_unset=True)
        tokenizer = tokenizer_cls(**{**({"dataset": dataset} if tokenizer_cls.takes_dataset else {}), **options})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"tokenizer {tokenizer_name!r}: invalid setting: {exc}") from None
    names = {
        "modality": req.modality,
        "dataset": dataset,
        "tokenizer": tokenizer_name,
        "orderer": req.orderer,
        "train_orderer": req.train_orderer or req.orderer,
        "generator": generator_name,
    }
    return Cell(modality, tokenizer, orderer, train_orderer, generator_cls, names, config, generator_config)


def check_applicable(cell: Cell) -> str | None:
    """The reason this cell cannot run, if the tokenizer's spec is known before fitting."""
    try:
        spec = cell.tokenizer.spec
    except Exception:
        return None
    return _check(cell, spec)


def _check(cell: Cell, spec) -> str | None:
    caps = cell.generator_cls.caps
    if spec.variable_length and not caps.variable_length:
        return (f"tokenizer {cell.names['tokenizer']!r} is variable-length (an end token decides), but generator "
                f"{cell.names['generator']!r} generates only fixed-length items")
    reason = cell.orderer.check(spec, caps)
    if reason is None and cell.train_orderer is not cell.orderer:
        reason = cell.train_orderer.check(spec, cell.generator_cls.caps)
        if reason is None and cell.train_orderer.adaptive:
            reason = "an adaptive orderer cannot be a training orderer (it trains on random orders: use 'random')"
    return reason


def pick_device(name: str):
    """The device for ``name`` ("auto", "cpu" or "cuda"); under torchrun, "auto" and
    "cuda" mean this process's GPU (``cuda:LOCAL_RANK``)."""
    import os

    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was asked for but torch sees no CUDA device (use --device auto or cpu)")
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(name)


def train_signature(cell: Cell, req: BenchRequest, tokenizer_state: str) -> str:
    """Cells with equal signatures train the same model, which can then be shared.

    It covers the training orders, the module trained (a learned orderer's wrapper
    and its settings), the settings of every part, and the fitted tokenizer's
    fingerprint (:func:`seqify.protocols.tokenizer_fingerprint`).
    """
    sig = {
        "seqify": __version__,
        **{k: v for k, v in cell.names.items() if k not in ("orderer", "train_orderer")},
        "data": str(req.data) if req.data else None,
        "train_orders": cell.train_orderer.train_signature,
        "wrapper": cell.orderer.train_signature if orderer_kind(cell.orderer) == "trainable" else None,
        # neither changes the model: the probe runs in forked random streams
        "train": cell.config.train.model_dump(exclude={"checkpoint_every", "probe_items"}),
        "data_cfg": cell.config.data.model_dump(),
        "modality_cfg": cell.config.modality,
        "generator_cfg": cell.generator_config.model_dump(),
        "tokenizer_cfg": cell.config.tokenizer,
        "tokenizer_state": tokenizer_state,
        "seed": req.seed,
    }
    return hashlib.sha1(json.dumps(sig, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Prepared:
    """A cell's data after loading and tokenizing."""

    splits: Any
    tokenizer: Any
    spec: Any
    train: Any
    val: Any
    test: Any
    report: RowReport
    tokenizer_fingerprint: str
    test_kept: list[int]  # index into the loaded test items of each row of ``test``
    val_kept: list[int] = field(default_factory=list)  # the same for ``val``


def fit_tokenizer(tokenizer, items: list[Any], *, seed: int, device, rep: Reporter) -> None:
    """Fit ``tokenizer`` on ``items`` from the ``tokenizer`` stream of ``seed``, or restore
    the state an earlier run fitted identically (same settings, same items, same seed):
    a fitted tokenizer is shared by every cell of a matrix, fitted once."""
    from seqify import seeding
    from seqify.dataset import items_fingerprint
    from seqify.io import cache_dir

    key = hashlib.sha1(f"{tokenizer!r}|{items_fingerprint(items)}|{seed}".encode()).hexdigest()[:20]
    path = cache_dir() / "tokenizers" / f"{type(tokenizer).__name__}-{key}.pt"
    if path.is_file():
        try:
            tokenizer.load_state_dict(load_checkpoint(path)["state"])
            rep.log(f"tokenizer {tokenizer!r}: restored the state fitted earlier ({path})")
            return
        except Exception:  # a damaged or outdated cache entry is fitted again, never trusted
            pass
    with seeding.forked(seed, "tokenizer", device):
        tokenizer.fit(items, device=device, seed=seeding.stream_seed(seed, "tokenizer"))
    state = tokenizer.state_dict()
    if state:
        save_checkpoint(path, {"state": state})


def prepare_data(
    cell: Cell, req: BenchRequest, rep: Reporter, timings: dict[str, float], *, device=None,
    tokenizer_state: dict[str, Any] | None = None,
) -> Prepared:
    """Load the dataset, fit the tokenizer (or restore its saved state), tokenize every
    split (cached under the tokenizer's fingerprint)."""
    from seqify.dataset import tokenize_split

    rep.stage("loading data")
    t = time.perf_counter()
    report = RowReport()
    splits = cell.modality.load(cell.names["dataset"], req.data, seed=req.seed, limit=cell.config.data.limit, report=report)
    timings["load_s"] = time.perf_counter() - t

    rep.stage("tokenizing")
    t = time.perf_counter()
    tokenizer = cell.tokenizer
    if tokenizer_state is not None:
        tokenizer.load_state_dict(tokenizer_state)
    else:
        fit_tokenizer(tokenizer, splits.train, seed=req.seed, device=device, rep=rep)
    timings["fit_tokenizer_s"] = time.perf_counter() - t
    spec = tokenizer.spec
    reason = _check(cell, spec)
    if reason:
        raise NotApplicableError(reason)
    fingerprint = tokenizer_fingerprint(tokenizer)
    key = f"{cell.names['modality']}|{cell.names['dataset']}|{cell.names['tokenizer']}|{fingerprint}|{spec!r}"
    train_table, _ = tokenize_split(tokenizer, splits.train, split="train", report=report, cache_key=key)
    val_table, val_kept = (tokenize_split(tokenizer, splits.val, split="val", report=report, cache_key=key)
                           if splits.val else (None, []))
    test_table, test_kept = tokenize_split(tokenizer, splits.test, split="test", report=report, cache_key=key)
    if cell.modality.task == "complete" and len(test_kept) != len(splits.test):
        # completions must stay aligned with the test items they complete; for generation the
        # reference set (e.g. FCD's) stays whole, and the skipped items are in the row report
        splits.test = [splits.test[i] for i in test_kept]
    timings["tokenize_s"] = time.perf_counter() - t
    return Prepared(splits, tokenizer, spec, train_table, val_table, test_table, report, fingerprint, test_kept,
                    val_kept)


def build_model(cell: Cell, spec, seed: int):
    """The generator (its weights drawn from the ``init`` stream of ``seed``), wrapped by
    the orderer (the identity, except for a trainable orderer, which adds its policy)."""
    from seqify import seeding

    seeding.seed_global(seed, "init")
    return cell.orderer.wrap(cell.generator_cls(spec, cell.generator_config), spec)


def decode_all(tokenizer, tokensets: list[Any]) -> list[Any]:
    """``tokenizer.decode`` of each token set; None where it cannot be decoded."""
    out = []
    for ts in tokensets:
        try:
            out.append(tokenizer.decode(ts))
        except (ValueError, KeyError):
            out.append(None)
    return out


def generate_and_measure(
    cell: Cell, data: Prepared, model, *, n: int, seed: int, out: Path, device, rep: Reporter,
    timings: dict[str, float],
) -> tuple[dict[str, Any], dict[str, str]]:
    """Sample (or complete) ``n`` items, decode, measure, draw; returns (metrics, files)."""
    from seqify import seeding
    from seqify.evaluate import sample_items

    cfg = cell.config
    test_tokens = (
        [data.test.tokenset(i) for i in range(min(len(data.test), n))] if cell.modality.task == "complete" else []
    )
    templates = cell.modality.templates(data.tokenizer, test_tokens, n, seeding.generator(seed, "templates"))
    rep.stage("completing" if cell.modality.task == "complete" else "sampling", len(templates))
    t = time.perf_counter()
    filled = sample_items(
        model, templates, cell.orderer, batch_size=cfg.eval.batch_size, device=device,
        seed=seeding.stream_seed(seed, "sample"), temperature=cfg.eval.temperature, on_batch=rep.advance,
        precision=cfg.train.precision,
    )
    timings["sample_s"] = time.perf_counter() - t
    timings["sample_per_item_ms"] = 1000 * timings["sample_s"] / max(len(filled), 1)
    samples = decode_all(data.tokenizer, filled)
    undecodable = samples.count(None)

    rep.stage("measuring samples")
    t = time.perf_counter()
    metrics = cell.modality.evaluate(samples, data.splits, templates=templates)
    metrics["undecodable"] = undecodable
    timings["metrics_s"] = time.perf_counter() - t
    files = {}
    picture = cell.modality.render(samples, out / "samples.png", splits=data.splits)
    files["samples_png"] = Path(picture).name
    for p in cell.modality.save_samples(samples, out, splits=data.splits):
        files[Path(p).stem] = Path(p).name
    return metrics, files


def completion_probe(cell: Cell, data: Prepared, *, n: int, device, seed: int,
                     log: Callable[[str], None] | None = None):
    """For a complete-task modality, a probe for :func:`seqify.training.train`: complete
    the first ``n`` validation items with the cell's inference orderer (the evaluation
    temperature, the ``validation`` stream, forked) and return the modality's numeric
    metrics on them, e.g. Sudoku's solve rate. None when off or not applicable."""
    from seqify import seeding
    from seqify.evaluate import sample_items
    from seqify.protocols import Splits

    if not n or cell.modality.task != "complete" or data.val is None or not len(data.val):
        return None
    n = min(n, len(data.val))
    val_tokens = [data.val.tokenset(i) for i in range(n)]
    templates = cell.modality.templates(data.tokenizer, val_tokens, n, seeding.generator(seed, "templates"))
    reference = Splits(train=[], val=[], test=[data.splits.val[i] for i in data.val_kept[:n]])

    def probe(model) -> dict[str, float]:
        with seeding.forked(seed, "validation", device):
            filled = sample_items(model, templates, cell.orderer, batch_size=cell.config.eval.batch_size,
                                  device=device, seed=seeding.stream_seed(seed, "validation"),
                                  temperature=cell.config.eval.temperature,
                                  precision=cell.config.train.precision)
        samples = decode_all(data.tokenizer, filled)
        found = cell.modality.evaluate(samples, reference, templates=templates)
        values = {k: v for k, v in found.items() if isinstance(v, float)}
        if log is not None:
            log(f"validation probe ({n} items, {cell.names['orderer']}): "
                + ", ".join(f"{k} {v:.3f}" for k, v in values.items()))
        return values

    return probe


def score_test(cell: Cell, model, data: Prepared, *, n: int, seed: int, device, rep: Reporter) -> dict[str, Any]:
    """Modelability on the first ``n`` test items (the orderer's own measure when it has one)."""
    from seqify import seeding

    cfg = cell.config
    return call_supported(cell.orderer.modelability, model, data.test, n=n, batch_size=cfg.eval.batch_size,
                          device=device, seed=seeding.stream_seed(seed, "score"),
                          orders_per_item=cfg.eval.orders_per_item, on_batch=rep.advance)


def evaluate_model(
    cell: Cell, data: Prepared, model, *, seed: int, sample_seed: int, n_test: int, out: Path, device,
    rep: Reporter, timings: dict[str, float], train_log: dict[str, Any] | None,
) -> dict[str, Any]:
    """The stages after training, shared by ``seqify bench`` and ``seqify sample``:
    modelability on ``n_test`` test items (skipped when 0), samples and their metrics,
    and a learned orderer's diagnostics. Returns modelability, metrics, headline,
    order_diagnostics (when any) and files."""
    from seqify import seeding

    found: dict[str, Any] = {}
    files: dict[str, str] = {}
    if n_test:
        rep.stage("scoring the test split", n_test)
        t = time.perf_counter()
        found["modelability"] = score_test(cell, model, data, n=n_test, seed=seed, device=device, rep=rep)
        timings["modelability_s"] = time.perf_counter() - t
        mean_step = found["modelability"].pop("mean_step_by_slot", None)
        if mean_step is not None:
            files.update(draw_order(cell, data, mean_step, out))
    if not data.spec.lossless and n_test:
        rep.stage("reconstruction of the test split", n_test)
        t = time.perf_counter()
        found["reconstruction"] = measure_reconstruction(cell, data, n=n_test, out=out)
        files.update(found["reconstruction"].pop("files", {}))
        timings["reconstruction_s"] = time.perf_counter() - t
    metrics, sample_files = generate_and_measure(
        cell, data, model, n=cell.config.eval.n_samples, seed=sample_seed, out=out, device=device, rep=rep,
        timings=timings)
    files.update(sample_files)
    found["metrics"] = metrics
    found["headline"] = {k: metrics[k] for k in cell.modality.headline_metrics if k in metrics}
    if n_test:
        rep.stage("order diagnostics")
        diagnostics = cell.orderer.diagnostics(model, data.test, out=out, train_log=train_log, device=device,
                                               seed=seeding.stream_seed(seed, "diagnostics"))
        if diagnostics:
            files.update(diagnostics.get("files", {}))
            found["order_diagnostics"] = diagnostics
    found["files"] = files
    return found


def measure_reconstruction(cell: Cell, data: Prepared, *, n: int, out: Path) -> dict[str, Any]:
    """A lossy tokenizer's reconstruction error on the first ``n`` test items:
    decode(encode(x)) against x, measured by the modality."""
    originals = [data.splits.test[i] for i in data.test_kept[:n]]
    decoded = decode_all(data.tokenizer, [data.test.tokenset(i) for i in range(min(n, len(data.test)))])
    result = dict(call_supported(cell.modality.reconstruction, originals, decoded, out=out, splits=data.splits))
    result.setdefault("n", len(originals))
    result["metric"] = cell.modality.reconstruction_metric
    return result


def draw_order(cell: Cell, data: Prepared, mean_step: list[float | None], out: Path) -> dict[str, str]:
    """``order_map.png`` (and its numbers in ``order_map.json``): the step at which each
    slot was generated while scoring, averaged over test items, on the datum's layout."""
    from seqify.ordermap import draw_order_map

    longest = int(data.test.lengths.argmax())
    coords_LC = data.test.coords[longest, : int(data.test.lengths[longest])].long().numpy()
    title = f"{cell.names['orderer']} on {cell.names['modality']}/{cell.names['tokenizer']}"
    draw_order_map(mean_step, coords_LC, data.spec.coord_names, out / "order_map.png", title=title)
    atomic_write_json(out / "order_map.json", {"coord_names": list(data.spec.coord_names),
                                               "coords": coords_LC.tolist(), "mean_step": mean_step})
    return {"order_map": "order_map.png"}


def _request_dict(req: BenchRequest) -> dict[str, Any]:
    return {"modality": req.modality, "orderer": req.orderer, "dataset": req.dataset,
            "data": str(req.data) if req.data else None, "tokenizer": req.tokenizer, "generator": req.generator,
            "budget": req.budget, "steps": req.steps, "seed": req.seed, "train_orderer": req.train_orderer}


def run_bench(req: BenchRequest, reporter: Reporter | None = None, registry: Registry | None = None) -> BenchResult:
    """Run one cell end to end and write its files into ``req.out``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process trains its share of each
    batch (:mod:`seqify.distributed`); rank 0 alone evaluates and writes files.
    """
    from seqify import distributed

    rep = reporter or Reporter()
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    cell = resolve_cell(req, registry)
    reason = check_applicable(cell)
    if reason:
        raise NotApplicableError(reason)
    device = pick_device(req.device)
    ctx, joined = distributed.setup(device.type)
    finished = False
    try:
        result = _run_bench(req, cell, device, ctx, rep, timings, t_all)
        finished = True
        return result
    finally:
        if joined:  # after an error, leave at once (torchrun stops the other ranks)
            distributed.teardown(wait=finished)


def _run_bench(req: BenchRequest, cell: Cell, device, ctx, rep: Reporter, timings: dict[str, float],
               t_all: float) -> BenchResult:
    import torch

    from seqify.training import Checkpointing, train

    cfg = cell.config
    out = Path(req.out)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(cell, req, rep, timings, device=device)

    # train (or reuse a model another cell trained the same way)
    model = build_model(cell, data.spec, req.seed).to(device)
    sig = train_signature(cell, req, data.tokenizer_fingerprint)
    shared = Path(req.model_cache) / f"{sig}.pt" if req.model_cache else None
    train_info: dict[str, Any]
    if shared is not None and shared.is_file():
        state = load_checkpoint(shared, map_location=str(device))
        model.load_state_dict(state["model"])
        train_info = {**json.loads(state["train_log_json"]), "reused_model": str(shared)}
        timings["train_s"] = 0.0
        rep.log(f"reusing the model trained by an earlier cell: {shared}")
    else:
        rep.stage("training", cfg.train.steps)
        t = time.perf_counter()
        resumable = Checkpointing(out / TRAIN_STATE, cfg.train.checkpoint_every, sig, log=rep.log, resume=req.resume)
        log = train(
            model, data.train, data.val, cell.train_orderer, cfg.train, device=device, seed=req.seed,
            on_step=lambda step, loss: rep.advance(1, f"loss {loss:.3f}"),
            checkpoint=resumable if cfg.train.checkpoint_every else None,
            probe=completion_probe(cell, data, n=cfg.train.probe_items, device=device, seed=req.seed, log=rep.log),
        )
        timings["train_s"] = time.perf_counter() - t
        train_info = log.as_dict()
        if shared is not None and ctx.is_main:
            save_checkpoint(shared, {"model": model.state_dict(), "train_log_json": json.dumps(train_info)})
    if not ctx.is_main:  # rank 0 evaluates and writes; the others are done
        return BenchResult(None, out, {})
    n_params = sum(p.numel() for p in model.parameters())
    save_checkpoint(out / "checkpoint.pt", {
        "model": model.state_dict(),
        "tokenizer": data.tokenizer.state_dict(),
        "request_json": json.dumps(_request_dict(req)),
        "names_json": json.dumps(cell.names),
        "config_json": cfg.model_dump_json(),
        "spec_json": json.dumps(_spec_dict(data.spec)),
        "train_log_json": json.dumps(train_info),
    })

    found = evaluate_model(
        cell, data, model, seed=req.seed, sample_seed=req.seed, n_test=min(cfg.eval.n_test, len(data.test)), out=out,
        device=device, rep=rep, timings=timings, train_log=train_info)
    files = {"results": "results.json", "checkpoint": "checkpoint.pt", **found.pop("files")}
    timings["total_s"] = time.perf_counter() - t_all

    results = {
        **cell.names,
        "data_path": str(req.data) if req.data else None,
        "seed": req.seed,
        "budget": req.budget,
        "device": str(device),
        "config": cfg.model_dump(),
        "generator_config": cell.generator_config.model_dump(),
        **found,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "training": train_info,
        "data": {**data.splits.info, "n_train": len(data.train), "n_val": len(data.val) if data.val else 0,
                 "n_test": len(data.test), "bad_rows": data.report.summary()},
        "model": {"parameters": n_params, "train_signature": sig, "tokenizer_fingerprint": data.tokenizer_fingerprint},
        "files": files,
        "versions": {"seqify": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    atomic_write_json(out / "results.json", results)
    (out / TRAIN_STATE).unlink(missing_ok=True)  # the run is complete: nothing left to resume
    return BenchResult(results, out, files)


def run_sample(
    run: Path, out: Path, *, n: int | None = None, seed: int | None = None, device: str = "auto",
    temperature: float | None = None, score: int | None = None, reporter: Reporter | None = None,
    registry: Registry | None = None, orderer: dict[str, Any] | None = None,
) -> BenchResult:
    """Generate more items from a trained run's checkpoint, without retraining.

    The run's data is loaded again (with every setting of the run, modality settings
    included) and its tokenizer is restored from the checkpoint, never fitted again;
    the weights are loaded with ``weights_only=True``. With ``score=N`` the first N
    test items are scored too (modelability, as ``seqify bench`` reports it), and a
    learned orderer's diagnostics are drawn again. The stages after training are
    :func:`evaluate_model`, as in :func:`run_bench`. ``orderer`` sets generation-time
    settings of the run's orderer on top of its own (e.g. a learned order's
    ``greedy_order``); a setting that changes the model's shape fails to load.
    """
    rep = reporter or Reporter()
    ckpt_path = Path(run) / "checkpoint.pt"
    if not ckpt_path.is_file():
        raise SeqifyError(f"{str(ckpt_path)!r} not found: give the --out folder of a finished `seqify bench` run")
    state = load_checkpoint(ckpt_path)
    if "tokenizer" not in state:
        raise SeqifyError(f"{str(ckpt_path)!r} was written by an older seqify without the tokenizer's state: "
                          "run `seqify bench` again")
    asked = json.loads(state["request_json"])
    config = json.loads(state["config_json"])
    overrides: dict[str, Any] = dict(config)  # every setting of the run, as resolved then
    overrides["eval"] = dict(config["eval"])
    if n is not None:
        overrides["eval"]["n_samples"] = n
    if temperature is not None:
        overrides["eval"]["temperature"] = temperature
    if orderer:
        overrides["orderer"] = {**config.get("orderer", {}), **orderer}
    req = BenchRequest(
        modality=asked["modality"], orderer=asked["orderer"], out=Path(out), dataset=asked["dataset"],
        data=Path(asked["data"]) if asked["data"] else None, tokenizer=asked["tokenizer"],
        generator=asked["generator"], budget=asked["budget"], seed=asked["seed"], device=device,
        overrides=overrides, train_orderer=asked["train_orderer"],
    )
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    cell = resolve_cell(req, registry)
    dev = pick_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(cell, req, rep, timings, device=dev, tokenizer_state=state["tokenizer"])
    model = build_model(cell, data.spec, req.seed)
    model.load_state_dict(state["model"])
    model = model.to(dev).eval()
    sample_seed = asked["seed"] if seed is None else seed
    train_log = json.loads(state["train_log_json"]) if "train_log_json" in state else None
    found = evaluate_model(
        cell, data, model, seed=asked["seed"], sample_seed=sample_seed, n_test=min(score or 0, len(data.test)),
        out=out, device=dev, rep=rep, timings=timings, train_log=train_log)
    timings["total_s"] = time.perf_counter() - t_all
    results = {**cell.names, "from_run": str(run), "seed": sample_seed, "device": str(dev),
               "n_samples": cell.config.eval.n_samples, "temperature": cell.config.eval.temperature,
               **found, "timings": {k: round(v, 3) for k, v in timings.items()},
               "model": {"tokenizer_fingerprint": data.tokenizer_fingerprint},
               "files": {"results": "sample_results.json", **found["files"]}}
    atomic_write_json(out / "sample_results.json", results)
    return BenchResult(results, out, results["files"])


def _spec_dict(spec) -> dict:
    from dataclasses import asdict

    return asdict(spec)


__all__ = ["BenchRequest", "BenchResult", "Reporter", "run_bench", "run_sample", "resolve_cell", "check_applicable",
           "evaluate_model", "SeqifyError"]
