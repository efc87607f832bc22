"""Training throughput under ``train.precision = bf16`` against ``fp32``, in one process.

Both arms train the Sudoku quick budget's masked model (d_model 128, 4 layers, axis
heads) on the same puzzles, orders and seed through :func:`seqify.training.train`; only
the precision differs. Each arm runs ``--repeats`` times, alternating, after a warm-up;
the best time of each is compared and the ratio ``bf16 / fp32`` of steps per second is
printed as ``N.NNx``. It also prints the two final losses (the same run to bf16
accuracy). Take it on an idle machine.

    python benchmarks/precision.py --steps 100 --repeats 3 --seed 0

On a CPU without native bf16 (no AVX512-BF16 or AMX) the bf16 arm is emulated and
slower: the ratio then falls below 1, and seqify warns.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import torch

from seqify.bench import BenchRequest, Reporter, build_model, prepare_data, resolve_cell
from seqify.config import TrainConfig
from seqify.training import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each arm (best counts)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = torch.device("cpu")

    req = BenchRequest(modality="sudoku", orderer="margin", generator="masked", train_orderer="random",
                       out=Path("runs/precision"), budget="quick", seed=args.seed, device="cpu",
                       overrides={"train": {"steps": args.steps, "eval_every": 0, "probe_items": 0}})
    cell = resolve_cell(req)
    data = prepare_data(cell, req, Reporter(), {})
    base = cell.config.train.model_dump()

    def run(precision: str, steps: int) -> tuple[float, float]:
        cfg = TrainConfig(**{**base, "steps": steps, "precision": precision})
        model = build_model(cell, data.spec, args.seed)
        t0 = time.perf_counter()
        log = train(model, data.train, None, cell.train_orderer, cfg, device=device, seed=args.seed)
        return time.perf_counter() - t0, log.loss[-1][1]

    for precision in ("fp32", "bf16"):  # warm-up: kernels, allocator
        run(precision, 5)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    final: dict[str, float] = {}
    for _ in range(args.repeats):
        for precision in ("fp32", "bf16"):
            seconds, final[precision] = run(precision, args.steps)
            times[precision].append(seconds)
    rate = {k: args.steps / min(v) for k, v in times.items()}
    g = cell.generator_config
    print(f"model: d_model {g.d_model}, {g.n_layers} layers, axis_heads {g.axis_heads}; batch "
          f"{base['batch_size']}, {args.steps} steps; torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}, native bf16 "
          f"{torch.ops.mkldnn._is_mkldnn_bf16_supported()}, python {platform.python_version()}")
    for k in ("fp32", "bf16"):
        print(f"{k}: {rate[k]:6.2f} steps/s (runs: " + ", ".join(f"{t:.2f}" for t in times[k])
              + f" s), final loss {final[k]:.4f}")
    ratio = rate["bf16"] / rate["fp32"]
    print(f"bf16 / fp32 step throughput: {ratio:.2f}x")
    if not math.isfinite(ratio):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
