"""Modelability across tokenizations: ``seqify modelability``.

Trains one model per tokenization of a modality under the same budget, orderer and
generator (the cells of a :func:`seqify.matrix.run_matrix`, so an interrupted run
resumes and fitted tokenizers and trained models are shared), and writes one table
and one plot: bits per item (the unit that compares across tokenizations: a
tokenization's tokens per item differ), nats per token, top-1 next-token accuracy
and, for lossy tokenizers, the reconstruction error the modality names on the other
axis: the reconstruction-vs-modelability picture. A lossless tokenizer sits at
reconstruction error 0. Over several seeds (``seeds``, ``tokenizer_seeds``), the table
keeps one row per seed, the plot draws each tokenization's mean with its 95% interval,
and the matrix's ``summary.md`` / ``summary.csv`` give every figure's spread.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqify.bench import Reporter, RunSettings
from seqify.io import atomic_write_bytes
from seqify.executors import ExecutorSettings
from seqify.matrix import MatrixRequest, run_matrix, write_table
from seqify.plugins import get_registry
from seqify.registry import Registry
from seqify.stats import mean_interval

__all__ = ["ModelabilityRequest", "ModelabilityResult", "run_modelability"]

COLUMNS = ["tokenizer", "orderer", "generator", "seed", "tokenizer_seed", "status", "bits_per_item", "nats_per_token",
           "tokens_per_item", "top1_accuracy", "modelability_kind", "reconstruction_metric", "reconstruction_error",
           "headline", "reason"]


@dataclass(kw_only=True)
class ModelabilityRequest(RunSettings):
    """The inputs of ``seqify modelability`` (and :class:`~seqify.bench.RunSettings`).

    Args:
        modality: registered modality name.
        tokenizers: tokenizers of that modality to compare.
        out: output folder (the cells, ``modelability.md``/``.csv``/``.png``).
        orderer: one orderer for every tokenization (default "raster").
        generator: one generator (default: the runner's choice for the orderer).
        seeds: run seeds to repeat every tokenization with (default: ``seed``).
        tokenizer_seeds: tokenizer seeds to repeat it with (default: ``tokenizer_seed``).
        execution: where the cells run (:class:`~seqify.executors.ExecutorSettings`).
    """

    modality: str
    tokenizers: list[str]
    out: Path
    orderer: str = "raster"
    generator: str | None = None
    seeds: list[int] | None = None
    tokenizer_seeds: list[int] | None = None
    execution: ExecutorSettings = field(default_factory=ExecutorSettings)


@dataclass
class ModelabilityResult:
    rows: list[dict[str, Any]]
    out: Path
    files: dict[str, str]


def run_modelability(
    req: ModelabilityRequest, reporter: Reporter | None = None, registry: Registry | None = None
) -> ModelabilityResult:
    """Train and measure every tokenization; write the table and the plot."""
    from seqify.errors import UnknownComponentError

    registry = registry or get_registry()
    known = registry.names("tokenizer", req.modality)
    for name in req.tokenizers:
        if name not in known:
            raise UnknownComponentError("tokenizer", name, known, f"modality {req.modality!r}")
    out = Path(req.out)
    matrix = run_matrix(
        MatrixRequest(**req.settings(), modalities=[req.modality], orderers=[req.orderer], out=out,
                      generators=[req.generator] if req.generator else None, tokenizers=list(req.tokenizers),
                      seeds=req.seeds, tokenizer_seeds=req.tokenizer_seeds, execution=req.execution),
        reporter, registry)
    rows = [_row(r) for r in matrix.rows]
    files = write_modelability(rows, out, title=f"{req.modality}: tokenizations under '{req.orderer}' ({req.budget})")
    files.update({k: v for k, v in matrix.files.items() if k.startswith("summary")})
    return ModelabilityResult(rows, out, files)


def _row(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r.get(k, "") if r.get(k) is not None else "" for k in COLUMNS}


def write_modelability(rows: list[dict[str, Any]], out: Path, *, title: str) -> dict[str, str]:
    """``modelability.csv``, ``modelability.md`` and ``modelability.png`` in ``out``."""
    files = write_table(rows, COLUMNS, out, "modelability")
    done = [r for r in rows if r["status"] == "done"]
    if done:
        atomic_write_bytes(out / "modelability.png", _plot(done, title))
        files["plot"] = "modelability.png"
    return files


def _plot(rows: list[dict[str, Any]], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = sorted({r["reconstruction_metric"] for r in rows if r["reconstruction_metric"] not in ("", "lossless")})
    xlabel = f"reconstruction error ({', '.join(metrics) or 'none'}; lossless = 0)"
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    markers = "osD^vP*Xhp<>"
    by_tokenizer: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_tokenizer.setdefault(r["tokenizer"], []).append(r)
    # a legend, not labels at the points: close points would overprint them
    for n, (name, reps) in enumerate(by_tokenizer.items()):
        x = mean_interval([r["reconstruction_error"] if _number(r["reconstruction_error"]) else 0.0 for r in reps])
        y = mean_interval([r["bits_per_item"] for r in reps])
        tokens = mean_interval([r["tokens_per_item"] for r in reps if _number(r["tokens_per_item"])])["mean"]
        top1 = mean_interval([r["top1_accuracy"] for r in reps])["mean"]
        label = f"{name}: {tokens:.0f} tok, top-1 {top1:.2f}" if tokens is not None else name
        marker = markers[n % len(markers)]
        if y["n"] > 1:  # the mean over seeds, with its 95% interval on both axes
            ax.errorbar([x["mean"]], [y["mean"]], xerr=[x["half_width"]], yerr=[y["half_width"]], fmt=marker,
                        markersize=6, capsize=3, label=f"{label} (mean of {y['n']} seeds, 95% interval)")
        else:
            ax.scatter([x["mean"]], [y["mean"]], s=45, marker=marker, label=label)
    ax.legend(fontsize=7, loc="best")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test bits per item (lower: easier to model)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
