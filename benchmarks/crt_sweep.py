"""The CRT weight sweep of benchmarks/run_aligned.sh as one table and one plot.

Usage: python benchmarks/crt_sweep.py [OUT]   (OUT: the script's output prefix, default runs/aligned)

Reads the ``modelability.csv`` of OUT (``vq-crt`` at its default 0.3) and of
OUT-crt-w0, OUT-crt-w0.003, OUT-crt-w0.03 and OUT-crt-w3 (weight 0 trains exactly as
``vq``), and writes ``modelability.md``/``.csv``/``.png`` into OUT/crt_sweep with
seqify's modelability table writer (one row per weight).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from seqify.modelability import write_modelability

#: weight -> (folder suffix, tokenizer row of that folder)
SWEEP = {0.0: ("-crt-w0", "vq-crt"), 0.003: ("-crt-w0.003", "vq-crt"), 0.03: ("-crt-w0.03", "vq-crt"),
         0.3: ("", "vq-crt"), 3.0: ("-crt-w3", "vq-crt")}
NUMERIC = ("bits_per_item", "nats_per_token", "tokens_per_item", "top1_accuracy", "reconstruction_error")


def main(out: Path) -> list[dict]:
    rows = []
    for weight, (suffix, tokenizer) in SWEEP.items():
        path = Path(f"{out}{suffix}") / "modelability.csv"
        if not path.is_file():
            print(f"missing: {path}")
            continue
        with path.open() as fh:
            found = [r for r in csv.DictReader(fh) if r["tokenizer"] == tokenizer and r["status"] == "done"]
        for row in found:
            row.update({k: float(row[k]) for k in NUMERIC if row.get(k)})
            row["tokenizer"] = f"vq-crt, crt_weight={weight:g}"
            rows.append(row)
    target = out / "crt_sweep"
    target.mkdir(parents=True, exist_ok=True)
    files = write_modelability(rows, target, title="image: vq-crt, the causal loss weight swept (raster, quick)")
    print(f"{target}:\n")
    print((target / files["markdown"]).read_text())
    return rows


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/aligned"))
