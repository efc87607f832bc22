"""Kill a `seqify bench` run mid-training, rerun the same command, and compare the result
with an uninterrupted run of the same command.

1. ``seqify bench ... --out OUT/killed`` runs in a child process that SIGKILLs itself
   when training reaches step ``--kill-at`` (no cleanup, as a crash or an OOM kill);
2. the same ``seqify bench`` command is run again on ``OUT/killed``: it must log
   "resuming from step N" (N: the last multiple of ``--checkpoint-every`` before the kill);
3. the same command on ``OUT/whole`` runs uninterrupted.

It prints the step resumed from, both final training losses, both test modelabilities
and the largest weight difference, and writes ``OUT/resume.json``; it exits 1 when the
resumed model differs from the uninterrupted one beyond float tolerance.

    python benchmarks/resume.py --modality molecule --orderer bfs --generator causal --budget quick \\
        --steps 300 --checkpoint-every 100 --kill-at 250 --seed 0 --out runs/resume
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

KILLER = textwrap.dedent("""
    import os, signal, sys
    from seqify.bench import Reporter
    from seqify import cli

    class KillMidTraining(Reporter):
        stage_name, steps = None, 0
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return False
        def stage(self, name, total=None):
            self.stage_name = name
        def advance(self, n=1, info=""):
            if self.stage_name == "training":
                self.steps += n
                if self.steps == int(os.environ["SEQIFY_KILL_AT"]):
                    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: a real kill

    cli.RichReporter = KillMidTraining
    sys.argv = ["seqify", *sys.argv[1:]]
    cli.app()
""")


def seqify_cmd() -> list[str]:
    return [str(Path(sys.executable).parent / "seqify")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", required=True)
    parser.add_argument("--orderer", required=True)
    parser.add_argument("--generator", default=None)
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--checkpoint-every", type=int, required=True)
    parser.add_argument("--kill-at", type=int, required=True, help="training step at which the first run is killed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not 0 < args.kill_at < args.steps:
        parser.error("--kill-at must fall inside training (0 < kill-at < steps)")

    import torch

    from seqify.bench import TRAIN_STATE
    from seqify.io import atomic_write_json, atomic_write_text, load_checkpoint

    args.out.mkdir(parents=True, exist_ok=True)
    config = atomic_write_text(args.out / "checkpointing.toml",
                               f"[train]\nsteps = {args.steps}\ncheckpoint_every = {args.checkpoint_every}\n")
    cell = ["bench", "--modality", args.modality, "--orderer", args.orderer, "--budget", args.budget,
            "--seed", str(args.seed), "--config", str(config),
            *(["--generator", args.generator] if args.generator else [])]
    env = {**os.environ, "SEQIFY_KILL_AT": str(args.kill_at)}
    killed, whole = args.out / "killed", args.out / "whole"

    first = subprocess.run([sys.executable, "-c", KILLER, *cell, "--out", str(killed), "--no-resume"], env=env,
                           capture_output=True, text=True)
    if first.returncode != -signal.SIGKILL:
        print(first.stdout[-2000:], first.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"the first run was meant to be killed at step {args.kill_at}; it exited {first.returncode}")
    saved_step = int(load_checkpoint(killed / TRAIN_STATE)["step"])
    rerun = subprocess.run([*seqify_cmd(), *cell, "--out", str(killed)], capture_output=True, text=True)
    if rerun.returncode:
        raise SystemExit(f"the rerun failed:\n{rerun.stderr[-3000:]}")
    said = re.search(r"resuming from step (\d+) of (\d+)", rerun.stdout + rerun.stderr)
    plain = subprocess.run([*seqify_cmd(), *cell, "--out", str(whole), "--no-resume"], capture_output=True, text=True)
    if plain.returncode:
        raise SystemExit(f"the uninterrupted run failed:\n{plain.stderr[-3000:]}")

    a, b = load_checkpoint(killed / "checkpoint.pt")["model"], load_checkpoint(whole / "checkpoint.pt")["model"]
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in b)
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (killed, whole))
    summary = {
        "command": "seqify " + " ".join(cell),
        "killed_at_step": args.kill_at,
        "state_saved_at_step": saved_step,
        "resumed_from_step": int(said.group(1)) if said else None,
        "final_train_loss": {"resumed": ra["training"]["final_train_loss"], "whole": rb["training"]["final_train_loss"]},
        "final_val_loss": {"resumed": ra["training"]["final_val_loss"], "whole": rb["training"]["final_val_loss"]},
        "nats_per_token": {"resumed": ra["modelability"]["nats_per_token"], "whole": rb["modelability"]["nats_per_token"]},
        "max_weight_difference": diff,
        "state_left_behind": (killed / TRAIN_STATE).exists(),
        "torch": torch.__version__,
    }
    atomic_write_json(args.out / "resume.json", summary)
    print(f"killed at step {args.kill_at}; state saved at step {saved_step}; the rerun said: "
          f"{said.group(0) if said else 'NOTHING'}")
    for key in ("final_train_loss", "final_val_loss", "nats_per_token"):
        print(f"{key:>16}: resumed {summary[key]['resumed']}  uninterrupted {summary[key]['whole']}")
    print(f"largest weight difference: {diff:.3g}")
    ok = said is not None and int(said.group(1)) == saved_step and diff <= 1e-5 and not summary["state_left_behind"]
    print("OK: the resumed run ends where the uninterrupted one does" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
