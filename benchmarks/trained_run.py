"""Load a finished `seqify bench` run for a benchmark script: its cell, data and trained model.

The run's request and resolved configuration are read from its checkpoint, the data is
loaded again with the tokenizer restored from the checkpoint (never fitted again), and
the weights are loaded into a freshly built model (on the CPU, in eval mode), whose
generator settings are those it trained with (as ``seqify sample`` restores them). Used by
learned_rescore.py, learned_kind_orders.py, learned_vs_prior.py and
parallel_sampling_time.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


def load_trained_run(run: Path) -> tuple[dict[str, Any], Any, Any, Any, Any]:
    """``(asked, cell, data, model, device)`` of the run in folder ``run``: ``asked`` is
    the request as the run recorded it (seed, modality, ...)."""
    from seqify.bench import BenchRequest, Reporter, build_model, pick_device, prepare_data, resolve_cell
    from seqify.bench.sample import _trained_generator_config
    from seqify.io import load_checkpoint

    ckpt = Path(run) / "checkpoint.pt"
    if not ckpt.is_file():
        raise SystemExit(f"{str(ckpt)!r} not found: give the --out folder of a finished `seqify bench` run")
    state = load_checkpoint(ckpt)
    asked = json.loads(state["request_json"])
    req = BenchRequest(
        modality=asked["modality"], orderer=asked["orderer"], out=Path(run), dataset=asked["dataset"],
        data=Path(asked["data"]) if asked["data"] else None, tokenizer=asked["tokenizer"],
        generator=asked["generator"], budget=asked["budget"], seed=asked["seed"], device="cpu",
        overrides=dict(json.loads(state["config_json"])), train_orderer=asked["train_orderer"],
    )
    cell = resolve_cell(req)
    trained = _trained_generator_config(state, Path(run), cell.generator_cls)
    if trained:  # the generator's settings as it trained (older checkpoints: the defaults of then)
        overrides = {**req.overrides, "generator": {**req.overrides.get("generator", {}), **trained}}
        req = dataclasses.replace(req, overrides=overrides)
        cell = resolve_cell(req)
    device = pick_device("cpu")
    data = prepare_data(cell, req, Reporter(), {}, device=device, tokenizer_state=state["tokenizer"])
    model = build_model(cell, data.spec, req.seed)
    model.load_state_dict(state["model"])
    return asked, cell, data, model.eval(), device
