"""Read Sudoku CSV files: one puzzle and its solution per row; bad rows reported, skipped.

Rows hold a puzzle and its solution as 81-character fields, ``0`` or ``.`` for a
blank. The first row decides how the file is read:

- a header that names a puzzle column (:data:`PUZZLE_HEADERS`) and a solution column
  (:data:`SOLUTION_HEADERS`), case-insensitive: those two columns are read and every
  other column is ignored (an id, a rating, the unnamed index column pandas writes,
  ``Unnamed: 0``, ...). The spellings of the public puzzle sets are known:
  ``quizzes,solutions`` (Kaggle "1 million Sudoku games"), ``id,puzzle,solution,clues,
  difficulty`` (Kaggle "3 million Sudoku puzzles with ratings"), ``puzzle,solution``
  (Kaggle "9 million Sudoku puzzles and solutions"), ``source,question,answer,rating``
  (sapientinc/sudoku-extreme, the HRM set), and these with a leading index column
  (``,quizzes,solutions`` or ``Unnamed: 0,quizzes,solutions``);
- a row of data (some field is a long run of digits and dots): there is no header
  (e.g. Rasmus Berg Palm's RRN "sudoku-hard" set); rows are ``puzzle,solution``, or
  ``index,puzzle,solution`` when the first row has a short integer before the two
  grids (``to_csv(header=False)`` with pandas' index);
- anything else is a header that names no known columns. It is not a bad row (it is
  neither counted nor skipped as one): it becomes one note, ``"unrecognized header:
  ..."``, appended to the ``notes`` list given to :func:`load_csv` (and logged as a
  warning). With two columns the rows are still read as ``puzzle,solution``, in that
  order; with more (or fewer) columns nothing says which column holds what, so
  :class:`~seqify.errors.DataError` is raised with the same message.

Every malformed data row is passed to ``report.add(path, line, reason)`` and skipped;
the rest load. Checks per row, in this order (the reason names the first one that
fails): number of fields, field lengths, legal characters, clues that contradict each
other, a solution that is not a valid grid, a solution that disagrees with a clue.
Uniqueness of the solution is not checked (use :func:`seqify_sudoku.solver.solve`
for that).
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import numpy as np

from seqify.data import RowReport
from seqify.errors import DataError

from seqify_sudoku.checks import item_problem
from seqify_sudoku.items import UNITS_27x9, SudokuItem, to_array

log = logging.getLogger("seqify.sudoku")

__all__ = ["PUZZLE_HEADERS", "SOLUTION_HEADERS", "load_csv", "write_csv"]

#: accepted (case-insensitive) names of the puzzle column, and where each is used:
#: "quizzes": Kaggle "1 million Sudoku games" (bryanpark/sudoku, ``quizzes,solutions``);
#: "puzzle": Kaggle "9 million Sudoku puzzles and solutions" (``puzzle,solution``) and
#: "3 million Sudoku puzzles with ratings" (``id,puzzle,solution,clues,difficulty``);
#: "question": sapientinc/sudoku-extreme, the HRM set (``source,question,answer,rating``);
#: "quiz" and "puzzles": singular / plural variants accepted by earlier versions
PUZZLE_HEADERS = ("quizzes", "quiz", "puzzles", "puzzle", "question")
#: accepted (case-insensitive) names of the solution column: "solutions" (1 million
#: games), "solution" (3 and 9 million sets), "answer" (sudoku-extreme)
SOLUTION_HEADERS = ("solutions", "solution", "answer")

#: a field that looks like (part of) a grid: digits and dots, at least this long
_GRID_LIKE = re.compile(r"[0-9.]{40,}")


def _header_columns(row: list[str]) -> tuple[int, int] | None:
    """(puzzle column, solution column) named by a header row, or None."""
    names = [field.strip().lower() for field in row]
    puzzle = next((names.index(h) for h in PUZZLE_HEADERS if h in names), None)
    solution = next((names.index(h) for h in SOLUTION_HEADERS if h in names), None)
    if puzzle is None or solution is None or puzzle == solution:
        return None
    return puzzle, solution


def _is_data_row(row: list[str]) -> bool:
    """A first row with a grid-like field is data (the file has no header)."""
    return any(_GRID_LIKE.fullmatch(field.strip()) for field in row)


def _headerless_layout(row: list[str]) -> tuple[tuple[int, int], int]:
    """Columns and field count of a file without a header, from its first row."""
    fields = [f.strip() for f in row]
    if (
        len(fields) == 3
        and fields[0].isdigit()
        and len(fields[0]) < 40
        and all(_GRID_LIKE.fullmatch(f) for f in fields[1:])
    ):
        return (1, 2), 3  # a leading index column
    return (0, 1), 2


def _unrecognized_header(row: list[str]) -> str:
    names = [field.strip() for field in row]
    lower = [n.lower() for n in names]
    missing = [
        f"{what} column (one of {', '.join(known)})"
        for what, known in (("puzzle", PUZZLE_HEADERS), ("solution", SOLUTION_HEADERS))
        if not any(h in lower for h in known)
    ]
    return f"unrecognized header: columns {names} name no {' and no '.join(missing) or 'distinct puzzle and solution columns'}"


def load_csv(
    path: str | Path, report: RowReport, *, chunk_rows: int = 20_000, notes: list[str] | None = None
) -> list[SudokuItem]:
    """All good rows of a Sudoku CSV file, in file order (blanks written as ``"0"``).

    Rows are checked in chunks with numpy (a million rows take seconds); a row that
    fails is checked again by :func:`~seqify_sudoku.checks.item_problem` to name
    the reason.

    Args:
        path: the CSV file.
        report: receives ``(str(path), line number, reason)`` for each skipped row;
            line numbers are 1-based lines of the file (the header is line 1).
        chunk_rows: rows checked together (default 20,000; bounds the memory used).
        notes: receives notes about the file that are not bad rows (default None: they
            are only logged): "unrecognized header: ..." when a two-column header
            names no known column (the rows are then read as ``puzzle,solution``).

    Raises:
        DataError: when the file does not exist or cannot be read as CSV text, or
            when its header names no known columns and has other than two columns
            (see the module docstring).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Sudoku CSV file {str(path)!r} does not exist")
    source = str(path)
    items: list[SudokuItem] = []
    chunk: list[tuple[int, str | None, str, str]] = []  # (line, reason or None, puzzle, solution)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # a BOM is dropped
            reader = csv.reader(fh)
            columns: tuple[int, int] = (0, 1)
            n_fields = 2
            first = True
            for row in reader:
                line = reader.line_num
                if first:
                    first = False
                    found = _header_columns(row)
                    if found is not None:
                        columns, n_fields = found, len(row)
                        continue
                    if _is_data_row(row) or not any(field.strip() for field in row):
                        columns, n_fields = _headerless_layout(row)
                    else:
                        problem = _unrecognized_header(row)
                        if len(row) != 2:
                            raise DataError(
                                f"{source}: {problem}; with {len(row)} columns there is no telling "
                                "which holds the puzzle and which the solution (rename them)"
                            )
                        note = f"{problem}; reading its 2 columns as puzzle,solution"
                        log.warning("%s: %s", source, note)
                        if notes is not None:
                            notes.append(note)
                        continue
                report.seen()
                if not row or all(not field.strip() for field in row):
                    chunk.append((line, "empty row", "", ""))
                elif len(row) != n_fields:
                    reason = f"wrong number of fields: expected {n_fields}, got {len(row)}"
                    chunk.append((line, reason, "", ""))
                else:
                    chunk.append((line, None, row[columns[0]].strip(), row[columns[1]].strip()))
                if len(chunk) >= chunk_rows:
                    _flush(chunk, source, report, items)
                    chunk = []
    except UnicodeDecodeError as exc:
        raise DataError(f"{source} is not a UTF-8 text file: {exc}") from None
    except csv.Error as exc:
        raise DataError(f"{source}: unreadable CSV near line {reader.line_num}: {exc}") from None
    _flush(chunk, source, report, items)
    return items


_PUZZLE_RE = re.compile(r"[0-9.]{81}")
_SOLUTION_RE = re.compile(r"[1-9]{81}")
_ALL_DIGITS = 0b1111111110  # bits 1..9
_POPCOUNT_1024 = np.array([bin(m).count("1") for m in range(1024)], dtype=np.int8)


def _grids_ok(puzzles: list[str], solutions: list[str]) -> np.ndarray:
    """``[N]`` bool: clues consistent, solution a valid grid, solution agrees with clues."""
    puz_N81 = to_array(puzzles).astype(np.int16)
    sol_N81 = to_array(solutions).astype(np.int16)
    units = UNITS_27x9
    sol_bits_N81 = np.left_shift(1, sol_N81)
    sol_ok_N = (np.bitwise_or.reduce(sol_bits_N81[:, units], axis=2) == _ALL_DIGITS).all(axis=1)
    clue_bits_N81 = np.where(puz_N81 > 0, np.left_shift(1, puz_N81), 0)
    clue_or_N27 = np.bitwise_or.reduce(clue_bits_N81[:, units], axis=2)
    n_clues_N27 = (puz_N81[:, units] > 0).sum(axis=2)
    clues_ok_N = (_POPCOUNT_1024[clue_or_N27] == n_clues_N27).all(axis=1)
    agree_N = ((puz_N81 == 0) | (puz_N81 == sol_N81)).all(axis=1)
    return sol_ok_N & clues_ok_N & agree_N


def _flush(
    chunk: list[tuple[int, str | None, str, str]], source: str, report: RowReport, items: list[SudokuItem]
) -> None:
    """Check a chunk of rows; report the bad ones and append the good ones, in order."""
    if not chunk:
        return
    candidates = [
        k
        for k, (_, reason, puzzle, solution) in enumerate(chunk)
        if reason is None and _PUZZLE_RE.fullmatch(puzzle) and _SOLUTION_RE.fullmatch(solution)
    ]
    good = set()
    if candidates:
        ok_N = _grids_ok([chunk[k][2] for k in candidates], [chunk[k][3] for k in candidates])
        good = {k for k, ok in zip(candidates, ok_N.tolist()) if ok}
    for k, (line, reason, puzzle, solution) in enumerate(chunk):
        if k in good:
            items.append(SudokuItem(puzzle.replace(".", "0"), solution))
            continue
        reason = reason or item_problem(puzzle, solution)
        if reason is None:  # cannot happen: the vectorized and the per-row checks agree
            raise AssertionError(f"{source}: row {line} failed the grid check but has no reason")
        report.add(source, line, reason)


def write_csv(path: str | Path, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> Path:
    """Write rows under a header (used for completions and for test fixtures)."""
    import io

    from seqify.io import atomic_write_text

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())
