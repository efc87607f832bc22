"""benchmarks/check_results.py: the markdown reader, and one real smoke check that passes,
moves when its recorded figure is edited, and goes missing when its row is removed."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = "Smoke cells (checked by benchmarks/check_results.py)"


def _load():
    spec = importlib.util.spec_from_file_location("check_results", ROOT / "benchmarks" / "check_results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


cr = _load()


@pytest.mark.parametrize("text, index, value, half", [
    ("1,425.73", 0, 1425.73, 0.005),
    ("**23.83**", 0, 23.83, 0.005),
    ("0.945", 0, 0.945, 0.0005),
    ("69.3%", 0, 0.693, 0.0005),
    ("2.797 (693)", 0, 2.797, 0.0005),
    ("2.797 (693)", 1, 693.0, 0.5),
    ("0.0889 / 0.0522", 1, 0.0522, 0.00005),
    ("0.906-0.945", 1, 0.945, 0.0005),  # a range, not a negative number
    ("-0.25", 0, -0.25, 0.005),
    ("1e-3", 0, 0.001, 0.0005),
    ("`128` / 128", 0, 128.0, 0.5),
])
def test_parse_number_reads_cells_as_printed(text, index, value, half):
    got, got_half = cr.parse_number(text, index)
    assert got == pytest.approx(value) and got_half == pytest.approx(half)


def test_parse_number_without_a_number():
    assert cr.parse_number("n/a") is None
    assert cr.parse_number("0.5", 1) is None


def test_split_row_keeps_escaped_pipes_and_spaces():
    assert cr.split_row("| a \\| b |  two words  | 3 |") == ["a | b", "two words", "3"]
    assert cr.split_row("x | y") == ["x", "y"]


MARKDOWN = """# Title

## Alpha

| model | order | bits | share |
|---|:---:|---|---|
| masked  a \\| b | margin | **1,425.73** | 69.3% |
| masked | random | 12.5 | 1% |

```
# a shell comment, not a heading
```

### Alpha, deeper

| model | order | bits |
|---|---|---|
| causal | raster | 7.25 |
| causal | raster | 7.5 |

## Beta

| model | order | bits |
|---|---|---|
| masked | margin | 99 |
"""


def test_locate_reads_one_cell_of_a_section():
    assert cr.locate(MARKDOWN, "Alpha", ["masked a | b", "margin"], "bits") == ("**1,425.73**", 7)
    assert cr.locate(MARKDOWN, "alpha", ["Masked", "random"], "share") == ("1%", 8)
    assert cr.locate(MARKDOWN, "Beta", ["masked", "margin"], "bits") == ("99", 25)


def test_locate_says_why_a_cell_is_not_there():
    assert "no heading" in cr.locate(MARKDOWN, "Gamma", ["masked"], "bits")
    assert "no row" in cr.locate(MARKDOWN, "Alpha", ["masked", "entropy"], "bits")
    assert "no row" in cr.locate(MARKDOWN, "Alpha", ["masked", "margin"], "FCD")
    assert "no row" in cr.locate(MARKDOWN, "Beta", ["masked", "random"], "bits")  # Beta ends Alpha, not the reverse
    assert "2 rows" in cr.locate(MARKDOWN, "Alpha, deeper", ["causal", "raster"], "bits")


def test_the_registry_loads_and_every_check_finds_its_cell():
    runs, checks = cr.load_registry()
    markdown = cr.RESULTS.read_text()
    assert {runs[c.run].tier for c in checks} == {"smoke", "quick", "demo"}
    for c in checks:
        found = cr.locate(markdown, c.section, c.row, c.column)
        assert isinstance(found, tuple), f"{c.id}: {found}"
        assert cr.parse_number(found[0], c.number) is not None, c.id


def test_the_registry_rejects_unknown_keys_and_runs(tmp_path):
    bad = tmp_path / "checks.toml"
    bad.write_text('[runs.a]\ntier = "smoke"\ncommand = ["seqify"]\nthreds = 2\n')
    with pytest.raises(SystemExit, match="threds"):
        cr.load_registry(bad)
    run = '[runs.a]\ntier = "smoke"\ncommand = ["seqify"]\n'
    bad.write_text(run + '[[rows]]\nrun = "b"\nsection = "s"\nrow = ["r"]\n'
                   'checks = [{ id = "x", column = "c", value = "v" }]\n')
    with pytest.raises(SystemExit, match="names no run 'b'"):
        cr.load_registry(bad)
    bad.write_text(run + '[[rows]]\nrun = "a"\nsection = "s"\nrow = ["r"]\n'
                   'checks = [{ id = "x", column = "c", value = "v", colum = "d" }]\n')
    with pytest.raises(SystemExit, match="colum"):
        cr.load_registry(bad)


@pytest.fixture(scope="module")
def sudoku_run(tmp_path_factory):
    """The smoke-sudoku run of the registry, executed once for the tests below (about 10 s)."""
    runs, _ = cr.load_registry()
    keep = tmp_path_factory.mktemp("check-runs")
    results, note = cr.execute(runs["smoke-sudoku"], keep / "smoke-sudoku")
    assert results is not None, note
    return keep


def _main(keep, results, capsys):
    code = cr.main(["--only", "smoke-sudoku-bits,smoke-sudoku-top1", "--results", str(results),
                    "--keep", str(keep), "--reuse"])
    return code, capsys.readouterr().out


def _sudoku_row(markdown: str) -> str:
    section = cr.section_lines(markdown, SMOKE)
    return next(line for _, line in section if line.startswith("| sudoku |"))


def test_a_real_smoke_check_passes_against_results_md(sudoku_run, tmp_path, capsys):
    copy = tmp_path / "RESULTS.md"
    copy.write_text(cr.RESULTS.read_text())
    code, out = _main(sudoku_run, copy, capsys)
    assert code == 0, out
    assert "2 ok" in out and "MOVED" not in out


def test_an_edited_figure_is_reported_moved(sudoku_run, tmp_path, capsys):
    markdown = cr.RESULTS.read_text()
    row = _sudoku_row(markdown)
    bits = cr.split_row(row)[2]
    edited = row.replace(f"| {bits} |", f"| {float(bits) + 0.5:.2f} |")
    assert edited != row
    copy = tmp_path / "RESULTS.md"
    copy.write_text(markdown.replace(row, edited))
    code, out = _main(sudoku_run, copy, capsys)
    assert code == 1
    assert "smoke-sudoku-bits: MOVED" in out and "1 ok, 1 MOVED" in out


def test_a_removed_row_is_reported_missing(sudoku_run, tmp_path, capsys):
    markdown = cr.RESULTS.read_text()
    copy = tmp_path / "RESULTS.md"
    copy.write_text(markdown.replace(_sudoku_row(markdown) + "\n", ""))
    code, out = _main(sudoku_run, copy, capsys)
    assert code == 1
    assert "smoke-sudoku-bits: MISSING: no row 'sudoku'" in out and "2 MISSING" in out


def test_a_failed_command_is_reported_with_its_stderr(tmp_path):
    run = cr.Run(name="broken", tier="smoke", command=["seqify", "bench", "--modality", "nosuch", "--orderer",
                                                         "raster", "--out", "{out}"])
    check = cr.Check(id="broken-bits", run="broken", value="modelability.bits_per_item", section=SMOKE,
                     row=["sudoku"], column="bits/item")
    [outcome] = cr.check_all({"broken": run}, [check], cr.RESULTS.read_text(), tmp_path, say=lambda _: None)
    assert outcome.status == "FAILED" and "nosuch" in outcome.detail


def _matrix_stub(cells: dict[str, float], exit_code: int = 0) -> list[str]:
    """A command standing in for ``seqify matrix``: writes cells/NAME/results.json with the
    given bits per item into {out}, then exits with ``exit_code``."""
    code = ("import json, pathlib, sys\n"
            f"for name, bits in {cells!r}.items():\n"
            "    d = pathlib.Path(sys.argv[1]) / 'cells' / name\n"
            "    d.mkdir(parents=True)\n"
            "    (d / 'results.json').write_text(json.dumps({'modelability': {'bits_per_item': bits}}))\n"
            f"sys.exit({exit_code})\n")
    return ["python", "-c", code, "{out}"]


def _matrix_checks() -> list:
    check = {"run": "m", "value": "modelability.bits_per_item", "section": "Alpha", "column": "bits"}
    return [cr.Check(id="a", row=["masked a | b", "margin"], file="cells/a/results.json", **check),
            cr.Check(id="b", row=["masked", "random"], file="cells/b/results.json", **check)]


def test_a_matrix_run_is_checked_cell_by_cell(tmp_path):
    """Each row reads its own cell's file inside the run's folder."""
    run = cr.Run(name="m", tier="demo", command=_matrix_stub({"a": 1425.73, "b": 13.0}))
    outcomes = cr.check_all({"m": run}, _matrix_checks(), MARKDOWN, tmp_path, say=lambda _: None)
    assert [(o.id, o.status, o.measured) for o in outcomes] == [("a", "ok", 1425.73), ("b", "MOVED", 13.0)]
    # --reuse reads the cells already there and runs nothing: the stub would now fail
    broken = cr.Run(name="m", tier="demo", command=_matrix_stub({}, exit_code=3))
    again = cr.check_all({"m": broken}, _matrix_checks(), MARKDOWN, tmp_path, reuse=True, say=lambda _: None)
    assert [o.status for o in again] == ["ok", "MOVED"]


def test_a_cell_the_run_did_not_write_fails_alone(tmp_path):
    """A matrix run that exits 0 without one cell's file (a failed cell): that check fails,
    naming the file and the log; the other cell is judged."""
    run = cr.Run(name="m", tier="demo", command=_matrix_stub({"b": 12.5}))
    a, b = cr.check_all({"m": run}, _matrix_checks(), MARKDOWN, tmp_path, say=lambda _: None)
    assert a.status == "FAILED" and "the run wrote no cells/a/results.json" in a.detail and "m.log" in a.detail
    assert b.status == "ok" and b.measured == 12.5
    # with --reuse a missing file makes the run run again (here: it fails, so every check fails)
    broken = cr.Run(name="m", tier="demo", command=_matrix_stub({"b": 12.5}, exit_code=3))
    outcomes = cr.check_all({"m": broken}, _matrix_checks(), MARKDOWN, tmp_path, reuse=True, say=lambda _: None)
    assert [o.status for o in outcomes] == ["FAILED", "FAILED"]
    assert all("exit 3" in o.detail for o in outcomes)


def test_the_registry_refuses_a_file_outside_the_run(tmp_path):
    bad = tmp_path / "checks.toml"
    for file in ("../other/results.json", "/tmp/results.json"):
        bad.write_text('[runs.a]\ntier = "demo"\ncommand = ["seqify"]\n[[rows]]\nrun = "a"\nsection = "s"\n'
                       f'row = ["r"]\nfile = "{file}"\nchecks = [{{ id = "x", column = "c", value = "v" }}]\n')
        with pytest.raises(SystemExit, match="inside the run"):
            cr.load_registry(bad)
