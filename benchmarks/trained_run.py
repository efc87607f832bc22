"""Load a finished `seqify bench` run for a benchmark script: its cell, data and trained model.

The run's request and resolved configuration are read from its checkpoint, the data is
loaded again with the tokenizer restored from the checkpoint (never fitted again), and
the weights are loaded into a freshly built model (on the CPU, in eval mode), whose
generator settings are those it trained with: the request and cell come from
:func:`seqify.bench.sample.restore_request`, as in ``seqify sample``. Used by
learned_rescore.py, learned_kind_orders.py, learned_vs_prior.py and
parallel_sampling_time.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_trained_run(run: Path) -> tuple[dict[str, Any], Any, Any, Any, Any]:
    """``(asked, cell, data, model, device)`` of the run in folder ``run``: ``asked`` is
    the request as the run recorded it (seed, modality, ...)."""
    from seqify.bench import Reporter, build_model, pick_device, prepare_data
    from seqify.bench.sample import restore_request
    from seqify.io import load_checkpoint

    ckpt = Path(run) / "checkpoint.pt"
    if not ckpt.is_file():
        raise SystemExit(f"{str(ckpt)!r} not found: give the --out folder of a finished `seqify bench` run")
    state = load_checkpoint(ckpt)
    req, cell = restore_request(state, Path(run), device="cpu")
    device = pick_device("cpu")
    data = prepare_data(cell, req, Reporter(), {}, device=device, tokenizer_state=state["tokenizer"])
    model = build_model(cell, data.spec, req.seed)
    model.load_state_dict(state["model"])
    return json.loads(state["request_json"]), cell, data, model.eval(), device
