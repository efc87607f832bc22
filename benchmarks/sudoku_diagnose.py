"""Has a trained Sudoku model learned the rules? Reads a run's checkpoint.

Scores fresh test puzzles from the clues alone and prints how much probability the
model puts on digits the clues already exclude (same row, column or box), and its
accuracy on naked singles (blank cells the clues determine). An adaptive order such as
margin only helps once these are right: it must be able to tell which cells are
settled.

    python benchmarks/sudoku_diagnose.py --run runs/demo/cells/sudoku-default-margin-masked --n 200 --seed 123
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from seqify.io import load_checkpoint
from seqify.plugins import get_registry
from seqify.types import collate
from seqify_sudoku.generator import generate_puzzles
from seqify_sudoku.tokenizers import CellTokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a `seqify bench` output folder (masked generator)")
    ap.add_argument("--n", type=int, default=200, help="fresh puzzles to score")
    ap.add_argument("--seed", type=int, default=123, help="seed of the fresh puzzles")
    ap.add_argument("--clues", type=int, default=30)
    args = ap.parse_args()

    state = load_checkpoint(args.run / "checkpoint.pt")
    names = json.loads(state["names_json"])
    if names["generator"] != "masked":
        raise SystemExit(f"{args.run}: this diagnosis needs a masked generator, the run used {names['generator']!r}")
    config = json.loads(state["config_json"])
    tok = CellTokenizer()
    model = get_registry().get("generator", "masked")(tok.spec, config["generator"])
    model.load_state_dict(state["model"])
    model.eval()

    items = generate_puzzles(args.n, clues=args.clues, seed=args.seed, pool_size=args.n)
    batch = collate([tok.encode(i) for i in items])
    with torch.no_grad():
        prob_BL9 = model(batch).exp()[..., :9]  # known = the clues
    onehot_BL9 = torch.nn.functional.one_hot(batch.values, 9).bool() & batch.given[..., None]
    excluded_BL9 = torch.zeros_like(onehot_BL9)
    for axis in range(3):  # row, column, box
        same_BLL = batch.coords[:, :, None, axis] == batch.coords[:, None, :, axis]
        excluded_BL9 |= (same_BLL[..., None] & onehot_BL9[:, None]).any(2)
    blank = ~batch.given
    right = prob_BL9.argmax(-1) == batch.values
    single = blank & (excluded_BL9.sum(-1) == 8)
    uniform_mass = (excluded_BL9.sum(-1).float() / 9)[blank].mean()
    print(f"run {args.run} ({names['orderer']} / trained {names.get('train_orderer')}), {args.n} fresh puzzles, {args.clues} clues")
    print(f"probability on digits the clues exclude: {(prob_BL9 * excluded_BL9).sum(-1)[blank].mean():.3f} "
          f"(a uniform guess: {uniform_mass:.3f}; a model that knows the rules: 0)")
    print(f"top-1 accuracy on blank cells from the clues alone: {right[blank].float().mean():.3f}")
    print(f"naked singles: {int(single.sum())}, top-1 accuracy on them: {right[single].float().mean():.3f} (rules known: 1.0)")


if __name__ == "__main__":
    main()
