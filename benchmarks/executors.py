"""Cells in parallel: the same matrix run one cell after another and with ``--jobs 2``,
and a smoke matrix on Ray and through submitit against the local run.

    python benchmarks/executors.py jobs --out runs/executors        # 4 quick image cells, jobs 1 vs 2
    python benchmarks/executors.py engines --out runs/executors     # 4 smoke cells: local, Ray, submitit

``jobs`` prints each run's wall-clock seconds, the ratio, and whether every number of
the comparison table is identical (every cell uses one torch thread in both runs: a
thread count changes the arithmetic, so identical numbers need equal threads per cell).
``engines`` starts a Ray head on 127.0.0.1 only (and stops it), and uses submitit's
local executor (the Slurm code path without a scheduler). Take timings on an idle
machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: figures compared between runs (the comparison table's numeric columns)
FIGURES = ("nats_per_token", "bits_per_item", "top1_accuracy", "headline")


def _matrix(out: Path, args: list[str], env: dict[str, str] | None = None) -> float:
    cmd = [sys.executable, "-m", "seqify.cli", "matrix", *args, "--out", str(out)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def _table(out: Path) -> dict[str, tuple]:
    import csv

    with open(out / "comparison.csv") as fh:
        return {f"{r['tokenizer']}/{r['orderer']}/{r['generator']}/s{r['seed']}": tuple(r[k] for k in FIGURES)
                for r in csv.DictReader(fh)}


def jobs(out: Path) -> dict:
    args = ["--modalities", "image", "--tokenizers", "vq", "--orderers", "raster,hilbert,spiral,rar",
            "--generators", "causal", "--budget", "quick", "--seed", "0", "--threads", "1"]
    found = {}
    for n in (1, 2):
        folder = out / f"jobs{n}"
        shutil.rmtree(folder, ignore_errors=True)
        found[n] = _matrix(folder, [*args, "--jobs", str(n)])
        print(f"--jobs {n}: {found[n]:.1f} s", flush=True)
    same = _table(out / "jobs1") == _table(out / "jobs2")
    result = {"cells": 4, "jobs1_s": round(found[1], 1), "jobs2_s": round(found[2], 1),
              "speedup": round(found[1] / found[2], 2), "identical_numbers": same}
    print(json.dumps(result))
    return result


def engines(out: Path) -> dict:
    args = ["--modalities", "sudoku,molecule", "--orderers", "raster,random", "--generators", "causal",
            "--budget", "smoke", "--seed", "0", "--threads", "1"]
    runs = {}
    for name, extra, env in (("local", [], {}), ("slurm", ["--executor", "slurm", "--slurm-cluster", "local"], {})):
        shutil.rmtree(out / name, ignore_errors=True)
        runs[name] = _matrix(out / name, [*args, *extra], env)
    ray_env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    ray_bin = str(Path(sys.executable).parent / "ray")
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    subprocess.run([ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", "--port=6390", "--num-cpus=2",
                    "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                   check=True, capture_output=True, env={**os.environ, **ray_env})
    try:
        shutil.rmtree(out / "ray", ignore_errors=True)
        runs["ray"] = _matrix(out / "ray", [*args, "--executor", "ray", "--address", "127.0.0.1:6390"], ray_env)
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True)
    local = _table(out / "local")
    result = {"cells": len(local), **{f"{k}_s": round(v, 1) for k, v in runs.items()},
              "ray_identical": _table(out / "ray") == local, "slurm_identical": _table(out / "slurm") == local}
    print(json.dumps(result))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("jobs", "engines"))
    parser.add_argument("--out", type=Path, default=Path("runs/executors"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result = jobs(args.out) if args.what == "jobs" else engines(args.out)
    ok = result.get("identical_numbers", True) and result.get("ray_identical", True) and result.get("slurm_identical", True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
