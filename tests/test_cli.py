"""The CLI contract, through typer's CliRunner (rich wrapping off via COLUMNS)."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from seqify.cli import app

runner = CliRunner()


def test_help_is_fast_and_does_not_import_torch():
    code = ("import sys, seqify.cli\nsys.argv=['seqify','--help']\ntry:\n    seqify.cli.main()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'rdkit' not in sys.modules and 'open3d' not in sys.modules, "
            "'heavy import'\nimport os\nprint(os.environ['OMP_WAIT_POLICY'])\nprint('ok')")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert "bench" in out.stdout and "modelability" in out.stdout and out.stdout.strip().endswith("ok")
    assert "PASSIVE" in out.stdout  # the CLI's default when the user set none (spinning OpenMP threads)
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert "ACTIVE" in out.stdout  # a value the user set is kept


def test_list_shows_components_with_their_plugin():
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0, res.output
    assert "margin" in res.output and "orderers" in res.output
    assert "sudoku" in res.output and "cells" in res.output


def test_invalid_config_is_a_message_naming_the_field(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[train]\nsteps = 'lots'\n")
    res = runner.invoke(app, ["bench", "--modality", "sudoku", "--orderer", "raster", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "train.steps" in res.output and "Traceback" not in res.output


def test_unknown_orderer_suggests(tmp_path):
    res = runner.invoke(app, ["bench", "--modality", "sudoku", "--orderer", "margn", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "did you mean 'margin'" in res.output


def test_not_applicable_cell_says_why(tmp_path):
    res = runner.invoke(app, ["bench", "--modality", "sudoku", "--orderer", "margin", "--generator", "causal",
                              "--budget", "smoke", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "use 'masked'" in res.output


@pytest.mark.parametrize("orderer,generator", [("raster", "causal")])
def test_smoke_bench_writes_the_results_contract(tmp_path, orderer, generator):
    res = runner.invoke(app, ["bench", "--modality", "sudoku", "--orderer", orderer, "--generator", generator,
                              "--budget", "smoke", "--seed", "1", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "results.json").read_text())
    for key in ("modality", "dataset", "tokenizer", "orderer", "generator", "seed", "device", "config",
                "modelability", "metrics", "timings"):
        assert key in data
    assert data["modelability"]["kind"] == "exact" and data["seed"] == 1
    assert {"puzzle_accuracy", "cell_accuracy", "valid_consistent"} <= set(data["metrics"])
    assert (tmp_path / "samples.png").stat().st_size > 1000
    assert data["files"]["training_png"] == "training.png"
    assert (tmp_path / "training.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "nats_per_token" in res.output  # the final table


def test_two_cell_matrix_shares_one_model_and_resumes(tmp_path):
    args = ["matrix", "--modalities", "sudoku", "--orderers", "margin,random", "--generators", "masked",
            "--train-orderer", "random", "--budget", "smoke", "--steps", "5", "--out", str(tmp_path)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = (tmp_path / "comparison.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and all(",done," in r for r in rows[1:])
    assert len(list((tmp_path / "models").glob("*.pt"))) == 1  # trained once, used by both cells
    assert len(list((tmp_path / "cells").glob("*/training.png"))) == 2  # the reusing cell draws the saved log
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 run, 2 read from the index" in again.output
