"""The Sudoku plugin: generator, solver, CSV loader, tokenizer, metrics, pictures."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from seqify.config import for_dataset, resolve_config
from seqify.data import RowReport
from seqify.errors import ConfigError, DataError, UnknownComponentError
from seqify.protocols import Modality, Splits, Tokenizer
from seqify.testing import check_tokenizer
from seqify_sudoku import generator, puzzles
from seqify_sudoku.checks import clue_problem, grid_problem, is_valid_solution, item_problem
from seqify_sudoku.csvio import load_csv
from seqify_sudoku.generator import augment, base_pool, generate_puzzles, make_base_puzzle
from seqify_sudoku.items import SudokuItem, to_array, to_strings
from seqify_sudoku.modality import Sudoku
from seqify_sudoku.solver import count_solutions, solve, solve_by_singles
from seqify_sudoku.tokenizers import CellTokenizer

DATA = Path(__file__).parent / "data"
BAD_ROWS = DATA / "sudoku_bad_rows.csv"

# a puzzle with a unique solution (30 clues; row 2 of the bad-rows file)
PUZZLE = "000504290000000008002008504050069040020000980090001000000092801000840723078000050"


@pytest.fixture(scope="module")
def items() -> list[SudokuItem]:
    return generate_puzzles(60, clues=30, seed=11, pool_size=12)


def _relabel(grid: str, a: str = "1", b: str = "2") -> str:
    return grid.translate(str.maketrans(a + b, b + a))


# ----------------------------------------------------------------- solver


def test_solve_finds_the_unique_solution():
    found = solve(PUZZLE)
    assert len(found) == 1
    assert is_valid_solution(found[0], PUZZLE)
    assert solve(PUZZLE.replace("0", ".")) == found


def test_solve_counts_up_to_the_limit_and_rejects_contradictions():
    empty = "0" * 81
    two = solve(empty, limit=2)
    assert len(two) == 2 and two[0] != two[1]
    assert all(is_valid_solution(g) for g in two)
    assert count_solutions(empty, limit=5) == 5
    clash = "11" + "0" * 79
    assert solve(clash) == []
    with pytest.raises(ValueError, match="illegal character 'x' at position 3"):
        solve("00x" + "0" * 78)
    with pytest.raises(ValueError, match="81 characters"):
        solve("0" * 80)


def test_one_check_serves_clues_and_full_grids(items):
    assert clue_problem is grid_problem
    assert grid_problem(items[0].solution) is None and grid_problem(items[0].puzzle) is None
    assert grid_problem("1" + "0" * 8 + "1" + "0" * 71) == "digit 1 appears twice in column 1"
    bad = _relabel(items[0].solution)[:40] + items[0].solution[40:]  # 1s and 2s swapped in half the grid
    assert grid_problem(bad) is not None and not is_valid_solution(bad)


def test_puzzles_module_still_exports_every_name():
    assert puzzles.generate_puzzles is generate_puzzles and puzzles.SudokuItem is SudokuItem
    assert puzzles.solve is solve and puzzles.item_problem is item_problem and puzzles.to_array is to_array
    assert all(hasattr(puzzles, name) for name in puzzles.__all__) and len(puzzles.__all__) == 23


# -------------------------------------------------------------- generator


def test_generator_is_seeded_and_reproducible():
    generator._generate.cache_clear()
    a = generate_puzzles(40, clues=30, seed=5, pool_size=8)
    generator._generate.cache_clear()
    b = generate_puzzles(40, clues=30, seed=5, pool_size=8)
    c = generate_puzzles(40, clues=30, seed=6, pool_size=8)
    assert a == b
    assert not {i.puzzle for i in a} & {i.puzzle for i in c}


def test_generator_gives_distinct_puzzles_with_exact_clues(items):
    assert len(items) == 60
    assert len({i.puzzle for i in items}) == 60
    assert all(i.clues == 30 for i in items)
    assert all(is_valid_solution(i.solution, i.puzzle) for i in items)
    forty = generate_puzzles(10, clues=40, seed=1, pool_size=3)
    assert [i.clues for i in forty] == [40] * 10


def test_generated_puzzles_have_unique_solutions(items):
    for item in items[::3]:  # 20 puzzles, solved exactly
        assert solve(item.puzzle, limit=2) == [item.solution]


def test_base_puzzles_are_minimal_enough_and_unique():
    puzzle, solution = make_base_puzzle(26, random.Random(3))
    assert 81 - puzzle.count("0") == 26
    assert solve(puzzle) == [solution]
    with pytest.raises(ValueError, match="between 17 and 81"):
        make_base_puzzle(16, random.Random(0))


def test_augmentation_keeps_validity_uniqueness_and_inputs():
    pool = base_pool(4, clues=30, seed=2, workers=1)
    puz = to_array([p for p, _ in pool])
    sol = to_array([s for _, s in pool])
    which = np.arange(400) % 4
    puz_in, sol_in = puz[which], sol[which]
    before = puz_in.copy()
    new_puz, new_sol = augment(puz_in, sol_in, np.random.default_rng(0))
    assert np.array_equal(puz_in, before)  # the input is not modified
    out_p, out_s = to_strings(new_puz), to_strings(new_sol)
    assert len(set(out_p)) == 400  # different symmetries of 4 puzzles
    assert all(is_valid_solution(s, p) for p, s in zip(out_p, out_s))
    assert all(81 - p.count("0") == 30 for p in out_p)
    for p, s in list(zip(out_p, out_s))[:12]:
        assert solve(p) == [s]


def test_pool_does_not_depend_on_the_number_of_processes():
    one = base_pool(256, clues=34, seed=9, workers=1)
    two = base_pool(256, clues=34, seed=9, workers=2)
    assert one == two
    assert one[:5] == base_pool(5, clues=34, seed=9, workers=1)  # puzzle i depends on i only


# ---------------------------------------------------------------- checks


def test_item_problem_names_the_problem(items):
    good = items[0]
    assert item_problem(good.puzzle, good.solution) is None
    assert item_problem(good.puzzle[:80], good.solution) == "wrong length: puzzle has 80 characters, expected 81"
    assert item_problem(good.puzzle, good.solution[:5] + "a" + good.solution[6:]) == (
        "illegal character: 'a' in solution at position 6 (row 1, column 6)"
    )
    assert item_problem(good.puzzle, _relabel(good.solution)).startswith("solution disagrees with clue: ")


# ------------------------------------------------------------------- CSV


EXPECTED_BAD = [
    (3, "wrong number of fields: expected 2, got 3"),
    (4, "wrong length: puzzle has 80 characters, expected 81"),
    (6, "illegal character: 'x' in puzzle at position 2 (row 1, column 2)"),
    (7, "empty row"),
    (8, "contradicting clues: digit 8 appears twice in row 1"),
    (9, "invalid solution: digit 1 appears twice in row 1"),
    (10, "solution disagrees with clue: row 1, column 6 has clue 1 but solution 2"),
    (12, "illegal character: '0' in solution at position 6 (row 1, column 6)"),
]


def _file_rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()]


def test_csv_reports_each_bad_row_and_keeps_the_good_ones():
    report = RowReport()
    loaded = load_csv(BAD_ROWS, report)
    assert [(b.row, b.reason) for b in report.bad] == EXPECTED_BAD
    assert all(b.source == str(BAD_ROWS) for b in report.bad)
    lines = _file_rows(BAD_ROWS)
    expected = [SudokuItem(lines[n - 1][0].replace(".", "0"), lines[n - 1][1]) for n in (2, 5, 11, 13)]
    assert loaded == expected
    assert all(solve(i.puzzle) == [i.solution] for i in loaded)
    assert report.read == 12  # every line after the header
    assert report.summary()["skipped_by_reason"]["illegal character"] == 2


def test_csv_header_variants(tmp_path, items):
    body = [f"{i.puzzle},{i.solution}" for i in items[:3]]
    for header in ("puzzle,solution", "Quizzes,Solutions", None):
        path = tmp_path / "p.csv"
        path.write_text("\n".join(([header] if header else []) + body) + "\n")
        report = RowReport()
        assert load_csv(path, report) == items[:3]
        assert report.bad == []
    # a byte-order mark and Windows line ends
    path = tmp_path / "bom.csv"
    path.write_bytes(("\ufeffquizzes,solutions\r\n" + "\r\n".join(body) + "\r\n").encode("utf-8"))
    assert load_csv(path, RowReport()) == items[:3]
    # more columns: the two are picked by name, other columns ignored
    path = tmp_path / "wide.csv"
    rows = [f"{k},{i.solution},x,{i.puzzle}" for k, i in enumerate(items[:3])]
    path.write_text("id,solution,difficulty,puzzle\n" + "\n".join(rows) + "\n")
    assert load_csv(path, RowReport()) == items[:3]
    # a header that names nothing known: a note (not a bad row), the rest still read
    path = tmp_path / "odd.csv"
    path.write_text("a,b\n" + "\n".join(body) + "\n")
    report, notes = RowReport(), []
    assert load_csv(path, report, notes=notes) == items[:3]
    assert report.bad == [] and [n.split(":")[0] for n in notes] == ["unrecognized header"]
    with pytest.raises(DataError, match="does not exist"):
        load_csv(tmp_path / "missing.csv", RowReport())


# header spellings of the public puzzle sets (the sources are named in seqify_sudoku.csvio)
PUBLIC_HEADERS = [
    ("quizzes,solutions", "{p},{s}"),  # Kaggle "1 million Sudoku games"
    ("puzzle,solution", "{p},{s}"),  # Kaggle "9 million Sudoku puzzles and solutions"
    ("id,puzzle,solution,clues,difficulty", "{k},{p},{s},30,2.5"),  # Kaggle "3 million ... with ratings"
    ("source,question,answer,rating", "forum,{p},{s},17"),  # sapientinc/sudoku-extreme (HRM)
    (",quizzes,solutions", "{k},{p},{s}"),  # pandas to_csv with its index
    ("Unnamed: 0,quizzes,solutions", "{k},{p},{s}"),  # that file read and written again by pandas
    ("Unnamed: 0,puzzle,solution", "{k},{p},{s}"),
]


@pytest.mark.parametrize("dots", [False, True])
@pytest.mark.parametrize(("header", "row"), PUBLIC_HEADERS)
def test_csv_public_header_spellings(tmp_path, items, header, row, dots):
    path = tmp_path / "public.csv"
    body = [
        row.format(k=k, p=i.puzzle.replace("0", ".") if dots else i.puzzle, s=i.solution)
        for k, i in enumerate(items[:4])
    ]
    path.write_text(header + "\n" + "\n".join(body) + "\n")
    report = RowReport()
    assert load_csv(path, report) == items[:4]
    assert report.bad == [] and report.read == 4


def test_csv_without_header_with_or_without_an_index_column(tmp_path, items):
    # Rasmus Berg Palm's RRN set: no header, puzzle,solution per line
    path = tmp_path / "rrn.csv"
    path.write_text("".join(f"{i.puzzle},{i.solution}\n" for i in items[:4]))
    report = RowReport()
    assert load_csv(path, report) == items[:4]
    assert report.bad == [] and report.read == 4
    # pandas to_csv(header=False): the index first
    path = tmp_path / "indexed.csv"
    path.write_text("".join(f"{k},{i.puzzle},{i.solution}\n" for k, i in enumerate(items[:4])))
    report = RowReport()
    assert load_csv(path, report) == items[:4]
    assert report.bad == []


@pytest.mark.parametrize("header", ["a,b", "col1,col2", "grid,filled"])
def test_csv_unrecognized_header_is_one_note_not_a_bad_row(tmp_path, items, header):
    path = tmp_path / "odd.csv"
    body = [f"{i.puzzle},{i.solution}" for i in items[:5]]
    body.insert(2, "short,row")  # a bad data row: reported as such, on its own line
    path.write_text(header + "\n" + "\n".join(body) + "\n")
    report, notes = RowReport(), []
    assert load_csv(path, report, notes=notes) == items[:5]
    assert len(notes) == 1 and notes[0].startswith("unrecognized header")
    assert repr(header.split(",")) in notes[0]  # names the columns it found
    assert "one of quizzes" in notes[0] and "answer" in notes[0]
    assert [(b.row, b.reason.split(":")[0]) for b in report.bad] == [(4, "wrong length")]
    assert report.read == 6  # data rows only: the header is not counted as a row
    assert "unrecognized header" not in report.summary()["skipped_by_reason"]
    assert load_csv(path, RowReport()) == items[:5]  # without a notes list: only logged


def test_csv_unrecognized_header_and_three_bad_rows_are_three_skipped_and_a_note(tmp_path, items):
    path = tmp_path / "unsolved.csv"
    body = [f"{i.puzzle},{i.solution}" for i in items[:6]]
    body[1] = "short,row"  # wrong length
    body[3] = f"{items[3].puzzle},{items[3].solution[:-1]}x"  # illegal character
    body[4] = f"{items[4].puzzle}"  # wrong number of fields
    path.write_text("unsolved,solved\n" + "\n".join(body) + "\n")
    report = RowReport()
    splits = Sudoku().load("csv", path, seed=0, limit=None, report=report)
    assert report.skipped == 3 and splits.info["rows_skipped"] == 3 and splits.info["rows_read"] == 6
    assert [b.row for b in report.bad] == [3, 5, 6]  # data lines only, never the header (line 1)
    assert splits.info["header_note"].startswith("unrecognized header: columns ['unsolved', 'solved']")
    assert "unrecognized header" not in splits.info["skipped_by_reason"]
    assert sorted(splits.train + splits.val + splits.test, key=lambda i: i.puzzle) == sorted(
        [items[k] for k in (0, 2, 5)], key=lambda i: i.puzzle)
    known = tmp_path / "known.csv"
    known.write_text("quizzes,solutions\n" + "\n".join(body) + "\n")
    assert Sudoku().load("csv", known, seed=0, limit=None, report=RowReport()).info["header_note"] is None


def test_csv_unrecognized_wide_header_is_a_data_error(tmp_path, items):
    path = tmp_path / "wide_odd.csv"
    path.write_text("id,grid,filled,rating\n" + "".join(f"{k},{i.puzzle},{i.solution},1\n" for k, i in enumerate(items[:3])))
    report = RowReport()
    with pytest.raises(DataError, match=r"unrecognized header: columns \['id', 'grid', 'filled', 'rating'\]"):
        load_csv(path, report)
    assert report.bad == []  # not reported row by row
    # one known column is not enough either
    path.write_text("id,puzzle,filled\n" + "".join(f"{k},{i.puzzle},{i.solution}\n" for k, i in enumerate(items[:3])))
    with pytest.raises(DataError, match="solution column"):
        load_csv(path, RowReport())


def test_csv_chunks_keep_rows_in_order(items):
    report = RowReport()
    assert load_csv(BAD_ROWS, report, chunk_rows=2) == load_csv(BAD_ROWS, RowReport())
    assert [(b.row, b.reason) for b in report.bad] == EXPECTED_BAD


# ------------------------------------------------------------- modality


def _small() -> Sudoku:
    return Sudoku(pool_size=20, eval_pool_size=10, n_val=30, n_test=40)


def test_modality_satisfies_the_protocols():
    assert isinstance(Sudoku(), Modality)
    assert isinstance(CellTokenizer(), Tokenizer)
    assert Sudoku.datasets[0] == "generated" and Sudoku.task == "complete"
    with pytest.raises(ConfigError, match="clues"):
        Sudoku(clues=10)


def test_generated_splits_are_seeded_and_disjoint():
    report = RowReport()
    splits = _small().load("generated", None, seed=3, limit=200, report=report)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (200, 30, 40)
    train, val, test = ({i.puzzle for i in s} for s in (splits.train, splits.val, splits.test))
    assert not train & test and not train & val and not val & test
    # the base pools differ too: no test solution grid is a training solution grid
    assert not {i.solution for i in splits.test} & {i.solution for i in splits.train}
    assert splits.info["clues"] == 30 and splits.info["pool_size"] == {"train": 20, "val": 10, "test": 10}
    assert all(i.clues == 30 for i in splits.test)
    again = _small().load("generated", None, seed=3, limit=200, report=RowReport())
    assert again.test == splits.test and again.train == splits.train
    other = _small().load("generated", None, seed=4, limit=200, report=RowReport())
    assert not {i.puzzle for i in other.test} & test
    assert report.bad == []


def test_csv_dataset_split(tmp_path, items):
    path = tmp_path / "sudoku.csv"
    rows = [f"{i.puzzle},{i.solution}" for i in items[:50]]
    rows.insert(3, "bad,row")
    rows += [f"{items[0].puzzle},{items[0].solution}"] * 3  # duplicates of one puzzle
    path.write_text("quizzes,solutions\n" + "\n".join(rows) + "\n")
    report = RowReport()
    splits = Sudoku().load("csv", path, seed=0, limit=None, report=report)
    assert (len(splits.test), len(splits.val)) == (5, 2)
    held = {i.puzzle for i in splits.test + splits.val}
    assert not held & {i.puzzle for i in splits.train}
    assert len(splits.train) + len(splits.val) + len(splits.test) + splits.info[
        "train_dropped_as_held_out_duplicates"
    ] == 53
    assert splits.info["rows_skipped"] == 1 and splits.info["rows_read"] == 54
    assert [(b.row, b.reason.split(":")[0]) for b in report.bad] == [(5, "wrong length")]
    limited = Sudoku().load("csv", path, seed=0, limit=7, report=RowReport())
    assert len(limited.train) == 7 and limited.test == splits.test
    reshuffled = Sudoku().load("csv", path, seed=1, limit=None, report=RowReport())
    assert reshuffled.test != splits.test


def test_example_items_are_fast_generated_puzzles_that_round_trip():
    m = Sudoku()
    examples = m.example_items(6, seed=2)
    assert examples == generate_puzzles(6, clues=30, seed=2, pool_size=2, workers=1)
    assert len({i.puzzle for i in examples}) == 6 and all(i.clues == 30 for i in examples)
    assert all(item_problem(i.puzzle, i.solution) is None for i in examples)
    assert m.example_items(6, seed=3) != examples
    tok = CellTokenizer()
    assert all(m.items_equal(tok.decode(tok.encode(i)), i) for i in examples)
    assert not m.items_equal(examples[0].puzzle, examples[0]) and not m.items_equal(None, examples[0])
    assert not m.items_equal(examples[1].solution, examples[0])


def test_the_modality_keeps_no_splits_after_load(tmp_path):
    m = Sudoku(pool_size=2, eval_pool_size=2, n_val=2, n_test=2)
    splits = m.load("generated", None, seed=0, limit=4, report=RowReport())
    assert set(vars(m)) == {"options"}  # nothing stashed from load
    with pytest.raises(ValueError, match="needs the splits"):
        m.save_samples([splits.test[0].solution], tmp_path)
    (path,) = m.save_samples([splits.test[0].solution], tmp_path, splits=splits)
    assert path.read_text().splitlines()[1] == f"{splits.test[0].puzzle},{splits.test[0].solution},1"


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(DataError, match="needs a file"):
        Sudoku().load("csv", None, seed=0, limit=None, report=RowReport())
    with pytest.raises(UnknownComponentError, match="did you mean 'csv'"):
        Sudoku().load("csvv", None, seed=0, limit=None, report=RowReport())
    path = tmp_path / "bad.csv"
    path.write_text("quizzes,solutions\n1,2\n")
    report = RowReport()
    with pytest.raises(DataError, match="0 valid Sudoku rows"):
        Sudoku().load("csv", path, seed=0, limit=None, report=report)
    assert len(report.bad) == 1


def test_budgets_validate_as_bench_configs():
    m = Sudoku()
    configs = {b: resolve_config(for_dataset(m.budget(b), "generated", "cell", "causal")) for b in ("smoke", "quick", "full")}
    assert resolve_config(for_dataset(m.budget("quick"), "generated", "cell", "masked")).generator == {"axis_heads": True}
    assert configs["quick"].generator == {}  # the causal generator has no axis heads
    assert configs["smoke"].train.steps == 20 and configs["smoke"].data.limit == 256
    assert configs["smoke"].train.steps < configs["quick"].train.steps < configs["full"].train.steps
    m.budget("smoke")["train"]["steps"] = 999  # a copy: the preset is not changed
    assert m.budget("smoke")["train"]["steps"] == 20
    with pytest.raises(ConfigError, match="unknown budget 'huge'"):
        m.budget("huge")


# ------------------------------------------------------------- tokenizer


def test_tokenizer_round_trip_and_given_flags(items):
    tok = CellTokenizer()
    check_tokenizer(tok, items[:10], equal=lambda back, item: back == item.solution)
    ts = tok.encode(items[0])
    assert len(ts) == tok.spec.max_len == 81
    assert ts.given.tolist() == [ch != "0" for ch in items[0].puzzle]
    assert "".join(str(v + 1) for v in ts.values.tolist()) == items[0].solution
    assert ts.coords[30].tolist() == [3, 3, 4] and ts.coords[80].tolist() == [8, 8, 8]
    assert ts.meta["puzzle"] == items[0].puzzle
    dotted = SudokuItem(items[0].puzzle.replace("0", "."), items[0].solution)
    assert torch.equal(tok.encode(dotted).given, ts.given)
    spec = tok.spec
    assert spec.kinds[0].size == 9 and spec.kinds[0].labels == tuple("123456789")
    assert spec.coord_sizes == (9, 9, 9) and spec.lossless and not spec.variable_length


def test_tokenizer_rejects_malformed_items_and_decodes_none(items):
    tok = CellTokenizer()
    bad = SudokuItem(items[0].puzzle, _relabel(items[0].solution))
    with pytest.raises(ValueError, match="solution disagrees with clue"):
        tok.encode(bad)
    with pytest.raises(ValueError, match="expected a SudokuItem"):
        tok.encode("123")
    ts = tok.encode(items[0])
    assert tok.decode(ts.with_values(torch.full((81,), 9))) is None
    short = ts.with_values(ts.values)
    short.values = ts.values[:80]
    assert tok.decode(short) is None


def test_templates_hide_every_non_given_value(items):
    tok = CellTokenizer()
    tokens = [tok.encode(i) for i in items[:5]]
    kept = [t.values.clone() for t in tokens]
    temps = Sudoku().templates(tok, tokens, 3, torch.Generator().manual_seed(0))
    assert len(temps) == 3
    for t, src, orig in zip(temps, tokens, kept):
        assert torch.equal(t.given, src.given)
        assert torch.equal(t.values[t.given], orig[src.given])
        assert bool((t.values[~t.given] == 0).all())
        assert torch.equal(src.values, orig)  # inputs untouched


# --------------------------------------------------------------- metrics


def test_metrics_on_hand_made_cases(items):
    item = items[0]
    blank = [k for k, ch in enumerate(item.puzzle) if ch == "0"]
    one_wrong = list(item.solution)
    one_wrong[blank[0]] = "1" if one_wrong[blank[0]] != "1" else "2"
    one_wrong = "".join(one_wrong)
    inconsistent = _relabel(item.solution)  # a valid grid that breaks the clues
    test = [item, item, item, item]
    splits = Splits([], [], test)
    m = Sudoku()
    metrics = m.evaluate([item.solution, one_wrong, inconsistent, None], splits)
    n_blank = len(blank)
    right_inconsistent = sum(inconsistent[k] == item.solution[k] for k in blank)
    assert metrics["n"] == 4
    assert metrics["puzzle_accuracy"] == pytest.approx(1 / 4)
    assert metrics["valid_consistent"] == pytest.approx(1 / 4)
    assert metrics["decoded"] == pytest.approx(3 / 4)
    expected_cells = (n_blank + (n_blank - 1) + right_inconsistent + 0) / (4 * n_blank)
    assert metrics["cell_accuracy"] == pytest.approx(expected_cells)
    singles = solve_by_singles(item.puzzle)[1] == 0
    assert m.evaluate([item.solution], splits) == {
        "puzzle_accuracy": 1.0, "cell_accuracy": 1.0, "valid_consistent": 1.0, "decoded": 1.0, "n": 1,
        "puzzle_accuracy_singles": 1.0 if singles else None,
        "puzzle_accuracy_beyond_singles": None if singles else 1.0,
        "singles_solvable": float(singles),
    }
    with pytest.raises(ValueError, match="5 samples for 4 test puzzles"):
        m.evaluate([None] * 5, splits)


def test_a_different_valid_solution_counts_as_consistent_not_solved(items):
    # without clues, any valid grid agrees with the puzzle
    item = SudokuItem("0" * 81, items[0].solution)
    metrics = Sudoku().evaluate([_relabel(item.solution)], Splits([], [], [item]))
    assert metrics["puzzle_accuracy"] == 0.0 and metrics["valid_consistent"] == 1.0


# ------------------------------------------------------- pictures, files


def _png(path: Path) -> bytes:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    return data


def test_render_writes_a_png(tmp_path, items):
    wrong = _relabel(items[1].solution, "3", "4")
    samples = [items[0].solution, wrong, None] + [i.solution for i in items[3:9]]
    splits = Splits([], [], items[:9])
    out = Sudoku().render(samples, tmp_path / "grids.png", splits=splits)
    assert out == tmp_path / "grids.png"
    _png(out)
    _png(Sudoku().render([items[0].solution], tmp_path / "plain.png"))  # no splits known
    _png(Sudoku().render([], tmp_path / "empty.png"))


def test_save_samples_writes_completions_that_read_back(tmp_path, items):
    m = Sudoku()
    splits = Splits([], [], items[:3])
    paths = m.save_samples([items[0].solution, _relabel(items[1].solution), None], tmp_path, splits=splits)
    assert paths == [tmp_path / "completions.csv"]
    lines = paths[0].read_text().splitlines()
    assert lines[0] == "quizzes,solutions,correct"
    assert [line.rsplit(",", 1)[1] for line in lines[1:]] == ["1", "0", "0"]
    report = RowReport()
    assert load_csv(paths[0], report) == [items[0]]
    assert [b.reason.split(":")[0] for b in report.bad] == ["solution disagrees with clue", "wrong length"]
    with pytest.raises(ValueError, match="needs the splits"):
        Sudoku().save_samples([None], tmp_path)


# ----------------------------------------------------------- registration


def test_plugin_registers_and_imports_light(monkeypatch):
    import seqify_sudoku
    from seqify.plugins import build_registry

    monkeypatch.setenv("SEQIFY_LOAD_PLUGINS", "")
    registry = build_registry([seqify_sudoku])
    assert registry.names("modality") == ["sudoku"]
    assert registry.names("tokenizer", "sudoku") == ["cells"]
    assert registry.get("modality", "sudoku") is Sudoku
    assert registry.get("tokenizer", "cells", "sudoku") is CellTokenizer
    code = "import sys, seqify_sudoku; print(sorted({'torch', 'numpy', 'matplotlib'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ difficulty bands

HARD = "800000000003600000070090200050007000000045700000100030001000068008500010090000400"  # Inkala, 2012


def test_singles_solver_fills_a_singles_puzzle_and_stops_on_a_hard_one(items):
    solved = [(solve_by_singles(it.puzzle), it.solution) for it in items[:40]]
    assert any(left == 0 for (_, left), _ in solved) and all(
        grid == solution for (grid, left), solution in solved if left == 0)  # never a wrong digit
    grid, left = solve_by_singles(HARD)
    assert left > 0 and all(p in "0" or p == g for p, g in zip(HARD, grid))  # stuck, clues kept
    assert solve_by_singles(items[0].solution) == (items[0].solution, 0)


def test_difficulty_bands_partition_the_generated_puzzles():
    easy = generate_puzzles(40, clues=26, seed=4, pool_size=8, workers=1, difficulty="singles")
    hard = generate_puzzles(40, clues=26, seed=4, pool_size=8, workers=1, difficulty="beyond-singles")
    assert all(solve_by_singles(it.puzzle)[1] == 0 for it in easy)
    assert all(solve_by_singles(it.puzzle)[1] > 0 for it in hard)
    assert all(count_solutions(it.puzzle) == 1 and it.clues == 26 for it in easy[:5] + hard[:5])
    # "any" keeps the puzzles it always made (the seeds of existing runs do not move)
    assert generate_puzzles(10, clues=30, seed=2, pool_size=4, workers=1) == generate_puzzles(
        10, clues=30, seed=2, pool_size=4, workers=1, difficulty="any")
    with pytest.raises(ValueError, match="difficulty must be one of any, singles, beyond-singles"):
        generate_puzzles(2, difficulty="easy")


def test_modality_reports_the_difficulty_it_used():
    splits = Sudoku(difficulty="singles", n_val=8, n_test=8, eval_pool_size=4, pool_size=4).load(
        "generated", None, seed=0, limit=16, report=RowReport())
    assert splits.info["difficulty"] == "singles" and splits.info["test_singles_solvable"] == 1.0
    with pytest.raises(Exception, match="difficulty"):
        Sudoku(difficulty="medium")
