"""How much a kind-level order would pay on a trained masked model: value NLL per item
along uniformly random orders, atoms-first and bonds-first orders (random within a kind).

    OMP_NUM_THREADS=1 python benchmarks/learned_kind_orders.py --run runs/learned/probe-exact --n 100

Each order is walked exactly (one backbone pass per slot); only the values are scored
(no order terms), so the three numbers are log p(x | z) of the same generator under
three order distributions. A learned policy can gain at most what the best of these
structured orders gains over random ones, unless training on its orders changes the
generator. Writes ``RUN/kind_orders_n{N}.json``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2, help="orders per item and kind of order")
    args = ap.parse_args()

    import torch

    from seqify.types import OrderBatch
    from seqify_learned.base import LearnedOrderBase

    from trained_run import load_trained_run  # benchmarks/ is on sys.path

    run = Path(args.run)
    _, _, data, model, dev = load_trained_run(run)
    gen = model.generator if isinstance(model, LearnedOrderBase) else model
    gen.eval()
    batch = data.test.batch(torch.arange(min(args.n, len(data.test))), dev)
    rng = torch.Generator().manual_seed(0)
    kinds = [k.name for k in data.spec.kinds]
    out: dict[str, float] = {}
    with torch.no_grad():
        for name in ["random"] + [f"{k}-first" for k in kinds]:
            total = 0.0
            for _ in range(args.repeats):
                priority = torch.rand(batch.values.shape, generator=rng)
                if name != "random":
                    first = kinds.index(name.removesuffix("-first"))
                    priority = priority + 10.0 * (batch.kinds != first).float()
                scores, _ = gen.score(batch, OrderBatch.from_priorities(batch, priority))
                total += float(-scores.logp.double().sum()) / batch.batch_size
            out[f"{name}_value_nats_per_item"] = round(total / args.repeats, 3)
    out["n_items"] = batch.batch_size
    out["repeats"] = args.repeats
    out["log_n_factorial"] = round(math.lgamma(float(batch.target.sum(1).float().mean()) + 1), 2)
    (run / f"kind_orders_n{args.n}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
