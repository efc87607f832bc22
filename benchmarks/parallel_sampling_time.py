"""Sampling time against k, the slots predicted per step, measured in one process.

Loads the models `benchmarks/parallel_decoding.py` trained (its --out folder), and
times `model.sample` on the same templates for each k, one after the other in this
process (so the machine's load is shared alike), several repeats, best of the
repeats. Prints ms per item and the ratio to k = 1.

    python benchmarks/parallel_sampling_time.py --runs runs/parallel --n 250 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from seqify.bench import BenchRequest, build_model, resolve_cell
from seqify.io import load_checkpoint
from seqify.types import collate


def load_cell(run: Path):
    """The cell's resolved components and its trained model (weights only)."""
    state = load_checkpoint(run / "checkpoint.pt")
    asked = json.loads(state["request_json"])
    config = json.loads(state["config_json"])
    req = BenchRequest(modality=asked["modality"], orderer=asked["orderer"], out=run, dataset=asked["dataset"],
                       tokenizer=asked["tokenizer"], generator=asked["generator"], budget=asked["budget"],
                       seed=asked["seed"], device="cpu", overrides=config, train_orderer=asked["train_orderer"])
    cell = resolve_cell(req)
    cell.tokenizer.load_state_dict(state["tokenizer"])
    model = build_model(cell, cell.tokenizer.spec, asked["seed"])
    model.load_state_dict(state["model"])
    return cell, model.eval()


def time_sampling(cell, model, n: int, repeats: int, seed: int) -> float:
    """Best-of-``repeats`` seconds to fill ``n`` templates."""
    blank = cell.tokenizer.blank()
    if blank is None:
        raise SystemExit(f"{cell.names['tokenizer']}: no blank layout to time unconditional sampling on")
    template = collate([blank.with_values(blank.values) for _ in range(n)])
    best = float("inf")
    for _ in range(repeats):
        rng = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        with torch.no_grad():
            model.sample(template, cell.orderer, rng=rng, temperature=1.0)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/parallel", help="the --out folder of parallel_decoding.py")
    parser.add_argument("--cell", default="qm9", help="cell name prefix (qm9 or sudoku)")
    parser.add_argument("--ks", default="1,2,4,8")
    parser.add_argument("--n", type=int, default=250, help="templates per timing (one batch)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for k in [int(x) for x in args.ks.split(",")]:
        cell, model = load_cell(Path(args.runs) / f"{args.cell}-k{k}")
        seconds = time_sampling(cell, model, args.n, args.repeats, args.seed)
        rows.append((k, 1000 * seconds / args.n))
    base = rows[0][1]
    print(f"{args.cell}: sampling {args.n} items, best of {args.repeats}, threads={torch.get_num_threads()}")
    print("| k | ms per item | ratio to k=1 |")
    print("|---|---|---|")
    for k, ms in rows:
        print(f"| {k} | {ms:.2f} | {base / ms:.2f}x |")


if __name__ == "__main__":
    main()
