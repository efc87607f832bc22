"""Built-in Sudoku plugin: the ``sudoku`` modality and its ``cells`` tokenizer.

Modules: :mod:`~seqify_sudoku.items` (item type, units, digit strings),
:mod:`~seqify_sudoku.solver` (search, the singles solver),
:mod:`~seqify_sudoku.generator` (seeded generator), :mod:`~seqify_sudoku.checks`
(grid and item checks), :mod:`~seqify_sudoku.csvio` (CSV loader),
:mod:`~seqify_sudoku.modality` (the Modality), :mod:`~seqify_sudoku.tokenizers` (the
``cells`` Tokenizer), :mod:`~seqify_sudoku.render` (pictures);
:mod:`~seqify_sudoku.puzzles` re-exports the first four for compatibility. Nothing
heavy is imported here: the registry holds "module:Class" strings.
"""

from seqify.hookspecs import hookimpl


@hookimpl
def register_modalities(register):
    register(
        "sudoku",
        "seqify_sudoku.modality:Sudoku",
        "Sudoku completion: fill the blank cells of puzzles with unique solutions (generated or CSV).",
    )


@hookimpl
def register_tokenizers(register):
    register(
        "cells",
        "seqify_sudoku.tokenizers:CellTokenizer",
        "One slot per cell in raster order; value = digit - 1; coords (row, col, box); clues given.",
        modality="sudoku",
    )
