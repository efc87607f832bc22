"""Sampling time against k, the slots predicted per step, measured in one process.

Loads the models `benchmarks/parallel_decoding.py` trained (its --out folder), and
times `model.sample` on the same templates for each k, one after the other in this
process (so the machine's load is shared alike), several repeats, best of the
repeats. Prints ms per item and the ratio to k = 1. Each run is loaded through
trained_run.py (its data too, with the tokenizer restored: seconds per run, outside the
timed part).

    python benchmarks/parallel_sampling_time.py --runs runs/parallel --n 250 --repeats 3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from seqify.types import collate
from trained_run import load_trained_run  # benchmarks/ is on sys.path


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
        _, cell, _, model, _ = load_trained_run(Path(args.runs) / f"{args.cell}-k{k}")
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
