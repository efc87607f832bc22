"""Re-check benchmarks/RESULTS.md: rerun the cheap figures and compare them with what it records.

The checks live in ``benchmarks/checks.toml``. A ``[runs.NAME]`` table is one command
(``seqify bench ... --out {out}``, or ``seqify matrix ... --out {out}``) and its tier. A
``[[rows]]`` entry names a run and a table row of RESULTS.md (the heading of its section
and the row's first cell(s)); each of its checks reads one value from the run's
results.json (a dotted path) and compares it with the row's cell under one column header.
A row of a matrix run names its cell's file (``file = "cells/NAME/results.json"``, a path
inside the run's folder; default ``results.json``). Checks that share a run share one
execution.

    python benchmarks/check_results.py                  # the smoke tier (about a minute)
    python benchmarks/check_results.py --tier quick     # the quick tier only (minutes per run)
    python benchmarks/check_results.py --tier demo      # `make demo` at seed 0 (about 25 minutes)
    python benchmarks/check_results.py --all            # every tier
    python benchmarks/check_results.py --only pc-quick-bits,smoke-sudoku-bits
    python benchmarks/check_results.py --list           # the registry, and the cell each check reads
    python benchmarks/check_results.py --keep runs/check --json runs/check/outcome.json
    python benchmarks/check_results.py --keep runs/check --reuse   # re-read those runs, run nothing

Commands run from the repository root, a leading ``seqify`` as ``sys.executable -m
seqify.cli`` and a leading ``python`` as ``sys.executable``, with this checkout first on
PYTHONPATH (the checker tests the code it sits in) and ``OMP_NUM_THREADS=1`` unless the
run sets ``threads``: the figures were recorded with one thread, and the same machine
and thread count reproduce them exactly. A run's folder is emptied before it runs.

Reading a cell: bold, italics and code marks are dropped, thousands commas too, and the
first number is taken ("2.797 (693)" reads 2.797; ``number = 1`` in a check takes the
second, 693). A percentage is read as a fraction, as results.json stores it: "69.3%" reads
0.693. The default tolerance is half a unit in the last printed digit ("1425.7": 0.05;
"69.3%": 0.0005), i.e. the figure must reproduce to its printed precision; a check may set
``abs`` and/or ``rel`` instead (the larger of the two applies).

Each check ends ok, MOVED (outside the tolerance), MISSING (its cell is not in RESULTS.md,
or holds no number) or FAILED (the command failed, or results.json lacks the value). Exits
0 only when every selected check is ok.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ROOT / "benchmarks" / "checks.toml"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
TIERS = ("smoke", "quick", "demo")
PLUGINS = "orderers,generators,sudoku,molecule,learned,image,pointcloud"


@dataclass(frozen=True)
class Run:
    name: str
    tier: str
    command: list[str]
    threads: int = 1  # OMP_NUM_THREADS for the command


@dataclass(frozen=True)
class Check:
    id: str
    run: str
    value: str  # dotted path into the run's results.json
    section: str  # heading text of the section that holds the table (without the #s)
    row: list[str]  # the row's first cell(s)
    column: str  # the column's header
    number: int = 0  # which number of the cell: 0 the first
    abs: float | None = None
    rel: float | None = None
    file: str = "results.json"  # the results file inside the run's folder (a matrix run: one per cell)


@dataclass
class Outcome:
    id: str
    tier: str
    status: str  # ok | MOVED | MISSING | FAILED
    recorded: str | None = None  # the cell as printed
    recorded_value: float | None = None
    measured: float | None = None
    difference: float | None = None
    tolerance: float | None = None
    detail: str = ""


def load_registry(path: Path = CHECKS) -> tuple[dict[str, Run], list[Check]]:
    """The runs and checks of ``path``; an unknown key, tier or run is an error."""
    raw = tomllib.loads(path.read_text())
    try:
        runs = {name: Run(name=name, **spec) for name, spec in raw.get("runs", {}).items()}
        checks = [Check(**{k: v for k, v in row.items() if k != "checks"}, **spec)
                  for row in raw.get("rows", []) for spec in row.get("checks", [])]
    except TypeError as exc:
        raise SystemExit(f"{path}: {exc}") from None
    for run in runs.values():
        if run.tier not in TIERS:
            raise SystemExit(f"{path}: run {run.name!r}: tier {run.tier!r} is not one of {TIERS}")
    ids = [c.id for c in checks]
    for check in checks:
        if Path(check.file).is_absolute() or ".." in Path(check.file).parts:
            raise SystemExit(f"{path}: check {check.id!r}: file {check.file!r} must be a path inside the run's folder")
        if ids.count(check.id) > 1:
            raise SystemExit(f"{path}: check id {check.id!r} is used twice")
        if check.run not in runs:
            raise SystemExit(f"{path}: check {check.id!r} names no run {check.run!r}{_did_you_mean(check.run, runs)}")
    return runs, checks


def _did_you_mean(name: str, names) -> str:
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- markdown -------------------------------------------------------------------------------

#: a number as RESULTS.md prints it: thousands commas, decimals, exponent, percent
NUMBER = re.compile(r"(?:(?<![\w.)])[-−])?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?%?")


def parse_number(text: str, index: int = 0) -> tuple[float, float] | None:
    """The ``index``-th number of a table cell and half a unit of its last printed digit.

    "**1,425.73**" -> (1425.73, 0.005); "69.3%" -> (0.693, 0.0005); "2.797 (693)" ->
    (2.797, 0.0005), or (693, 0.5) with ``index=1``. None when the cell has no such number.
    """
    plain = re.sub(r"[*_`]", "", text)
    found = NUMBER.findall(plain)
    if index >= len(found):
        return None
    token = found[index].replace(",", "").replace("−", "-")
    percent = token.endswith("%")
    token = token.rstrip("%")
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    value, half = float(token), 0.5 * 10.0 ** (int(exponent or 0) - decimals)
    return (value / 100, half / 100) if percent else (value, half)


def split_row(line: str) -> list[str]:
    """The cells of one markdown table line; an escaped ``\\|`` stays inside its cell."""
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)]


def _norm(text: str) -> str:
    return " ".join(re.sub(r"\*\*|__|`", "", text).split()).casefold()


def section_lines(markdown: str, heading: str) -> list[tuple[int, str]] | None:
    """(line number, line) of the section under ``heading``, up to the next heading of
    its level or above; None when no heading reads ``heading``."""
    lines, fenced, heads = markdown.splitlines(), False, []  # heads: (index, level, text)
    for i, line in enumerate(lines):
        fenced ^= line.lstrip().startswith("```")
        m = None if fenced else re.match(r"(#+)\s+(.*?)\s*#*\s*$", line)
        if m:
            heads.append((i, len(m.group(1)), m.group(2)))
    for k, (i, level, text) in enumerate(heads):
        if _norm(text) == _norm(heading):
            end = next((j for j, lv, _ in heads[k + 1:] if lv <= level), len(lines))
            return [(j + 1, lines[j]) for j in range(i + 1, end)]
    return None


def tables(lines: list[tuple[int, str]]) -> list[list[tuple[int, list[str]]]]:
    """The tables among ``lines``: each a list of (line number, cells), header first,
    the ``|---|`` separator dropped."""
    found, current = [], []
    for number, line in lines + [(0, "")]:
        if line.lstrip().startswith("|"):
            current.append((number, split_row(line)))
            continue
        if len(current) >= 2 and all(set(c) <= set(":- ") for c in current[1][1]):
            found.append([current[0]] + current[2:])
        current = []
    return found


def locate(markdown: str, section: str, row: list[str], column: str) -> tuple[str, int] | str:
    """The text and line number of the cell at (``row``, ``column``) in a table of
    ``section``, or a sentence saying why there is none."""
    lines = section_lines(markdown, section)
    if lines is None:
        return f"no heading {section!r}"
    want = [_norm(c) for c in row]
    hits = []
    for table in tables(lines):
        header = [_norm(c) for c in table[0][1]]
        if _norm(column) not in header:
            continue
        col = header.index(_norm(column))
        for number, cells in table[1:]:
            if [_norm(c) for c in cells[:len(want)]] == want and col < len(cells):
                hits.append((cells[col], number))
    if not hits:
        return f"no row {' | '.join(row)!r} with a column {column!r} under {section!r}"
    if len(hits) > 1:
        return f"{len(hits)} rows {' | '.join(row)!r} under {section!r} (lines {', '.join(str(n) for _, n in hits)})"
    return hits[0]


# -- runs -----------------------------------------------------------------------------------

def argv(run: Run, out: Path) -> list[str]:
    """The command of ``run`` with ``{out}`` filled in, run by this interpreter."""
    args = [a.replace("{out}", str(out)) for a in run.command]
    if args[0] == "seqify":
        return [sys.executable, "-m", "seqify.cli"] + args[1:]
    if args[0] == "python":
        return [sys.executable] + args[1:]
    return args


def execute(run: Run, out: Path, reuse: bool = False, files: tuple[str, ...] = ("results.json",)
            ) -> tuple[dict[str, dict] | None, str]:
    """Run ``run`` into ``out`` and return its results files (each of ``files``, a path
    inside ``out``, read as JSON; None when the command failed or wrote none of them) and a
    note: the time taken, or the last lines of stderr. ``reuse``: read them from ``out``
    when they are all there, and run nothing."""
    if reuse and all((out / f).is_file() for f in files):
        return _read(out, files), "reused"
    if out.exists():
        shutil.rmtree(out)  # a fresh run: bench would resume from what is there
    out.mkdir(parents=True)
    path = [str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH")]
    env = dict(os.environ, OMP_NUM_THREADS=str(run.threads), PYTHONPATH=os.pathsep.join(filter(None, path)))
    env.setdefault("SEQIFY_LOAD_PLUGINS", PLUGINS)
    start = time.perf_counter()
    with open(out.parent / f"{run.name}.log", "w") as log:
        done = subprocess.run(argv(run, out), cwd=ROOT, env=env, stdout=log, stderr=subprocess.PIPE, text=True)
        log.write(done.stderr)
    seconds = time.perf_counter() - start
    found = _read(out, files)
    if done.returncode != 0 or not found:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        return None, f"exit {done.returncode} after {seconds:.0f} s:\n{tail}"
    return found, f"{seconds:.1f} s"


def _read(out: Path, files: tuple[str, ...]) -> dict[str, dict]:
    """The files of ``files`` that ``out`` holds, each read as JSON (by its path in ``out``)."""
    return {f: json.loads((out / f).read_text()) for f in files if (out / f).is_file()}


def lookup(results: dict, path: str):
    """``results`` at a dotted path ("modelability.bits_per_item"; list items by index)."""
    value = results
    for key in path.split("."):
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


def judge(check: Check, tier: str, results: dict | None, markdown: str, failure: str = "") -> Outcome:
    """Compare one check's measured value (from ``results``) with its cell in ``markdown``."""
    outcome = Outcome(check.id, tier, "MISSING")
    found = locate(markdown, check.section, check.row, check.column)
    if isinstance(found, str):
        outcome.detail = found
    else:
        text, line = found
        outcome.recorded, outcome.detail = text, f"line {line}: {text!r}"
        parsed = parse_number(text, check.number)
        if parsed is None:
            outcome.detail = f"line {line}: no number {check.number} in {text!r}"
        else:
            outcome.recorded_value, half = parsed
            given = [t for t in (check.abs, None if check.rel is None else check.rel * abs(parsed[0])) if t is not None]
            outcome.tolerance = max(given) if given else half
    if results is None:
        outcome.status, outcome.detail = "FAILED", failure or f"the run wrote no {check.file}"
        return outcome
    try:
        outcome.measured = float(lookup(results, check.value))
    except (KeyError, IndexError, TypeError, ValueError):
        outcome.status, outcome.detail = "FAILED", f"{check.file} has no number at {check.value!r}"
        return outcome
    if outcome.recorded_value is None:
        return outcome
    outcome.difference = outcome.measured - outcome.recorded_value
    # exactly half a unit is ok: 0.78125 may print as 0.7812 or 0.7813
    outcome.status = "ok" if abs(outcome.difference) <= outcome.tolerance * (1 + 1e-9) else "MOVED"
    return outcome


def check_all(runs: dict[str, Run], checks: list[Check], markdown: str, keep: Path,
              reuse: bool = False, say=print) -> list[Outcome]:
    """Run each run that ``checks`` need once, in registry order, and judge every check."""
    outcomes = []
    for name in dict.fromkeys(c.run for c in checks):
        run = runs[name]
        say(f"{name} ({run.tier}): {' '.join(run.command).replace('{out}', str(keep / name))}")
        mine = [c for c in checks if c.run == name]
        found, note = execute(run, keep / name, reuse, tuple(dict.fromkeys(c.file for c in mine)))
        say(f"  {note.splitlines()[0]}")
        log = keep / f"{name}.log"
        for c in mine:
            failure = note if found is None else f"the run wrote no {c.file}" + (f" (its log: {log})" if log.is_file() else "")
            outcomes.append(judge(c, run.tier, None if found is None else found.get(c.file), markdown, failure))
    return outcomes


def _fmt(x: float | None, spec: str = ".6g") -> str:
    return "" if x is None else format(x, spec)


def report(outcomes: list[Outcome]) -> str:
    """A table of the outcomes, then the details of those that are not ok."""
    head = ("check", "recorded", "measured", "difference", "tolerance", "status")
    rows = [head] + [(o.id, _fmt(o.recorded_value) or o.recorded or "", _fmt(o.measured),
                      _fmt(o.difference, "+.3g"), _fmt(o.tolerance, ".3g"), o.status)
                     for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for o in outcomes:
        if o.status != "ok":
            lines.append(f"{o.id}: {o.status}: " + o.detail.replace("\n", "\n    "))
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "MOVED", "MISSING", "FAILED")}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no checks")
    return "\n".join(lines)


def select(runs: dict[str, Run], checks: list[Check], tier: str, everything: bool, only: str | None) -> list[Check]:
    if only:
        ids = {c.id: c for c in checks}
        for name in only.split(","):
            if name not in ids:
                raise SystemExit(f"unknown check {name!r}{_did_you_mean(name, ids)}; see --list")
        return [ids[name] for name in only.split(",")]
    return [c for c in checks if everything or runs[c.run].tier == tier]


def main(argv_: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tier", choices=TIERS, default=None, help="run the checks of this tier only (default smoke)")
    ap.add_argument("--all", action="store_true", help="run every tier")
    ap.add_argument("--only", default=None, help="comma-separated check ids (any tier)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="the markdown file to compare with")
    ap.add_argument("--checks", type=Path, default=CHECKS, help="the registry of checks")
    ap.add_argument("--keep", type=Path, default=None, help="folder for the run folders (default: a temp dir)")
    ap.add_argument("--reuse", action="store_true", help="read the results files already under --keep instead of running (a run missing one runs again)")
    ap.add_argument("--list", action="store_true", help="list the checks and the cells they read, run nothing")
    ap.add_argument("--json", type=Path, default=None, help="write the outcomes there")
    args = ap.parse_args(argv_)
    runs, checks = load_registry(args.checks)
    everything = args.all or (args.list and args.tier is None)  # --list: every tier unless one is named
    chosen = select(runs, checks, args.tier or "smoke", everything, args.only)
    if args.list:
        markdown = args.results.read_text()
        for c in chosen:
            found = locate(markdown, c.section, c.row, c.column)
            cell = f"{found[0]!r} (line {found[1]})" if isinstance(found, tuple) else f"MISSING: {found}"
            where = c.value if c.file == "results.json" else f"{c.file}: {c.value}"
            print(f"{c.id} [{runs[c.run].tier}, run {c.run}] {where} <- {cell}")
        return 0
    if args.reuse and args.keep is None:
        raise SystemExit("--reuse reads the runs of --keep DIR: give --keep")
    markdown = args.results.read_text()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        outcomes = check_all(runs, chosen, markdown, args.keep or Path(tmp), args.reuse)
    print(report(outcomes))
    print(f"{len(outcomes)} checks in {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=1) + "\n")
    return 0 if outcomes and all(o.status == "ok" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
