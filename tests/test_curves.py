"""training.png and the TensorBoard event files, drawn from a training log."""

import io
import json
import sys
import types

import pytest
from PIL import Image

from seqify import curves
from seqify.bench import BenchRequest, run_bench
from seqify.config import TrainConfig
from seqify.matrix import MatrixRequest, run_matrix
from seqify.plugins import build_registry
from seqify.testing import ToyPlugin
from seqify.training import lr_at

PNG = b"\x89PNG\r\n\x1a\n"
CFG = TrainConfig(steps=100, lr=1e-3, warmup_steps=10)
LOG = {  # what TrainLog.as_dict() holds, with a probe (val_solve_rate) and a generator statistic
    "steps": 100,
    "loss_curve": [[0, 2.3], [50, 1.5], [99, 1.1]],
    "val_loss_curve": [[50, 1.6], [100, 1.2]],
    "series": {"val_solve_rate": [[50, 0.25], [100, 0.5]], "policy_entropy": [[0, 3.0], [50, 2.0], [99, 1.5]]},
}


@pytest.fixture(scope="module")
def registry():
    return build_registry([ToyPlugin()])


def test_panels_of_a_hand_made_log():
    loss, probe, lr = curves.training_panels(LOG, CFG)
    assert (loss.title, probe.title, lr.title) == ("loss", "validation probe", "learning rate")
    assert loss.lines == {"training": [(0, 2.3), (50, 1.5), (99, 1.1)], "validation": [(50, 1.6), (100, 1.2)]}
    assert probe.lines == {"solve_rate": [(50, 0.25), (100, 0.5)]}  # a generator's statistic is no probe metric
    steps, rates = zip(*lr.lines["schedule"])
    assert steps[0] == 0 and steps[-1] == 99 and len(steps) == 100
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)  # warm-up to the peak
    assert rates[-1] == pytest.approx(lr_at(99, CFG)) and rates[-1] < 2e-4  # cosine down to 10%


def test_figure_stacks_the_panels_on_one_step_axis():
    fig = curves.training_figure(curves.training_panels(LOG, CFG), title="toy")
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["loss", "validation probe", "learning rate"]
    assert [ax.get_ylabel() for ax in axes] == ["training objective", "metric on validation items",
                                                "learning rate (base)"]
    assert axes[-1].get_xlabel() == "training step"
    assert axes[0].get_shared_x_axes().joined(axes[0], axes[2])
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["training", "validation"]
    assert list(axes[1].lines[0].get_ydata()) == [0.25, 0.5]
    assert fig._suptitle.get_text() == "toy"


def test_png_bytes_and_a_log_without_validation():
    bare = {"steps": 100, "loss_curve": [[0, 2.0], [99, 1.0]], "val_loss_curve": [], "series": {}}
    panels = curves.training_panels(bare, CFG)
    assert [p.title for p in panels] == ["loss", "learning rate"]
    assert list(panels[0].lines) == ["training"]
    data = curves.training_png(panels)
    assert data.startswith(PNG)
    full = Image.open(io.BytesIO(curves.training_png(curves.training_panels(LOG, CFG))))
    assert Image.open(io.BytesIO(data)).height < full.height  # two panels, not three
    empty = curves.training_panels({"steps": 0, "loss_curve": [], "val_loss_curve": [[0, None]]}, CFG)
    assert empty[0].lines == {} and empty[-1].lines == {}  # a NaN (null in JSON) is no point
    assert curves.training_png(empty).startswith(PNG)  # nothing logged still draws


class FakeWriter:
    """torch.utils.tensorboard.SummaryWriter as far as write_tensorboard uses it."""

    written: list[tuple[str, float, int]] = []

    def __init__(self, log_dir):
        self.log_dir = log_dir
        FakeWriter.written = []

    def add_scalar(self, tag, value, step):
        FakeWriter.written.append((tag, value, step))

    def close(self):
        with open(f"{self.log_dir}/events.out.tfevents.fake", "w") as fh:
            fh.write(json.dumps(FakeWriter.written))


@pytest.fixture
def fake_tensorboard(monkeypatch):
    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    monkeypatch.setattr(curves, "tensorboard_available", lambda: True)


def test_tensorboard_scalars_from_the_log(tmp_path, fake_tensorboard):
    files = curves.write_training_curves(LOG, CFG, tmp_path)
    assert files == {"training_png": "training.png", "tensorboard": "tensorboard"}
    by_tag: dict[str, list] = {}
    for tag, value, step in FakeWriter.written:
        by_tag.setdefault(tag, []).append((step, value))
    assert set(by_tag) == {"train/loss", "val/loss", "val/solve_rate", "train/policy_entropy", "lr"}
    assert by_tag["train/loss"] == [(0, 2.3), (50, 1.5), (99, 1.1)]
    assert by_tag["val/loss"] == [(50, 1.6), (100, 1.2)]
    assert by_tag["val/solve_rate"] == [(50, 0.25), (100, 0.5)]
    assert by_tag["train/policy_entropy"] == [(0, 3.0), (50, 2.0), (99, 1.5)]
    assert by_tag["lr"] == [(s, pytest.approx(lr_at(s, CFG))) for s in (0, 50, 99)]
    assert (tmp_path / "tensorboard" / "events.out.tfevents.fake").is_file()
    # a rerun replaces the event files instead of adding a second run beside them
    (tmp_path / "tensorboard" / "events.out.tfevents.old").write_text("stale")
    curves.write_training_curves(LOG, CFG, tmp_path)
    assert sorted(p.name for p in (tmp_path / "tensorboard").iterdir()) == ["events.out.tfevents.fake"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tensorboard", "training.png"]  # no temporary left


def test_no_tensorboard_no_event_files(tmp_path, monkeypatch):
    monkeypatch.setattr(curves, "tensorboard_available", lambda: False)
    assert curves.write_training_curves(LOG, CFG, tmp_path) == {"training_png": "training.png"}
    assert not (tmp_path / "tensorboard").exists()


def test_every_cell_gets_its_curves_also_from_a_reused_model(tmp_path, registry):
    req = MatrixRequest(modalities=["toy"], orderers=["random", "margin"], generators=["unigram"],
                        out=tmp_path, budget="smoke")
    run_matrix(req, registry=registry)
    cells = {json.loads(p.read_text())["orderer"]: p.parent for p in (tmp_path / "cells").glob("*/results.json")}
    trained, reused = (json.loads((cells[o] / "results.json").read_text()) for o in ("random", "margin"))
    assert "reused_model" in reused["training"] and "reused_model" not in trained["training"]
    for results, folder in ((trained, cells["random"]), (reused, cells["margin"])):
        assert results["files"]["training_png"] == "training.png"
        assert (folder / "training.png").read_bytes().startswith(PNG)
    assert reused["training"]["loss_curve"] == trained["training"]["loss_curve"]


def test_bench_lists_the_curves_in_its_files(tmp_path, registry):
    res = run_bench(BenchRequest(modality="toy", orderer="raster", generator="unigram", out=tmp_path, budget="smoke"),
                    registry=registry)
    assert res.files["training_png"] == "training.png"
    panels = curves.training_panels(res.results["training"], TrainConfig(**res.results["config"]["train"]))
    assert [p.title for p in panels] == ["loss", "learning rate"]  # the toy modality has no probe
    assert len(panels[0].lines["training"]) == res.results["training"]["steps"]
    assert Image.open(tmp_path / "training.png").format == "PNG"


def test_real_event_files_read_back(tmp_path):
    """With the tensorboard package installed (not in dev): TensorBoard reads the scalars back."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert curves.write_training_curves(LOG, CFG, tmp_path)["tensorboard"] == "tensorboard"
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"train/loss", "val/loss", "val/solve_rate", "train/policy_entropy", "lr"}
    assert [(e.step, e.value) for e in events.Scalars("val/solve_rate")] == [(50, 0.25), (100, 0.5)]
