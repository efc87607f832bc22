"""Complete a learned-order run's test items again under other generation-time settings
of its order policy, from the run's checkpoint (no retraining).

The policy's ``greedy_order`` (its most likely next slot instead of a sampled one) does
not change training, so one trained model serves both. Each setting writes
``OUT/<key>-<value>/sample_results.json`` and prints the modality's metrics.

    python benchmarks/learned_complete.py --run runs/sudoku-learned --out runs/sudoku-learned-complete \
        --set greedy_order=false --set greedy_order=true
"""

from __future__ import annotations

import argparse
from pathlib import Path

from seqify.bench import run_sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished `seqify bench --orderer learned` folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=true|false",
                    help="one generation-time setting of the orderer per completion (repeatable)")
    args = ap.parse_args()
    for setting in args.set or ["greedy_order=false"]:
        key, _, raw = setting.partition("=")
        if raw.lower() not in ("true", "false"):
            raise SystemExit(f"--set {setting!r}: expected KEY=true or KEY=false")
        result = run_sample(args.run, args.out / f"{key}-{raw.lower()}", device="cpu",
                            orderer={key: raw.lower() == "true"})
        shown = {k: round(v, 4) for k, v in result.results["metrics"].items() if isinstance(v, float)}
        print(f"{setting}: {result.results['n_samples']} items: {shown}")


if __name__ == "__main__":
    main()
