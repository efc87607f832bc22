"""VAR's next-scale prediction, matched: one next-scale tokenizer, four arms on its tokens (issue 19).

Arms, each a quick MNIST cell of the causal generator (size ``tiny``, 2,000 steps),
the same next-scale tokens for all (tokenizer seed 0, fitted once and cached):

* ``raster``        raster order (scale-major on these tokens, one slot per step), no canvas;
* ``ns-before``     next-scale order as built before issue 19: no canvas, the split block
                    layout (a value and a query token per slot);
* ``ns-canvas``     next-scale order with VAR's f_hat canvas as the slots' input and the
                    merged block layout (a scale's tokens attend to each other);
* ``ns-canvas-cond`` the same, class-conditional (class embedding as the start token,
                    10% label dropout), sampled with classifier-free guidance.

A fifth arm, ``raster-cond`` (raster order, class-conditional, guided, no canvas), tells
what guidance buys apart from the order. Beside them, in the same tables: VQ tokens in raster order and the pixels tokenizer (the
``--extra`` arms, ``vq-raster`` and ``pixels-raster``).

Each trained model is then sampled again (``seqify sample``, ``--n-samples`` images,
default 1,000) under a sweep of sampler settings (temperature, top-k, top-p; guidance for
the conditional arm), and the table reports, per arm, the setting with the lowest mean FD
over the seeds (chosen on the test-set FD, so slightly optimistic for every arm alike),
with FD and KID as the mean and 95% Student-t interval over the model seeds, the bits per
image of the test split, the forward passes and the wall-clock per sample.

    python benchmarks/var_matched.py train --seeds 0,1,2 --arms raster,ns-before     # one process
    python benchmarks/var_matched.py train --seeds 0,1,2 --arms ns-canvas,ns-canvas-cond
    python benchmarks/var_matched.py sweep --seeds 0,1,2
    python benchmarks/var_matched.py report --seeds 0,1,2

Everything lands in ``--out`` (default runs/var19); a finished cell or sweep point is
never run again (delete it to redo it).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

#: arm -> BenchRequest fields and generator overrides
ARMS: dict[str, dict[str, Any]] = {
    "raster": {"tokenizer": "next-scale", "orderer": "raster", "generator": {"slot_inputs": False}},
    "ns-before": {"tokenizer": "next-scale", "orderer": "next-scale",
                  "generator": {"slot_inputs": False, "block_layout": "split"}},
    "ns-canvas": {"tokenizer": "next-scale", "orderer": "next-scale", "generator": {}},
    "ns-canvas-cond": {"tokenizer": "next-scale", "orderer": "next-scale", "generator": {"condition": True}},
    "raster-cond": {"tokenizer": "next-scale", "orderer": "raster", "generator": {"slot_inputs": False, "condition": True}},
    "vq-raster": {"tokenizer": "vq", "orderer": "raster", "generator": {}},
    "pixels-raster": {"tokenizer": "pixels", "orderer": "raster", "generator": {}},
}
MAIN_ARMS = ("raster", "ns-before", "ns-canvas", "ns-canvas-cond", "raster-cond")

#: sampler settings of the sweep: name -> eval overrides
SWEEP: dict[str, dict[str, Any]] = {
    "t1": {"temperature": 1.0},
    "t0.8": {"temperature": 0.8},
    "t1-p0.9": {"temperature": 1.0, "top_p": 0.9},
}
#: extra settings of the conditional arm (VAR samples with guidance ramped over scales)
GUIDED: dict[str, dict[str, Any]] = {
    "t1-g1.5": {"temperature": 1.0, "guidance": 1.5},
    "t1-g3-linear": {"temperature": 1.0, "guidance": 3.0, "guidance_schedule": "linear"},
    "t1-p0.9-g1.5": {"temperature": 1.0, "top_p": 0.9, "guidance": 1.5},
}


def cell_dir(out: Path, arm: str, seed: int) -> Path:
    return out / f"{arm}-s{seed}"


def train(arm: str, seed: int, out: Path, budget: str = "quick") -> Path:
    from seqify.bench import BenchRequest, run_bench

    where = cell_dir(out, arm, seed)
    if (where / "results.json").is_file():
        return where
    spec = ARMS[arm]
    req = BenchRequest(modality="image", orderer=spec["orderer"], tokenizer=spec["tokenizer"], generator="causal",
                       out=where, budget=budget, seed=seed, tokenizer_seed=0, device="cpu",
                       overrides={"generator": dict(spec["generator"])} if spec["generator"] else {})
    run_bench(req)
    return where


def settings_of(arm: str) -> dict[str, dict[str, Any]]:
    return {**SWEEP, **GUIDED} if ARMS[arm]["generator"].get("condition") else dict(SWEEP)


def sweep(arm: str, seed: int, out: Path, n: int) -> None:
    from seqify.bench.sample import run_sample

    run = cell_dir(out, arm, seed)
    if not (run / "results.json").is_file():
        print(f"{arm} seed {seed}: not trained yet, skipped", flush=True)
        return
    for name, setting in settings_of(arm).items():
        where = run / "sweep" / f"{name}-n{n}"
        if (where / "sample_results.json").is_file():
            continue
        setting = dict(setting)
        temperature = setting.pop("temperature")
        run_sample(run, where, n=n, device="cpu", temperature=temperature, sampling=setting)


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def report(arms: list[str], seeds: list[int], out: Path, n: int) -> dict[str, Any]:
    from seqify.stats import mean_interval

    rows = {}
    for arm in arms:
        cells = [cell_dir(out, arm, s) for s in seeds]
        if not all((c / "results.json").is_file() for c in cells):
            print(f"{arm}: not every seed trained yet")
            continue
        trained = [_load(c / "results.json") for c in cells]
        per_setting = {}
        for name in settings_of(arm):
            found = [c / "sweep" / f"{name}-n{n}" / "sample_results.json" for c in cells]
            if all(f.is_file() for f in found):
                res = [_load(f) for f in found]
                per_setting[name] = {
                    "fd": mean_interval([r["metrics"]["fd"] for r in res]),
                    "kid": mean_interval([r["metrics"]["kid"] for r in res]),
                    "fd_by_seed": [round(r["metrics"]["fd"], 1) for r in res],
                    "ms_per_sample": mean_interval([r["timings"]["sample_per_item_ms"] for r in res]),
                }
        best = min(per_setting, key=lambda k: per_setting[k]["fd"]["mean"]) if per_setting else None
        rows[arm] = {
            "bits": mean_interval([t["modelability"]["bits_per_item"] for t in trained]),
            "bits_by_seed": [round(t["modelability"]["bits_per_item"], 1) for t in trained],
            "passes": _passes(trained[0]),
            "train_s": mean_interval([t["timings"]["train_s"] for t in trained]),
            "best": best,
            "settings": per_setting,
        }
    _print(rows, seeds, n)
    path = out / f"report-n{n}.json"
    path.write_text(json.dumps(rows, indent=1))
    return rows


def _passes(results: dict[str, Any]) -> int:
    """Transformer passes to sample one image: one per slot in raster order, one per scale in next-scale order."""
    tokens = int(round(results["modelability"]["tokens_per_item"]))
    if results["orderer"] == "next-scale":
        return len(results["config"]["tokenizer"].get("scales", (1, 2, 3, 4, 5, 7)))
    return tokens


def _ci(m: dict[str, Any], digits: int = 1) -> str:
    if m.get("low") is None:
        return f"{m['mean']:.{digits}f}"
    return f"{m['mean']:.{digits}f} [{m['low']:.{digits}f}, {m['high']:.{digits}f}]"


def _print(rows: dict[str, Any], seeds: list[int], n: int) -> None:
    print(f"\nbest sampler setting per arm, {n} samples, model seeds {seeds} (mean [95% t-interval])\n")
    print("| arm | bits/image | FD, best setting | KID | setting | FD by seed | passes/sample | ms/sample | train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arm, row in rows.items():
        best = row["settings"].get(row["best"]) if row["best"] else None
        if best is None:
            print(f"| {arm} | {_ci(row['bits'])} | (not swept) | | | | {row['passes']} | | {_ci(row['train_s'], 0)} |")
            continue
        print(f"| {arm} | {_ci(row['bits'])} | {_ci(best['fd'])} | {_ci(best['kid'], 3)} | {row['best']} | "
              f"{' / '.join(map(str, best['fd_by_seed']))} | {row['passes']} | {_ci(best['ms_per_sample'], 2)} | "
              f"{_ci(row['train_s'], 0)} |")
    print("\nFD (mean over seeds) of every setting:\n")
    names = list(dict.fromkeys(k for row in rows.values() for k in row["settings"]))
    print("| arm | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for arm, row in rows.items():
        cells = [f"{row['settings'][k]['fd']['mean']:.1f}" if k in row["settings"] else "" for k in names]
        print(f"| {arm} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=("train", "sweep", "report"))
    ap.add_argument("--arms", default=",".join(MAIN_ARMS), help=f"comma-separated, from {', '.join(ARMS)}")
    ap.add_argument("--seeds", default="0,1,2", help="model seeds (the tokenizer is fitted with seed 0 for all)")
    ap.add_argument("--n-samples", type=int, default=1000, help="samples per sweep point")
    ap.add_argument("--out", default="runs/var19")
    ap.add_argument("--budget", default="quick", help="the cells' budget (smoke: checks that the script runs)")
    args = ap.parse_args()
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        ap.error(f"unknown arm(s) {unknown}; choose from {list(ARMS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.stage == "report":
        report(arms, seeds, out, args.n_samples)
        return
    for seed in seeds:
        for arm in arms:
            if args.stage == "train":
                print(f"{arm} seed {seed}: {train(arm, seed, out, args.budget)}", flush=True)
            else:
                sweep(arm, seed, out, args.n_samples)
                print(f"{arm} seed {seed}: swept", flush=True)


if __name__ == "__main__":
    main()
