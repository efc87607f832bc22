"""The learned order's cost per training step against random-order training, in one process.

Both arms train the quick budget's generator (``--generator``, masked by default) of a modality (QM9 by default)
through :func:`seqify.training.train` on the same data and seed: the reference arm on
uniformly random orders (``--reference random``, what ``seqify bench --orderer random
--generator masked`` trains; ``--generator causal --reference bfs`` for the causal
generator against its best fixed order), the other arm with the ``learned`` orderer and the
``--set KEY=VALUE`` options given. Each arm runs ``--repeats`` times, alternating, after
a warm-up; the best time of each counts. It prints seconds per step of each arm and the
ratio ``learned / reference`` as ``N.NNx`` (the issue-18 target is at most 1.5x), which is
what equal wall-clock comparisons use to give the random arm its steps. Take it on an
idle machine (or with one thread, beside nothing heavier).

    python benchmarks/learned_cost.py --steps 40 --repeats 3 --seed 0
    python benchmarks/learned_cost.py --set orders_share_batch=true
    python benchmarks/learned_cost.py --generator causal --reference bfs
    python benchmarks/learned_cost.py --generator causal --reference random --reference-generator masked
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from seqify.bench import BenchRequest, Reporter, build_model, prepare_data, resolve_cell
from seqify.config import TrainConfig
from seqify.training import train

from learned_probe import _parse_value  # the same KEY=VALUE parsing as the probe (benchmarks/ is on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", default="molecule")
    parser.add_argument("--dataset", default="qm9")
    parser.add_argument("--steps", type=int, default=40, help="training steps per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each arm (best counts)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="learned orderer option KEY=VALUE")
    parser.add_argument("--generator", default="masked", help="the generator both arms train (masked or causal)")
    parser.add_argument("--reference", default="random", help="the reference arm's orderer (random; bfs for causal)")
    parser.add_argument("--reference-generator", default=None,
                        help="the reference arm's generator (default: --generator; masked with --reference random "
                        "is random-order training, the baseline the issue-18 cost target names)")
    args = parser.parse_args()
    device = torch.device("cpu")
    options = {k: _parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}

    arms = {}
    ref_generator = args.reference_generator or args.generator
    for name, orderer, generator, extra in (("reference", args.reference, ref_generator, {}),
                                            ("learned", "learned", args.generator, {"orderer": options})):
        req = BenchRequest(modality=args.modality, dataset=args.dataset, orderer=orderer, generator=generator,
                           out=Path("runs/learned_cost"), budget="quick", seed=args.seed, device="cpu",
                           overrides={"train": {"eval_every": 0, "probe_items": 0}, **extra})
        cell = resolve_cell(req)
        data = prepare_data(cell, req, Reporter(), {})
        arms[name] = (cell, data)

    def run(name: str, steps: int) -> float:
        cell, data = arms[name]
        cfg = TrainConfig(**{**cell.config.train.model_dump(), "steps": steps})
        model = build_model(cell, data.spec, args.seed)
        t0 = time.perf_counter()
        train(model, data.train, None, cell.train_orderer, cfg, device=device, seed=args.seed)
        return time.perf_counter() - t0

    for name in arms:  # warm-up: kernels, allocator
        run(name, 3)
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.repeats):
        for name in arms:
            times[name].append(run(name, args.steps))
    per_step = {name: min(v) / args.steps for name, v in times.items()}
    cell = arms["reference"][0]
    print(f"{args.modality}/{args.dataset} quick {args.generator} generator, reference {args.reference} on {ref_generator}, batch {cell.config.train.batch_size}, "
          f"{args.steps} steps x {args.repeats}, threads {torch.get_num_threads()}; learned options {options or '(defaults)'}")
    for name in arms:
        print(f"{name}: {per_step[name]:.4f} s/step (runs: " + ", ".join(f"{t:.2f}" for t in times[name]) + " s)")
    ratio = per_step["learned"] / per_step["reference"]
    print(f"learned / {args.reference} time per step: {ratio:.2f}x")
    if not math.isfinite(ratio):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
