"""Parallel decoding: sample quality and speed against k, the slots predicted per step.

Runs ``seqify bench`` cells through the Python API with the ``parallel`` orderer
(``k`` slots per step along a base order, RandAR / MaskGIT style), for k = 1, 2, 4, 8:

* Sudoku (generated puzzles) with the masked generator;
* QM9 molecules (graph tokenizer) with the causal generator.

On Sudoku one masked model, trained on random orders, is shared by every k (the
matrix's model cache), as MaskGIT decodes: only the decoding changes. On QM9 each k
trains its own causal model with block-causal attention (a causal model can only
decode the blocks it was trained on). Each cell scores the test split (nats per
token, exact block-by-block likelihood) and samples.
It prints one table per modality: k, sampling time per item, sample quality
(Sudoku: puzzle and cell accuracy; QM9: validity, uniqueness, FCD) and nats per
token, and writes them to ``OUT/summary.json``.

    python benchmarks/parallel_decoding.py --out runs/parallel --seed 0
    python benchmarks/parallel_decoding.py --quick-check   # smoke budget: checks that it runs
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from seqify.bench import BenchRequest, run_bench
from seqify.errors import NotApplicableError

#: name -> (BenchRequest fields, sample metrics shown)
CELLS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    # one masked model trained on random orders (any-order training), decoded k slots per step
    "sudoku": ({"modality": "sudoku", "generator": "masked", "train_orderer": "random"},
               ("puzzle_accuracy", "cell_accuracy")),
    "qm9": (
        {"modality": "molecule", "dataset": "qm9", "tokenizer": "graph", "generator": "causal"},
        ("validity", "uniqueness", "fcd"),
    ),
}


def run_cell(name: str, k: int, args: argparse.Namespace, budget: str) -> dict[str, Any]:
    """One bench run of ``name`` with ``parallel(k, base)``; the row of the table."""
    fields, shown = CELLS[name]
    req = BenchRequest(
        orderer="parallel",
        out=Path(args.out) / f"{name}-k{k}",
        budget=budget,
        steps=args.steps,
        seed=args.seed,
        device=args.device,
        data=Path(args.qm9) if name == "qm9" and args.qm9 else None,
        model_cache=Path(args.out) / "models",
        overrides={"orderer": {"k": k, "base": args.base}},
        **fields,
    )
    start = time.perf_counter()
    try:
        res = run_bench(req).results
    except NotApplicableError as exc:
        return {"k": k, "error": f"not applicable: {exc}"}
    metrics, timings = res["metrics"], res["timings"]
    row: dict[str, Any] = {
        "k": k,
        "sample_ms_per_item": timings.get("sample_per_item_ms"),
        **{m: metrics.get(m) for m in shown},
        "nats_per_token": res["modelability"].get("nats_per_token"),
        "train_s": timings.get("train_s"),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    return row


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_table(name: str, rows: list[dict[str, Any]]) -> None:
    shown = CELLS[name][1]
    cols = ["k", "sample_ms_per_item", *shown, "nats_per_token", "train_s"]
    print(f"\n{name} (orderer parallel, generator {CELLS[name][0]['generator']})")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        if "error" in row:
            print(f"| {row['k']} | {row['error']} |")
        else:
            print("| " + " | ".join(fmt(row.get(c)) for c in cols) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/parallel_decoding", help="folder for the bench runs and summary.json")
    parser.add_argument("--seed", type=int, default=0, help="seeds data splits, training, orders and sampling")
    parser.add_argument("--steps", type=int, default=None, help="override the budget's training steps")
    parser.add_argument("--ks", default="1,2,4,8", help="comma-separated values of k")
    parser.add_argument("--base", default="random", help="base order of the parallel orderer")
    parser.add_argument("--cells", default="sudoku,qm9", help=f"comma-separated, from: {', '.join(CELLS)}")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--qm9", default=None, help="a QM9 file, when the dataset is not found by default")
    parser.add_argument("--quick-check", action="store_true", help="smoke budget: only checks that everything runs")
    args = parser.parse_args()

    budget = "smoke" if args.quick_check else "quick"
    ks = [int(k) for k in args.ks.split(",")]
    names = [n.strip() for n in args.cells.split(",") if n.strip()]
    unknown = [n for n in names if n not in CELLS]
    if unknown:
        parser.error(f"unknown cell(s) {unknown}; choose from {list(CELLS)}")
    summary: dict[str, Any] = {
        "budget": budget, "seed": args.seed, "steps": args.steps, "base": args.base,
        "python": platform.python_version(), "cells": {},
    }
    for name in names:
        rows = [run_cell(name, k, args, budget) for k in ks]
        summary["cells"][name] = rows
        print_table(name, rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nwrote {out / 'summary.json'}")


if __name__ == "__main__":
    main()
