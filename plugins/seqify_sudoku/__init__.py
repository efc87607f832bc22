"""Built-in Sudoku plugin: the ``sudoku`` modality and its ``cells`` tokenizer.

Modules: :mod:`~seqify_sudoku.puzzles` (item type, solver, seeded generator),
:mod:`~seqify_sudoku.csvio` (CSV loader), :mod:`~seqify_sudoku.modality` (the
Modality and Tokenizer classes), :mod:`~seqify_sudoku.render` (pictures). Nothing
heavy is imported here: the registry holds "module:Class" strings.
"""

from seqify.hookspecs import hookimpl

_M = "seqify_sudoku.modality"


@hookimpl
def register_modalities(register):
    register(
        "sudoku",
        f"{_M}:Sudoku",
        "Sudoku completion: fill the blank cells of puzzles with unique solutions (generated or CSV).",
    )


@hookimpl
def register_tokenizers(register):
    register(
        "cells",
        f"{_M}:CellTokenizer",
        "One slot per cell in raster order; value = digit - 1; coords (row, col, box); clues given.",
        modality="sudoku",
    )
