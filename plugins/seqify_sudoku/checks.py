"""Checks of Sudoku grids and items, each naming the first problem it finds.

Grids are 81-character strings (see :mod:`seqify_sudoku.items`).
"""

from __future__ import annotations

from seqify_sudoku.items import DIGITS, UNITS, unit_name

__all__ = ["grid_problem", "clue_problem", "is_valid_solution", "item_problem"]


def _repeat(digits_81: list[int], unit: tuple[int, ...]) -> int:
    """The first digit appearing twice in ``unit`` (0 when none)."""
    seen = 0
    for i in unit:
        d = digits_81[i]
        if d:
            bit = 1 << d
            if seen & bit:
                return d
            seen |= bit
    return 0


def grid_problem(grid: str) -> str | None:
    """None when no digit appears twice in a row, column or box of ``grid``, else the clash.

    Blanks (``"0"``) are skipped, so the same check serves a full grid (81 digits 1..9:
    None means it is valid) and a puzzle's clues (None means no two clues clash).
    """
    cells = [ord(ch) - 48 for ch in grid]
    for u, unit in enumerate(UNITS):
        d = _repeat(cells, unit)
        if d:
            return f"digit {d} appears twice in {unit_name(u)}"
    return None


#: the clues of a puzzle are checked exactly like a grid (blanks skipped); the name is kept
clue_problem = grid_problem


def is_valid_solution(grid: str, puzzle: str | None = None) -> bool:
    """True when ``grid`` is a valid full grid (and agrees with ``puzzle``'s clues)."""
    if not isinstance(grid, str) or len(grid) != 81 or not all("1" <= ch <= "9" for ch in grid):
        return False
    if grid_problem(grid) is not None:
        return False
    if puzzle is not None:
        return all(p in "0." or p == g for p, g in zip(puzzle, grid))
    return True


def _field_problem(name: str, text: str, allowed: str) -> str | None:
    if len(text) != 81:
        return f"wrong length: {name} has {len(text)} characters, expected 81"
    for pos, ch in enumerate(text):
        if ch not in allowed:
            return (
                f"illegal character: {ch!r} in {name} at position {pos + 1} "
                f"(row {pos // 9 + 1}, column {pos % 9 + 1})"
            )
    return None


def item_problem(puzzle: str, solution: str) -> str | None:
    """None when (puzzle, solution) is a usable Sudoku item, else the first problem.

    The reason starts with a category and a colon ("wrong length: ...", "illegal
    character: ...", "contradicting clues: ...", "invalid solution: ...",
    "solution disagrees with clue: ..."), so reports can count by category.
    ``puzzle`` may use ``"."`` for a blank. Uniqueness is not checked (costly).
    """
    for name, text, allowed in (("puzzle", puzzle, "0123456789."), ("solution", solution, DIGITS)):
        if not isinstance(text, str):
            return f"wrong type: {name} is {type(text).__name__}, expected str"
        problem = _field_problem(name, text, allowed)
        if problem:
            return problem
    puzzle = puzzle.replace(".", "0")
    problem = grid_problem(puzzle)
    if problem:
        return f"contradicting clues: {problem}"
    problem = grid_problem(solution)
    if problem:
        return f"invalid solution: {problem}"
    for pos, (p, s) in enumerate(zip(puzzle, solution)):
        if p != "0" and p != s:
            return (
                f"solution disagrees with clue: row {pos // 9 + 1}, column {pos % 9 + 1} "
                f"has clue {p} but solution {s}"
            )
    return None

