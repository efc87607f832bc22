"""Data-parallel training under torchrun against one process on the same global batch.

Runs the same `seqify bench` command twice:

1. under ``torchrun --standalone --nproc-per-node=N --no-python seqify bench ...``: N
   processes (gloo on CPU, NCCL on GPUs), each training on 1/N of every global batch;
2. in one process.

It prints the rows each process trained on, both loss curves, the largest weight
difference between the two final models and the wall times, and writes
``OUT/distributed.json``; it exits 1 when the models differ beyond float tolerance
(the loss must average equally many tokens per item for exact agreement: Sudoku).

    python benchmarks/distributed.py --nproc 2 --steps 12 --batch-size 16 --seed 3 --out runs/ddp
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2, help="processes (one per GPU on a GPU machine)")
    parser.add_argument("--modality", default="sudoku")
    parser.add_argument("--orderer", default="raster")
    parser.add_argument("--generator", default="causal")
    parser.add_argument("--budget", default="smoke")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16, help="the global batch")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    import torch

    from seqify.io import atomic_write_json, atomic_write_text, load_checkpoint

    args.out.mkdir(parents=True, exist_ok=True)
    config = atomic_write_text(args.out / "ddp.toml", f"[train]\nsteps = {args.steps}\nbatch_size = {args.batch_size}\n"
                                                      f"lr = {args.lr}\n")
    seqify = str(Path(sys.executable).parent / "seqify")
    cell = ["bench", "--modality", args.modality, "--orderer", args.orderer, "--generator", args.generator,
            "--budget", args.budget, "--seed", str(args.seed), "--device", args.device, "--config", str(config),
            "--no-resume"]
    many, one = args.out / f"nproc{args.nproc}", args.out / "nproc1"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
              "--no-python", seqify, *cell, "--out", str(many)]
    t = time.perf_counter()
    run_many = subprocess.run(launch, env=env, capture_output=True, text=True)
    wall_many = time.perf_counter() - t
    if run_many.returncode:
        raise SystemExit(f"torchrun failed ({run_many.returncode}):\n{run_many.stdout[-3000:]}\n{run_many.stderr[-3000:]}")
    t = time.perf_counter()
    run_one = subprocess.run([seqify, *cell, "--out", str(one)], env=env, capture_output=True, text=True)
    wall_one = time.perf_counter() - t
    if run_one.returncode:
        raise SystemExit(f"the single-process run failed:\n{run_one.stderr[-3000:]}")

    a, b = load_checkpoint(many / "checkpoint.pt")["model"], load_checkpoint(one / "checkpoint.pt")["model"]
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in b)
    rm, r1 = (json.loads((d / "results.json").read_text()) for d in (many, one))
    summary = {
        "launch": " ".join(["torchrun", "--standalone", f"--nproc-per-node={args.nproc}", "--no-python", "seqify",
                            *cell, "--out", str(many)]),
        "processes": rm["training"]["processes"],
        "items_per_process": rm["training"]["items_per_process"],
        "single_items_per_step": r1["training"]["items_per_process"],
        "loss_curve": {"distributed": rm["training"]["loss_curve"], "single": r1["training"]["loss_curve"]},
        "max_weight_difference": diff,
        "reports_printed": run_many.stdout.count("results:"),
        "wall_s": {"distributed": round(wall_many, 2), "single": round(wall_one, 2)},
        "torch": torch.__version__,
    }
    atomic_write_json(args.out / "distributed.json", summary)
    print(f"{summary['processes']} processes x {summary['items_per_process']} items vs 1 process x "
          f"{summary['single_items_per_step']} items per step, {args.steps} steps")
    for (s, lm), (_, l1) in zip(*summary["loss_curve"].values()):
        print(f"  step {s:>4}: loss {lm:.5f} (distributed)  {l1:.5f} (single)")
    print(f"largest weight difference: {diff:.3g}; results printed by {summary['reports_printed']} process(es); "
          f"wall {wall_many:.1f} s vs {wall_one:.1f} s (start-up included)")
    ok = (diff <= 1e-5 and summary["reports_printed"] == 1
          and summary["items_per_process"] * args.nproc == summary["single_items_per_step"])
    print("OK: the processes together take the single-process steps" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
