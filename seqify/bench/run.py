"""Orchestration of one cell: resolve -> prepare data -> train (or reuse) -> evaluate -> write.

``run_bench`` is the Python API behind ``seqify bench``; it returns a
:class:`~seqify.bench.request.BenchResult` and writes ``results.json``,
``checkpoint.pt`` and pictures into the output folder, each atomically.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from seqify import __version__
from seqify.bench.prepare import prepare_data
from seqify.bench.request import BenchRequest, BenchResult, Reporter, request_dict
from seqify.bench.resolve import Cell, check_applicable, pick_device, resolve_cell, train_signature
from seqify.bench.stages import build_model, completion_probe, evaluate_model, use_conditions
from seqify.curves import write_training_curves
from seqify.errors import NotApplicableError
from seqify.io import atomic_write_json, load_checkpoint, save_checkpoint
from seqify.registry import Registry


#: the resumable training state in a cell's folder (deleted once results.json is written)
TRAIN_STATE = "train_state.pt"
#: a copy of the cell's fitted tokenizer state (``--tokenizer-state`` loads it elsewhere)
TOKENIZER_STATE = "tokenizer_state.pt"


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
    tokenizer_state = data.tokenizer.state_dict()
    if tokenizer_state and ctx.is_main:  # the same tokenizer on another machine: --tokenizer-state this file
        save_checkpoint(out / TOKENIZER_STATE, {"state": tokenizer_state})

    # train (or reuse a model another cell trained the same way)
    model = build_model(cell, data.spec, req.seed, conditions=data.n_conditions).to(device)
    conditioning = use_conditions(cell, data, model)
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
        note = getattr(model, "progress_note", None)  # e.g. a learned order's policy statistics
        every, shown = max(1, cfg.train.steps // 50), [""]

        def on_step(step: int, loss: float) -> None:
            if note is not None and step % every == 0:  # read back now and then, not every step
                shown[0] = f"; {note()}"
            rep.advance(1, f"loss {loss:.3f}{shown[0]}")

        log = train(
            model, data.train, data.val, cell.train_orderer, cfg.train, device=device, seed=req.seed,
            on_step=on_step,
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
        "tokenizer": tokenizer_state,
        "request_json": json.dumps(request_dict(req)),
        "names_json": json.dumps(cell.names),
        "config_json": cfg.model_dump_json(),
        "generator_config_json": json.dumps(cell.generator_config.model_dump()),  # as resolved, defaults included
        "spec_json": json.dumps(_spec_dict(data.spec)),
        "train_log_json": json.dumps(train_info),
    })

    curves = write_training_curves(train_info, cfg.train, out, title=_curves_title(cell.names))  # reused models too

    found = evaluate_model(
        cell, data, model, seed=req.seed, sample_seed=req.seed, n_test=min(cfg.eval.n_test, len(data.test)), out=out,
        device=device, rep=rep, timings=timings, train_log=train_info)
    files = {"results": "results.json", "checkpoint": "checkpoint.pt", **curves, **found.pop("files")}
    if tokenizer_state:
        files["tokenizer_state"] = TOKENIZER_STATE
    timings["total_s"] = time.perf_counter() - t_all

    results = {
        **cell.names,
        "data_path": str(req.data) if req.data else None,
        "seed": req.seed,
        "budget": req.budget,
        "device": str(device),
        "config": cfg.model_dump(),
        "generator_config": cell.generator_config.model_dump(),
        "conditioning": conditioning,
        "sampling": {"temperature": cfg.eval.temperature, **cfg.eval.sampling_keywords()},
        **found,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "training": train_info,
        "data": {**data.splits.info, "n_train": len(data.train), "n_val": len(data.val) if data.val else 0,
                 "n_test": len(data.test), "bad_rows": data.report.summary()},
        "model": {"parameters": n_params, "train_signature": sig, "tokenizer_fingerprint": data.tokenizer_fingerprint},
        # ("tokenizer" is the tokenizer's name) seed, source, cache_file, state_file, fingerprint
        "tokenizer_state": data.tokenizer_info,
        "files": files,
        "versions": {"seqify": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    atomic_write_json(out / "results.json", results)
    (out / TRAIN_STATE).unlink(missing_ok=True)  # the run is complete: nothing left to resume
    return BenchResult(results, out, files)


def _curves_title(names: dict) -> str:
    trained = f", trained {names['train_orderer']}" if names["train_orderer"] != names["orderer"] else ""
    return f"{names['modality']}/{names['tokenizer']}, {names['orderer']} order, {names['generator']}{trained}"


def _spec_dict(spec) -> dict:
    from dataclasses import asdict

    return asdict(spec)

