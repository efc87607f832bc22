"""Bad input, end to end: a Sudoku CSV with malformed rows among good ones.

Writes N generated puzzles in the common ``quizzes,solutions`` format with the
malformed rows of tests/data/sudoku_bad_rows.csv spread through it, then loads it the
way ``seqify bench --dataset csv`` does and prints every reported row and the counts.

    python benchmarks/sudoku_bad_rows.py --n 2000 --seed 0 --out runs/bad_rows.csv
    seqify bench --modality sudoku --dataset csv --data runs/bad_rows.csv \
        --orderer margin --generator masked --budget smoke --out runs/bad-rows
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from seqify.data import RowReport
from seqify_sudoku.csvio import load_csv
from seqify_sudoku.generator import generate_puzzles

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "sudoku_bad_rows.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="good puzzles")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/bad_rows.csv"))
    args = ap.parse_args()

    report = RowReport(log_first=0)
    good_fixture = {(i.puzzle, i.solution) for i in load_csv(FIXTURE, report)}
    bad_lines = []
    with FIXTURE.open() as fh:
        for row in list(csv.reader(fh))[1:]:
            if len(row) != 2 or tuple(row) not in good_fixture:
                bad_lines.append(row)
    good = [(p.puzzle, p.solution) for p in generate_puzzles(args.n, clues=30, seed=args.seed)]
    step = max(1, len(good) // (len(bad_lines) + 1))
    rows: list[list[str]] = []
    for i, g in enumerate(good):
        rows.append(list(g))
        if i % step == step - 1 and bad_lines:
            rows.append(bad_lines.pop(0))
    rows.extend(bad_lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["quizzes", "solutions"])
        w.writerows(rows)

    report = RowReport(log_first=0)
    items = load_csv(args.out, report)
    print(f"wrote {args.out}: {len(rows)} data rows ({args.n} good)")
    for bad in report.bad:
        print(f"  skipped {bad}")
    print(f"kept {len(items)} rows, skipped {report.skipped} (read {report.read})")


if __name__ == "__main__":
    main()
