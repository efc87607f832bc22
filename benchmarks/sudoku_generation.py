"""How fast does the Sudoku plugin make puzzles with unique solutions?

    python benchmarks/sudoku_generation.py --n 100000 --clues 30 --seed 0

Measures, in this order:
  1. the solver-made base puzzles in one process (puzzles/s, ms each);
  2. the base pool for ``n`` puzzles with the default (or given) number of processes;
  3. the symmetry expansion of that pool to ``n`` distinct puzzles (numpy);
  4. the total for ``n`` puzzles (2 + 3), and checks a sample of the output with the
     solver (exact clue count, valid solution, unique solution).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time

import numpy as np

from seqify_sudoku.checks import is_valid_solution
from seqify_sudoku.generator import base_pool, default_pool_size, default_workers, expand_pool, make_base_puzzle
from seqify_sudoku.solver import solve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="puzzles to make (default 100,000)")
    parser.add_argument("--clues", type=int, default=30, help="clues per puzzle (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--pool-size", type=int, default=None, help="base puzzles (default: max(1000, n/10))")
    parser.add_argument("--workers", type=int, default=None, help="processes for the pool (default: cores, <= 8)")
    parser.add_argument("--single", type=int, default=200, help="base puzzles timed in one process (default 200)")
    parser.add_argument("--check", type=int, default=500, help="outputs verified with the solver (default 500)")
    args = parser.parse_args()

    pool_size = min(args.pool_size or default_pool_size(args.n), args.n)
    workers = default_workers(args.workers)
    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} cores, "
          f"{workers} worker process(es)")
    print(f"n={args.n:,} clues={args.clues} seed={args.seed} pool_size={pool_size:,}")

    t = time.perf_counter()
    for i in range(args.single):
        make_base_puzzle(args.clues, random.Random(10_000_000 + i))
    single_s = time.perf_counter() - t
    print(f"base puzzles, 1 process:   {args.single / single_s:9.1f} puzzles/s "
          f"({1000 * single_s / args.single:.2f} ms each)")

    t = time.perf_counter()
    pool = base_pool(pool_size, clues=args.clues, seed=args.seed, workers=workers)
    pool_s = time.perf_counter() - t
    print(f"base pool, {workers} process(es): {pool_size / pool_s:9.1f} puzzles/s "
          f"({pool_size:,} in {pool_s:.2f} s)")

    t = time.perf_counter()
    items = expand_pool(pool, args.n, np.random.default_rng([args.seed, args.clues, args.n, pool_size]))
    expand_s = time.perf_counter() - t
    print(f"symmetry expansion:        {args.n / expand_s:9.1f} puzzles/s ({args.n:,} in {expand_s:.2f} s)")

    total_s = pool_s + expand_s
    print(f"TOTAL for {args.n:,} puzzles:  {total_s:.2f} s = {args.n / total_s:,.0f} puzzles/s")

    distinct = len({item.puzzle for item in items})
    rng = random.Random(args.seed)
    sample = rng.sample(items, min(args.check, len(items)))
    t = time.perf_counter()
    ok_clues = all(item.clues == args.clues for item in items)
    ok_valid = all(is_valid_solution(item.solution, item.puzzle) for item in sample)
    ok_unique = all(solve(item.puzzle, limit=2) == [item.solution] for item in sample)
    check_s = time.perf_counter() - t
    print(f"checks: {distinct:,} distinct puzzles; all {args.clues} clues: {ok_clues}; "
          f"{len(sample)} sampled: valid {ok_valid}, unique solution {ok_unique} ({check_s:.2f} s)")
    if not (ok_clues and ok_valid and ok_unique and distinct == args.n):
        raise SystemExit("FAILED: an output is not a proper puzzle")


if __name__ == "__main__":
    main()
