"""Many cells: every compatible (modality, tokenizer, orderer, generator) combination.

Each finished cell is recorded in an SQLite index (``DIR/index.sqlite``); re-running
the same matrix skips recorded cells, so an interrupted matrix resumes where it
stopped and a finished one only reads the index. Cells whose models would be
trained identically (e.g. one masked model trained on random orders, solved with
random, top-prob, margin and entropy inference) share one trained model through
``DIR/models/`` (see :func:`seqify.bench.train_signature`).

Seeds: ``seeds`` and ``tokenizer_seeds`` cross every cell with run seeds and
tokenizer seeds, each pair its own cell (and folder). Where the index holds repeats of
a cell under several seeds, ``summary.md`` / ``summary.csv`` give each figure's mean,
standard deviation and 95% interval over them (:func:`seqify.stats.mean_interval`).

Execution (:mod:`seqify.executors`): cells run in this process one after another
(``jobs=1``), ``jobs`` at a time in local worker processes, as Ray tasks or as Slurm
jobs. Cells that share a trained model wait for the cell that trains it, then run side
by side. Only this driver writes the index (:mod:`seqify.cellindex`); two drivers on one
folder claim cells there, so no cell runs twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqify.bench import BenchRequest, Reporter, RunSettings, resolve_cell, train_signature
from seqify.cellindex import SCHEMA, CellIndex, cell_key, file_digest, index_rows
from seqify.executors import CellGroup, CellOutcome, ExecutorSettings, last_progress, make_executor
from seqify.plugins import get_registry
from seqify.registry import Registry
from seqify.reports import COLUMNS, result_row, summarize, write_reports, write_table

__all__ = ["MatrixRequest", "MatrixResult", "SCHEMA", "COLUMNS", "index_rows", "plan_cells", "run_matrix",
           "summarize", "write_reports", "write_table"]

#: the names older code imported from here
_cell_key = cell_key
_row = result_row


@dataclass(kw_only=True)
class MatrixRequest(RunSettings):
    """The inputs of ``seqify matrix`` (and :class:`~seqify.bench.RunSettings`, given to
    every cell; ``dataset`` and ``data`` apply to every modality of the request).

    Args:
        modalities: registered modality names.
        orderers: registered orderer names.
        out: output folder (``index.sqlite``, ``cells/``, ``models/``, the reports).
        generators: generators to cross with (default: each cell's default).
        tokenizers: tokenizers to cross with (each applies to its own modality;
            default: each modality's default).
        seeds: run seeds to cross with (default: ``seed`` alone); each is its own
            cell, in a folder ending ``-s<seed>``.
        tokenizer_seeds: tokenizer seeds to cross with (default: ``tokenizer_seed``);
            each is its own cell, in a folder ending ``-t<seed>``.
        execution: where and how many cells run at once
            (:class:`~seqify.executors.ExecutorSettings`; default: one after another here).
        poll_s: how often a driver looks again at cells another driver is running.
    """

    modalities: list[str]
    orderers: list[str]
    out: Path
    generators: list[str] | None = None
    tokenizers: list[str] | None = None
    seeds: list[int] | None = None
    tokenizer_seeds: list[int] | None = None
    execution: ExecutorSettings = field(default_factory=ExecutorSettings)
    poll_s: float = 5.0


@dataclass
class MatrixResult:
    rows: list[dict[str, Any]]
    out: Path
    ran: int
    reused: int
    files: dict[str, str]


def plan_cells(req: MatrixRequest, registry: Registry) -> list[BenchRequest]:
    """One request per (modality, tokenizer, orderer, generator, seed, tokenizer seed)."""
    cells = []
    seeds = list(dict.fromkeys(req.seeds or [req.seed]))
    tokenizer_seeds = list(dict.fromkeys(req.tokenizer_seeds or [req.tokenizer_seed]))
    for modality in req.modalities:
        registry.info("modality", modality)
        tokenizers = req.tokenizers or [None]
        for tokenizer in tokenizers:
            if tokenizer is not None and tokenizer not in registry.names("tokenizer", modality):
                continue  # tokenizers are per modality; a list may mix modalities
            for orderer in req.orderers:
                registry.info("orderer", orderer)
                for generator in req.generators or [None]:
                    if generator is not None:
                        registry.info("generator", generator)
                    name = f"{modality}-{tokenizer or 'default'}-{orderer}-{generator or 'default'}"
                    if req.train_orderer and req.train_orderer != orderer:  # never the folder of the cell trained in its own order
                        name += f"-trained-{req.train_orderer}"
                    for seed in seeds:
                        for tokenizer_seed in tokenizer_seeds:
                            # suffixes only when asked for: the folders of a matrix without them keep their names
                            folder = (name + (f"-s{seed}" if req.seeds else "")
                                      + (f"-t{tokenizer_seed}" if tokenizer_seed is not None else ""))
                            cells.append(BenchRequest(
                                **{**req.settings(), "seed": seed, "tokenizer_seed": tokenizer_seed},
                                modality=modality, orderer=orderer, tokenizer=tokenizer, generator=generator,
                                out=Path(req.out) / "cells" / folder, model_cache=Path(req.out) / "models",
                            ))
    return cells


@dataclass
class _Planned:
    req: BenchRequest
    names: dict[str, str]
    key: str
    share: str  # cells with equal ``share`` train the same model


def _share_key(cell: Any, cell_req: BenchRequest) -> str:
    """Which cells will share one trained model, known before any tokenizer is fitted:
    the train signature with the tokenizer's fit inputs (its seed, or the state file)
    in place of the fitted state's fingerprint. A tokenizer that does not fit (no
    ``fit`` of its own) ignores its seed, so its cells share one model across them."""
    from seqify.protocols import BaseTokenizer

    fits = getattr(type(cell.tokenizer), "fit", None) not in (None, BaseTokenizer.fit)
    fit_inputs = f"fit seed {cell_req.tokenizer_fit_seed}" if fits else "no fit"
    return train_signature(cell, cell_req, f"{fit_inputs}, state {cell_req.tokenizer_state}")


def _label(p: _Planned) -> str:
    n = p.names
    return f"{n['modality']}/{n['tokenizer']}/{n['orderer']}/{n['generator']} s{p.req.seed}" + (
        f" t{p.req.tokenizer_seed}" if p.req.tokenizer_seed is not None else "")


def run_matrix(req: MatrixRequest, reporter: Reporter | None = None, registry: Registry | None = None) -> MatrixResult:
    """Run every cell of ``req`` not yet recorded in ``DIR/index.sqlite``; write the reports.

    Cells are planned and checked first (a missing ``--tokenizer-state`` file fails
    before any work), then grouped by the model they train: the first cell of a group
    trains it, and when it is done the others run side by side, each reusing it. The
    executor (``req.execution``) runs the groups; each outcome is recorded as it
    arrives. Cells another driver has claimed are waited for (``poll_s``), and taken
    over if that driver dies."""
    registry = registry or get_registry()
    rep = reporter or Reporter()
    out = Path(req.out)
    index = CellIndex(out / "index.sqlite")
    since = time.time()
    ran = reused = 0
    rows: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    todo: dict[str, _Planned] = {}
    state_digest = None
    try:
        for cell_req in plan_cells(req, registry):
            cell = resolve_cell(cell_req, registry)
            if cell_req.tokenizer_state is not None and state_digest is None:
                state_digest = file_digest(cell_req.tokenizer_state)
            key = cell_key(cell, req.budget, cell_req.seed, cell_req.tokenizer_seed, state_digest)
            order.append(key)
            found = index.get(key)
            if found is not None and found[0] in ("done", "not_applicable"):
                reused += 1
                rows[key] = _recorded_row(cell.names, cell_req, key, found)
                continue
            todo[key] = _Planned(cell_req, cell.names, key, _share_key(cell, cell_req))

        executor = make_executor(req.execution, rep, out, registry)
        plugins = list(getattr(registry, "extra_plugins", []))
        followers: dict[str, list[_Planned]] = {}  # the key of a cell training a model -> cells waiting for it
        shown = {"at": 0.0, "labels": ()}

        def group_of(items: list[_Planned]) -> CellGroup:
            return CellGroup([p.req for p in items], [p.key for p in items], _label(items[0]), plugins)

        def on_outcome(outcome: CellOutcome) -> list[CellGroup]:
            nonlocal ran
            p = todo.pop(outcome.key)
            index.record(outcome.key, p.names, req.budget, p.req.seed, p.req.tokenizer_seed, outcome.status,
                         outcome.reason, outcome.results, outcome.out_dir)
            ran += outcome.status != "not_applicable"
            rows[outcome.key] = result_row(p.names, outcome.status, outcome.reason, outcome.results,
                                           outcome.out_dir, seed=p.req.seed, tokenizer_seed=p.req.tokenizer_seed,
                                           key=outcome.key)
            if outcome.status == "failed":
                rep.log(f"cell {_label(p)} failed: {outcome.reason}")
            waiting = followers.pop(outcome.key, [])
            if not waiting:
                return []
            if outcome.status == "done":  # the model is trained: the others reuse it, side by side
                return [group_of([w]) for w in waiting]
            followers[waiting[0].key] = waiting[1:]  # no model: the next one trains it
            return [group_of([waiting[0]])]

        def on_running(groups: list[CellGroup]) -> None:
            labels = tuple(g.label for g in groups)
            if labels == shown["labels"] and time.time() - shown["at"] < 60:
                return
            shown.update(at=time.time(), labels=labels)
            rep.log(f"{len(groups)} cell(s) running, {len(todo) - len(groups)} to go: "
                    + "; ".join(f"{g.label} ({last_progress(g.requests[0].out) or 'starting'})" for g in groups))

        while todo:
            claimed, finished, busy = index.claim(list(todo), since=since)
            for key in finished:  # another driver ran it meanwhile
                p = todo.pop(key)
                rows[key] = _recorded_row(p.names, p.req, key, index.get(key))
            # a cell whose model another driver is training now waits for it, then reuses it
            training_elsewhere = {todo[k].share for k in busy}
            later = [k for k in claimed if todo[k].share in training_elsewhere]
            if later:
                index.release(later)
                claimed = [k for k in claimed if k not in later]
                busy = [*busy, *later]
            by_share: dict[str, list[_Planned]] = {}
            for key in claimed:
                by_share.setdefault(todo[key].share, []).append(todo[key])
            starts = []
            for cells in by_share.values():
                followers[cells[0].key] = cells[1:]
                starts.append(group_of([cells[0]]))
            if starts:
                executor.run(starts, on_outcome, on_running)
            elif busy:
                if time.time() - shown.get("waiting", 0.0) > 60:
                    rep.log(f"waiting for {len(busy)} cell(s) another seqify matrix process is running (or training "
                            "their model)")
                    shown["waiting"] = time.time()
                time.sleep(req.poll_s)
            for key in [k for k in claimed if k in todo]:  # an executor that lost a cell: never loop on it
                p = todo.pop(key)
                rows[key] = result_row(p.names, "failed", "the executor returned no outcome", None, str(p.req.out),
                                       seed=p.req.seed, tokenizer_seed=p.req.tokenizer_seed, key=key)
        recorded = index.rows()
    finally:
        index.close()
    files = write_reports(recorded, out)
    return MatrixResult([rows[k] for k in order if k in rows], out, ran, reused, files)


def _recorded_row(names: dict[str, str], cell_req: BenchRequest, key: str, found: tuple) -> dict[str, Any]:
    status, reason, results_json, out_dir, _ = found
    return result_row(names, status, reason, json.loads(results_json) if results_json else None, out_dir,
                      seed=cell_req.seed, tokenizer_seed=cell_req.tokenizer_seed, key=key)
