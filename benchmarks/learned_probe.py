"""One learned-order (or comparison) cell with live policy diagnostics and optional
parameter groups for the order heads.

    OMP_NUM_THREADS=1 python benchmarks/learned_probe.py --out runs/learned/probe-a --steps 300 \
        --orderer learned --set estimator=exact-next --grouped

It runs ``seqify bench`` (``run_bench``) for QM9 at the quick budget with the given
overrides, and prints the policy statistics the model logs (order NLL against
uniform, q's entropy deficit, the order cost, value NLL under q's orders against
uniform orders, q's first pick) every ``--every`` steps.

``--grouped`` sets ``policy_weight_decay = 0``: no weight decay on the order head and
posterior (the training loop builds AdamW from ``LearnedOrderModel.param_groups``;
``--set policy_lr_scale=10`` gives them their own learning rate).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--orderer", default="learned")
    ap.add_argument("--generator", default=None)
    ap.add_argument("--modality", default="molecule")
    ap.add_argument("--dataset", default="qm9")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="orderer option KEY=VALUE")
    ap.add_argument("--train", action="append", default=[], help="train option KEY=VALUE")
    ap.add_argument("--n-test", type=int, default=None)
    ap.add_argument("--n-samples", type=int, default=None)
    ap.add_argument("--grouped", action="store_true", help="no weight decay on the order parameters")
    ap.add_argument("--every", type=int, default=25)
    args = ap.parse_args()

    import seqify.training as training
    from seqify.bench import BenchRequest, Reporter, run_bench

    overrides: dict = {}
    if args.set or args.grouped:
        overrides["orderer"] = {k: _parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    if args.grouped:
        overrides["orderer"].setdefault("policy_weight_decay", 0.0)
    if args.train:
        overrides["train"] = {k: _parse_value(v) for k, v in (s.split("=", 1) for s in args.train)}
    ev = {}
    if args.n_test is not None:
        ev["n_test"] = args.n_test
    if args.n_samples is not None:
        ev["n_samples"] = args.n_samples
    if ev:
        overrides["eval"] = ev

    holder: dict = {}
    original_train = training.train
    t0 = time.time()

    def train(model, *a, **kw):
        step = getattr(model, "loss_with_stats", None)
        if step is not None:  # keep each step's statistics (device tensors) for the live print

            def loss_with_stats(batch, order):
                loss, stats = step(batch, order)
                holder["stats"] = stats
                return loss, stats

            model.loss_with_stats = loss_with_stats
        return original_train(model, *a, **kw)

    training.train = train

    class Live(Reporter):
        def __init__(self):
            self.step = 0
            self.stage_name = ""

        def stage(self, name, total=None):
            self.stage_name, self.step = name, 0
            print(f"[{time.time() - t0:7.1f}s] stage: {name}", flush=True)

        def advance(self, n=1, info=""):
            self.step += n
            stats = holder.get("stats")
            if self.stage_name.startswith("train") and stats and self.step % args.every == 0:
                stats = {k: float(v) for k, v in stats.items()}  # read back only when printed
                keys = ("elbo_nats_per_slot", "order_nll", "uniform_order_nll", "order_cost", "value_nll",
                        "uniform_value_nll", "q_entropy_deficit", "policy_entropy_deficit")
                shown = " ".join(f"{k}={stats[k]:.3f}" for k in keys if k in stats)
                first = " ".join(f"{k}={v:.3f}" for k, v in stats.items() if k.startswith("first_"))
                print(f"[{time.time() - t0:7.1f}s] step {self.step} {shown} {first} {info}", flush=True)

        def log(self, message):
            print(message, flush=True)

    req = BenchRequest(modality=args.modality, orderer=args.orderer, out=Path(args.out), dataset=args.dataset,
                       generator=args.generator, budget="quick", steps=args.steps, seed=args.seed,
                       overrides=overrides)
    result = run_bench(req, Live())
    res = json.loads((Path(args.out) / "results.json").read_text())
    print(json.dumps({"modelability": res.get("modelability"), "metrics": res.get("metrics"),
                      "train_seconds": res.get("training", {}).get("seconds")}, indent=1, default=str)[:4000])
    del result
    sys.stdout.flush()


if __name__ == "__main__":
    main()
