"""How long FCD takes on this machine (fcd-torch 1.0.7 ChemNet, QM9).

Times (1) the ChemNet statistics of N generated molecules (here: N real QM9
training molecules, drawn with --seed), (2) the one-off reference statistics of the
QM9 test split (13,082 molecules; cached on disk in normal runs), and (3) the
Frechet distance itself, with fcd-torch's scipy sqrtm (what seqify uses) and with
the eigenvalue formula seqify falls back to when sqrtm fails. It also prints the FCD of those N training molecules against the test
split: ANCHORS.md gives ~0.41 for 1,000 and ~0.04 for 10,000.

    python benchmarks/fcd_speed.py --n 1000 --seed 0
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="generated molecules to score (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed for drawing them from QM9 train (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device for ChemNet (default cpu)")
    parser.add_argument("--batch-size", type=int, default=512, help="SMILES per ChemNet pass (default 512)")
    parser.add_argument("--skip-reference", action="store_true", help="do not time the 13,082-molecule reference")
    args = parser.parse_args()

    import torch
    from fcd_torch.utils import calculate_frechet_distance

    from seqify.data import RowReport
    from seqify_molecule.metrics import FCDScorer, frechet_distance
    from seqify_molecule.modality import Molecule

    t = time.perf_counter()
    splits = Molecule().load("qm9", None, seed=0, limit=None, report=RowReport())
    load_s = time.perf_counter() - t
    generated = random.Random(args.seed).sample(splits.train, args.n)
    scorer = FCDScorer(device=args.device, batch_size=args.batch_size, cache=False)
    t = time.perf_counter()
    scorer._model()
    model_s = time.perf_counter() - t

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, device {args.device}")
    print(f"QM9 load (cache warm or cold): {load_s:.2f} s; ChemNet load: {model_s:.2f} s")

    t = time.perf_counter()
    gen = scorer.stats(generated)
    gen_s = time.perf_counter() - t
    print(f"generated statistics: {args.n} molecules in {gen_s:.1f} s = {1000 * gen_s / args.n:.2f} s per 1,000")

    if args.skip_reference:
        ref = scorer.stats(splits.test[: max(args.n, 2)])
        ref_name = f"first {len(splits.test[: max(args.n, 2)])} test molecules"
    else:
        t = time.perf_counter()
        ref = scorer.stats(splits.test)
        ref_s = time.perf_counter() - t
        ref_name = f"QM9 test split ({len(splits.test)})"
        print(
            f"reference statistics: {len(splits.test)} molecules in {ref_s:.1f} s = "
            f"{1000 * ref_s / len(splits.test):.2f} s per 1,000 (one-off: cached on disk)"
        )

    t = time.perf_counter()
    fast = frechet_distance(ref["mu"], ref["sigma"], gen["mu"], gen["sigma"])
    fast_s = time.perf_counter() - t
    t = time.perf_counter()
    exact = float(calculate_frechet_distance(ref["mu"], ref["sigma"], gen["mu"], gen["sigma"]))
    exact_s = time.perf_counter() - t
    print(f"Frechet distance: fcd-torch sqrtm {exact_s:.3f} s, eigenvalue fallback {fast_s:.3f} s")
    print(f"FCD({args.n} QM9 training molecules, {ref_name}) = {exact:.4f} (eigenvalue fallback: {fast:.4f})")


if __name__ == "__main__":
    main()
