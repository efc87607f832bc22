"""The GPU check (issue 20): what a machine with one CUDA GPU says about seqify, in one run.

``bash benchmarks/gpu_check.sh`` installs what is missing from ``wheelhouse/`` and runs
this driver under an overall limit. Each step runs as a subprocess with its own timeout,
and every step must finish before one shared deadline:

1. ``info``: ``nvidia-smi`` and what torch sees (device, memory, bf16, NCCL, versions);
2. ``gpu-tests``: the tests marked ``gpu`` (``pytest -m gpu``);
3. ``suite``: the fast test suite with CUDA visible (``pytest -m "not slow" -q -x``);
4. ``cells``: one quick cell of each modality on the device, step-capped (``--steps``);
5. ``torchrun``: data-parallel training under torchrun (NCCL on CUDA, gloo on a CPU);
6. ``throughput``: steps per second of the full Sudoku and full QM9 learned configs and
   the projected time of each full run (``benchmarks/throughput.py``);
7. ``block-decoding``: sampling time against k slots per pass on one QM9 causal model,
   and next-scale against raster on MNIST's next-scale tokens
   (``benchmarks/block_decoding.py``; on a GPU the passes, not the arithmetic, set the time).

They run in the order 1, 2, 6, 7, 4, 5, 3: the suite, which CI also runs (on a CPU), gets
the time that is left. After every step the summary is rewritten: ``gpu_check.json`` and
``gpu_check.md`` in ``$OUT`` if set, else ``runs/gpu_check/`` (``--out``); the steps'
own files go to ``runs/gpu_check/`` (``--work``).

``SEQIFY_GPU_CHECK_DEVICE=cpu`` (or ``--dry-run``) runs the same steps on the CPU with tiny
step counts, smoke budgets and two test files, to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STEP_TITLES = {
    "info": "1. nvidia-smi and torch.cuda",
    "gpu-tests": "2. GPU tests (pytest -m gpu)",
    "suite": "3. fast test suite with CUDA visible",
    "cells": "4. one quick cell per modality, step-capped",
    "torchrun": "5. torchrun",
    "throughput": "6. full-budget throughput and projected run time",
    "block-decoding": "7. block decoding: k slots per pass, next-scale against raster (issue 19)",
}
RUN_ORDER = ("info", "gpu-tests", "throughput", "block-decoding", "cells", "torchrun", "suite")
TAIL = 3000  # characters of a command's output kept in the summary


@dataclass
class Step:
    """One step of the check as the summary reports it."""

    key: str
    title: str
    status: str = "not run"  # ok | failed | timeout | skipped | not run
    seconds: float = 0.0
    commands: list[str] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tail: str = ""


@dataclass
class Settings:
    device: str  # cuda | cpu
    tiny: bool  # CPU dry run: smoke budgets, a few steps, two test files
    out: Path  # the summary
    work: Path  # the steps' own files
    deadline_s: float  # every step ends before this many seconds from the start
    only: tuple[str, ...]
    install_log: Path | None



def _worst(statuses: list[str]) -> str:
    """A step's status from its parts': "ok" when every part is, else the worst of them."""
    return "ok" if all(x == "ok" for x in statuses) else next(
        x for x in ("failed", "timeout", "skipped") if x in statuses)

def parse_args(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default=env.get("SEQIFY_GPU_CHECK_DEVICE") or "cuda",
                        help="default: $SEQIFY_GPU_CHECK_DEVICE, else cuda")
    parser.add_argument("--dry-run", action="store_true", help="the CPU dry run (same as --device cpu)")
    parser.add_argument("--out", type=Path, default=Path(env["OUT"]) if env.get("OUT") else None,
                        help="summary folder (default: $OUT, else the --work folder)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "gpu_check", help="the steps' own files")
    parser.add_argument("--deadline", type=float, default=450.0, help="seconds for all steps together")
    parser.add_argument("--only", default="", help="comma-separated steps to run: " + ",".join(RUN_ORDER))
    parser.add_argument("--install-log", type=Path, help="the installer's log (gpu_check.sh passes it)")
    args = parser.parse_args(argv)
    device = "cpu" if args.dry_run else args.device
    only = tuple(s for s in args.only.split(",") if s)
    unknown = set(only) - set(RUN_ORDER)
    if unknown:
        parser.error(f"unknown step(s) {sorted(unknown)}; the steps are {', '.join(RUN_ORDER)}")
    return Settings(device=device, tiny=device == "cpu", out=args.out or args.work, work=args.work,
                    deadline_s=args.deadline, only=only or RUN_ORDER, install_log=args.install_log)


# ---------------------------------------------------------------- running commands


class Clock:
    """Seconds since the start and what is left before the deadline."""

    def __init__(self, deadline_s: float):
        self.t0, self.deadline_s = time.monotonic(), deadline_s

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def budget(self, cap: float) -> float:
        return max(0.0, min(cap, self.deadline_s - self.elapsed()))


def run(cmd: list[str], *, timeout: float, log, cwd: Path = ROOT) -> tuple[int | None, float, str]:
    """(exit status or None on timeout, seconds, output) of ``cmd``; on timeout the whole
    process group is killed (torchrun's workers too)."""
    log.write(f"\n$ {' '.join(cmd)}   # timeout {timeout:.0f} s\n")
    log.flush()
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=max(timeout, 1))
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        rc = None
    seconds = time.perf_counter() - t
    log.write(out or "")
    log.write(f"# exit {rc if rc is not None else 'timeout'} after {seconds:.1f} s\n")
    log.flush()
    return rc, seconds, out or ""


def status_of(rc: int | None) -> str:
    return "timeout" if rc is None else ("ok" if rc == 0 else "failed")


PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed|warnings?)")


def parse_pytest(text: str) -> dict[str, Any]:
    """The counts of pytest's closing line (``3 passed, 1 skipped in 2.1s``) and, for a run
    cut short, how far its progress got (``[ 45%]``)."""
    counts: dict[str, Any] = {}
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        found = PYTEST_COUNT.findall(line)
        if found and (" in " in line or line.startswith("=")):
            for n, what in found:
                what = {"error": "errors", "warning": "warnings"}.get(what, what)
                counts[what] = int(n)
            break
    progress = re.findall(r"\[\s*(\d+)%\]", text)
    if progress:
        counts["progress_percent"] = int(progress[-1])
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, flags=re.M)
    if failed:
        counts["first_failures"] = failed[:5]
    return counts


def projected_seconds(full_steps: int, steps_per_second: float) -> float:
    """The training time of ``full_steps`` at the measured rate."""
    return full_steps / steps_per_second


# ---------------------------------------------------------------- the cells


#: (modality, arguments, steps at the quick budget) of the smallest meaningful cell of each modality
CELLS: dict[str, tuple[list[str], int]] = {
    "sudoku": (["--modality", "sudoku", "--orderer", "margin", "--generator", "masked", "--train-orderer", "random"],
               3000),
    "molecule": (["--modality", "molecule", "--dataset", "qm9", "--tokenizer", "graph", "--orderer", "bfs",
                  "--generator", "causal"], 1500),
    "image": (["--modality", "image", "--dataset", "mnist", "--tokenizer", "pixels", "--orderer", "raster",
               "--generator", "causal"], 2000),
    "pointcloud": (["--modality", "pointcloud", "--tokenizer", "coords", "--orderer", "raster", "--generator",
                    "causal"], 600),
}


def cell_plan(settings: Settings, *, have_open3d: bool, xyz_dir: Path) -> list[dict[str, Any]]:
    """The bench command of each modality's cell: the quick budget with ``--steps`` capped
    on a GPU, the smoke budget and 5 steps in a CPU dry run. Without open3d the point-cloud
    cell reads synthetic ``.xyz`` files (:func:`write_xyz_shapes`) instead of the
    procedural ``shapes`` dataset, which needs open3d."""
    budget, steps = ("smoke", 5) if settings.tiny else ("quick", 300)
    plan = []
    for name, (args, quick_steps) in CELLS.items():
        args = list(args)
        note = ""
        if name == "pointcloud":
            if have_open3d:
                args += ["--dataset", "shapes"]
            else:
                args += ["--dataset", "files", "--data", str(xyz_dir)]
                note = ("open3d is not installed: the cell reads synthetic .xyz point clouds (4 classes of "
                        "seeded numpy shapes), not the procedural 'shapes' dataset")
        out = settings.work / "cells" / name
        plan.append({
            "modality": name, "budget": budget, "steps": steps,
            "budget_steps": quick_steps if budget == "quick" else None,
            "out": out, "note": note,
            "command": [sys.executable, "-m", "seqify.cli", "bench", *args, "--budget", budget, "--steps", str(steps),
                        "--device", settings.device, "--seed", "0", "--no-resume", "--out", str(out)],
            "cap": {"molecule": 150}.get(name, 90) if not settings.tiny else 240,
        })
    return plan


def write_xyz_shapes(folder: Path, *, per_class: int = 60, n_points: int = 256, seed: int = 0) -> Path:
    """Point clouds on four surfaces (sphere, box, cylinder, torus) with random
    proportions, one ``.xyz`` file each, in one folder per class: a ``files`` dataset
    that needs no open3d (``.xyz`` files are read with numpy)."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def sphere(n):
        v = rng.normal(size=(n, 3))
        return v / np.linalg.norm(v, axis=1, keepdims=True) * rng.uniform(0.5, 1.0, size=3)

    def box(n):
        p = rng.uniform(-1, 1, size=(n, 3))
        face = rng.integers(0, 3, size=n)
        p[np.arange(n), face] = np.sign(rng.uniform(-1, 1, size=n))
        return p * rng.uniform(0.3, 1.0, size=3)

    def cylinder(n):
        a, y = rng.uniform(0, 2 * np.pi, n), rng.uniform(-1, 1, n) * rng.uniform(0.5, 1.0)
        r = rng.uniform(0.3, 0.8)
        return np.stack([r * np.cos(a), y, r * np.sin(a)], axis=1)

    def torus(n):
        u, w = rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 2 * np.pi, n)
        big, small = rng.uniform(0.6, 0.9), rng.uniform(0.1, 0.3)
        return np.stack([(big + small * np.cos(w)) * np.cos(u), small * np.sin(w),
                         (big + small * np.cos(w)) * np.sin(u)], axis=1)

    folder = Path(folder)
    for name, make in (("sphere", sphere), ("box", box), ("cylinder", cylinder), ("torus", torus)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            np.savetxt(folder / name / f"{name}_{i:03d}.xyz", make(n_points), fmt="%.5f")
    return folder


def cell_result(out: Path) -> dict[str, Any]:
    """What a finished cell's results.json says, briefly."""
    path = out / "results.json"
    if not path.is_file():
        return {}
    r = json.loads(path.read_text())
    t = r.get("timings", {})
    return {
        "cell": f"{r['modality']}/{r['tokenizer']}, {r['orderer']} order, {r['generator']}",
        "device": r.get("device"),
        "steps": r.get("training", {}).get("steps"),
        "nats_per_token": (r.get("modelability") or {}).get("nats_per_token"),
        "headline": r.get("headline"),
        "train_s": t.get("train_s"), "sample_s": t.get("sample_s"), "total_s": t.get("total_s"),
        "training_png": (out / "training.png").is_file(),
        "tensorboard": (out / "tensorboard").is_dir(),
    }


# ---------------------------------------------------------------- the steps


INFO_SNIPPET = r"""
import importlib, json, platform, sys
info = {"python": platform.python_version(), "executable": sys.executable}
for name in ("torch", "numpy", "scipy", "rdkit", "open3d", "tensorboard", "matplotlib", "pydantic", "fcd_torch",
             "mlxtend", "torch_geometric", "qm9pack"):
    try:
        spec = importlib.util.find_spec(name)
    except Exception:
        spec = None
    if spec is None:
        info[name] = None
        continue
    if name in ("qm9pack",):  # found, not imported (its __init__ fails on recent setuptools)
        info[name] = str(spec.submodule_search_locations[0])
        continue
    try:
        info[name] = getattr(importlib.import_module(name), "__version__", "installed")
    except Exception as exc:
        info[name] = f"cannot import: {type(exc).__name__}: {exc}"[:200]
import numpy
info["numpy_row_stack"] = hasattr(numpy, "row_stack")
import torch
c = torch.cuda
info["cuda_build"] = torch.version.cuda
info["cuda_available"] = c.is_available()
if c.is_available():
    p = c.get_device_properties(0)
    info.update(device_count=c.device_count(), name=p.name, capability=f"{p.major}.{p.minor}",
                memory_gib=round(p.total_memory / 2**30, 1), multiprocessors=p.multi_processor_count,
                bf16=c.is_bf16_supported(), cudnn=torch.backends.cudnn.version(),
                nccl=".".join(map(str, c.nccl.version())) if hasattr(c, "nccl") else None)
    x = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    y = x @ x  # warm-up: cuBLAS starts
    c.synchronize()
    import time
    t = time.perf_counter()
    for _ in range(10):
        y = x @ x
    c.synchronize()
    info["bf16_matmul_tflops"] = round(10 * 2 * 4096**3 / (time.perf_counter() - t) / 1e12, 1)
print("INFO " + json.dumps(info))
"""


def step_info(s: Settings, clock: Clock, log) -> Step:
    step = Step("info", STEP_TITLES["info"])
    smi = shutil.which("nvidia-smi")
    if smi:
        rc, sec, out = run([smi], timeout=clock.budget(20), log=log)
        step.commands.append("nvidia-smi")
        step.result["nvidia_smi"] = out.strip()[-TAIL:]
        q = "name,memory.total,driver_version,clocks.max.sm,power.limit"
        rc2, _, out2 = run([smi, f"--query-gpu={q}", "--format=csv,noheader"], timeout=clock.budget(20), log=log)
        step.result["nvidia_smi_query"] = {"fields": q, "value": out2.strip()} if rc2 == 0 else None
    else:
        step.result["nvidia_smi"] = None
        step.notes.append("nvidia-smi is not on the PATH")
    rc, sec, out = run([sys.executable, "-c", INFO_SNIPPET], timeout=clock.budget(60), log=log)
    step.commands.append("python -c <torch.cuda info, package versions, a bf16 matmul>")
    line = next((ln for ln in out.splitlines() if ln.startswith("INFO ")), None)
    if line:
        step.result["torch"] = json.loads(line[5:])
    step.status, step.seconds = status_of(rc), sec
    if rc != 0:
        step.tail = out[-TAIL:]
    return step


def step_gpu_tests(s: Settings, clock: Clock, log) -> Step:
    step = Step("gpu-tests", STEP_TITLES["gpu-tests"])
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"]
    rc, step.seconds, out = run(cmd, timeout=clock.budget(120), log=log)
    step.commands.append(" ".join(cmd[1:]))
    step.result = parse_pytest(out)
    step.status = status_of(rc)
    if s.device == "cpu":
        step.notes.append("no CUDA device: the GPU tests skip themselves")
    step.tail = out[-TAIL:]
    return step


def suite_command(s: Settings, *, have_open3d: bool) -> tuple[list[str], list[str]]:
    """The fast suite's command and what it leaves out (and why)."""
    notes = []
    if s.tiny:
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/test_gpu_check.py",
               "tests/test_curves.py"]
        notes.append("CPU dry run: two test files only (tests/test_gpu_check.py, tests/test_curves.py)")
    else:
        cmd = [sys.executable, "-m", "pytest", "-m", "not slow", "-q", "-x", "-p", "no:cacheprovider"]
    if not have_open3d and not s.tiny:
        cmd += ["--ignore=tests/test_pointcloud.py", "-k", "not pointcloud"]
        notes.append("open3d is not installed: tests/test_pointcloud.py and the tests named 'pointcloud' are left out")
    return cmd, notes


def step_suite(s: Settings, clock: Clock, log, *, have_open3d: bool) -> Step:
    step = Step("suite", STEP_TITLES["suite"])
    cmd, step.notes = suite_command(s, have_open3d=have_open3d)
    limit = clock.budget(300)
    if limit < 30:
        step.status = "skipped"
        step.notes.append(f"only {limit:.0f} s were left before the deadline")
        return step
    rc, step.seconds, out = run(cmd, timeout=limit, log=log)
    step.commands.append(" ".join(cmd[1:]))
    step.result = parse_pytest(out)
    step.result["timeout_s"] = round(limit)
    step.status = status_of(rc)
    if rc is None:
        step.notes.append(f"stopped at its {limit:.0f} s limit, at {step.result.get('progress_percent', '?')}% of the tests")
    step.tail = out[-TAIL:]
    return step


def step_cells(s: Settings, clock: Clock, log, *, have_open3d: bool) -> Step:
    step = Step("cells", STEP_TITLES["cells"])
    xyz = s.work / "xyz_shapes"
    if not have_open3d:
        write_xyz_shapes(xyz, per_class=20 if s.tiny else 150)
    rows, statuses, total = [], [], 0.0
    for cell in cell_plan(s, have_open3d=have_open3d, xyz_dir=xyz):
        limit = clock.budget(cell["cap"])
        row = {"modality": cell["modality"], "budget": cell["budget"], "steps": cell["steps"],
               "budget_steps": cell["budget_steps"], "note": cell["note"]}
        if limit < 10:
            row["status"] = "skipped (out of time)"
            rows.append(row)
            statuses.append("skipped")
            continue
        rc, sec, out = run(cell["command"], timeout=limit, log=log)
        step.commands.append(" ".join(cell["command"][2:]))
        total += sec
        row.update(status=status_of(rc), seconds=round(sec, 1), **cell_result(cell["out"]))
        if rc != 0:
            row["tail"] = out[-1500:]
        rows.append(row)
        statuses.append(row["status"])
    step.result["cells"] = rows
    step.seconds = total
    step.status = _worst(statuses)
    quick = ", ".join(f"{name} {steps}" for name, (_, steps) in CELLS.items())
    capped = (f"{rows[0]['steps']} steps instead of its quick budget's ({quick})" if not s.tiny
              else f"{rows[0]['steps']} steps at the smoke budget")
    step.notes.append(f"step-capped: each cell trains {capped}; its figures show that the cell runs on the device "
                      "and what its stages cost, not what the budget reaches")
    return step


NCCL_SNIPPET = r"""
import os, torch, torch.distributed as dist
torch.cuda.set_device(0)  # every rank on the one GPU
dist.init_process_group("nccl")
x = torch.ones(1, device="cuda") * (dist.get_rank() + 1)
dist.all_reduce(x)
print(f"RANK {dist.get_rank()} of {dist.get_world_size()}: all_reduce {x.item():g}")
dist.destroy_process_group()
"""


def step_torchrun(s: Settings, clock: Clock, log, *, gpus: int) -> Step:
    step = Step("torchrun", STEP_TITLES["torchrun"])
    work = s.work / "torchrun"
    total = 0.0
    if s.device == "cpu" or gpus >= 2:  # the project's comparison: N processes against one
        cmd = [sys.executable, "benchmarks/distributed.py", "--nproc", "2", "--device", s.device, "--steps", "12",
               "--batch-size", "16", "--seed", "3", "--out", str(work / "ddp")]
        rc, sec, out = run(cmd, timeout=clock.budget(150), log=log)
        step.commands.append(" ".join(cmd[1:]))
        total += sec
        summary = work / "ddp" / "distributed.json"
        if summary.is_file():
            d = json.loads(summary.read_text())
            step.result["distributed"] = {k: d[k] for k in ("processes", "items_per_process", "max_weight_difference",
                                                            "wall_s") if k in d}
        step.result["backend"] = "gloo" if s.device == "cpu" else "nccl"
        step.status = status_of(rc)
        if rc != 0:
            step.tail = out[-TAIL:]
    else:
        # one GPU: can two NCCL ranks share it? (seqify itself pins rank r to cuda:LOCAL_RANK)
        probe = work / "nccl_probe.py"
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text(NCCL_SNIPPET)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(probe)]
        rc, sec, out = run(cmd, timeout=clock.budget(60), log=log)
        step.commands.append("torchrun --standalone --nproc-per-node=2 nccl_probe.py  # two ranks on cuda:0")
        total += sec
        ok = rc == 0 and out.count("all_reduce 3") == 2
        step.result["two_ranks_one_gpu"] = "works" if ok else "refused"
        if not ok:
            reason = next((ln.strip() for ln in out.splitlines() if "Duplicate GPU" in ln or "NCCL error" in ln
                           or "ncclInvalidUsage" in ln), None)
            last = out.strip().splitlines()[-1][:300] if out.strip() else None
            step.result["two_ranks_one_gpu_error"] = reason or last
        step.notes.append("one GPU: seqify pins rank r to cuda:LOCAL_RANK (seqify/distributed.py), so `seqify bench` "
                          "runs one process under torchrun here; the probe above asks NCCL for two ranks on cuda:0")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1", "-m",
               "seqify.cli", "bench", "--modality", "sudoku", "--orderer", "raster", "--generator", "causal",
               "--budget", "smoke", "--steps", "12", "--device", "cuda", "--no-resume", "--out", str(work / "one")]
        rc2, sec, out2 = run(cmd, timeout=clock.budget(120), log=log)
        step.commands.append(" ".join(cmd[3:]))
        total += sec
        step.result["one_process_bench"] = status_of(rc2)
        results = work / "one" / "results.json"
        if results.is_file():
            r = json.loads(results.read_text())
            step.result["one_process_training"] = {k: r["training"].get(k) for k in ("processes", "steps", "seconds")}
        step.status = status_of(rc2)
        if rc2 != 0:
            step.tail = out2[-TAIL:]
    step.seconds = total
    return step


#: the full-budget configurations whose speed decides what a full run costs
THROUGHPUT = {
    "sudoku-full": ["--modality", "sudoku", "--orderer", "margin", "--generator", "masked", "--train-orderer",
                    "random", "--config", "benchmarks/configs/sudoku_full.toml"],
    "qm9-learned-full": ["--modality", "molecule", "--dataset", "qm9", "--orderer", "learned", "--config",
                         "benchmarks/configs/qm9_learned_full.toml"],
}


def step_throughput(s: Settings, clock: Clock, log) -> Step:
    step = Step("throughput", STEP_TITLES["throughput"])
    rows, statuses, total = [], [], 0.0
    for name, args in THROUGHPUT.items():
        out = s.work / "throughput" / f"{name}.json"
        out.unlink(missing_ok=True)
        extra = ["--warmup", "1", "--measure", "2", "--batch-size", "32"] if s.tiny else ["--warmup", "10",
                                                                                          "--measure", "50"]
        cmd = [sys.executable, "benchmarks/throughput.py", *args, "--budget", "full", "--device", s.device,
               *extra, "--out", str(out)]
        limit = clock.budget(150 if not s.tiny else 300)
        if limit < 10:
            rows.append({"config": name, "status": "skipped (out of time)"})
            statuses.append("skipped")
            continue
        rc, sec, text = run(cmd, timeout=limit, log=log)
        step.commands.append(" ".join(cmd[1:]))
        total += sec
        row: dict[str, Any] = {"config": name, "status": status_of(rc), "seconds": round(sec, 1)}
        if out.is_file():
            row.update(json.loads(out.read_text()))
        elif rc != 0:
            row["tail"] = text[-1500:]
        rows.append(row)
        statuses.append(row["status"])
    step.result["configs"] = rows
    step.seconds = total
    step.status = _worst(statuses)
    step.notes.append("projected = the config's training steps / measured steps per second; it leaves out data "
                      "preparation, periodic validation, checkpoints and the evaluation after training")
    if s.tiny:
        step.notes.append("CPU dry run: batch 32 instead of 256 and 2 timed steps: the projections are not the "
                          "full configs'")
    return step


def step_block_decoding(s: Settings, clock: Clock, log) -> Step:
    """``benchmarks/block_decoding.py`` on the device: sampling time against k on one QM9 causal
    model, and next-scale against raster on the MNIST next-scale tokens (issue 19's targets:
    k = 4 at least 2x faster than k = 1; next-scale at least 3x faster than raster)."""
    step = Step("block-decoding", STEP_TITLES["block-decoding"])
    out = s.work / "block_decoding.json"
    out.unlink(missing_ok=True)
    extra = ["--quick-check"] if s.tiny else ["--n", "250", "--repeats", "3"]
    cmd = [sys.executable, "benchmarks/block_decoding.py", "--device", s.device, *extra, "--out", str(out)]
    limit = clock.budget(120 if not s.tiny else 300)
    if limit < 10:
        step.status = "skipped"
        step.notes.append("out of time")
        return step
    rc, sec, text = run(cmd, timeout=limit, log=log)
    step.commands.append(" ".join(cmd[1:]))
    step.seconds, step.status = sec, status_of(rc)
    if out.is_file():
        found = json.loads(out.read_text())
        step.result = {key: found[key] for key in ("qm9", "image") if key in found}
    else:
        step.tail = text[-TAIL:]
    step.notes.append("one model per table, seeded initial weights (sampling time does not depend on them); "
                      "wall-clock, synchronized, best of the repeats")
    return step


# ---------------------------------------------------------------- the summary


def render_markdown(summary: dict[str, Any]) -> str:
    """The summary for a person: what ran, how it went, the figures that matter."""
    env = summary.get("environment", {})
    lines = [f"# seqify GPU check ({summary['mode']})", "",
             f"Started {summary['started']}, {summary['wall_s']:.0f} s of steps (deadline {summary['deadline_s']:.0f} s); "
             f"device `{summary['device']}`; git `{summary.get('git', '?')}`.", ""]
    if summary["mode"] != "gpu":
        lines += ["**CPU dry run**: this checks the script, not a GPU; its timings are a CPU's.", ""]
    if env.get("install"):
        lines += [f"Install: {env['install']}", ""]
    for note in env.get("notes", []):
        lines.append(f"- {note}")
    if env.get("notes"):
        lines.append("")
    lines += ["| step | status | seconds | result |", "|---|---|---:|---|"]
    for st in summary["steps"]:
        lines.append(f"| {st['title']} | {st['status']} | {st['seconds']:.0f} | {_one_line(st)} |")
    lines.append("")
    by = {st["key"]: st for st in summary["steps"]}
    info = by.get("info", {}).get("result", {}).get("torch")
    if info:
        keys = ("name", "memory_gib", "capability", "bf16", "bf16_matmul_tflops", "cuda_build", "nccl", "torch",
                "numpy", "scipy", "rdkit", "open3d", "tensorboard")
        lines += ["## Device", "", ", ".join(f"{k} {info[k]}" for k in keys if k in info), ""]
    tp = by.get("throughput", {}).get("result", {}).get("configs")
    if tp:
        lines += ["## Full-budget throughput", "",
                  "| config | parameters | batch | steps/s | items/s | full steps | projected training | peak GiB |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in tp:
            if "steps_per_second" in r:
                lines.append(f"| {r['config']} | {r['parameters']:,} | {r['batch_size']} | {r['steps_per_second']:.2f} "
                             f"| {r['items_per_second']:.0f} | {r['full_steps']:,} | {r['projected_train_h']:.2f} h "
                             f"| {r['peak_memory_gib'] if r['peak_memory_gib'] is not None else '-'} |")
            else:
                lines.append(f"| {r['config']} | {r['status']} | | | | | | |")
        lines.append("")
    cells = by.get("cells", {}).get("result", {}).get("cells")
    if cells:
        lines += ["## Cells (step-capped)", "",
                  "| modality | cell | budget | steps | status | nats/token | headline | train s | sample s | total s |",
                  "|---|---|---|---:|---|---:|---|---:|---:|---:|"]
        for c in cells:
            steps = f"{c['steps']} of {c['budget_steps']}" if c.get("budget_steps") else str(c["steps"])
            head = ", ".join(f"{k} {_fmt(v)}" for k, v in (c.get("headline") or {}).items())
            lines.append(f"| {c['modality']} | {c.get('cell', '')} | {c['budget']} | {steps} | {c['status']} | "
                         f"{_fmt(c.get('nats_per_token'))} | {head} | {_fmt(c.get('train_s'))} | "
                         f"{_fmt(c.get('sample_s'))} | {_fmt(c.get('total_s'))} |")
        lines.append("")
        for c in cells:
            if c.get("note"):
                lines.append(f"- {c['modality']}: {c['note']}")
        lines.append("")
    for st in summary["steps"]:
        if st["notes"]:
            lines += [f"**{st['title']}**", ""] + [f"- {n}" for n in st["notes"]] + [""]
    failed = [st for st in summary["steps"] if st["status"] in ("failed", "timeout") and st.get("tail")]
    for st in failed:
        lines += [f"### {st['title']}: the end of its output", "", "```", st["tail"][-1500:], "```", ""]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _one_line(st: dict[str, Any]) -> str:
    r = st.get("result", {})
    if st["key"] in ("gpu-tests", "suite"):
        return ", ".join(f"{v} {k}" for k, v in r.items() if isinstance(v, int) and k not in ("timeout_s", "progress_percent")) or "-"
    if st["key"] == "info" and r.get("torch"):
        t = r["torch"]
        return f"{t.get('name', 'no CUDA device')}, torch {t.get('torch')}, CUDA {t.get('cuda_build')}"
    if st["key"] == "throughput":
        return "; ".join(f"{c['config']} {c['steps_per_second']:.2f} steps/s, {c['projected_train_h']:.2f} h"
                         if "steps_per_second" in c else f"{c['config']} {c['status']}" for c in r.get("configs", []))
    if st["key"] == "cells":
        return ", ".join(f"{c['modality']} {c['status']}" for c in r.get("cells", []))
    if st["key"] == "block-decoding":
        parts = [f"QM9 {row['order']} {row['speedup']:.2f}x" for row in r.get("qm9", [])[1:]]
        parts += [f"MNIST next-scale {row['speedup']:.2f}x vs raster" for row in r.get("image", [])[1:]]
        return ", ".join(parts) or "-"
    if st["key"] == "torchrun":
        parts = [f"{k} {v}" for k, v in r.items() if isinstance(v, (str, int, float))]
        if "distributed" in r:
            parts.append(f"max weight difference {r['distributed'].get('max_weight_difference')}")
        return ", ".join(parts)
    return "-"


def write_summary(summary: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``out/gpu_check.json`` and ``out/gpu_check.md``, each atomically."""
    from seqify.io import atomic_write_json, atomic_write_text

    return (atomic_write_json(out / "gpu_check.json", summary),
            atomic_write_text(out / "gpu_check.md", render_markdown(summary) + "\n"))


def environment(s: Settings) -> dict[str, Any]:
    env: dict[str, Any] = {"notes": []}
    path = os.environ.get("PYTHONPATH", "")
    if "gpu_compat" in path:
        env["notes"].append("compatibility shim on: benchmarks/gpu_compat/sitecustomize.py gives fcd-torch 1.0.7 "
                            "what this numpy/scipy removed (numpy.row_stack, scipy.linalg.sqrtm(disp=...)); "
                            "the project pins numpy<2.5 and scipy<1.18 for it")
    if "qm9pack_slim" in path:
        env["notes"].append("QM9 from wheelhouse/qm9pack_slim: the Index and SMILES columns of qm9pack 1.0.3's "
                            "three CSV files (all 130,831 rows), not the 104 MB wheel")
    if s.install_log and s.install_log.is_file():
        said = [ln.strip() for ln in s.install_log.read_text().splitlines() if ln.startswith(INSTALL_SAYS)]
        env["install"] = "; ".join(said)[:600] or "nothing said"
    return env


#: how gpu_check.sh's install step reports (the lines of its log the summary keeps)
INSTALL_SAYS = ("installed:", "seqify and its", "seqify is not installed", "full resolution failed",
                "the plugin example")


def _git() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown (no git)"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (no git)"


def have_module(name: str) -> bool:
    """Whether ``name`` imports in a fresh interpreter (open3d can be installed and still fail to load)."""
    try:
        return subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, timeout=60).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def main(argv: list[str] | None = None) -> int:
    s = parse_args(argv)
    s.out.mkdir(parents=True, exist_ok=True)
    s.work.mkdir(parents=True, exist_ok=True)
    clock = Clock(s.deadline_s)
    have_open3d = have_module("open3d")
    summary: dict[str, Any] = {
        "check": "seqify GPU check (issue 20)", "mode": "gpu" if s.device == "cuda" else "cpu dry run",
        "device": s.device, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "git": _git(),
        "deadline_s": s.deadline_s, "wall_s": 0.0, "environment": environment(s),
        "steps": [asdict(Step(k, STEP_TITLES[k])) for k in RUN_ORDER if k in s.only],
    }
    if not have_open3d:
        summary["environment"]["notes"].append("open3d does not import: the point-cloud cell reads synthetic .xyz "
                                               "files and the suite leaves the point-cloud tests out")
    write_summary(summary, s.out)
    steps = {
        "info": lambda: step_info(s, clock, log),
        "gpu-tests": lambda: step_gpu_tests(s, clock, log),
        "throughput": lambda: step_throughput(s, clock, log),
        "block-decoding": lambda: step_block_decoding(s, clock, log),
        "cells": lambda: step_cells(s, clock, log, have_open3d=have_open3d),
        "torchrun": lambda: step_torchrun(s, clock, log, gpus=_gpus(summary)),
        "suite": lambda: step_suite(s, clock, log, have_open3d=have_open3d),
    }
    with open(s.out / "gpu_check.log", "a") as log:
        for i, key in enumerate(k for k in RUN_ORDER if k in s.only):
            print(f"[{clock.elapsed():5.0f} s] {STEP_TITLES[key]}", flush=True)
            try:
                step = steps[key]()
            except Exception as exc:  # a broken step is reported, the others still run
                step = Step(key, STEP_TITLES[key], status="failed", tail=f"{type(exc).__name__}: {exc}")
            summary["steps"][i] = asdict(step)
            summary["wall_s"] = round(clock.elapsed(), 1)
            write_summary(summary, s.out)
            print(f"[{clock.elapsed():5.0f} s]   {step.status}: {_one_line(asdict(step))}", flush=True)
    _copy_pictures(s)
    print(f"summary: {s.out / 'gpu_check.md'}")
    return 0 if all(st["status"] == "ok" for st in summary["steps"]) else 1


def _gpus(summary: dict[str, Any]) -> int:
    """CUDA devices as the info step counted them (0 without one, or when it did not run)."""
    info = next((st["result"].get("torch", {}) for st in summary["steps"] if st["key"] == "info"), {})
    if not info and summary["device"] == "cuda":  # info was not run: ask torch here
        import torch

        return torch.cuda.device_count()
    return int(info.get("device_count") or 0)


def _copy_pictures(s: Settings) -> None:
    """Each cell's training.png beside the summary (what comes back from the device's $OUT)."""
    if s.out == s.work:
        return
    for name in CELLS:
        png = s.work / "cells" / name / "training.png"
        if png.is_file():
            shutil.copyfile(png, s.out / f"training_{name}.png")


if __name__ == "__main__":
    sys.exit(main())
