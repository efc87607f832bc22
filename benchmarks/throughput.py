"""Training steps per second of one cell at its own settings, and the projected time of its full run.

Builds the cell as ``seqify bench`` would (same budget, config file, model, orderer and
precision), then runs :func:`seqify.training.train` with the full step count, so the
schedule and the loop's read-back interval (every ``steps / 100`` steps) are the full
run's. It stops after ``--warmup + --measure`` steps: the clock runs from the end of the
warm-up step to the last measured one, with the device synchronized at both ends.

    python benchmarks/throughput.py --modality sudoku --orderer margin --generator masked \\
        --train-orderer random --budget full --config benchmarks/configs/sudoku_full.toml \\
        --device cuda --out runs/throughput/sudoku.json

Projected training time = the config's steps / steps per second. It leaves out what the
full run does besides training steps: data preparation, the periodic validation and
probes (``eval_every``), the checkpoint saves (``checkpoint_every``) and the evaluation
after training. ``--limit`` caps the training items loaded (default 20,000; the steps'
cost does not depend on how many items there are, only preparing them does).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


class _Enough(Exception):
    """Raised from the step callback once the measured steps are done."""


def measure(req, *, warmup: int, steps: int) -> dict:
    """Steps per second of ``req``'s cell (a :class:`~seqify.bench.BenchRequest`)."""
    import torch

    from seqify.bench import Reporter, build_model, pick_device, prepare_data, resolve_cell
    from seqify.training import train

    cell = resolve_cell(req)
    device = pick_device(req.device)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    data = prepare_data(cell, req, Reporter(), timings, device=device)
    prepare_s = time.perf_counter() - t
    model = build_model(cell, data.spec, req.seed).to(device)
    cfg = cell.config.train
    if warmup + steps > cfg.steps:
        raise ValueError(f"--warmup {warmup} + --measure {steps} exceed the config's {cfg.steps} steps")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    marks: dict[int, float] = {}

    def on_step(step: int, loss: float) -> None:
        done = step + 1
        if done in (warmup, warmup + steps):
            sync()
            marks[done] = time.perf_counter()
        if done == warmup + steps:
            raise _Enough

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        train(model, data.train, None, cell.train_orderer, cfg, device=device, seed=req.seed, on_step=on_step)
    except _Enough:
        pass
    seconds = marks[warmup + steps] - marks[warmup]
    sps = steps / seconds
    return {
        "cell": cell.names,
        "budget": req.budget,
        "config_file": str(req.config_file) if req.config_file else None,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": cfg.precision,
        "batch_size": cfg.batch_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "warmup_steps_untimed": warmup,
        "measured_steps": steps,
        "measured_s": round(seconds, 4),
        "steps_per_second": round(sps, 4),
        "items_per_second": round(sps * cfg.batch_size, 2),
        "full_steps": cfg.steps,
        "projected_train_s": round(cfg.steps / sps, 1),
        "projected_train_h": round(cfg.steps / sps / 3600, 3),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None,
        "prepare_s": round(prepare_s, 2),
        "n_train_loaded": len(data.train),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", required=True)
    parser.add_argument("--orderer", required=True)
    parser.add_argument("--generator")
    parser.add_argument("--tokenizer")
    parser.add_argument("--train-orderer")
    parser.add_argument("--dataset")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--budget", default="full")
    parser.add_argument("--config", type=Path, help="a config file, as seqify bench --config")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=10, help="steps before the clock starts")
    parser.add_argument("--measure", type=int, default=40, help="steps timed")
    parser.add_argument("--limit", type=int, default=20_000, help="training items loaded (0: the config's)")
    parser.add_argument("--batch-size", type=int, help="override train.batch_size (a dry run on a CPU; the "
                                                         "projection is then not the config's)")
    parser.add_argument("--out", type=Path, help="write the result here as JSON")
    args = parser.parse_args(argv)

    from seqify.bench import BenchRequest
    from seqify.io import atomic_write_json

    req = BenchRequest(
        modality=args.modality, orderer=args.orderer, generator=args.generator, tokenizer=args.tokenizer,
        train_orderer=args.train_orderer, dataset=args.dataset, data=args.data, budget=args.budget,
        config_file=args.config, device=args.device, seed=args.seed, out=Path("runs/throughput"),
        overrides={**({"data": {"limit": args.limit}} if args.limit else {}),
                   **({"train": {"batch_size": args.batch_size}} if args.batch_size else {})},
    )
    result = measure(req, warmup=args.warmup, steps=args.measure)
    result["limit"] = args.limit or None
    if args.out:
        atomic_write_json(args.out, result)
    print(f"{result['steps_per_second']:.3f} steps/s ({result['items_per_second']:.0f} items/s) on "
          f"{result['device_name']}: {result['full_steps']} steps in {result['projected_train_h']:.2f} h "
          f"(training only)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
