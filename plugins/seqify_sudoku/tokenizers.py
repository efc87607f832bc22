"""The Sudoku cell tokenizer: one slot per cell, row-major, the clues given."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from seqify.protocols import BaseTokenizer
from seqify.types import KindSpec, TokenizerSpec, TokenSet

from seqify_sudoku.checks import item_problem
from seqify_sudoku.items import SudokuItem

__all__ = ["CellTokenizer", "CellTokenizerOptions"]

_DIGIT_LABELS = tuple("123456789")
_ROW_81 = torch.arange(81) // 9
_COL_81 = torch.arange(81) % 9
_BOX_81 = (_ROW_81 // 3) * 3 + _COL_81 // 3
_COORDS_81x3 = torch.stack([_ROW_81, _COL_81, _BOX_81], dim=1)


def _digits(text: str, offset: int) -> np.ndarray:
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64) - offset


class CellTokenizerOptions(BaseModel):
    """The cell tokenizer has no settings."""

    model_config = ConfigDict(extra="forbid")


class CellTokenizer(BaseTokenizer):
    """One slot per cell, row-major; a slot's value is its digit minus one.

    Coordinates are (row, column, box), each in 0..8; the clue cells are given.
    ``decode`` returns the 81-digit solution string (the clues are the given flags,
    and the puzzle string is kept in ``meta["puzzle"]``), so the round trip of a
    :class:`SudokuItem` gives back its ``solution``.
    """

    name = "cells"
    config_model: ClassVar[type[BaseModel]] = CellTokenizerOptions

    def __init__(self) -> None:
        self._spec = TokenizerSpec(
            kinds=(KindSpec("digit", 9, labels=_DIGIT_LABELS),),
            coord_names=("row", "col", "box"),
            coord_sizes=(9, 9, 9),
            max_len=81,
            lossless=True,
        )

    def __repr__(self) -> str:
        return "CellTokenizer()"

    @property
    def spec(self) -> TokenizerSpec:
        """9 digit values, coordinates (row, col, box), 81 slots."""
        return self._spec

    def order_prior(self, batch: Any) -> None:
        """No structural prior: a good Sudoku order depends on the values (which cells
        the clues settle), so a learned order starts from the model's own confidence
        (``learned``'s ``margin_init``) instead of a fixed layout order."""
        return None

    def encode(self, item: SudokuItem) -> TokenSet:
        """A :class:`SudokuItem` (or any object with ``puzzle`` and ``solution``) to 81 slots.

        Raises ValueError naming the problem for a malformed item.
        """
        puzzle = getattr(item, "puzzle", None)
        solution = getattr(item, "solution", None)
        if puzzle is None or solution is None:
            raise ValueError(
                f"expected a SudokuItem with puzzle and solution, got {type(item).__name__}: {item!r:.120}"
            )
        problem = item_problem(puzzle, solution)
        if problem:
            raise ValueError(f"Sudoku item with puzzle {str(puzzle)[:81]!r}: {problem}")
        puzzle = puzzle.replace(".", "0")
        values = torch.from_numpy(_digits(solution, 49))
        given = torch.from_numpy(_digits(puzzle, 48) > 0)
        return TokenSet(
            values=values,
            kinds=torch.zeros(81, dtype=torch.long),
            coords=_COORDS_81x3.clone(),
            given=given,
            meta={"puzzle": puzzle},
        )

    def decode(self, tokens: TokenSet) -> str | None:
        """The 81-digit grid the slots hold (values + 1); None unless 81 values in 0..8."""
        values = tokens.values.detach().cpu()
        if values.shape != (81,) or bool((values < 0).any()) or bool((values > 8).any()):
            return None
        return "".join(_DIGIT_LABELS[int(v)] for v in values.tolist())
