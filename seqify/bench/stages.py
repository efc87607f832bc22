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
from seqify.io import atomic_write_json
from seqify.compat import call_supported


def build_model(cell: Cell, spec, seed: int):
    """The generator (its weights drawn from the ``init`` stream of ``seed``), wrapped by
    the orderer (the identity, except for a trainable orderer, which adds its policy;
    it is given the cell's tokenizer when its ``wrap`` takes ``tokenizer=``)."""
    from seqify import seeding

    seeding.seed_global(seed, "init")
    generator = cell.generator_cls(spec, cell.generator_config)
    return call_supported(cell.orderer.wrap, generator, spec, tokenizer=cell.tokenizer)


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
        precision=cfg.train.precision, coord_names=tuple(data.spec.coord_names), tokenizer=data.tokenizer,
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
                                  precision=cell.config.train.precision,
                                  coord_names=tuple(data.spec.coord_names), tokenizer=data.tokenizer)
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

