"""benchmarks/var_matched.py, the matched next-scale experiment of issue 19, end to end at the smoke budget."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_var_matched_trains_sweeps_and_reports(tmp_path):
    script = [sys.executable, str(ROOT / "benchmarks" / "var_matched.py")]
    common = ["--seeds", "0,1", "--arms", "ns-canvas,ns-canvas-cond", "--out", str(tmp_path), "--n-samples", "8"]
    for stage in ("train", "sweep", "report"):
        run = subprocess.run([*script, stage, *common, "--budget", "smoke"], capture_output=True, text=True,
                             timeout=900, cwd=ROOT)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report = json.loads((tmp_path / "report-n8.json").read_text())
    assert set(report) == {"ns-canvas", "ns-canvas-cond"}
    assert report["ns-canvas"]["passes"] == 6 and report["ns-canvas"]["bits"]["n"] == 2
    # the conditional arm is swept with guidance too, and its best setting is one of them
    assert {"t1", "t1-g1.5", "t1-g3-linear"} <= set(report["ns-canvas-cond"]["settings"])
    assert report["ns-canvas-cond"]["best"] in report["ns-canvas-cond"]["settings"]
    # the trained cells read the canvas; the conditional one is class-conditional
    trained = json.loads((tmp_path / "ns-canvas-cond-s0" / "results.json").read_text())
    assert trained["generator_config"]["slot_inputs"] is True and trained["generator_config"]["condition"] is True
