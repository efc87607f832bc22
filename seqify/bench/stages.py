"""The evaluation stages after training, shared by ``seqify bench`` and ``seqify sample``:
modelability on the test split, reconstruction of a lossy tokenizer, samples and their
metrics, the order's own diagnostics; plus the model a cell trains and the validation
probe training calls."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seqify.bench.prepare import Prepared, decode_all
from seqify.bench.request import Reporter
from seqify.bench.resolve import Cell
from seqify.errors import ConfigError, DataError
from seqify.io import atomic_write_json
from seqify.compat import call_supported, unsupported_keywords


def build_model(cell: Cell, spec, seed: int, *, conditions: int = 0):
    """The generator (its weights drawn from the ``init`` stream of ``seed``; given the cell's
    tokenizer when its constructor takes ``tokenizer=``, e.g. for its slot inputs), wrapped by
    the orderer (the identity, except for a trainable orderer, which adds its policy;
    it is given the cell's tokenizer when its ``wrap`` takes ``tokenizer=``).

    ``conditions`` (the modality's :meth:`~seqify.protocols.Modality.num_conditions` for
    the data, ``Prepared.n_conditions``) is passed as ``conditions=`` when the
    generator's constructor takes it; a generator set to condition on classes the data
    lacks, or wrapped by an orderer whose model reads none, is a ConfigError."""
    from seqify import seeding

    seeding.seed_global(seed, "init")
    try:
        generator = call_supported(cell.generator_cls, spec, cell.generator_config, conditions=conditions,
                                    tokenizer=cell.tokenizer)
    except ValueError as exc:
        raise ConfigError(f"generator {cell.names['generator']!r}: {exc}") from None
    model = call_supported(cell.orderer.wrap, generator, spec, tokenizer=cell.tokenizer)
    wanted = int(getattr(generator, "conditions", 0) or 0)
    if wanted and int(getattr(model, "conditions", 0) or 0) != wanted:
        raise ConfigError(f"generator {cell.names['generator']!r} is class-conditional, but orderer "
                          f"{cell.names['orderer']!r} wraps it in a model that reads no condition: "
                          "turn generator.condition off for this orderer")
    return model


def use_conditions(cell: Cell, data: Prepared, model) -> dict[str, Any]:
    """Give every table each row's condition class (``TokenTable.cond``) when ``model``
    is class-conditional (``model.conditions > 0``), and say so for results.json.

    Raises DataError naming the split and row of an item without a class, or with one
    outside ``0 .. conditions - 1``."""
    import torch

    n = int(getattr(model, "conditions", 0) or 0)
    if not n:
        return {"conditional": False, "n_conditions_declared": data.n_conditions}
    for name, table in (("train", data.train), ("val", data.val), ("test", data.test)):
        if table is None:
            continue
        labels = data.conditions.get(name, [])
        for row, label in enumerate(labels):
            if label is None or not 0 <= int(label) < n:
                raise DataError(f"{name} split, item {row + 1}: condition {label!r} is not a class 0..{n - 1} "
                                f"(modality {cell.names['modality']!r}, dataset {cell.names['dataset']!r})")
        if len(labels) != len(table):
            raise DataError(f"{name} split: {len(labels)} conditions for {len(table)} tokenized items")
        table.cond = torch.tensor([int(c) for c in labels], dtype=torch.long)
    test = data.test.cond
    counts = torch.bincount(test, minlength=n).tolist()
    return {
        "conditional": True,
        "n_conditions": n,
        "cond_drop": getattr(getattr(model, "config", None), "cond_drop", None),
        "scoring": "conditional: each test item is scored given its true class, log p(x | class) (the "
                   "modelability figures are not comparable with an unconditional model's log p(x))",
        "sample_classes": ("each completed test item's own class" if cell.modality.task == "complete" else
                           "drawn i.i.d. from the test split's class distribution (random stream 'conditions')"),
        "test_class_counts": {str(c): k for c, k in enumerate(counts)},
    }


def sampling_keywords(cell: Cell, model) -> dict[str, Any]:
    """The optional ``sample`` keywords the configuration sets (top_k, top_p, guidance),
    checked against the model: a ConfigError naming the generator when its ``sample``
    does not take one, or when guidance is asked of an unconditional model."""
    wanted = cell.config.eval.sampling_keywords()
    if not wanted:
        return wanted
    missing = unsupported_keywords(model.sample, wanted)
    if missing:
        raise ConfigError(f"generator {cell.names['generator']!r} (sampling with orderer {cell.names['orderer']!r}, "
                          f"{type(model).__name__}.sample) does not take {', '.join(missing)}: leave "
                          f"eval.{' / eval.'.join(missing)} unset for it")
    if wanted.get("guidance") and not int(getattr(model, "conditions", 0) or 0):
        raise ConfigError(f"eval.guidance {wanted['guidance']}: classifier-free guidance needs a class-conditional "
                          f"model, and generator {cell.names['generator']!r} was trained unconditionally (set "
                          "generator.condition = true, on a dataset whose modality declares classes)")
    return wanted


def sample_conditions(cell: Cell, data: Prepared, templates: list[Any], seed: int) -> list[Any]:
    """The templates with the condition classes a conditional model samples from: a
    completion task's own test items' classes; otherwise classes drawn i.i.d. from the
    test split's class distribution with the ``conditions`` stream of ``seed``."""
    import dataclasses

    import torch

    from seqify import seeding

    test = data.test.cond
    if test is None:
        return templates
    if cell.modality.task == "complete":
        classes = test[: len(templates)].tolist()
    else:
        counts = torch.bincount(test).double()
        classes = torch.multinomial(counts / counts.sum(), len(templates), replacement=True,
                                    generator=seeding.generator(seed, "conditions")).tolist()
    return [dataclasses.replace(t, cond=int(c)) for t, c in zip(templates, classes)]


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
    controls = sampling_keywords(cell, model)
    if int(getattr(model, "conditions", 0) or 0):
        templates = sample_conditions(cell, data, templates, seed)
    rep.stage("completing" if cell.modality.task == "complete" else "sampling", len(templates))
    t = time.perf_counter()
    filled = sample_items(
        model, templates, cell.orderer, batch_size=cfg.eval.batch_size, device=device,
        seed=seeding.stream_seed(seed, "sample"), temperature=cfg.eval.temperature, on_batch=rep.advance,
        precision=cfg.train.precision, coord_names=tuple(data.spec.coord_names), controls=controls,
        tokenizer=data.tokenizer,
    )
    timings["sample_s"] = time.perf_counter() - t
    timings["sample_per_item_ms"] = 1000 * timings["sample_s"] / max(len(filled), 1)
    samples = decode_all(data.tokenizer, filled)
    undecodable = samples.count(None)

    rep.stage("measuring samples")
    t = time.perf_counter()
    metrics = call_supported(cell.modality.evaluate, samples, data.splits, templates=templates)
    metrics["undecodable"] = undecodable
    timings["metrics_s"] = time.perf_counter() - t
    files = {}
    picture = call_supported(cell.modality.render, samples, out / "samples.png", splits=data.splits)
    files["samples_png"] = Path(picture).name
    for p in call_supported(cell.modality.save_samples, samples, out, splits=data.splits):
        files[Path(p).stem] = Path(p).name
    return metrics, files


def completion_probe(cell: Cell, data: Prepared, *, n: int, device, seed: int,
                     log: Callable[[str], None] | None = None):
    """For a complete-task modality, a probe for :func:`seqify.training.train`: complete
    the first ``n`` validation items with the cell's inference orderer (the evaluation
    temperature, the ``validation`` stream, forked) and return the modality's numeric
    metrics on them, e.g. Sudoku's solve rate. None when off or not applicable."""
    import dataclasses

    from seqify import seeding
    from seqify.evaluate import sample_items
    from seqify.protocols import Splits

    if not n or cell.modality.task != "complete" or data.val is None or not len(data.val):
        return None
    n = min(n, len(data.val))
    val_tokens = [data.val.tokenset(i) for i in range(n)]
    templates = cell.modality.templates(data.tokenizer, val_tokens, n, seeding.generator(seed, "templates"))
    reference = Splits(train=[], val=[], test=[data.splits.val[i] for i in data.val_kept[:n]])
    if data.val.cond is not None:  # a conditional model completes each item under its own class
        templates = [dataclasses.replace(t, cond=int(c)) for t, c in zip(templates, data.val.cond[:n].tolist())]

    def probe(model) -> dict[str, float]:
        with seeding.forked(seed, "validation", device):
            filled = sample_items(model, templates, cell.orderer, batch_size=cell.config.eval.batch_size,
                                  device=device, seed=seeding.stream_seed(seed, "validation"),
                                  temperature=cell.config.eval.temperature,
                                  precision=cell.config.train.precision,
                                  coord_names=tuple(data.spec.coord_names),
                                  controls=sampling_keywords(cell, model), tokenizer=data.tokenizer)
        samples = decode_all(data.tokenizer, filled)
        found = call_supported(cell.modality.evaluate, samples, reference, templates=templates)
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

