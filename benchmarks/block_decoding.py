"""Block decoding speed of the causal generator: one model, k slots per step, one process.

Issue 19's speed targets, each measured on one model in one process, the orders one
after the other on the same templates, best of ``--repeats``:

* **QM9** (graph tokenizer, the quick budget's causal model): the ``parallel`` orderer
  with k = 1, 2, 4, 8 slots per step along a random base order. k = 1 is the single
  stream (one token per step through the KV cache); k > 1 the block layout, one
  transformer pass per block. Target: k = 4 at least 2x faster than k = 1.
* **MNIST next-scale tokens** (the quick budget's ``next-scale`` tokenizer, 104 slots
  over scales 1, 2, 3, 4, 5, 7): the same tokens sampled in ``raster`` order (one slot
  per step) and in ``next-scale`` order (one scale per step, 6 passes). Target:
  next-scale at least 3x faster than raster.

The sampling time of a fixed-length tokenizer does not depend on the weights (the
number of steps and the shapes are fixed by the order), so by default the model keeps
its seeded initial weights; ``--qm9-run`` / ``--image-run`` time a trained
``seqify bench`` run's model instead. It prints, per row: forward passes per batch,
process-CPU and wall-clock ms per item, and the ratios to the reference row (k = 1;
raster), and writes ``--out`` (JSON) when given. With one torch thread the CPU time is
the figure to read on a shared machine (it does not count the time spent waiting for a
core); on an idle machine the two agree.

    OMP_NUM_THREADS=1 python benchmarks/block_decoding.py --n 250 --repeats 5 --seed 0 --out runs/block_decoding.json
    python benchmarks/block_decoding.py --quick-check   # tiny sizes: checks that it runs
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from seqify.bench import BenchRequest, build_model, resolve_cell
from seqify.bench.prepare import prepare_data
from seqify.bench.request import Reporter
from seqify.io import atomic_write_text, load_checkpoint
from seqify.types import collate


def cell_and_model(fields: dict[str, Any], *, budget: str, seed: int, run: str | None, device: str = "cpu"):
    """The cell's components with a fitted (or restored) tokenizer, and its model on ``device``."""
    req = BenchRequest(out=Path("unused"), budget=budget, seed=seed, device=device, **fields)
    cell = resolve_cell(req)
    if run is not None:
        state = load_checkpoint(Path(run) / "checkpoint.pt")
        cell.tokenizer.load_state_dict(state["tokenizer"])
        model = build_model(cell, cell.tokenizer.spec, seed)
        model.load_state_dict(state["model"])
    else:
        prepare_data(cell, req, Reporter(), {}, device=torch.device(device))
        model = build_model(cell, cell.tokenizer.spec, seed)
    return cell, model.to(device).eval()


def time_sampling(model, template, orderers: list[tuple[str, Any]], *, repeats: int, seed: int
                  ) -> dict[str, dict[str, float]]:
    """Per order: the best of ``repeats`` wall-clock and process-CPU seconds to fill
    ``template``, and the transformer passes it took. The orders take turns within each
    repeat, so a burst of load elsewhere hits them alike; with one torch thread the
    process CPU time is the work itself, whatever else runs on the machine."""
    passes: list[int] = []
    handle = model.stack.register_forward_pre_hook(lambda *_: passes.append(1))
    found = {label: {"wall": float("inf"), "cpu": float("inf"), "passes": 0} for label, _ in orderers}
    try:
        for _ in range(repeats):
            for label, orderer in orderers:
                passes.clear()
                rng = torch.Generator().manual_seed(seed)
                cuda = template.values.is_cuda
                if cuda:
                    torch.cuda.synchronize()
                wall, cpu = time.perf_counter(), time.process_time()
                with torch.no_grad():
                    model.sample(template, orderer, rng=rng, temperature=1.0)
                if cuda:
                    torch.cuda.synchronize()
                row = found[label]
                row["wall"] = min(row["wall"], time.perf_counter() - wall)
                row["cpu"] = min(row["cpu"], time.process_time() - cpu)
                row["passes"] = len(passes)
    finally:
        handle.remove()
    return found


def blank_template(cell, n: int, device: str = "cpu"):
    blank = cell.tokenizer.blank()
    if blank is None:
        raise SystemExit(f"{cell.names['tokenizer']}: no blank layout to time unconditional sampling on")
    return collate([blank] * n).to(device)


def measure(name: str, cell, model, orderers: list[tuple[str, Any]], *, n: int, repeats: int, seed: int,
            device: str = "cpu") -> list[dict]:
    template = blank_template(cell, n, device)
    found = time_sampling(model, template, orderers, repeats=repeats, seed=seed)
    rows = [{"order": label, "passes": f["passes"], "ms_per_item": 1000 * f["wall"] / n,
             "cpu_ms_per_item": 1000 * f["cpu"] / n} for label, f in found.items()]
    for row in rows:
        row["speedup"] = rows[0]["ms_per_item"] / row["ms_per_item"]
        row["cpu_speedup"] = rows[0]["cpu_ms_per_item"] / row["cpu_ms_per_item"]
    print(f"\n{name}: {n} items per batch, best of {repeats} (orders in turn), {torch.get_num_threads()} thread(s), "
          f"{model.num_parameters():,} parameters\n")
    print("| order | passes per batch | CPU ms per item | speed vs first row (CPU) | wall ms per item | "
          "speed vs first row (wall) |\n|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['order']} | {row['passes']} | {row['cpu_ms_per_item']:.2f} | {row['cpu_speedup']:.2f}x | "
              f"{row['ms_per_item']:.2f} | {row['speedup']:.2f}x |")
    return rows


def main() -> None:
    from seqify_orderers.orderers import Parallel, Raster

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=250, help="items per batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ks", default="1,2,4,8")
    parser.add_argument("--qm9-run", default=None, help="a trained QM9 causal run folder (default: seeded initial weights)")
    parser.add_argument("--image-run", default=None, help="a trained next-scale causal run folder")
    parser.add_argument("--only", choices=("qm9", "image"), default=None)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (on a GPU the wall-clock columns are the ones "
                        "to read; the process CPU time then counts the host only)")
    parser.add_argument("--quick-check", action="store_true", help="smoke budget, 8 items, 1 repeat")
    args = parser.parse_args()
    budget = "smoke" if args.quick_check else "quick"
    n, repeats = (8, 1) if args.quick_check else (args.n, args.repeats)
    result: dict[str, Any] = {"budget": budget, "n": n, "repeats": repeats, "seed": args.seed,
                              "threads": torch.get_num_threads(), "torch": torch.__version__,
                              "machine": platform.processor() or platform.machine(), "device": args.device}
    if args.only in (None, "qm9"):
        fields = {"modality": "molecule", "dataset": "qm9", "tokenizer": "graph", "generator": "causal",
                  "orderer": "parallel"}
        cell, model = cell_and_model(fields, budget=budget, seed=args.seed, run=args.qm9_run, device=args.device)
        orderers = [(f"parallel k={k}", Parallel(k=int(k))) for k in args.ks.split(",")]
        result["qm9"] = measure("QM9, graph tokens, causal", cell, model, orderers, n=n, repeats=repeats, seed=args.seed,
                                device=args.device)
    if args.only in (None, "image"):
        from seqify_orderers.spatial import NextScale

        fields = {"modality": "image", "tokenizer": "next-scale", "generator": "causal", "orderer": "next-scale"}
        cell, model = cell_and_model(fields, budget=budget, seed=args.seed, run=args.image_run, device=args.device)
        orderers = [("raster", Raster()), ("next-scale", NextScale())]
        result["image"] = measure("MNIST, next-scale tokens, causal", cell, model, orderers, n=n, repeats=repeats,
                                  seed=args.seed, device=args.device)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out), json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
