"""Kept for compatibility: the names ``seqify_sudoku.puzzles`` held before it was split.

New code imports from the module that defines each name:
:mod:`seqify_sudoku.items` (the item type, units, digit strings and arrays),
:mod:`seqify_sudoku.solver` (search, uniqueness, the singles solver),
:mod:`seqify_sudoku.generator` (the seeded generator) and
:mod:`seqify_sudoku.checks` (grid and item checks).
"""

from seqify_sudoku.checks import clue_problem, grid_problem, is_valid_solution, item_problem
from seqify_sudoku.generator import (
    DIFFICULTIES,
    augment,
    base_pool,
    default_pool_size,
    default_workers,
    expand_pool,
    generate_puzzles,
    make_base_puzzle,
)
from seqify_sudoku.items import DIGITS, UNITS, UNITS_27x9, SudokuItem, to_array, to_strings, unit_name
from seqify_sudoku.solver import count_solutions, random_grid, solve, solve_by_singles

__all__ = [
    "SudokuItem",
    "DIGITS",
    "UNITS",
    "UNITS_27x9",
    "unit_name",
    "to_array",
    "to_strings",
    "solve",
    "count_solutions",
    "random_grid",
    "make_base_puzzle",
    "default_workers",
    "base_pool",
    "augment",
    "default_pool_size",
    "expand_pool",
    "generate_puzzles",
    "grid_problem",
    "clue_problem",
    "item_problem",
    "is_valid_solution",
    "solve_by_singles",
    "DIFFICULTIES",
]
