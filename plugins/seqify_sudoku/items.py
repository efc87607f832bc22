"""The Sudoku item type and the grid's layout: units, digit strings and arrays.

Grids are strings of 81 characters in row-major (raster) order: ``"1"``..``"9"`` for a
digit and ``"0"`` for a blank. This module uses numpy and the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SudokuItem", "DIGITS", "UNITS", "UNITS_27x9", "unit_name", "to_array", "to_strings"]

DIGITS = "123456789"
#: cells of each unit: 9 rows, then 9 columns, then 9 boxes (27 lists of 9 indices)
UNITS: tuple[tuple[int, ...], ...] = (
    tuple(tuple(r * 9 + c for c in range(9)) for r in range(9))
    + tuple(tuple(r * 9 + c for r in range(9)) for c in range(9))
    + tuple(
        tuple((br * 3 + r) * 9 + bc * 3 + c for r in range(3) for c in range(3))
        for br in range(3)
        for bc in range(3)
    )
)
#: the same as a ``[27, 9]`` index array
UNITS_27x9 = np.array(UNITS, dtype=np.intp)


@dataclass(frozen=True, slots=True)
class SudokuItem:
    """One Sudoku: a puzzle and its solution, 81 characters each, row-major.

    Args:
        puzzle: ``"0"`` for a blank, ``"1"``..``"9"`` for a clue.
        solution: the solved grid, digits ``"1"``..``"9"`` only.

    The constructor does not validate (the generator makes millions of these);
    :func:`~seqify_sudoku.checks.item_problem` does, and the tokenizer calls it.
    """

    puzzle: str
    solution: str

    @property
    def clues(self) -> int:
        """Number of given cells."""
        return 81 - self.puzzle.count("0")


def unit_name(unit: int) -> str:
    """``"row 3"``, ``"column 7"`` or ``"box 5"`` (1-based) for a unit index in UNITS."""
    kind = ("row", "column", "box")[unit // 9]
    return f"{kind} {unit % 9 + 1}"


def to_array(grids: list[str]) -> np.ndarray:
    """``[N, 81]`` uint8 digits from strings (``"."`` read as 0)."""
    raw = "".join(grids).replace(".", "0").encode("ascii")
    return (np.frombuffer(raw, dtype=np.uint8) - 48).reshape(len(grids), 81)


def to_strings(digits_N81: np.ndarray) -> list[str]:
    """81-character strings from ``[N, 81]`` digits."""
    raw = (digits_N81.astype(np.uint8) + 48).tobytes().decode("ascii")
    return [raw[k : k + 81] for k in range(0, len(raw), 81)]

