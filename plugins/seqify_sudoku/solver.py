"""Solving Sudoku: an exact bitmask search and the singles-only human solver.

:func:`solve` and :func:`count_solutions` search depth-first, filling the most
constrained cell first (fast enough to check uniqueness while generating);
:func:`solve_by_singles` applies only naked and hidden singles and decides the
difficulty bands. Grids are 81-character strings (see :mod:`seqify_sudoku.items`).
"""

from __future__ import annotations

import random
from functools import lru_cache

from seqify_sudoku.items import UNITS

__all__ = ["solve", "count_solutions", "random_grid", "solve_by_singles"]

_ROW = [i // 9 for i in range(81)]
_COL = [i % 9 for i in range(81)]
_BOX = [(i // 27) * 3 + (i % 9) // 3 for i in range(81)]
_POP = [bin(m).count("1") for m in range(512)]
_DIGITS_OF = [tuple(d for d in range(1, 10) if m >> (d - 1) & 1) for m in range(512)]


def _cells(grid: str) -> list[int]:
    if len(grid) != 81:
        raise ValueError(f"a Sudoku grid has 81 characters, got {len(grid)}")
    out = []
    for pos, ch in enumerate(grid):
        if ch == "." or ch == "0":
            out.append(0)
        elif "1" <= ch <= "9":
            out.append(ord(ch) - 48)
        else:
            raise ValueError(
                f"illegal character {ch!r} at position {pos + 1} (row {pos // 9 + 1}, column {pos % 9 + 1})"
            )
    return out


def _search(cells: list[int], limit: int, rng: random.Random | None = None) -> list[list[int]]:
    """Depth-first search with bitmasks, filling the most constrained cell first.

    Returns up to ``limit`` solutions (lists of 81 ints). With ``rng`` the candidate
    digits of each cell are tried in random order (used to draw random full grids).
    """
    rows, cols, boxes = [0] * 9, [0] * 9, [0] * 9
    for i, v in enumerate(cells):
        if v:
            bit = 1 << (v - 1)
            r, c, b = _ROW[i], _COL[i], _BOX[i]
            if (rows[r] | cols[c] | boxes[b]) & bit:
                return []  # two clues contradict each other
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
    grid = list(cells)
    empty = [i for i in range(81) if not cells[i]]
    n = len(empty)
    solutions: list[list[int]] = []
    R, C, B, POP, DIG = _ROW, _COL, _BOX, _POP, _DIGITS_OF

    def dfs(k: int) -> bool:
        if k == n:
            solutions.append(grid.copy())
            return len(solutions) >= limit
        best_j, best_p, best_m = k, 10, 0
        for j in range(k, n):
            i = empty[j]
            m = ~(rows[R[i]] | cols[C[i]] | boxes[B[i]]) & 511
            p = POP[m]
            if p < best_p:
                best_j, best_p, best_m = j, p, m
                if p <= 1:
                    break
        if best_p == 0:
            return False
        empty[k], empty[best_j] = empty[best_j], empty[k]
        i = empty[k]
        r, c, b = R[i], C[i], B[i]
        digits = DIG[best_m]
        if rng is not None and len(digits) > 1:
            digits = list(digits)
            rng.shuffle(digits)
        for d in digits:
            bit = 1 << (d - 1)
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
            grid[i] = d
            done = dfs(k + 1)
            rows[r] ^= bit
            cols[c] ^= bit
            boxes[b] ^= bit
            if done:
                grid[i] = 0
                return True
        grid[i] = 0
        empty[k], empty[best_j] = empty[best_j], empty[k]
        return False

    if limit > 0:
        dfs(0)
    return solutions


def solve(puzzle: str, limit: int = 2) -> list[str]:
    """Up to ``limit`` solutions of a puzzle (``"0"`` or ``"."`` for a blank).

    Args:
        puzzle: 81 characters, row-major.
        limit: stop after this many solutions (default 2: enough to tell unique).

    Returns an empty list when the puzzle has no solution (or its clues contradict).
    Raises ValueError for a string that is not a puzzle.
    """
    return ["".join(map(str, s)) for s in _search(_cells(puzzle), limit)]


def count_solutions(puzzle: str, limit: int = 2) -> int:
    """Number of solutions, counted up to ``limit``."""
    return len(_search(_cells(puzzle), limit))


def random_grid(rng: random.Random) -> list[int]:
    """A random complete valid grid (81 ints), drawn by randomized search."""
    return _search([0] * 81, 1, rng)[0]


_PEERS = [
    tuple(j for j in range(81) if j != i and (_ROW[j] == _ROW[i] or _COL[j] == _COL[i] or _BOX[j] == _BOX[i]))
    for i in range(81)
]


def _peer_mask(cells: list[int], i: int) -> int:
    """Bitmask of the digits the clues in cell ``i``'s row, column and box hold."""
    mask = 0
    for j in _PEERS[i]:
        v = cells[j]
        if v:
            mask |= 1 << (v - 1)
    return mask



@lru_cache(maxsize=1 << 16)  # the validation probe and every evaluation ask about the same puzzles
def solve_by_singles(puzzle: str) -> tuple[str, int]:
    """Fill ``puzzle`` with the two simplest human strategies only; returns
    ``(grid, blanks left)``.

    - naked single: a blank whose row, column and box leave one digit;
    - hidden single: a digit that fits only one blank of a row, column or box.

    Applied until neither fills a cell. A puzzle with 0 blanks left is *singles
    solvable*: no search, no pairs or chains (the easiest band of Kim, Shah et al.'s
    strategy-filtered puzzles); the rest need more.
    """
    cells = [ord(ch) - 48 if ch != "." else 0 for ch in puzzle]
    progress = True
    while progress:
        progress = False
        cand = [0 if cells[i] else 511 & ~_peer_mask(cells, i) for i in range(81)]
        for i in range(81):
            if not cells[i] and _POP[cand[i]] == 1:
                cells[i] = _DIGITS_OF[cand[i]][0]
                progress = True
        if progress:
            continue
        for unit in UNITS:
            for d in range(1, 10):
                bit = 1 << (d - 1)
                spots = [i for i in unit if not cells[i] and cand[i] & bit]
                if len(spots) == 1 and all(cells[i] != d for i in unit):
                    cells[spots[0]] = d
                    progress = True
                    break
            if progress:
                break
    return "".join(map(str, cells)), cells.count(0)
