"""Many cells: every compatible (modality, tokenizer, orderer, generator) combination.

Each finished cell is recorded in an SQLite index (``DIR/index.sqlite``); re-running
the same matrix skips recorded cells, so an interrupted matrix resumes where it
stopped and a finished one only reads the index. Cells whose models would be
trained identically (e.g. one masked model trained on random orders, solved with
random, top-prob, margin and entropy inference) share one trained model through
``DIR/models/`` (see :func:`seqify.bench.train_signature`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqify.bench import BenchRequest, Reporter, RunSettings, check_applicable, resolve_cell, run_bench
from seqify.errors import NotApplicableError, SeqifyError
from seqify.io import atomic_write_bytes, atomic_write_text
from seqify.plugins import get_registry
from seqify.registry import Registry

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    modality TEXT, dataset TEXT, tokenizer TEXT, orderer TEXT, train_orderer TEXT, generator TEXT,
    budget TEXT, seed INTEGER,
    status TEXT,            -- done | not_applicable | failed
    reason TEXT,
    results_json TEXT,
    out_dir TEXT,
    finished_at REAL
)
"""

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
    """

    modalities: list[str]
    orderers: list[str]
    out: Path
    generators: list[str] | None = None
    tokenizers: list[str] | None = None


@dataclass
class MatrixResult:
    rows: list[dict[str, Any]]
    out: Path
    ran: int
    reused: int
    files: dict[str, str]


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute(SCHEMA)
    con.commit()
    return con


def _cell_key(cell, budget: str, seed: int) -> str:
    """Names, budget, seed and a hash of the fully resolved configuration: a changed
    setting makes a new cell (which may still reuse a shared trained model)."""
    names = cell.names
    resolved = json.dumps([cell.config.model_dump(), cell.generator_config.model_dump()], sort_keys=True, default=str)
    return json.dumps([names["modality"], names["dataset"], names["tokenizer"], names["orderer"],
                       names["train_orderer"], names["generator"], budget, seed,
                       hashlib.sha1(resolved.encode()).hexdigest()[:12]])


def plan_cells(req: MatrixRequest, registry: Registry) -> list[BenchRequest]:
    cells = []
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
                    cells.append(
                        BenchRequest(
                            **req.settings(), modality=modality, orderer=orderer, tokenizer=tokenizer,
                            generator=generator, out=req.out / "cells" / name, model_cache=req.out / "models",
                        )
                    )
    return cells


def run_matrix(req: MatrixRequest, reporter: Reporter | None = None, registry: Registry | None = None) -> MatrixResult:
    registry = registry or get_registry()
    rep = reporter or Reporter()
    out = Path(req.out)
    con = _connect(out / "index.sqlite")
    ran = reused = 0
    rows: list[dict[str, Any]] = []
    for cell_req in plan_cells(req, registry):
        cell = resolve_cell(cell_req, registry)
        names = cell.names
        key = _cell_key(cell, req.budget, req.seed)
        row = con.execute("SELECT status, reason, results_json, out_dir FROM cells WHERE key = ?", (key,)).fetchone()
        if row is not None and row[0] in ("done", "not_applicable"):
            reused += 1
            rows.append(_row(names, row[0], row[1], json.loads(row[2]) if row[2] else None, row[3]))
            continue
        rep.log(f"cell {names['modality']} / {names['tokenizer']} / {names['orderer']} / {names['generator']}")
        status, reason, results = "done", None, None
        try:
            reason = check_applicable(cell)
            if reason:
                raise NotApplicableError(reason)
            results = run_bench(cell_req, rep, registry).results
        except NotApplicableError as exc:
            status, reason = "not_applicable", str(exc)
        except (SeqifyError, RuntimeError, ValueError, FloatingPointError) as exc:
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
            rep.log(f"cell failed: {reason}\n{traceback.format_exc(limit=3)}")
        con.execute(
            "INSERT OR REPLACE INTO cells VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (key, names["modality"], names["dataset"], names["tokenizer"], names["orderer"], names["train_orderer"],
             names["generator"],
             req.budget, req.seed, status, reason, json.dumps(results) if results else None,
             str(cell_req.out), time.time()),
        )
        con.commit()
        ran += status != "not_applicable"
        rows.append(_row(names, status, reason, results, str(cell_req.out)))
    recorded = index_rows(con)
    con.close()
    files = write_reports(recorded, out)
    return MatrixResult(rows, out, ran, reused, files)


def index_rows(con: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every cell recorded in the index (this and earlier matrix runs into the same folder)."""
    out = []
    query = ("SELECT modality, dataset, tokenizer, orderer, train_orderer, generator, status, reason, results_json, "
             "out_dir FROM cells ORDER BY finished_at")
    for r in con.execute(query):
        names = dict(zip(("modality", "dataset", "tokenizer", "orderer", "train_orderer", "generator"), r[:6]))
        out.append(_row(names, r[6], r[7], json.loads(r[8]) if r[8] else None, r[9]))
    return out


def _row(names: dict[str, str], status: str, reason: str | None, results: dict | None, out_dir: str) -> dict[str, Any]:
    row: dict[str, Any] = {**names, "status": status, "reason": reason or "", "out_dir": out_dir}
    if results:
        m = results["modelability"]
        row.update(
            nats_per_token=m["nats_per_token"], bits_per_item=m["bits_per_item"],
            top1_accuracy=m["top1_accuracy"], modelability_kind=m["kind"],
            shared_model=bool(results.get("training", {}).get("reused_model")),
        )
        row["tokens_per_item"] = m.get("tokens_per_item")
        recon = results.get("reconstruction")
        if recon is None:  # a lossless tokenizer
            row["reconstruction_metric"], row["reconstruction_error"] = "lossless", 0.0
        elif recon.get("metric") in recon:
            row["reconstruction"] = f"{recon['metric']}={_fmt(recon[recon['metric']])}"
            row["reconstruction_metric"], row["reconstruction_error"] = recon["metric"], recon[recon["metric"]]
        headline = results.get("headline") or {}  # named by the modality (Modality.headline_metrics)
        if headline:
            row["headline"] = ", ".join(f"{name}={_fmt(v)}" for name, v in headline.items())
    return row


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


COLUMNS = ["modality", "dataset", "tokenizer", "orderer", "train_orderer", "generator", "status", "nats_per_token",
           "bits_per_item", "top1_accuracy", "modelability_kind", "headline", "reconstruction", "shared_model", "reason"]


def write_table(rows: list[dict[str, Any]], columns: list[str], out: Path, stem: str) -> dict[str, str]:
    """``stem.csv`` and ``stem.md`` with ``columns`` of ``rows``, written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / f"{stem}.csv", buf.getvalue())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")).replace("|", "/") for c in columns) + " |")
    atomic_write_text(out / f"{stem}.md", "\n".join(lines) + "\n")
    return {"csv": f"{stem}.csv", "markdown": f"{stem}.md"}


def write_reports(rows: list[dict[str, Any]], out: Path) -> dict[str, str]:
    """comparison.md, comparison.csv and heatmap.png from every cell recorded in ``out``."""
    files = write_table(rows, COLUMNS, out, "comparison")
    done = [r for r in rows if r["status"] == "done"]
    if done:
        files["heatmap"] = "heatmap.png"
        atomic_write_bytes(out / "heatmap.png", _heatmap_png(rows))
    return files


def _heatmap_png(rows: list[dict[str, Any]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def ylabel(r):
        return f"{r['modality']}/{r['tokenizer']}/{r['generator']}, trained {r.get('train_orderer') or r['orderer']}"

    ylabels = sorted({ylabel(r) for r in rows})
    xlabels = list(dict.fromkeys(r["orderer"] for r in rows))
    grid = np.full((len(ylabels), len(xlabels)), np.nan)
    text = [["n/a"] * len(xlabels) for _ in ylabels]
    for r in rows:
        i, j = ylabels.index(ylabel(r)), xlabels.index(r["orderer"])
        if r["status"] == "done":
            grid[i, j] = r["nats_per_token"]
            text[i][j] = f"{r['nats_per_token']:.3f}\n{r.get('headline', '')}"
        else:
            text[i][j] = r["status"].replace("_", " ")
    fig, ax = plt.subplots(figsize=(1.9 * len(xlabels) + 3, 0.9 * len(ylabels) + 1.8))
    im = ax.imshow(grid, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(xlabels)), xlabels, rotation=30, ha="right")
    ax.set_yticks(range(len(ylabels)), ylabels)
    for i in range(len(ylabels)):
        for j in range(len(xlabels)):
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7, color="white" if np.isfinite(grid[i, j]) else "black")
    fig.colorbar(im, ax=ax, label="test nats per predicted token (lower is easier to model)")
    ax.set_title("seqify matrix: modelability")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
