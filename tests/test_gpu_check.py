"""The GPU check's own logic (benchmarks/gpu_check.py): arguments, plans, parsing, the summary.

The check itself runs on a GPU machine (``bash benchmarks/gpu_check.sh``) or as a CPU dry
run; these tests run none of its steps."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gpu_check = _load("gpu_check", ROOT / "benchmarks" / "gpu_check.py")


def test_device_from_the_environment_and_the_summary_in_out(tmp_path):
    s = gpu_check.parse_args([], env={"SEQIFY_GPU_CHECK_DEVICE": "cpu", "OUT": str(tmp_path)})
    assert (s.device, s.tiny, s.out) == ("cpu", True, tmp_path)
    s = gpu_check.parse_args(["--work", str(tmp_path / "w")], env={})
    assert (s.device, s.tiny, s.out) == ("cuda", False, tmp_path / "w")  # no $OUT: beside the work files
    assert s.only == gpu_check.RUN_ORDER
    assert gpu_check.parse_args(["--dry-run"], env={}).device == "cpu"
    assert gpu_check.parse_args(["--only", "info,suite"], env={}).only == ("info", "suite")
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--only", "infos"], env={})


def test_every_step_runs_once_and_the_suite_last():
    assert sorted(gpu_check.RUN_ORDER) == sorted(gpu_check.STEP_TITLES)
    assert gpu_check.RUN_ORDER[-1] == "suite" and gpu_check.RUN_ORDER[:2] == ("info", "gpu-tests")


def test_cells_are_step_capped_and_the_pointcloud_cell_needs_no_open3d(tmp_path):
    gpu = gpu_check.parse_args(["--work", str(tmp_path)], env={})
    plan = {c["modality"]: c for c in gpu_check.cell_plan(gpu, have_open3d=False, xyz_dir=tmp_path / "xyz")}
    assert set(plan) == {"sudoku", "molecule", "image", "pointcloud"}
    for c in plan.values():
        cmd = c["command"]
        assert cmd[cmd.index("--budget") + 1] == "quick" and cmd[cmd.index("--device") + 1] == "cuda"
        assert int(cmd[cmd.index("--steps") + 1]) == c["steps"] < c["budget_steps"]
    pc = plan["pointcloud"]["command"]
    assert pc[pc.index("--dataset") + 1] == "files" and pc[pc.index("--data") + 1] == str(tmp_path / "xyz")
    assert "open3d" in plan["pointcloud"]["note"]
    with_o3d = gpu_check.cell_plan(gpu, have_open3d=True, xyz_dir=tmp_path)[-1]["command"]
    assert with_o3d[with_o3d.index("--dataset") + 1] == "shapes" and "--data" not in with_o3d
    dry = gpu_check.cell_plan(gpu_check.parse_args(["--dry-run"], env={}), have_open3d=False, xyz_dir=tmp_path)
    assert all(c["budget"] == "smoke" and c["steps"] == 5 and c["budget_steps"] is None for c in dry)


def test_the_suite_leaves_out_the_pointcloud_tests_only_without_open3d():
    gpu = gpu_check.parse_args([], env={})
    cmd, notes = gpu_check.suite_command(gpu, have_open3d=True)
    assert cmd[-6:] == ["-m", "not slow", "-q", "-x", "-p", "no:cacheprovider"] and not notes
    cmd, notes = gpu_check.suite_command(gpu, have_open3d=False)
    assert "--ignore=tests/test_pointcloud.py" in cmd and cmd[-2:] == ["-k", "not pointcloud"] and notes


def test_synthetic_point_clouds_read_as_a_files_dataset(tmp_path):
    from seqify_pointcloud.readers import read_cloud_file

    folder = gpu_check.write_xyz_shapes(tmp_path, per_class=2, n_points=64, seed=1)
    files = sorted(folder.rglob("*.xyz"))
    assert [f.parent.name for f in files] == ["box"] * 2 + ["cylinder"] * 2 + ["sphere"] * 2 + ["torus"] * 2
    clouds = read_cloud_file(files[0], n_points=64, seed=0)
    assert len(clouds) == 1 and clouds[0].shape == (64, 3) and np.isfinite(clouds[0]).all()
    again = gpu_check.write_xyz_shapes(tmp_path / "again", per_class=2, n_points=64, seed=1)
    assert (again / "torus" / "torus_001.xyz").read_text() == (folder / "torus" / "torus_001.xyz").read_text()


def test_pytest_output_parsed_also_when_cut_short():
    done = "....s..\n=========== 1 failed, 520 passed, 3 skipped, 60 deselected in 198.34s (0:03:18) ===========\n"
    assert gpu_check.parse_pytest(done) == {"failed": 1, "passed": 520, "skipped": 3, "deselected": 60}
    quiet = "..                                              [100%]\n2 skipped in 3.10s\n"
    assert gpu_check.parse_pytest(quiet) == {"skipped": 2, "progress_percent": 100}
    cut = "....... [ 12%]\n.......F [ 45%]\nFAILED tests/test_x.py::test_y - AssertionError\n"
    assert gpu_check.parse_pytest(cut) == {"progress_percent": 45, "first_failures": ["tests/test_x.py::test_y"]}


def test_projected_time_is_steps_over_rate():
    assert gpu_check.projected_seconds(50_000, 12.5) == 4000.0


def _summary(tmp_path):
    step = gpu_check.Step
    cells = [{"modality": "sudoku", "budget": "quick", "steps": 300, "budget_steps": 3000, "note": "",
              "status": "ok", "cell": "sudoku/cells, margin order, masked", "nats_per_token": 0.61234,
              "headline": {"puzzle_accuracy": 0.25}, "train_s": 9.5, "sample_s": 1.2, "total_s": 31.0}]
    tp = [{"config": "sudoku-full", "status": "ok", "parameters": 6351369, "batch_size": 256,
           "steps_per_second": 12.5, "items_per_second": 3200.0, "full_steps": 50000, "projected_train_h": 1.111,
           "peak_memory_gib": 3.2},
          {"config": "qm9-learned-full", "status": "timeout", "seconds": 150.0}]
    steps = [step("info", gpu_check.STEP_TITLES["info"], "ok", 4.0, result={"torch": {"name": "NVIDIA H200",
                                                                                      "torch": "2.11.0"}}),
             step("gpu-tests", gpu_check.STEP_TITLES["gpu-tests"], "ok", 20.0, result={"passed": 2}),
             step("throughput", gpu_check.STEP_TITLES["throughput"], "timeout", 180.0, result={"configs": tp},
                  tail="Killed"),
             step("cells", gpu_check.STEP_TITLES["cells"], "ok", 31.0, result={"cells": cells},
                  notes=["step-capped: each cell trains 300 steps"]),
             step("suite", gpu_check.STEP_TITLES["suite"], "skipped", 0.0, notes=["only 5 s were left"])]
    from dataclasses import asdict

    return {"check": "seqify GPU check (issue 20)", "mode": "gpu", "device": "cuda", "started": "today",
            "git": "abc1234", "deadline_s": 450, "wall_s": 235.0, "environment": {"notes": ["shim on"]},
            "steps": [asdict(s) for s in steps]}


def test_summary_files_say_what_ran_and_what_it_measured(tmp_path):
    summary = _summary(tmp_path)
    json_path, md_path = gpu_check.write_summary(summary, tmp_path)
    assert json.loads(json_path.read_text()) == summary
    md = md_path.read_text()
    assert md.startswith("# seqify GPU check (gpu)")
    assert "| 6. full-budget throughput and projected run time | timeout | 180 |" in md
    assert "| sudoku-full | 6,351,369 | 256 | 12.50 | 3200 | 50,000 | 1.11 h | 3.2 |" in md
    assert "| qm9-learned-full | timeout |" in md
    assert "| sudoku | sudoku/cells, margin order, masked | quick | 300 of 3000 | ok | 0.6123 | puzzle_accuracy 0.25 |" in md
    assert "step-capped" in md and "only 5 s were left" in md and "shim on" in md
    assert "Killed" in md  # the end of a step that did not finish
    assert "CPU dry run" not in md
    summary["mode"] = "cpu dry run"
    assert "**CPU dry run**" in gpu_check.render_markdown(summary)


def test_install_lines_reach_the_summary(tmp_path):
    log = tmp_path / "gpu_check.log"
    log.write_text("== install\nCollecting x\nfull resolution failed (expected ...): installing\n"
                   "installed: the wheelhouse's 11 wheels (--no-deps) and seqify (-e, --no-deps)\n")
    s = gpu_check.parse_args(["--install-log", str(log)], env={})
    said = gpu_check.environment(s)["install"]
    assert said.startswith("full resolution failed") and "11 wheels" in said and "Collecting" not in said


def test_the_compat_shim_restores_what_fcd_torch_calls(monkeypatch):
    import numpy
    import scipy.linalg

    before = list(sys.meta_path)
    shim = _load("gpu_compat_sitecustomize", ROOT / "benchmarks" / "gpu_compat" / "sitecustomize.py")
    added = [f for f in sys.meta_path if f not in before]
    for finder in added:
        sys.meta_path.remove(finder)
    assert len(added) == 1 and added[0].find_spec("json") is None  # waits for fcd_torch alone

    original = scipy.linalg.sqrtm
    monkeypatch.delattr(numpy, "row_stack", raising=False)
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda A: original(A))  # scipy >= 1.18: no disp
    shim._patch()
    assert numpy.row_stack is numpy.vstack
    A = np.array([[4.0, 1.0], [1.0, 3.0]])
    root, errest = scipy.linalg.sqrtm(A, disp=False)
    assert np.allclose(root @ root, A) and 0 <= errest < 1e-12
    assert np.allclose(scipy.linalg.sqrtm(A), root)
    monkeypatch.setattr(scipy.linalg, "sqrtm", original)
    shim._patch()  # scipy < 1.18: left alone
    assert scipy.linalg.sqrtm is original
