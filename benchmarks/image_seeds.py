"""The image tables of benchmarks/RESULTS.md over tokenizer seeds (issue 21).

Reads the cells of one matrix folder (``bash benchmarks/run_images.sh``, default
``runs/img21``) and prints, in markdown:

1. each tokenization in raster order: bits per image for each tokenizer seed, their
   mean with the 95% Student-t interval over the seeds, reconstruction MSE, FD and KID
   (means over the seeds, and seed 0's bootstrap interval), the FD floor;
2. each order on the VQ tokens: the same, plus the difference to raster order paired by
   tokenizer seed (both models trained on the same fitted tokens), with its interval:
   a difference whose interval excludes 0 is called a finding, the others are not.

    python benchmarks/image_seeds.py runs/img21
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seqify.stats import mean_interval  # noqa: E402


def cells(folder: Path) -> dict[tuple, dict]:
    """(tokenizer, orderer, train_orderer, tokenizer seed) -> results, for finished cells
    run with an explicit tokenizer seed."""
    con = sqlite3.connect(folder / "index.sqlite")
    found = {}
    for tok, order, train, tseed, status, results in con.execute(
            "SELECT tokenizer, orderer, train_orderer, tokenizer_seed, status, results_json FROM cells"):
        if status == "done" and tseed is not None:
            found[(tok, order, train, int(tseed))] = json.loads(results)
    return found


def _ci(values: list[float], digits: int) -> str:
    m = mean_interval(values)
    if m["n"] < 2:
        return f"{m['mean']:.{digits}f} (n = {m['n']})"
    return f"{m['mean']:.{digits}f} [{m['low']:.{digits}f}, {m['high']:.{digits}f}]"


def _row(name: str, runs: list[dict], tokens: bool = True) -> str:
    bits = [r["modelability"]["bits_per_item"] for r in runs]
    per_seed = " / ".join(f"{b:.1f}" for b in bits)
    recon = [r["reconstruction"]["mse"] for r in runs if r.get("reconstruction")]
    fd = [r["metrics"]["fd"] for r in runs]
    kid = [r["metrics"]["kid"] for r in runs]
    lo, hi = runs[0]["metrics"]["fd_interval"]
    cols = [name]
    if tokens:
        cols.append(str(runs[0]["modelability"].get("tokens_per_item")))
    cols += [per_seed, _ci(bits, 1), f"{sum(recon) / len(recon):.4f}" if recon else "lossless",
             _ci(fd, 1), f"{fd[0]:.1f} [{lo:.1f}, {hi:.1f}]", _ci(kid, 3),
             f"{runs[0]['metrics']['fd_floor']:.2f}"]
    return "| " + " | ".join(cols) + " |"


def main(folder: Path) -> None:
    found = cells(folder)
    seeds = sorted({k[3] for k in found})
    print(f"tokenizer seeds: {seeds}\n")
    print("| tokenizer | tokens | bits/image by tokenizer seed | bits/image, mean [95% CI] | recon MSE | "
          "FD, mean [95% CI] | FD seed 0 [bootstrap 95%] | KID, mean [95% CI] | FD floor |")
    print("|---|---|---|---|---|---|---|---|---|")
    for tok in ("pixels", "vq", "vq-causal", "vq-crt", "next-scale", "flextok"):
        runs = [found[k] for s in seeds if (k := (tok, "raster", "raster", s)) in found]
        if runs:
            print(_row(tok, runs))
    print("\n| tokens / order | bits/image by tokenizer seed | bits/image, mean [95% CI] | recon MSE | "
          "FD, mean [95% CI] | FD seed 0 [bootstrap 95%] | KID, mean [95% CI] | FD floor | "
          "bits minus raster, paired [95% CI] |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = {s: found[("vq", "raster", "raster", s)] for s in seeds if ("vq", "raster", "raster", s) in found}
    rows = [("vq", o) for o in ("raster", "hilbert", "spiral", "rar", "random")] + [("next-scale", "next-scale"),
                                                                                  ("next-scale", "raster")]
    for tok, order in rows:
        keyed = {s: found[(tok, order, order, s)] for s in seeds if (tok, order, order, s) in found}
        if not keyed:
            continue
        line = _row(f"{tok} / {order}", list(keyed.values()), tokens=False)
        if tok == "vq" and order != "raster":
            diff = [keyed[s]["modelability"]["bits_per_item"] - base[s]["modelability"]["bits_per_item"]
                    for s in keyed if s in base]
            line += f" {_ci(diff, 1)} |"
        else:
            line += " |"
        print(line)
    print("\n| orders compared on the same tokens | bits/image difference, paired by tokenizer seed [95% CI] |")
    print("|---|---|")
    pairs = [("vq", "hilbert", "spiral"), ("vq", "hilbert", "rar"), ("vq", "spiral", "rar"),
             ("next-scale", "next-scale", "raster")]
    for tok, a, b in pairs:
        diff = [found[(tok, a, a, s)]["modelability"]["bits_per_item"] - found[(tok, b, b, s)]["modelability"]["bits_per_item"]
                for s in seeds if (tok, a, a, s) in found and (tok, b, b, s) in found]
        if diff:
            print(f"| {tok}: {a} minus {b} | {_ci(diff, 1)} |")
    print("\n| order at inference (raster-trained VQ model) | nats/token by tokenizer seed | FD, mean [95% CI] |")
    print("|---|---|---|")
    for order in ("raster", "spiral", "hilbert", "random"):
        train = "raster"
        keyed = [found[(("vq", order, train, s))] for s in seeds if ("vq", order, train, s) in found]
        if keyed:
            nats = " / ".join(f"{r['modelability']['nats_per_token']:.3f}" for r in keyed)
            print(f"| {order} | {nats} | {_ci([r['metrics']['fd'] for r in keyed], 1)} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/img21"))
