"""How far a trained learned order is from its structural prior: q's orders and p's generation orders against the prior's own.

    OMP_NUM_THREADS=1 python benchmarks/learned_vs_prior.py --run runs/l18/qm9-causal-t025-s0 --n 100 --orders 8

For the first N test items, K orders are drawn from the trained posterior q (as the
estimate draws them) and N generation orders from the policy p (``sample_with_orders``,
its own choices, from empty templates). Each is compared with the prior's order for the
same item (the tokenizer's ``order_prior`` sorted, ties by slot index: on QM9 the ``bfs``
orderer's order): the share of orders identical to it, the share of order positions that
hold the prior's slot, and the mean absolute rank displacement of a slot. A learned order
that only reproduces its prior scores 1, 1, 0. Written to ``RUN/vs_prior_K{K}_n{N}.json``
and printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a finished learned-order `seqify bench` folder (checkpoint.pt)")
    ap.add_argument("--n", type=int, default=100, help="first N test items (and N generations)")
    ap.add_argument("--orders", type=int, default=8, help="K orders from q per item")
    ap.add_argument("--seed", type=int, default=0, help="seed of the order and sampling noise")
    args = ap.parse_args()

    import torch

    from seqify.types import OrderBatch
    from seqify_learned.base import LearnedOrderBase

    from trained_run import load_trained_run  # benchmarks/ is on sys.path

    run = Path(args.run)
    asked, _, data, model, _ = load_trained_run(run)
    if not isinstance(model, LearnedOrderBase):
        raise SystemExit(f"{run}: not a learned-order run (orderer {asked['orderer']!r})")
    n = min(args.n, len(data.test))
    if n == 0:
        raise SystemExit(f"{run}: the test split is empty")
    batch = data.test.batch(list(range(n)))

    def prior_perm(b) -> torch.Tensor:
        scores = model.prior_scores(b)
        if scores is None:
            raise SystemExit(f"{run}: the model has no structural prior to compare with")
        return OrderBatch.from_priorities(b, -scores.masked_fill(~b.target, float("-inf"))).perm

    def compare(perm, prior, target) -> dict[str, float]:
        rows = target.sum(1).clamp_min(1).float()
        same_pos = ((perm == prior) & target.gather(1, prior)).sum(1).float() / rows
        rank = perm.argsort(1).float()
        rank_prior = prior.argsort(1).float()
        shift = ((rank - rank_prior).abs() * target).sum(1) / rows
        return {"identical_orders": float(((perm == prior) | ~target.gather(1, prior)).all(1).float().mean()),
                "positions_as_prior": float(same_pos.mean()), "mean_rank_shift": float(shift.mean())}

    with torch.no_grad():
        rep, _, q_orders, _ = model.posterior_orders(batch, args.orders, rng=torch.Generator().manual_seed(args.seed))
        from_q = compare(q_orders.perm, prior_perm(rep), rep.target)
        template = batch.with_values(batch.values.masked_fill(~batch.given, 0))
        samples, p_orders, _ = model.sample_with_orders(template, rng=torch.Generator().manual_seed(args.seed + 1))
        from_p = compare(p_orders.perm, prior_perm(samples), samples.target)
    found = {"run": str(run), "n": n, "orders": args.orders, "q": from_q, "p_generation": from_p}
    (run / f"vs_prior_K{args.orders}_n{n}.json").write_text(json.dumps(found, indent=1))
    print(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
