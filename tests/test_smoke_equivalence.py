"""The refactor changed no number: smoke cells against the figures recorded before it.

Exact on the machine the reference was recorded on (benchmarks/smoke_reference.json, one
torch thread); marked slow, since another CPU's kernels may move a figure."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_smoke_cells_give_the_recorded_numbers():
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "smoke_equivalence.py"),
                          "--only", "sudoku-causal-raster,sudoku-learned,qm9-graph-bfs"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count(", same") == 3
