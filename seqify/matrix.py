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
from seqify.stats import mean_interval

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    modality TEXT, dataset TEXT, tokenizer TEXT, orderer TEXT, train_orderer TEXT, generator TEXT,
    budget TEXT, seed INTEGER,
    tokenizer_seed INTEGER, -- NULL: the tokenizer was fitted with the run seed (or loaded)
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
        seeds: run seeds to cross with (default: ``seed`` alone); each is its own
            cell, in a folder ending ``-s<seed>``.
        tokenizer_seeds: tokenizer seeds to cross with (default: ``tokenizer_seed``);
            each is its own cell, in a folder ending ``-t<seed>``.
    """

    modalities: list[str]
    orderers: list[str]
    out: Path
    generators: list[str] | None = None
    tokenizers: list[str] | None = None
    seeds: list[int] | None = None
    tokenizer_seeds: list[int] | None = None


@dataclass
class MatrixResult:
    rows: list[dict[str, Any]]
    out: Path
    ran: int
    reused: int
    files: dict[str, str]


def _connect(path: Path) -> sqlite3.Connection:
    """The index, created or, when an older seqify wrote it, given the columns added since."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute(SCHEMA)
    if "tokenizer_seed" not in {r[1] for r in con.execute("PRAGMA table_info(cells)")}:
        con.execute("ALTER TABLE cells ADD COLUMN tokenizer_seed INTEGER")
    con.commit()
    return con


def _cell_key(cell, budget: str, seed: int, tokenizer_seed: int | None = None,
              tokenizer_state: str | None = None) -> str:
    """Names, budget, seed and a hash of the fully resolved configuration: a changed
    setting makes a new cell (which may still reuse a shared trained model). A tokenizer
    seed and a digest of a loaded tokenizer state file are added only when given, so
    the cells of an older index keep their keys."""
    names = cell.names
    resolved = json.dumps([cell.config.model_dump(), cell.generator_config.model_dump()], sort_keys=True, default=str)
    parts = [names["modality"], names["dataset"], names["tokenizer"], names["orderer"], names["train_orderer"],
             names["generator"], budget, seed, hashlib.sha1(resolved.encode()).hexdigest()[:12]]
    if tokenizer_seed is not None:
        parts.append(f"tokenizer_seed={tokenizer_seed}")
    if tokenizer_state is not None:
        parts.append(f"tokenizer_state={tokenizer_state}")
    return json.dumps(parts)


def _repeat_group(key: str) -> str:
    """A cell's key without its seeds: cells in one group repeat one another under other seeds."""
    parts = json.loads(key)
    return json.dumps([p for i, p in enumerate(parts) if i != 7 and not str(p).startswith("tokenizer_seed=")])


def _file_digest(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:12]


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
                                out=req.out / "cells" / folder, model_cache=req.out / "models",
                            ))
    return cells


def run_matrix(req: MatrixRequest, reporter: Reporter | None = None, registry: Registry | None = None) -> MatrixResult:
    registry = registry or get_registry()
    rep = reporter or Reporter()
    out = Path(req.out)
    con = _connect(out / "index.sqlite")
    ran = reused = 0
    rows: list[dict[str, Any]] = []
    state_digest = None
    for cell_req in plan_cells(req, registry):
        cell = resolve_cell(cell_req, registry)  # a missing --tokenizer-state file fails here, before any work
        if cell_req.tokenizer_state is not None and state_digest is None:
            state_digest = _file_digest(cell_req.tokenizer_state)
        names = cell.names
        key = _cell_key(cell, req.budget, cell_req.seed, cell_req.tokenizer_seed, state_digest)
        seeds = dict(seed=cell_req.seed, tokenizer_seed=cell_req.tokenizer_seed, key=key)
        row = con.execute("SELECT status, reason, results_json, out_dir FROM cells WHERE key = ?", (key,)).fetchone()
        if row is not None and row[0] in ("done", "not_applicable"):
            reused += 1
            rows.append(_row(names, row[0], row[1], json.loads(row[2]) if row[2] else None, row[3], **seeds))
            continue
        rep.log(f"cell {names['modality']} / {names['tokenizer']} / {names['orderer']} / {names['generator']}"
                + (f", seed {cell_req.seed}" if req.seeds else "")
                + (f", tokenizer seed {cell_req.tokenizer_seed}" if cell_req.tokenizer_seed is not None else ""))
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
            "INSERT OR REPLACE INTO cells (key, modality, dataset, tokenizer, orderer, train_orderer, generator, "
            "budget, seed, tokenizer_seed, status, reason, results_json, out_dir, finished_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (key, names["modality"], names["dataset"], names["tokenizer"], names["orderer"], names["train_orderer"],
             names["generator"], req.budget, cell_req.seed, cell_req.tokenizer_seed, status, reason,
             json.dumps(results) if results else None, str(cell_req.out), time.time()),
        )
        con.commit()
        ran += status != "not_applicable"
        rows.append(_row(names, status, reason, results, str(cell_req.out), **seeds))
    recorded = index_rows(con)
    con.close()
    files = write_reports(recorded, out)
    return MatrixResult(rows, out, ran, reused, files)


def index_rows(con: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every cell recorded in the index (this and earlier matrix runs into the same folder)."""
    out = []
    query = ("SELECT modality, dataset, tokenizer, orderer, train_orderer, generator, status, reason, results_json, "
             "out_dir, seed, tokenizer_seed, key FROM cells ORDER BY finished_at")
    for r in con.execute(query):
        names = dict(zip(GROUP, r[:6]))
        out.append(_row(names, r[6], r[7], json.loads(r[8]) if r[8] else None, r[9], seed=r[10],
                        tokenizer_seed=r[11], key=r[12]))
    return out


def _row(names: dict[str, str], status: str, reason: str | None, results: dict | None, out_dir: str, *,
         seed: int, tokenizer_seed: int | None, key: str) -> dict[str, Any]:
    """A table row. ``tokenizer_seed`` is the seed the tokenizer was fitted with (the run
    seed unless one was given; empty for a state loaded from a file); ``group`` names the
    cells it repeats under other seeds; ``headline_values`` holds the numeric headline."""
    fit = (results or {}).get("tokenizer_state")
    fit_seed = fit["seed"] if fit else (seed if tokenizer_seed is None else tokenizer_seed)
    row: dict[str, Any] = {**names, "seed": seed, "tokenizer_seed": fit_seed, "status": status,
                           "reason": reason or "", "out_dir": out_dir, "group": _repeat_group(key)}
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
        row["headline_values"] = {k: v for k, v in headline.items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return row


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


GROUP = ("modality", "dataset", "tokenizer", "orderer", "train_orderer", "generator")
COLUMNS = [*GROUP, "seed", "tokenizer_seed", "status", "nats_per_token", "bits_per_item", "top1_accuracy",
           "modelability_kind", "headline", "reconstruction", "shared_model", "reason"]
#: the figures summarized over seeds, before the modality's numeric headline metrics
SUMMARY_METRICS = ("bits_per_item", "nats_per_token", "top1_accuracy", "reconstruction_error")
SUMMARY_COLUMNS = [*GROUP, "metric", "n", "mean", "sd", "ci95_low", "ci95_high", "seeds", "tokenizer_seeds"]


def write_table(rows: list[dict[str, Any]], columns: list[str], out: Path, stem: str) -> dict[str, str]:
    """``stem.csv`` and ``stem.md`` with ``columns`` of ``rows``, written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / f"{stem}.csv", buf.getvalue())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt("" if r.get(c) is None else r[c]).replace("|", "/") for c in columns) + " |")
    atomic_write_text(out / f"{stem}.md", "\n".join(lines) + "\n")
    return {"csv": f"{stem}.csv", "markdown": f"{stem}.md"}


def write_reports(rows: list[dict[str, Any]], out: Path) -> dict[str, str]:
    """comparison.md, comparison.csv (one row per cell and seed) and heatmap.png from
    every cell recorded in ``out``; summary.md and summary.csv too when some cell was
    run under more than one seed or tokenizer seed."""
    files = write_table(rows, COLUMNS, out, "comparison")
    done = [r for r in rows if r["status"] == "done"]
    if done:
        files["heatmap"] = "heatmap.png"
        atomic_write_bytes(out / "heatmap.png", _heatmap_png(rows))
    repeats = _repeats(rows)
    if any(len(reps) > 1 for reps in repeats):
        found = write_table(summarize(rows), SUMMARY_COLUMNS, out, "summary")
        files.update(summary_csv=found["csv"], summary_markdown=found["markdown"])
    return files


def _repeats(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The finished rows, grouped into cells repeated under other seeds (one row per
    seed pair, the last recorded; ordered by seed, then tokenizer seed)."""
    groups: dict[str, dict[tuple, dict[str, Any]]] = {}
    for r in rows:
        if r["status"] == "done":
            groups.setdefault(r["group"], {})[(r["seed"], r["tokenizer_seed"])] = r

    def order(pair: tuple) -> tuple:
        return tuple((v is None, v if v is not None else 0) for v in pair)

    return [[reps[k] for k in sorted(reps, key=order)] for reps in groups.values()]


def _figure(row: dict[str, Any], metric: str) -> float | None:
    if metric == "reconstruction_error" and row.get("reconstruction_metric") == "lossless":
        return None  # 0 by definition, not a measurement
    value = row.get(metric) if metric in SUMMARY_METRICS else row.get("headline_values", {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per group of repeated cells and figure (bits per item, nats per token,
    top-1 accuracy, a lossy tokenizer's reconstruction error, each numeric headline
    metric): n, mean, sample standard deviation, the 95% Student-t interval
    (:func:`seqify.stats.mean_interval`; empty for n = 1) and the seeds it rests on.

    Args:
        rows: table rows (:func:`index_rows`); only finished cells count.
    """
    out = []
    for reps in _repeats(rows):
        headline = dict.fromkeys(k for r in reps for k in r.get("headline_values", {}))
        for metric in [*SUMMARY_METRICS, *headline]:
            measured = [(r, v) for r in reps if (v := _figure(r, metric)) is not None]
            if not measured:
                continue
            found = mean_interval([v for _, v in measured], 0.95)
            out.append({
                **{k: reps[0][k] for k in GROUP}, "metric": metric, "n": found["n"],
                **{column: "" if found[part] is None else found[part]
                   for column, part in (("mean", "mean"), ("sd", "sd"), ("ci95_low", "low"), ("ci95_high", "high"))},
                "seeds": ",".join(str(r["seed"]) for r, _ in measured),
                "tokenizer_seeds": ",".join("" if r["tokenizer_seed"] is None else str(r["tokenizer_seed"])
                                            for r, _ in measured),
            })
    return out


def _heatmap_png(rows: list[dict[str, Any]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def ylabel(r):
        return f"{r['modality']}/{r['tokenizer']}/{r['generator']}, trained {r.get('train_orderer') or r['orderer']}"

    ylabels = sorted({ylabel(r) for r in rows})
    xlabels = list(dict.fromkeys(r["orderer"] for r in rows))
    # a cell repeated under several seeds shows its mean; finished cells are drawn over failed ones
    merged = [r for r in rows if r["status"] != "done"]
    for reps in _repeats(rows):
        nats = mean_interval([r["nats_per_token"] for r in reps])["mean"]
        merged.append(reps[0] if len(reps) == 1 else
                      {**reps[-1], "nats_per_token": nats, "headline": f"mean of {len(reps)} seeds"})
    rows = merged
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
