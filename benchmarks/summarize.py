"""Print a Markdown table of the results.json files under the given run folders.

    python benchmarks/summarize.py runs/quick/qm9-* --metrics validity,uniqueness,novelty,fcd
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--metrics", default="", help="comma-separated keys of results['metrics'] to show")
    args = ap.parse_args()
    metrics = [m for m in args.metrics.split(",") if m]
    head = ["run", "tokenizer", "orderer", "generator", "nats/token", "bits/item", "top-1", "kind", *metrics, "train s"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for run in args.runs:
        path = run / "results.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        m = r["modelability"]
        bits = fmt(m["bits_per_item"])
        if "bound_bits_per_item" in m:
            bits += f" (bound {fmt(m['bound_bits_per_item'])})"
        row = [run.name, r["tokenizer"], r["orderer"], r["generator"], fmt(m["nats_per_token"]), bits,
               fmt(m["top1_accuracy"]), m["kind"], *[fmt(r["metrics"].get(k)) for k in metrics],
               fmt(r["timings"].get("train_s"))]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
