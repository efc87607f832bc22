"""Reconstruction of each prefix of the ``flextok`` tokens on the MNIST test split.

Usage: python benchmarks/flextok_prefixes.py CELL_DIR

CELL_DIR is a finished ``flextok`` cell (its ``checkpoint.pt`` holds the fitted
tokenizer), e.g. runs/aligned/cells/image-flextok-raster-causal from
benchmarks/run_aligned.sh. Prints a markdown table (tokens kept, test MSE at the
tokenizer's resolution) and writes ``prefixes.json`` and ``prefixes.png`` (the first
eight test digits decoded from 1, 2, 4, ... tokens) into CELL_DIR.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from seqify.data import RowReport
from seqify.io import load_checkpoint

from seqify_image.aligned import FlexTokTokenizer
from seqify_image.modality import Image
from seqify_image.vqnet import images_to_tensor


def main(cell: Path) -> dict[int, float]:
    state = load_checkpoint(cell / "checkpoint.pt")["tokenizer"]
    tokenizer = FlexTokTokenizer(**state["settings"])
    tokenizer.load_state_dict(state)
    test = Image().load("mnist", None, seed=0, limit=None, report=RowReport()).test
    curve = tokenizer.prefix_reconstruction(test)
    (cell / "prefixes.json").write_text(json.dumps({"n_test": len(test), "mse_by_tokens_kept": curve}, indent=1))
    _picture(tokenizer, test[:8], list(curve), cell / "prefixes.png")
    print(f"flextok prefixes on the {len(test)} MNIST test images ({cell}):\n")
    print("| tokens kept | test MSE |\n|---|---|")
    for k, mse in curve.items():
        print(f"| {k} | {mse:.4f} |")
    return curve


def _picture(tokenizer: FlexTokTokenizer, items, lengths: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = tokenizer.model
    x_N1RR = images_to_tensor([item.pixels for item in items], tokenizer.options.resolution)
    codes_N1T = model.encode_codes(x_N1RR)[0]
    rows = [x_N1RR[:, 0].numpy()] + [model.decode_prefix(codes_N1T, k)[:, 0].numpy() for k in lengths]
    labels = ["original"] + [f"{k} tok" for k in lengths]
    fig, axes = plt.subplots(len(rows), len(items), figsize=(len(items) * 0.9, len(rows) * 0.95))
    for r, (row, label) in enumerate(zip(rows, labels)):
        for c in range(len(items)):
            ax = axes[r, c]
            ax.imshow(np.clip(row[c], 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
