"""FlexTok at generation: sample quality against the number of generated tokens k.

Usage:
    python benchmarks/flextok_generation.py CELL_DIR [--n-samples N] [--seed S] [--lengths 1,2,4,8,16,32]
                                            [--sample-counts 500,1000,2000,5000]

CELL_DIR is a finished ``flextok`` cell sampled in raster order (its ``checkpoint.pt``
holds the fitted tokenizer and the trained generator), e.g. from

    seqify bench --modality image --tokenizer flextok --orderer raster --generator causal \\
        --budget quick --seed 0 --out runs/flex

One sampling of N full sequences serves every k (in raster order the first k tokens
of a sample are exactly a k-token sample; see
:func:`seqify_image.prefixes.sample_prefixes`); each k-prefix is decoded with the
tail masked, as the tokenizer was trained (nested dropout). Prints a markdown table
(k, FD and KID with 95% bootstrap intervals against the 500 test images, confident
share, and the test images' own k-prefix: reconstruction MSE and FD), and writes into
CELL_DIR ``flextok_generation.json``, ``flextok_generation.png`` (FD against k, log2
axis, interval bars, with the reconstruction FD and the real-vs-real floor) and
``flextok_generation_samples.png`` (the first 10 samples decoded from each k).
``--seed`` is the run seed the sampling stream comes from (default: the cell's, so
that with the cell's N the k = n_tokens row is the cell's own FD). With
``--sample-counts`` it first prints FD at the smallest and largest k for each N
(how many samples a stable FD needs) and writes ``flextok_generation_counts.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

#: samples per k: FD at 2,000 samples is within a few units of FD at 5,000 (see docs/aligned-tokenizers.md)
DEFAULT_SAMPLES = 2000


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _fmt(value: float | None, interval: list[float] | None, digits: int) -> str:
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    return f"{text} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]" if interval else text


def table(result: dict[str, Any]) -> str:
    """The markdown table of :func:`seqify_image.prefixes.prefix_generation`'s rows."""
    lines = ["| k (tokens generated) | FD [95%] | KID [95%] | confident | test k-prefix recon MSE | "
             "test k-prefix recon FD |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['k']} | {_fmt(r['fd'], r['fd_interval'], 1)} | {_fmt(r['kid'], r['kid_interval'], 3)} | "
                     f"{_fmt(r['confident_share'], None, 3)} | {r['recon_mse']:.4f} | {_fmt(r['recon_fd'], None, 1)} |")
    return "\n".join(lines)


def draw_curve(result: dict[str, Any], path: Path) -> None:
    """FD against k (log2 axis) with the 95% interval bars, the test images' own
    k-prefix reconstruction FD, and the real-vs-real floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["fd"] is not None]
    ks = [r["k"] for r in rows]
    fd = [r["fd"] for r in rows]
    low = [r["fd"] - r["fd_interval"][0] if r["fd_interval"] else 0.0 for r in rows]
    high = [r["fd_interval"][1] - r["fd"] if r["fd_interval"] else 0.0 for r in rows]
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.errorbar(ks, fd, yerr=[low, high], marker="o", capsize=3, label=f"generated ({result['n_samples']} samples)")
    recon = [(r["k"], r["recon_fd"]) for r in rows if r["recon_fd"] is not None]
    if recon:
        ax.plot(*zip(*recon), marker="s", linestyle="--", label=f"test images' own k-prefix ({result['n_test']})")
    floor = rows[0].get("fd_floor") if rows else None
    if floor is not None:
        ax.axhline(floor, color="gray", linestyle=":", label="floor: validation vs test images")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_yscale("log")
    ax.set_xlabel("tokens generated and decoded (k)")
    ax.set_ylabel("FD (shipped extractor's features)")
    names = result["cell"]
    ax.set_title(f"{names.get('tokenizer')} / {names.get('orderer')} / {names.get('generator')}, seed {result['seed']}",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_samples(result: dict[str, Any], path: Path) -> None:
    """The first samples (columns) decoded from each k (rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    images = result["images"]
    ks = sorted(images)
    cols = len(images[ks[0]])
    fig, axes = plt.subplots(len(ks), cols, figsize=(cols * 0.9, len(ks) * 0.95), squeeze=False)
    for r, k in enumerate(ks):
        for c, item in enumerate(images[k]):
            ax = axes[r, c]
            ax.imshow(np.clip(item.pixels, 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"k = {k}", fontsize=7)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sample_counts(trained, counts: list[int], seed: int | None, lengths: list[int] | None) -> list[dict[str, Any]]:
    """FD (and its bootstrap SE) at the smallest and largest k for each sample count."""
    from seqify_image.prefixes import prefix_generation, prefix_lengths

    ends = prefix_lengths(trained.data.tokenizer.spec.max_len, lengths)
    ends = sorted({ends[0], ends[-1]})
    out = []
    for n in counts:
        res = prefix_generation(trained, n_samples=n, seed=seed, lengths=ends)
        first, last = res["rows"][0], res["rows"][-1]
        se = {r["k"]: res["metrics"][str(r["k"])].get("fd_se") for r in (first, last)}
        out.append({"n_samples": n, "k_low": first["k"], "fd_low": first["fd"], "fd_low_se": se[first["k"]],
                    "k_high": last["k"], "fd_high": last["fd"], "fd_high_se": se[last["k"]]})
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cell", type=Path, help="a finished flextok cell (its --out folder)")
    ap.add_argument("--n-samples", type=int, default=DEFAULT_SAMPLES, help="sequences sampled (every k uses them)")
    ap.add_argument("--seed", type=int, default=None, help="run seed of the sampling stream (default: the cell's)")
    ap.add_argument("--lengths", type=_ints, default=None, help="prefix lengths (default 1, 2, 4, ..., n_tokens)")
    ap.add_argument("--sample-counts", type=_ints, default=None,
                    help="also print FD at the smallest and largest k for each of these sample counts")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    from seqify_image.prefixes import load_trained_cell, prefix_generation

    trained = load_trained_cell(args.cell, device=args.device)
    if args.sample_counts:
        counts = sample_counts(trained, args.sample_counts, args.seed, args.lengths)
        (args.cell / "flextok_generation_counts.json").write_text(json.dumps(counts, indent=1))
        print("| samples | k | FD (bootstrap SE) | k | FD (bootstrap SE) |\n|---|---|---|---|---|")
        for c in counts:
            print(f"| {c['n_samples']} | {c['k_low']} | {c['fd_low']:.1f} ({c['fd_low_se']:.1f}) | {c['k_high']} | "
                  f"{c['fd_high']:.1f} ({c['fd_high_se']:.1f}) |")
        print()
    result = prefix_generation(trained, n_samples=args.n_samples, seed=args.seed, lengths=args.lengths,
                               keep_images=10)
    draw_curve(result, args.cell / "flextok_generation.png")
    draw_samples(result, args.cell / "flextok_generation_samples.png")
    saved = {k: v for k, v in result.items() if k != "images"}
    (args.cell / "flextok_generation.json").write_text(json.dumps(saved, indent=1, default=_plain))
    floor = result["rows"][0]["fd_floor"]
    floor_text = f"; floor (validation vs test images) {floor:.1f}" if floor is not None else ""
    print(f"flextok at generation ({args.cell}): {result['n_samples']} samples from the sample stream of run seed "
          f"{result['seed']}, FD vs the {result['n_test']} test images{floor_text}")
    print()
    print(table(result))
    fds = [r["fd"] for r in result["rows"]]
    if all(v is not None and math.isfinite(v) for v in fds):
        falls = all(b < a for a, b in zip(fds, fds[1:]))
        print(f"\nFD falls at every step of k: {'yes' if falls else 'no'}")
    return result


def _plain(value: Any) -> Any:
    """numpy scalars and arrays for json."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


if __name__ == "__main__":
    main(sys.argv[1:])
