"""The Sudoku modality and its cell tokenizer.

Task: complete. A test item is a puzzle; its clues are given slots, and a generator
fills the other cells. A completion counts as solved only when all 81 cells are
right (as in Kim, Shah et al., ICML 2025).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from seqify.config import budget_preset, validate_model
from seqify.data import RowReport
from seqify.errors import DataError, UnknownComponentError
from seqify.protocols import BaseModality, BaseTokenizer, Splits
from seqify.types import KindSpec, TokenizerSpec, TokenSet

from seqify_sudoku.csvio import load_csv, write_csv
from seqify_sudoku.puzzles import (
    SudokuItem,
    default_pool_size,
    generate_puzzles,
    is_valid_solution,
    item_problem,
    solve_by_singles,
)

__all__ = ["CellTokenizer", "CellTokenizerOptions", "Sudoku", "SudokuOptions", "SUDOKU_BUDGETS"]

#: Configuration overrides per budget, in the shape of ``seqify.config.BenchConfig``.
#: smoke: seconds (CI). quick: minutes on a 2-core CPU. full: one GPU, about the scale
#: of Kim et al.'s masked model (~6M parameters: d_model 256 x 8 layers) on 200k puzzles.
#: Completions are decoded greedily (temperature 0): a puzzle has one right answer.
SUDOKU_BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "train": {"steps": 20, "batch_size": 32, "warmup_steps": 2, "val_items": 32},
        "eval": {"n_test": 32, "n_samples": 32, "temperature": 0.0},
        "data": {"limit": 256},
        "size": "micro",
    },
    "quick": {
        # bf16 autocast on the CPU too: about twice the steps per second where the CPU has
        # native bf16 (AVX512-BF16, AMX); scoring stays float32. A moving average of the
        # weights (ema) and lr 2e-3 suit the short run (benchmarks/RESULTS.md, issue 11).
        "train": {"steps": 3000, "batch_size": 64, "lr": 2e-3, "warmup_steps": 100, "val_items": 256,
                  "eval_every": 250, "probe_items": 128, "precision": "bf16", "ema": 0.99},
        "eval": {"n_test": 256, "n_samples": 256, "temperature": 0.0},
        "data": {"limit": 20_000},
        "size": "small",
        # structure-aware attention: one head each for row, column and box (the masked
        # generator and the learned order built on it; the causal one has no such heads)
        "per_generator": {"masked": {"generator": {"axis_heads": True}}},
    },
    "full": {
        "train": {
            "steps": 50_000,
            "batch_size": 256,
            "lr": 5e-4,
            "warmup_steps": 2_000,
            "eval_every": 2_500,
            "val_items": 1_000,
        },
        "eval": {"n_test": 1_000, "n_samples": 1_000, "batch_size": 500, "temperature": 0.0},
        "data": {"limit": 200_000},
        "size": "base",
        "per_generator": {"masked": {"generator": {"axis_heads": True}}},
    },
}

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


class SudokuOptions(BaseModel):
    """Settings of the Sudoku modality (the defaults are what ``seqify bench`` uses)."""

    model_config = ConfigDict(extra="forbid")

    clues: int = Field(30, ge=17, le=80, description="clues per generated puzzle")
    difficulty: Literal["any", "singles", "beyond-singles"] = Field(
        "any", description="generated puzzles: any (default), only those naked and hidden singles solve "
                           "('singles', the easiest band of Kim, Shah et al.'s strategy-filtered data), or only "
                           "those that need more ('beyond-singles', the hard set)")
    pool_size: int | None = Field(
        None,
        ge=1,
        description="base puzzles made by the solver for the generated training split "
        "(None: one per 10 training puzzles, at least 1,000, at most all of them)",
    )
    eval_pool_size: int = Field(
        500, ge=1, description="base puzzles for each of the generated validation and test splits"
    )
    n_val: int = Field(1000, ge=1, description="generated validation puzzles")
    n_test: int = Field(1000, ge=1, description="generated test puzzles")
    default_limit: int = Field(20_000, ge=1, description="generated training puzzles when no limit is given")


def _seed(seed: int, split: int) -> int:
    """A seed per split, derived from the run seed."""
    return int(np.random.SeedSequence([int(seed), 1_000_003, split]).generate_state(1)[0])


class Sudoku(BaseModality):
    """Sudoku completion: generated puzzles with unique solutions, or a CSV file.

    Args:
        clues: clues per generated puzzle (default 30).
        difficulty: "any", "singles" or "beyond-singles" (see :class:`SudokuOptions`).
        pool_size: base puzzles for the generated training split (default None: one
            per 10 training puzzles, at least 1,000, at most the split size).
        eval_pool_size: base puzzles for each generated validation / test split (500).
        n_val: generated validation puzzles (1,000).
        n_test: generated test puzzles (1,000).
        default_limit: generated training puzzles when ``limit`` is None (20,000).

    Datasets:
        generated: made by :func:`seqify_sudoku.puzzles.generate_puzzles` from the
            seed; train, validation and test come from different derived seeds and
            different base pools, and no validation or test puzzle equals a
            training puzzle.
        csv: a file in the ``quizzes,solutions`` format (see
            :mod:`seqify_sudoku.csvio`), split with the seed: test = min(10%,
            10,000), validation = min(5%, 5,000), the rest training (at most
            ``limit``). Training rows whose puzzle is also a validation or test
            puzzle are dropped (the count is in ``info``).
    """

    name = "sudoku"
    datasets: ClassVar[tuple[str, ...]] = ("generated", "csv")
    file_datasets: ClassVar[tuple[str, ...]] = ("csv",)
    task: ClassVar[Literal["complete", "generate"]] = "complete"
    headline_metrics: ClassVar[tuple[str, ...]] = ("puzzle_accuracy",)
    config_model: ClassVar[type[BaseModel]] = SudokuOptions

    def __init__(
        self,
        *,
        clues: int = 30,
        difficulty: str = "any",
        pool_size: int | None = None,
        eval_pool_size: int = 500,
        n_val: int = 1000,
        n_test: int = 1000,
        default_limit: int = 20_000,
    ):
        self.options: SudokuOptions = validate_model(  # type: ignore[assignment]
            SudokuOptions,
            dict(
                clues=clues,
                difficulty=difficulty,
                pool_size=pool_size,
                eval_pool_size=eval_pool_size,
                n_val=n_val,
                n_test=n_test,
                default_limit=default_limit,
            ),
            prefix="sudoku",
        )
        self._splits: Splits | None = None

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.options.model_dump().items())
        return f"Sudoku({fields})"

    # ------------------------------------------------------------------ data

    def load(
        self, dataset: str, path: Path | None, *, seed: int, limit: int | None, report: RowReport
    ) -> Splits:
        """Load ``dataset`` ("generated" or "csv") into fixed splits of SudokuItem.

        Args:
            dataset: "generated" (no file) or "csv" (``path`` required).
            path: the CSV file for "csv"; ignored for "generated".
            seed: seeds generation and the CSV split.
            limit: at most this many training puzzles (generated: exactly this many,
                default ``default_limit``).
            report: bad CSV rows are added here and skipped.
        """
        if dataset not in self.datasets:
            raise UnknownComponentError("dataset", dataset, self.datasets, "modality 'sudoku'")
        if dataset == "generated":
            splits = self._generated(seed, limit)
        else:
            splits = self._csv(path, seed, limit, report)
        self._splits = splits
        return splits

    def _generated(self, seed: int, limit: int | None) -> Splits:
        opt = self.options
        n_train = opt.default_limit if limit is None else limit
        train_pool = opt.pool_size if opt.pool_size is not None else default_pool_size(n_train)
        margin = 32  # spare puzzles in case one equals a puzzle of an earlier split
        seeds = {split: _seed(seed, k) for k, split in enumerate(("train", "val", "test"))}
        train = generate_puzzles(n_train, clues=opt.clues, seed=seeds["train"], pool_size=train_pool,
                                 difficulty=opt.difficulty)
        taken = {item.puzzle for item in train}
        held: dict[str, list[SudokuItem]] = {}
        dropped = 0
        for split, n in (("val", opt.n_val), ("test", opt.n_test)):
            made = generate_puzzles(
                n + margin, clues=opt.clues, seed=seeds[split], pool_size=opt.eval_pool_size,
                difficulty=opt.difficulty,
            )
            fresh = [item for item in made if item.puzzle not in taken]
            dropped += len(made) - len(fresh)
            if len(fresh) < n:
                raise DataError(
                    f"generated {split} split: only {len(fresh)} of {n} puzzles differ from "
                    "the puzzles of the earlier splits"
                )
            held[split] = fresh[:n]
            taken.update(item.puzzle for item in held[split])
        info = {
            "dataset": "generated",
            "method": (
                "base puzzles from random full grids with clues removed while the solution "
                "stays unique, multiplied by random Sudoku symmetries (digit relabelling, "
                "row/column swaps within bands/stacks, band/stack swaps, transpose)"
            ),
            "clues": opt.clues,
            "difficulty": opt.difficulty,
            "test_singles_solvable": sum(solve_by_singles(item.puzzle)[1] == 0 for item in held["test"])
            / max(len(held["test"]), 1),
            "unique_solutions": True,
            "n_train": len(train),
            "n_val": len(held["val"]),
            "n_test": len(held["test"]),
            "pool_size": {
                "train": min(train_pool, n_train),
                "val": min(opt.eval_pool_size, opt.n_val + margin),
                "test": min(opt.eval_pool_size, opt.n_test + margin),
            },
            "seeds": seeds,
            "held_out_equal_to_earlier_split": dropped,
        }
        return Splits(train, held["val"], held["test"], info)

    def _csv(self, path: Path | None, seed: int, limit: int | None, report: RowReport) -> Splits:
        if path is None:
            raise DataError(
                "the Sudoku 'csv' dataset needs a file: give the path of a CSV file (on the "
                "command line: --data FILE) with a 'quizzes,solutions' header and 81 "
                "characters per field ('0' or '.' for a blank)"
            )
        items = load_csv(path, report)
        n = len(items)
        if n < 3:
            raise DataError(
                f"{path}: {n} valid Sudoku rows ({report.skipped} skipped); at least 3 are "
                "needed for train, validation and test splits"
            )
        n_test = min(max(1, n // 10), 10_000)
        n_val = min(max(1, n // 20), 5_000)
        perm = np.random.default_rng(int(seed)).permutation(n)
        test = [items[i] for i in perm[:n_test]]
        val = [items[i] for i in perm[n_test : n_test + n_val]]
        held = {item.puzzle for item in test} | {item.puzzle for item in val}
        rest = [items[i] for i in perm[n_test + n_val :]]
        train = [item for item in rest if item.puzzle not in held]
        dropped = len(rest) - len(train)
        if limit is not None:
            train = train[:limit]
        if not train:
            raise DataError(f"{path}: no training rows left after holding out validation and test rows")
        summary = report.summary()
        clue_counts = [item.clues for item in items]
        info = {
            "dataset": "csv",
            "path": str(path),
            "n_rows_valid": n,
            "n_train": len(train),
            "n_val": len(val),
            "n_test": len(test),
            "split": "seeded shuffle: test min(10%, 10,000), val min(5%, 5,000), rest train",
            "train_dropped_as_held_out_duplicates": dropped,
            "clues": {
                "min": min(clue_counts),
                "mean": float(np.mean(clue_counts)),
                "max": max(clue_counts),
            },
            "rows_read": summary["rows_read"],
            "rows_skipped": summary["rows_skipped"],
            "skipped_by_reason": summary["skipped_by_reason"],
        }
        return Splits(train, val, test, info)

    def budget(self, budget: str) -> dict[str, Any]:
        """Overrides for "smoke" (seconds), "quick" (minutes on a CPU), "full" (one GPU)."""
        return budget_preset(SUDOKU_BUDGETS, budget)

    # ------------------------------------------------------------ evaluation

    def templates(
        self, tokenizer: Any, test_tokens: list[TokenSet], n: int, rng: torch.Generator
    ) -> list[TokenSet]:
        """The first ``n`` test token sets with every non-given value set to 0."""
        return [
            ts.with_values(torch.where(ts.given, ts.values, torch.zeros_like(ts.values)))
            for ts in test_tokens[:n]
        ]

    def evaluate(
        self, samples: list[str | None], splits: Splits, *, templates: list[TokenSet] | None = None
    ) -> dict[str, Any]:
        """Completion metrics; ``samples[i]`` completes ``splits.test[i]``.

        Returns:
            puzzle_accuracy: fraction of samples with all 81 cells right.
            cell_accuracy: fraction of right cells among the blank cells of all
                samples (an undecodable sample gets all its blank cells wrong).
            valid_consistent: fraction of samples that are valid grids agreeing with
                their clues (a different valid solution counts here).
            decoded: fraction of samples that are 81-digit strings.
            n: number of samples.
            puzzle_accuracy_singles / puzzle_accuracy_beyond_singles: the solve rate
                among the puzzles naked and hidden singles solve, and among the others
                (None when there are none).
            singles_solvable: the share of puzzles naked and hidden singles solve.

        ``templates`` is not needed: the clues come from ``splits.test``.
        """
        if len(samples) > len(splits.test):
            raise ValueError(f"{len(samples)} samples for {len(splits.test)} test puzzles")
        solved = consistent = decoded = right_cells = blank_cells = 0
        by_band = {True: [0, 0], False: [0, 0]}  # singles solvable? -> [solved, puzzles]
        for sample, item in zip(samples, splits.test):
            band = by_band[solve_by_singles(item.puzzle)[1] == 0]
            band[1] += 1
            band[0] += sample == item.solution
            blanks = [k for k, ch in enumerate(item.puzzle) if ch == "0"]
            blank_cells += len(blanks)
            if not isinstance(sample, str) or len(sample) != 81:
                continue
            decoded += 1
            right_cells += sum(sample[k] == item.solution[k] for k in blanks)
            solved += sample == item.solution
            consistent += is_valid_solution(sample, item.puzzle)
        n = len(samples)
        return {
            "puzzle_accuracy": solved / n if n else 0.0,
            "cell_accuracy": right_cells / blank_cells if blank_cells else 0.0,
            "valid_consistent": consistent / n if n else 0.0,
            "decoded": decoded / n if n else 0.0,
            "n": n,
            # the same puzzles split by difficulty (solve_by_singles): what the solve rate is made of
            "puzzle_accuracy_singles": by_band[True][0] / by_band[True][1] if by_band[True][1] else None,
            "puzzle_accuracy_beyond_singles": by_band[False][0] / by_band[False][1] if by_band[False][1] else None,
            "singles_solvable": by_band[True][1] / n if n else 0.0,
        }

    def render(self, samples: list[str | None], path: Path, *, splits: Splits | None = None) -> Path:
        """Draw up to 6 completions to a PNG (see :func:`seqify_sudoku.render.draw_grids`)."""
        from seqify_sudoku.render import draw_grids

        splits = splits if splits is not None else self._splits
        test = splits.test if splits is not None else None
        return draw_grids(samples, path, test=test)

    def save_samples(
        self, samples: list[str | None], out_dir: Path, *, splits: Splits | None = None
    ) -> list[Path]:
        """Write ``completions.csv``: quizzes, solutions (the completion), correct (0/1).

        The file reads back with :func:`seqify_sudoku.csvio.load_csv`. Without
        ``splits``, the splits of the last :meth:`load` are used.
        """
        splits = splits if splits is not None else self._splits
        if splits is None:
            raise ValueError("save_samples needs the splits the samples complete (load first)")
        rows = []
        for sample, item in zip(samples, splits.test):
            completion = sample if isinstance(sample, str) else ""
            rows.append((item.puzzle, completion, str(int(completion == item.solution))))
        return [write_csv(Path(out_dir) / "completions.csv", rows, ("quizzes", "solutions", "correct"))]

    def example_items(self, n, seed=0):
        from seqify_sudoku.puzzles import generate_puzzles

        return generate_puzzles(n, clues=30, seed=seed, pool_size=2, workers=1)

    def items_equal(self, decoded, item):
        return decoded == item.solution
