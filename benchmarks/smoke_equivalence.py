"""Behaviour unchanged: the smoke cells of every modality give the results.json numbers recorded.

Runs one smoke cell per (modality, tokenizer, orderer, generator) row of ``CELLS`` (every
modality, each kind of orderer: static, adaptive, learned, blocks) and compares every
number of its results.json (modelability, reconstruction, metrics, headline, order
diagnostics, training log) with ``benchmarks/smoke_reference.json``.

The reference was recorded before the closed-protocols refactor (issue 17), on this
machine with one torch thread (the two image cells again for issue 21, whose shipped feature
extractor replaced the per-run classifier: their metrics moved, nothing else; for issue 19 image-nextscale and
pointcloud-coords-parallel, whose merged block layout and f_hat inputs changed the causal generator's blocks, and
the octree cell, whose trees grow as decoded: its tokens, model and samples changed, and both point-cloud cells
gained the ``thinned`` count), so the comparison is exact on the same kind of CPU; on
another CPU, learned tokenizers and bf16 kernels may move figures (see RESULTS.md).

    python benchmarks/smoke_equivalence.py             # compare with the reference
    python benchmarks/smoke_equivalence.py --record    # write the reference anew
    python benchmarks/smoke_equivalence.py --only sudoku-margin

Exits 1 when a figure differs by more than ``--rtol`` (default 1e-6), naming it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("SEQIFY_LOAD_PLUGINS", "orderers,generators,sudoku,molecule,learned,image,pointcloud")

REFERENCE = Path(__file__).with_name("smoke_reference.json")

#: name -> BenchRequest fields (budget smoke, seed 0)
CELLS: dict[str, dict] = {
    "sudoku-margin": dict(modality="sudoku", orderer="margin", generator="masked", train_orderer="random"),
    "sudoku-causal-raster": dict(modality="sudoku", orderer="raster", generator="causal"),
    "sudoku-learned": dict(modality="sudoku", orderer="learned", generator="masked"),
    "qm9-graph-bfs": dict(modality="molecule", dataset="qm9", tokenizer="graph", orderer="bfs", generator="causal"),
    "qm9-smiles-raster": dict(modality="molecule", dataset="qm9", tokenizer="smiles", orderer="raster",
                              generator="causal"),
    "qm9-learned": dict(modality="molecule", dataset="qm9", orderer="learned", generator="masked"),
    "image-vq-hilbert": dict(modality="image", tokenizer="vq", orderer="hilbert", generator="causal"),
    "image-nextscale": dict(modality="image", tokenizer="next-scale", orderer="next-scale", generator="causal"),
    "pointcloud-coords-parallel": dict(modality="pointcloud", tokenizer="coords", orderer="parallel",
                                       generator="causal"),
    "pointcloud-octree-raster": dict(modality="pointcloud", tokenizer="octree", orderer="raster",
                                     generator="causal"),
}

#: results.json sections whose numbers must not move (timings and versions may)
SECTIONS = ("modelability", "reconstruction", "metrics", "headline", "order_diagnostics", "training", "data")
#: keys inside those sections that are wall-clock or machine dependent
VOLATILE = {"seconds", "files", "reused_model", "items_per_second", "steps_per_second", "metric_timings", "from_cache"}


def numbers(value, prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of ``value`` under a dotted path."""
    found: dict[str, float] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            if k in VOLATILE:
                continue
            found.update(numbers(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found.update(numbers(v, f"{prefix}[{i}]"))
    elif isinstance(value, bool):
        found[prefix] = float(value)
    elif isinstance(value, (int, float)):
        found[prefix] = float(value)
    return found


def run_cell(name: str, out: Path) -> dict[str, float]:
    import torch

    from seqify.bench import BenchRequest, run_bench

    torch.set_num_threads(1)
    req = BenchRequest(out=out / name, budget="smoke", seed=0, device="cpu", **CELLS[name])
    results = run_bench(req).results
    return numbers({k: results.get(k) for k in SECTIONS if k in results})


def _volatile(key: str) -> bool:
    return any(part.split("[")[0] in VOLATILE for part in key.split("."))


def compare(name: str, got: dict[str, float], want: dict[str, float], rtol: float) -> list[str]:
    got = {k: v for k, v in got.items() if not _volatile(k)}
    want = {k: v for k, v in want.items() if not _volatile(k)}
    problems = []
    for key in sorted(set(got) | set(want)):
        if key not in got:
            problems.append(f"{name}: {key} missing (recorded {want[key]})")
        elif key not in want:
            problems.append(f"{name}: {key} is new ({got[key]})")
        else:
            a, b = got[key], want[key]
            same = (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rtol, abs_tol=rtol)
            if not same:
                problems.append(f"{name}: {key} = {a!r}, recorded {b!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", action="store_true", help="write the reference from this code")
    ap.add_argument("--only", default=None, help="comma-separated cell names")
    ap.add_argument("--rtol", type=float, default=1e-6)
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else list(CELLS)
    reference = json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            got = run_cell(name, Path(tmp))
            if args.record:
                reference[name] = got
                print(f"{name}: recorded {len(got)} figures")
                continue
            found = compare(name, got, reference.get(name, {}), args.rtol)
            print(f"{name}: {len(got)} figures, " + ("same" if not found else f"{len(found)} differ"))
            problems += found
    if args.record:
        REFERENCE.write_text(json.dumps(reference, indent=1, sort_keys=True) + "\n")
        return 0
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
