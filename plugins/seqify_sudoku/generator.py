"""A fast seeded generator of Sudoku puzzles with unique solutions.

How :func:`generate_puzzles` is fast: it first builds a small *pool* of base puzzles
with a real solver (a random full grid, then clues removed one at a time in random
order, keeping each removal only while the solution stays unique, down to the
requested clue count), then multiplies the pool with the Sudoku symmetry group,
vectorized in numpy. Every group element (digit relabelling, row swaps within a
band, band swaps, column swaps within a stack, stack swaps, transposition) maps a
valid grid to a valid grid and a puzzle with a unique solution to a puzzle with a
unique solution and the same number of clues, so every output is a proper puzzle.
The group has 9! * 6^8 * 2 (about 1.2e12) elements, so repeats are rare; they are
removed anyway. Outputs made from the same base puzzle are equivalent puzzles (same
difficulty, different cells and digits): ``pool_size`` sets how many distinct ones
there are.
"""

from __future__ import annotations

import logging
import os
import random
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import lru_cache
from multiprocessing import get_context

import numpy as np

from seqify_sudoku.items import SudokuItem, to_array, to_strings
from seqify_sudoku.solver import _peer_mask, _search, random_grid, solve_by_singles

log = logging.getLogger("seqify.sudoku")

__all__ = [
    "DIFFICULTIES",
    "make_base_puzzle",
    "default_workers",
    "base_pool",
    "augment",
    "default_pool_size",
    "expand_pool",
    "generate_puzzles",
]


def make_base_puzzle(clues: int, rng: random.Random, *, max_tries: int = 100) -> tuple[str, str]:
    """One puzzle with a unique solution and exactly ``clues`` clues, from scratch.

    Draws a random full grid and blanks cells in random order, keeping a blank only
    if the puzzle still has one solution; stops at ``clues`` clues. When a grid gets
    stuck above that count (every remaining clue is needed), starts over with a new
    grid, up to ``max_tries`` grids.

    Args:
        clues: number of clues wanted (17..81; below ~22 this gets slow or fails).
        rng: the random source (consumed).
        max_tries: grids to try before giving up with a ValueError.

    Returns ``(puzzle, solution)`` strings.
    """
    if not 17 <= clues <= 81:
        raise ValueError(f"clues must be between 17 and 81, got {clues}")
    for _ in range(max_tries):
        solution = random_grid(rng)
        cells = list(solution)
        remaining = 81
        order = list(range(81))
        rng.shuffle(order)
        for i in order:
            if remaining == clues:
                break
            keep = cells[i]
            cells[i] = 0
            # the clues around cell i hold the 8 other digits: its value stays forced
            # and the solution stays unique without a search
            if _peer_mask(cells, i) | (1 << (keep - 1)) == 511 or len(_search(cells, 2)) == 1:
                remaining -= 1
            else:
                cells[i] = keep
        if remaining == clues:
            return "".join(map(str, cells)), "".join(map(str, solution))
    raise ValueError(
        f"could not make a puzzle with {clues} clues in {max_tries} tries; "
        "random clue removal rarely gets below ~22 clues, ask for more clues"
    )


def _seed_int(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0])


#: puzzle difficulty bands a generated split can be restricted to (see solve_by_singles)
DIFFICULTIES = ("any", "singles", "beyond-singles")


def _accepts(difficulty: str, puzzle: str) -> bool:
    if difficulty == "any":
        return True
    singles = solve_by_singles(puzzle)[1] == 0
    return singles if difficulty == "singles" else not singles


def _base_puzzle(clues: int, seed: int, i: int, difficulty: str) -> tuple[str, str]:
    """Base puzzle ``i``: the first of its seeded candidates in the difficulty band."""
    for attempt in range(1000):
        parts = (seed, clues, i) if attempt == 0 else (seed, clues, i, attempt)
        pair = make_base_puzzle(clues, random.Random(_seed_int(*parts)))
        if _accepts(difficulty, pair[0]):
            return pair
    raise ValueError(f"no {difficulty!r} puzzle with {clues} clues in 1000 tries: ask for another clue count")


def _pool_chunk(args: tuple[int, int, int, int, str]) -> list[tuple[str, str]]:
    clues, seed, start, stop, difficulty = args
    # each base puzzle has its own seed, so the pool does not depend on the chunking
    return [_base_puzzle(clues, seed, i, difficulty) for i in range(start, stop)]


def default_workers(workers: int | None = None) -> int:
    """``workers`` if given, else the usable cores (at most 8)."""
    if workers is not None:
        return max(1, workers)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def base_pool(
    size: int, *, clues: int = 30, seed: int = 0, workers: int | None = None, difficulty: str = "any"
) -> list[tuple[str, str]]:
    """``size`` base puzzles made by :func:`make_base_puzzle`, seeded per puzzle.

    Args:
        size: number of base puzzles.
        clues: clues per puzzle (default 30).
        difficulty: "any", or only puzzles :func:`~seqify_sudoku.solver.solve_by_singles` solves ("singles"),
            or only those it does not ("beyond-singles"); base puzzle ``i`` is then the
            first of its seeded candidates in that band.
        seed: base seed; puzzle ``i`` depends only on (seed, clues, i).
        workers: processes to use (default: the usable cores, at most 8; 1 runs in
            this process). The result does not depend on it. Pools of 256 or more
            use spawned processes: from a script, call this under
            ``if __name__ == "__main__":``. If processes cannot start, one is used.
    """
    if size < 0:
        raise ValueError(f"pool size must be >= 0, got {size}")
    n_workers = default_workers(workers)
    if n_workers == 1 or size < 256:  # starting processes costs more than it saves
        return _pool_chunk((clues, seed, 0, size, difficulty))
    n_chunks = n_workers * 4
    bounds = [size * k // n_chunks for k in range(n_chunks + 1)]
    jobs = [(clues, seed, a, b, difficulty) for a, b in zip(bounds, bounds[1:]) if b > a]
    try:
        with ProcessPoolExecutor(n_workers, mp_context=get_context("spawn")) as pool:
            chunks = list(pool.map(_pool_chunk, jobs))
    except (OSError, RuntimeError, BrokenProcessPool) as exc:  # no processes here: go on in one
        log.warning("Sudoku base pool: worker processes failed (%s); using one process", exc)
        chunks = [_pool_chunk(job) for job in jobs]
    return [pair for chunk in chunks for pair in chunk]



def _random_perms(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """``[n, k]``: one uniformly random permutation of range(k) per row."""
    return np.argsort(rng.random((n, k)), axis=1)


def _line_perms(rng: np.random.Generator, n: int) -> np.ndarray:
    """``[n, 9]`` row (or column) permutations that keep bands (stacks) together."""
    band_N3 = _random_perms(rng, n, 3)
    within_N33 = _random_perms(rng, n * 3, 3).reshape(n, 3, 3)
    return (band_N3[:, :, None] * 3 + within_N33).reshape(n, 9)


def augment(
    puzzles_N81: np.ndarray, solutions_N81: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Apply one random Sudoku symmetry per row to puzzles and their solutions.

    The same transformation (transpose or not, then row and column permutations
    that keep bands and stacks, then a digit relabelling) is applied to a puzzle
    and its solution, so clue counts, validity and uniqueness are preserved.

    Args:
        puzzles_N81: ``[N, 81]`` digits, 0 for a blank.
        solutions_N81: ``[N, 81]`` digits 1..9.
        rng: numpy generator (consumed).

    Returns new ``[N, 81]`` uint8 arrays; the inputs are not modified.
    """
    n = puzzles_N81.shape[0]
    both_2N99 = np.stack([puzzles_N81, solutions_N81]).reshape(2, n, 9, 9).astype(np.uint8)
    flip_N = rng.random(n) < 0.5
    both_2N99 = np.where(flip_N[None, :, None, None], both_2N99.transpose(0, 1, 3, 2), both_2N99)
    rows_N9 = _line_perms(rng, n)
    cols_N9 = _line_perms(rng, n)
    idx_N = np.arange(n)[:, None, None]
    both_2N99 = both_2N99[:, idx_N, rows_N9[:, :, None], cols_N9[:, None, :]]
    relabel_N10 = np.concatenate(
        [np.zeros((n, 1), dtype=np.uint8), (_random_perms(rng, n, 9) + 1).astype(np.uint8)], axis=1
    )
    flat_2N81 = both_2N99.reshape(2, n, 81)
    out = [np.take_along_axis(relabel_N10, flat_2N81[k].astype(np.intp), axis=1) for k in range(2)]
    return out[0], out[1]


def default_pool_size(n: int) -> int:
    """Base puzzles used for ``n`` outputs by default: one per 10, at least 1,000, at most n."""
    return min(n, max(1000, n // 10))


def expand_pool(pool: list[tuple[str, str]], n: int, rng: np.random.Generator) -> list[SudokuItem]:
    """``n`` distinct puzzles, each a random symmetry of a base puzzle from ``pool``.

    The base puzzles are used about equally often (a shuffled round-robin), then
    :func:`augment` transforms each copy; repeats are dropped and replaced.

    Args:
        pool: ``(puzzle, solution)`` pairs with unique solutions.
        n: number of puzzles wanted.
        rng: numpy generator (consumed).
    """
    if n == 0:
        return []
    if not pool:
        raise ValueError("expand_pool needs at least one base puzzle")
    base_puz_P81 = to_array([p for p, _ in pool])
    base_sol_P81 = to_array([s for _, s in pool])
    seen: dict[str, str] = {}
    rounds = 0
    while len(seen) < n:
        need = n - len(seen)
        which_N = rng.permutation(np.resize(np.arange(len(pool)), need))
        puz_N81, sol_N81 = augment(base_puz_P81[which_N], base_sol_P81[which_N], rng)
        for p, s in zip(to_strings(puz_N81), to_strings(sol_N81)):
            if p not in seen:
                seen[p] = s
        rounds += 1
        if rounds > 100:  # only possible for a pool of a few highly symmetric puzzles
            raise ValueError(f"could not draw {n} distinct puzzles from a pool of {len(pool)}")
    return [SudokuItem(p, s) for p, s in list(seen.items())[:n]]


def generate_puzzles(
    n: int,
    *,
    clues: int = 30,
    seed: int = 0,
    pool_size: int | None = None,
    workers: int | None = None,
    difficulty: str = "any",
) -> list[SudokuItem]:
    """``n`` distinct Sudoku puzzles with unique solutions and exactly ``clues`` clues.

    Makes ``min(pool_size, n)`` base puzzles with the solver (see :func:`base_pool`),
    then draws each output from a base puzzle under a random symmetry of the Sudoku
    group (see :func:`expand_pool`, :func:`augment` and the module docstring). The
    same (n, clues, seed, pool_size) always gives the same puzzles in the same
    order, whatever ``workers`` is. Results are cached in memory (the last 6 calls).

    Args:
        n: number of puzzles.
        clues: clues per puzzle (default 30; 17..81, below ~22 generation may fail).
        seed: seed of everything (default 0).
        pool_size: number of base puzzles made by the solver (default None: see
            :func:`default_pool_size`); the cost is linear in it, the variety of
            distinct (non-equivalent) puzzles grows with it.
        workers: processes for the pool (default: the usable cores, at most 8).
        difficulty: "any" (default), "singles" or "beyond-singles" (see :func:`base_pool`;
            the symmetries keep a puzzle in its band).
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if pool_size is None:
        pool_size = default_pool_size(n)
    if pool_size < 1:
        raise ValueError(f"pool_size must be >= 1, got {pool_size}")
    return list(_generate(n, clues, seed, pool_size, workers, difficulty))


@lru_cache(maxsize=6)
def _generate(n: int, clues: int, seed: int, pool_size: int, workers: int | None,
              difficulty: str = "any") -> tuple[SudokuItem, ...]:
    if n == 0:
        return ()
    pool = base_pool(min(pool_size, n), clues=clues, seed=seed, workers=workers, difficulty=difficulty)
    rng = np.random.default_rng([seed, clues, n, pool_size])
    return tuple(expand_pool(pool, n, rng))

