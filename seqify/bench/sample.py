"""``seqify sample``: more samples, a rescore, or another dataset, from a trained run, without retraining."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from seqify.bench.prepare import prepare_data
from seqify.bench.request import BenchRequest, BenchResult, Reporter
from seqify.bench.resolve import pick_dataset, pick_device, resolve_cell
from seqify.bench.stages import build_model, evaluate_model, use_conditions
from seqify.errors import ConfigError, SeqifyError
from seqify.io import atomic_write_json, load_checkpoint
from seqify.registry import Registry


def _trained_generator_config(state: dict[str, Any], run: Path, generator_cls: type) -> dict[str, Any]:
    """The generator's settings as resolved when it trained: the checkpoint's record; for a
    checkpoint from before that record, the settings whose defaults changed since
    (``legacy_config``), as the run's results.json recorded them, else the legacy values."""
    if "generator_config_json" in state:
        return json.loads(state["generator_config_json"])
    legacy = dict(getattr(generator_cls, "legacy_config", {}) or {})
    try:
        recorded = json.loads((run / "results.json").read_text()).get("generator_config") or {}
    except (OSError, ValueError):
        recorded = {}
    return {k: recorded.get(k, v) for k, v in legacy.items()}


def restore_request(state: dict[str, Any], run: Path, *, device: str = "auto",
                    overrides: dict[str, Any] | None = None, registry: Registry | None = None
                    ) -> tuple[BenchRequest, Any]:
    """The request and resolved cell a checkpoint's run trained with: its recorded request
    and configuration (``overrides`` replace the configuration; default: the run's own),
    its resolved dataset, and its generator's settings as they were when it trained
    (:func:`_trained_generator_config`). ``state`` is the loaded ``run/checkpoint.pt``."""
    asked = json.loads(state["request_json"])
    if overrides is None:
        overrides = dict(json.loads(state["config_json"]))
    trained = json.loads(state["names_json"]) if "names_json" in state else {"dataset": asked["dataset"]}
    req = BenchRequest(
        modality=asked["modality"], orderer=asked["orderer"], out=Path(run), dataset=trained["dataset"],
        data=Path(asked["data"]) if asked["data"] else None, tokenizer=asked["tokenizer"],
        generator=asked["generator"], budget=asked["budget"], seed=asked["seed"], device=device,
        overrides=overrides, train_orderer=asked["train_orderer"],
    )
    cell = resolve_cell(req, registry)  # the components exactly as trained
    trained_generator = _trained_generator_config(state, Path(run), cell.generator_cls)
    if trained_generator:
        overrides = {**overrides, "generator": {**overrides.get("generator", {}), **trained_generator}}
        req = dataclasses.replace(req, overrides=overrides)
        cell = resolve_cell(req, registry)
    return req, cell


def run_sample(
    run: Path, out: Path, *, n: int | None = None, seed: int | None = None, device: str = "auto",
    temperature: float | None = None, score: int | None = None, reporter: Reporter | None = None,
    registry: Registry | None = None, orderer: dict[str, Any] | None = None,
    dataset: str | None = None, data: Path | None = None, sampling: dict[str, Any] | None = None,
) -> BenchResult:
    """Generate more items from a trained run's checkpoint, without retraining.

    The run's data is loaded again (with every setting of the run, modality settings
    included) and its tokenizer is restored from the checkpoint, never fitted again;
    the weights are loaded with ``weights_only=True``. With ``score=N`` the first N
    test items are scored too (modelability, as ``seqify bench`` reports it), and the
    orderer's diagnostics are drawn again. ``sampling`` sets more ``eval`` sampling
    controls on top of the run's (``top_k``, ``top_p``, ``guidance``,
    ``guidance_schedule``). The stages after training are
    :func:`~seqify.bench.stages.evaluate_model`, as in ``run_bench``. ``orderer`` sets
    generation-time settings of the run's orderer on top of its own (e.g. a learned
    order's ``greedy_order``); a setting that changes the model's shape fails to load.

    Transfer evaluation: ``dataset`` (and ``data``, its file) evaluate the model on
    another dataset of the same modality, e.g. a model trained on generated puzzles
    completes the puzzles of a public CSV. Every item of that dataset, whatever its split,
    is evaluated (up to ``eval.n_samples`` completed or generated, ``score`` scored). The
    restored tokenizer encodes it (items it cannot encode are reported and skipped); a dataset whose token structure differs
    from the training data's is refused. ``sample_results.json`` says what the model
    was trained on and what it was evaluated on.
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
    overrides["eval"].update(sampling or {})
    if orderer:
        overrides["orderer"] = {**config.get("orderer", {}), **orderer}
    trained = json.loads(state["names_json"]) if "names_json" in state else {"dataset": asked["dataset"]}
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    req, cell = restore_request(state, Path(run), device=device, overrides=overrides, registry=registry)
    req = dataclasses.replace(req, out=Path(out))
    load_req = req
    transfer = dataset is not None or data is not None
    if transfer:  # another dataset of the modality, read by the same tokenizer
        load_req = dataclasses.replace(req, dataset=dataset, data=Path(data) if data else None)
        cell.names["dataset"] = pick_dataset(type(cell.modality), load_req)
        load_req = dataclasses.replace(load_req, dataset=cell.names["dataset"])
    dev = pick_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_ = prepare_data(cell, load_req, rep, timings, device=dev, tokenizer_state=state["tokenizer"],
                         evaluate_every_item=transfer and cell.names["dataset"] != trained["dataset"])
    if "spec_json" in state and not _same_spec(data_.spec, json.loads(state["spec_json"])):
        raise ConfigError(f"dataset {cell.names['dataset']!r} tokenizes to another structure than the data the model "
                          f"was trained on ({trained['dataset']!r}): {dataclasses.asdict(data_.spec)} against "
                          f"{json.loads(state['spec_json'])}")
    model = build_model(cell, data_.spec, req.seed, conditions=data_.n_conditions)
    model.load_state_dict(state["model"])
    model = model.to(dev).eval()
    conditioning = use_conditions(cell, data_, model)
    sample_seed = asked["seed"] if seed is None else seed
    train_log = json.loads(state["train_log_json"]) if "train_log_json" in state else None
    found = evaluate_model(
        cell, data_, model, seed=asked["seed"], sample_seed=sample_seed, n_test=min(score or 0, len(data_.test)),
        out=out, device=dev, rep=rep, timings=timings, train_log=train_log)
    timings["total_s"] = time.perf_counter() - t_all
    results = {**cell.names, "from_run": str(run), "seed": sample_seed, "device": str(dev),
               "trained_on": {"dataset": trained["dataset"], "data": asked["data"]},
               "evaluated_on": {"dataset": cell.names["dataset"], "data": str(load_req.data) if load_req.data else None,
                                "n_test": len(data_.test), "bad_rows": data_.report.summary()},
               "n_samples": cell.config.eval.n_samples, "temperature": cell.config.eval.temperature,
               "sampling": {"temperature": cell.config.eval.temperature, **cell.config.eval.sampling_keywords()},
               "conditioning": conditioning,
               **found, "timings": {k: round(v, 3) for k, v in timings.items()},
               "model": {"tokenizer_fingerprint": data_.tokenizer_fingerprint},
               "tokenizer_state": data_.tokenizer_info,
               "files": {"results": "sample_results.json", **found["files"]}}
    atomic_write_json(out / "sample_results.json", results)
    return BenchResult(results, out, results["files"])


def _same_spec(spec: Any, saved: dict[str, Any]) -> bool:
    """Whether ``spec`` is the spec saved with a run (``TokenizerSpec`` fields added since
    the run was saved count as their defaults, so old checkpoints still load)."""
    now = json.loads(json.dumps(dataclasses.asdict(spec)))
    defaults = {f.name: f.default for f in dataclasses.fields(spec) if f.default is not dataclasses.MISSING}
    return all(now[k] == saved.get(k, defaults.get(k)) for k in now) and set(saved) <= set(now)
