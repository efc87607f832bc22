"""Where a learned image tokenizer's bits go: code usage against what the context buys.

Usage: python benchmarks/code_stats.py CELL_DIR [CELL_DIR ...]

For each finished cell (its ``checkpoint.pt`` holds the fitted tokenizer, its
``results.json`` the generator's test NLL) it encodes the MNIST test images the
generator was scored on and prints
a markdown row: codes used, the unigram entropy of the codes (nats per token: what a
model that ignores the context would pay at best), the generator's test nats per token,
and their difference, the nats per token the context saves. A tokenizer can lower the
bits per image by spending fewer codes (lower unigram entropy) or by making each code
more predictable from the ones before it (a larger saving); this tells them apart.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

from seqify.data import RowReport
from seqify.io import load_checkpoint
from seqify.plugins import get_registry

from seqify_image.modality import Image


def row(cell: Path, test: list) -> str:
    results = json.loads((cell / "results.json").read_text())
    state = load_checkpoint(cell / "checkpoint.pt")["tokenizer"]
    tokenizer = get_registry().get("tokenizer", results["tokenizer"], "image")(**state["settings"])
    tokenizer.load_state_dict(state)
    scored = test[: results["modelability"]["n_items"]]  # the test images the generator was scored on
    values = torch.cat([t.values for t in tokenizer.encode_batch(scored)])
    counts = torch.bincount(values, minlength=tokenizer.spec.kinds[0].size).double()
    p = counts[counts > 0] / counts.sum()
    unigram = float(-(p * p.log()).sum())
    ar = results["modelability"]["nats_per_token"]
    return (f"| {results['tokenizer']} | {int((counts > 0).sum())} / {len(counts)} | {unigram:.3f} "
            f"({unigram / math.log(2):.2f} bits) | {ar:.3f} | {unigram - ar:.3f} |")


def main(cells: list[Path]) -> None:
    test = Image().load("mnist", None, seed=0, limit=None, report=RowReport()).test
    print("codes of the scored MNIST test images (the first n_test of the split)\n")
    print("| tokenizer | codes used | unigram entropy, nats/token | AR nats/token | saved by the context |")
    print("|---|---|---|---|---|")
    for cell in cells:
        print(row(cell, test))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main([Path(p) for p in sys.argv[1:]])
