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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqify import __version__
from seqify.config import BUDGETS, BenchConfig, for_dataset, load_config_file, resolve_config, validate_model
from seqify.data import RowReport
from seqify.errors import ConfigError, NotApplicableError, SeqifyError, UnknownComponentError
from seqify.io import atomic_write_json, load_checkpoint, save_checkpoint
from seqify.plugins import get_registry
from seqify.registry import Registry


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


@dataclass
class BenchResult:
    results: dict[str, Any]
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
    return "masked" if getattr(cls, "adaptive", False) or getattr(cls, "learned", False) else "causal"


def resolve_cell(req: BenchRequest, registry: Registry | None = None) -> Cell:
    """Look up and configure every component; raise before any heavy work on bad input."""
    registry = registry or get_registry()
    if req.budget not in BUDGETS:
        raise UnknownComponentError("budget", req.budget, BUDGETS)
    if req.device not in ("auto", "cpu", "cuda"):
        raise UnknownComponentError("device", req.device, ["auto", "cpu", "cuda"])
    modality_cls = registry.get("modality", req.modality)
    modality = modality_cls()
    dataset = _choose("dataset", req.dataset, list(modality.datasets))
    tok_names = registry.names("tokenizer", req.modality)
    if not tok_names:
        raise NotApplicableError(f"no tokenizer is registered for modality {req.modality!r}")
    default_tok = getattr(modality, "default_tokenizer", None) or tok_names[0]
    tokenizer_name = req.tokenizer or default_tok
    tokenizer_cls = registry.get("tokenizer", tokenizer_name, req.modality)
    orderer_cls = registry.get("orderer", req.orderer)
    train_orderer_cls = registry.get("orderer", req.train_orderer) if req.train_orderer else None
    generator_name = req.generator or default_generator(registry, req.orderer)
    generator_cls = registry.get("generator", generator_name)

    budget = for_dataset(modality.budget(req.budget), dataset)
    file_data = load_config_file(req.config_file) if req.config_file else None
    cli = dict(req.overrides)
    if req.steps is not None:
        cli = {**cli, "train": {**cli.get("train", {}), "steps": req.steps}}
    config = resolve_config(budget, file_data, cli)
    if config.modality:
        model = getattr(modality_cls, "config_model", None)
        if model is None:
            raise ConfigError(f"modality {req.modality!r} takes no settings (got modality.{next(iter(config.modality))})")
        modality = modality_cls(**validate_model(model, config.modality, "modality").model_dump())
    generator_config = validate_model(generator_cls.config_model, config.generator, "generator")
    orderer_opts = validate_model(getattr(orderer_cls, "config_model", None) or _empty_model(), config.orderer, "orderer")
    try:
        orderer = orderer_cls(**orderer_opts.model_dump())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"orderer {req.orderer!r}: {exc}") from None
    train_orderer = orderer
    if train_orderer_cls is not None and req.train_orderer != req.orderer:
        train_orderer = train_orderer_cls()
    try:
        tokenizer = tokenizer_cls(**{**({"dataset": dataset} if _accepts(tokenizer_cls, "dataset") else {}), **config.tokenizer})
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


def _accepts(cls: type, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def _empty_model():
    from pydantic import BaseModel, ConfigDict

    class NoOptions(BaseModel):
        model_config = ConfigDict(extra="forbid")

    return NoOptions


def check_applicable(cell: Cell) -> str | None:
    """The reason this cell cannot run, if the tokenizer's spec is known before fitting."""
    try:
        spec = cell.tokenizer.spec
    except Exception:
        return None
    return _check(cell, spec)


def _check(cell: Cell, spec) -> str | None:
    reason = cell.orderer.check(spec, cell.generator_cls.caps)
    if reason is None and cell.train_orderer is not cell.orderer:
        reason = cell.train_orderer.check(spec, cell.generator_cls.caps)
        if reason is None and getattr(cell.train_orderer, "adaptive", False):
            reason = "an adaptive orderer cannot be a training orderer (it trains on random orders: use 'random')"
    return reason


def pick_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was asked for but torch sees no CUDA device (use --device auto or cpu)")
    return torch.device(name)


def train_signature(cell: Cell, req: BenchRequest) -> str:
    """Cells with equal signatures train the same model, which can then be shared."""
    sig = {
        "seqify": __version__,
        **{k: v for k, v in cell.names.items() if k not in ("orderer", "train_orderer")},
        "data": str(req.data) if req.data else None,
        "train_orders": getattr(cell.train_orderer, "train_signature", repr(cell.train_orderer)),
        "train": cell.config.train.model_dump(),
        "data_cfg": cell.config.data.model_dump(),
        "generator_cfg": cell.generator_config.model_dump(),
        "tokenizer_cfg": cell.config.tokenizer,
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


def prepare_data(cell: Cell, req: BenchRequest, rep: Reporter, timings: dict[str, float]) -> Prepared:
    """Load the dataset, fit the tokenizer, tokenize every split (cached)."""
    from seqify.dataset import tokenize_split

    rep.stage("loading data")
    t = time.perf_counter()
    report = RowReport()
    splits = cell.modality.load(cell.names["dataset"], req.data, seed=req.seed, limit=cell.config.data.limit, report=report)
    timings["load_s"] = time.perf_counter() - t

    rep.stage("tokenizing")
    t = time.perf_counter()
    tokenizer = cell.tokenizer
    tokenizer.fit(splits.train)
    spec = tokenizer.spec
    reason = _check(cell, spec)
    if reason:
        raise NotApplicableError(reason)
    key = f"{cell.names['modality']}|{cell.names['dataset']}|{cell.names['tokenizer']}|{tokenizer!r}|{spec!r}"
    train_table, _ = tokenize_split(tokenizer, splits.train, split="train", report=report, cache_key=key)
    val_table = tokenize_split(tokenizer, splits.val, split="val", report=report, cache_key=key)[0] if splits.val else None
    test_table, test_kept = tokenize_split(tokenizer, splits.test, split="test", report=report, cache_key=key)
    if cell.modality.task == "complete" and len(test_kept) != len(splits.test):
        # completions must stay aligned with the test items they complete; for generation the
        # reference set (e.g. FCD's) stays whole, and the skipped items are in the row report
        splits.test = [splits.test[i] for i in test_kept]
    timings["tokenize_s"] = time.perf_counter() - t
    return Prepared(splits, tokenizer, spec, train_table, val_table, test_table, report)


def build_model(cell: Cell, spec):
    """The generator, wrapped by a learned orderer when the orderer trains with it."""
    model = cell.generator_cls(spec, cell.generator_config)
    if hasattr(cell.orderer, "wrap"):
        model = cell.orderer.wrap(model, spec)
    return model


def generate_and_measure(
    cell: Cell, data: Prepared, model, *, n: int, seed: int, out: Path, device, rep: Reporter,
    timings: dict[str, float],
) -> tuple[dict[str, Any], dict[str, str]]:
    """Sample (or complete) ``n`` items, decode, measure, draw; returns (metrics, files)."""
    import torch

    from seqify.evaluate import sample_items

    cfg = cell.config
    rng = torch.Generator().manual_seed(seed + 4)
    test_tokens = (
        [data.test.tokenset(i) for i in range(min(len(data.test), n))] if cell.modality.task == "complete" else []
    )
    templates = cell.modality.templates(data.tokenizer, test_tokens, n, rng)
    rep.stage("completing" if cell.modality.task == "complete" else "sampling", len(templates))
    t = time.perf_counter()
    filled = sample_items(
        model, templates, cell.orderer, batch_size=cfg.eval.batch_size, device=device,
        seed=seed + 5, temperature=cfg.eval.temperature, on_batch=rep.advance,
    )
    timings["sample_s"] = time.perf_counter() - t
    timings["sample_per_item_ms"] = 1000 * timings["sample_s"] / max(len(filled), 1)
    samples, undecodable = [], 0
    for ts in filled:
        try:
            samples.append(data.tokenizer.decode(ts))
        except (ValueError, KeyError):
            samples.append(None)
            undecodable += 1

    rep.stage("measuring samples")
    t = time.perf_counter()
    metrics = cell.modality.evaluate(samples, data.splits, templates=templates)
    metrics["undecodable"] = undecodable
    timings["metrics_s"] = time.perf_counter() - t
    files = {}
    picture = cell.modality.render(samples, out / "samples.png", splits=data.splits)
    files["samples_png"] = Path(picture).name
    if hasattr(cell.modality, "save_samples"):
        for p in cell.modality.save_samples(samples, out):
            files[Path(p).stem] = Path(p).name
    return metrics, files


def score_test(cell: Cell, model, data: Prepared, *, n: int, seed: int, device, rep: Reporter) -> dict[str, Any]:
    """Modelability on the first ``n`` test items (the orderer's own measure when it has one)."""
    from seqify.evaluate import modelability

    cfg = cell.config
    if hasattr(cell.orderer, "modelability"):
        return cell.orderer.modelability(model, data.test, n=n, batch_size=cfg.eval.batch_size, device=device,
                                         seed=seed + 3)
    return modelability(model, data.test, cell.orderer, n=n, batch_size=cfg.eval.batch_size, device=device,
                        seed=seed + 3, orders_per_item=cfg.eval.orders_per_item, on_batch=rep.advance)


def _request_dict(req: BenchRequest) -> dict[str, Any]:
    return {"modality": req.modality, "orderer": req.orderer, "dataset": req.dataset,
            "data": str(req.data) if req.data else None, "tokenizer": req.tokenizer, "generator": req.generator,
            "budget": req.budget, "steps": req.steps, "seed": req.seed, "train_orderer": req.train_orderer}


def run_bench(req: BenchRequest, reporter: Reporter | None = None, registry: Registry | None = None) -> BenchResult:
    """Run one cell end to end and write its files into ``req.out``."""
    import torch

    from seqify.training import train

    rep = reporter or Reporter()
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    cell = resolve_cell(req, registry)
    reason = check_applicable(cell)
    if reason:
        raise NotApplicableError(reason)
    cfg = cell.config
    device = pick_device(req.device)
    out = Path(req.out)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(cell, req, rep, timings)

    # train (or reuse a model another cell trained the same way)
    model = build_model(cell, data.spec).to(device)
    sig = train_signature(cell, req)
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
        log = train(
            model, data.train, data.val, cell.train_orderer, cfg.train, device=device, seed=req.seed,
            on_step=lambda step, loss: rep.advance(1, f"loss {loss:.3f}"),
        )
        timings["train_s"] = time.perf_counter() - t
        train_info = log.as_dict()
        if shared is not None:
            save_checkpoint(shared, {"model": model.state_dict(), "train_log_json": json.dumps(train_info)})
    n_params = sum(p.numel() for p in model.parameters())
    save_checkpoint(out / "checkpoint.pt", {
        "model": model.state_dict(),
        "request_json": json.dumps(_request_dict(req)),
        "names_json": json.dumps(cell.names),
        "config_json": cfg.model_dump_json(),
        "spec_json": json.dumps(_spec_dict(data.spec)),
        "train_log_json": json.dumps(train_info),
    })

    # modelability
    n_test = min(cfg.eval.n_test, len(data.test))
    rep.stage("scoring the test split", n_test)
    t = time.perf_counter()
    model_stats = score_test(cell, model, data, n=n_test, seed=req.seed, device=device, rep=rep)
    timings["modelability_s"] = time.perf_counter() - t

    metrics, sample_files = generate_and_measure(
        cell, data, model, n=cfg.eval.n_samples, seed=req.seed, out=out, device=device, rep=rep, timings=timings)
    files = {"results": "results.json", "checkpoint": "checkpoint.pt", **sample_files}
    diagnostics = None
    if hasattr(cell.orderer, "diagnostics"):
        rep.stage("order diagnostics")
        diagnostics = cell.orderer.diagnostics(model, data.test, out=out, train_log=train_info, device=device,
                                               seed=req.seed + 6)
        files.update(diagnostics.get("files", {}))
    timings["total_s"] = time.perf_counter() - t_all

    results = {
        **cell.names,
        "data_path": str(req.data) if req.data else None,
        "seed": req.seed,
        "budget": req.budget,
        "device": str(device),
        "config": cfg.model_dump(),
        "generator_config": cell.generator_config.model_dump(),
        "modelability": model_stats,
        "metrics": metrics,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "training": train_info,
        **({"order_diagnostics": diagnostics} if diagnostics is not None else {}),
        "data": {**data.splits.info, "n_train": len(data.train), "n_val": len(data.val) if data.val else 0,
                 "n_test": len(data.test), "bad_rows": data.report.summary()},
        "model": {"parameters": n_params, "train_signature": sig},
        "files": files,
        "versions": {"seqify": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    atomic_write_json(out / "results.json", results)
    return BenchResult(results, out, files)


def run_sample(
    run: Path, out: Path, *, n: int | None = None, seed: int | None = None, device: str = "auto",
    temperature: float | None = None, score: int | None = None, reporter: Reporter | None = None,
    registry: Registry | None = None,
) -> BenchResult:
    """Generate more items from a trained run's checkpoint, without retraining.

    The run's data is loaded again (from the cache) to fit the tokenizer exactly as in
    training; the weights are loaded with ``weights_only=True``. With ``score=N`` the
    first N test items are scored too (modelability, as ``seqify bench`` reports it), and
    a learned orderer's diagnostics are drawn again.
    """
    rep = reporter or Reporter()
    ckpt_path = Path(run) / "checkpoint.pt"
    if not ckpt_path.is_file():
        raise SeqifyError(f"{str(ckpt_path)!r} not found: give the --out folder of a finished `seqify bench` run")
    state = load_checkpoint(ckpt_path)
    asked = json.loads(state["request_json"])
    config = json.loads(state["config_json"])
    overrides: dict[str, Any] = {"train": config["train"], "eval": dict(config["eval"]), "data": config["data"],
                                 "generator": config["generator"], "orderer": config["orderer"],
                                 "tokenizer": config["tokenizer"]}
    if n is not None:
        overrides["eval"]["n_samples"] = n
    if temperature is not None:
        overrides["eval"]["temperature"] = temperature
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
    data = prepare_data(cell, req, rep, timings)
    model = build_model(cell, data.spec)
    model.load_state_dict(state["model"])
    model = model.to(dev).eval()
    sample_seed = asked["seed"] if seed is None else seed
    extra: dict[str, Any] = {}
    if score:
        rep.stage("scoring the test split", min(score, len(data.test)))
        t = time.perf_counter()
        extra["modelability"] = score_test(cell, model, data, n=min(score, len(data.test)), seed=asked["seed"],
                                           device=dev, rep=rep)
        timings["modelability_s"] = time.perf_counter() - t
    metrics, files = generate_and_measure(
        cell, data, model, n=cell.config.eval.n_samples, seed=sample_seed, out=out, device=dev, rep=rep,
        timings=timings)
    if score and hasattr(cell.orderer, "diagnostics"):
        train_log = json.loads(state["train_log_json"]) if "train_log_json" in state else None
        extra["order_diagnostics"] = cell.orderer.diagnostics(model, data.test, out=out, train_log=train_log,
                                                              device=dev, seed=asked["seed"] + 6)
        files.update(extra["order_diagnostics"].get("files", {}))
    timings["total_s"] = time.perf_counter() - t_all
    results = {**cell.names, "from_run": str(run), "seed": sample_seed, "device": str(dev),
               "n_samples": cell.config.eval.n_samples, "temperature": cell.config.eval.temperature,
               **extra, "metrics": metrics, "timings": {k: round(v, 3) for k, v in timings.items()},
               "files": {"results": "sample_results.json", **files}}
    atomic_write_json(out / "sample_results.json", results)
    return BenchResult(results, out, results["files"])


def _spec_dict(spec) -> dict:
    from dataclasses import asdict

    return asdict(spec)


__all__ = ["BenchRequest", "BenchResult", "Reporter", "run_bench", "resolve_cell", "check_applicable", "SeqifyError"]
