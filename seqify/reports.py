"""The tables and pictures of a matrix: ``comparison.md`` / ``.csv`` (one row per cell
and seed), ``summary.md`` / ``.csv`` (mean, standard deviation and 95% interval over the
seeds a cell was repeated under) and ``heatmap.png``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from seqify.io import atomic_write_bytes, atomic_write_text
from seqify.stats import mean_interval

__all__ = ["COLUMNS", "GROUP", "SUMMARY_COLUMNS", "SUMMARY_METRICS", "result_row", "summarize", "write_reports",
           "write_table"]


def _repeat_group(key: str) -> str:
    """A cell's key without its seeds: cells in one group repeat one another under other seeds."""
    parts = json.loads(key)
    return json.dumps([p for i, p in enumerate(parts) if i != 7 and not str(p).startswith("tokenizer_seed=")])


def result_row(names: dict[str, str], status: str, reason: str | None, results: dict | None, out_dir: str, *,
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
