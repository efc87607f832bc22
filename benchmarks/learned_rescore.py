"""Score any masked-generator run with the learned orderer's estimator, like with like.

    OMP_NUM_THREADS=1 python benchmarks/learned_rescore.py --run runs/learned/qm9-random --n 100 --orders 8

A run trained with ``--orderer random --generator masked`` is wrapped in a
``LearnedOrderModel`` whose order head and posterior are left at their zero
initialization: q(z | x) and p(z) are both uniform over orders, so
``log p(x, z) - log q(z | x) = log p(x | z)`` and the learned orderer's
``modelability`` gives, on the same first N test items and with the same K:

- the importance-weighted estimate ``-log (1/K) sum_k p(x | z_k)`` (kind "estimate"),
- the bound ``-(1/K) sum_k log p(x | z_k)`` (kind "bound"; what ``seqify bench``
  reports for a random order, with K = 1, as "estimate").

A learned run is scored the same way with its own trained heads. The result is
written to ``RUN/rescore_K{K}_n{N}.json`` and printed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a finished `seqify bench` folder (checkpoint.pt)")
    ap.add_argument("--n", type=int, default=100, help="first N test items")
    ap.add_argument("--orders", type=int, default=8, help="K orders per item")
    ap.add_argument("--batch-size", type=int, default=200)
    args = ap.parse_args()

    import torch

    from seqify import seeding
    from seqify_learned.base import LearnedOrderBase
    from seqify_learned.orderer import LearnedOrder

    from trained_run import load_trained_run  # benchmarks/ is on sys.path

    run = Path(args.run)
    asked, cell, data, model, dev = load_trained_run(run)
    if isinstance(model, LearnedOrderBase):
        orderer = LearnedOrder(**{**cell.orderer.options.model_dump(), "eval_orders": args.orders})
        how = "learned order: q and p as trained"
    else:
        orderer = LearnedOrder(eval_orders=args.orders)
        model = orderer.wrap(model, data.spec)  # zero heads: q and p uniform over orders
        how = "uniform q and p around the run's generator"
    t = time.perf_counter()
    found = orderer.modelability(model.to(dev).eval(), data.test, n=args.n, batch_size=args.batch_size, device=dev,
                                 seed=seeding.stream_seed(asked["seed"], "score"))
    found["seconds"] = round(time.perf_counter() - t, 1)
    found["how"] = how
    found["run"] = str(run)
    (run / f"rescore_K{args.orders}_n{args.n}.json").write_text(json.dumps(found, indent=1))
    keys = ("bits_per_item", "bound_bits_per_item", "value_nats_per_item", "order_nats_per_item",
            "q_entropy_nats_per_item", "top1_accuracy", "n_items", "eval_orders", "seconds")
    print(json.dumps({k: found[k] for k in keys}, indent=1))
    del torch


if __name__ == "__main__":
    main()
