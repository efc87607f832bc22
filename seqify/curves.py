"""Training curves a person can look at: ``training.png`` in every run folder and, when
the ``tensorboard`` package is installed, TensorBoard event files in ``tensorboard/``.

Both are drawn from the training log as results.json holds it (``TrainLog.as_dict()``,
or the saved log of a model another cell trained), after training: a cell that reuses
a shared model gets the same curves as the cell that trained it, and the training loop
itself writes nothing. The learning rate is not logged; it is a function of the step
and the training settings (:func:`seqify.training.lr_at`), recomputed here.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqify.io import atomic_write_bytes

#: series of the validation probe are logged as ``val_<metric>`` (:func:`seqify.training.train`)
PROBE_PREFIX = "val_"


@dataclass
class Panel:
    """One panel of the figure: lines that share a y axis (the step axis is shared by all)."""

    title: str
    ylabel: str
    lines: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # legend label -> (step, value)


def _points(series: Any) -> list[tuple[int, float]]:
    """(step, value) pairs with a number as value (JSON has lists, and null for NaN)."""
    return [(int(s), float(v)) for s, v in (series or []) if v is not None]


def learning_rates(train_cfg, steps: int, points: int = 400) -> list[tuple[int, float]]:
    """The scheduled (base) learning rate at up to ``points`` steps of ``0..steps-1``."""
    from seqify.training import lr_at

    stride = max(1, steps // points)
    grid = sorted({*range(0, steps, stride), steps - 1}) if steps > 0 else []
    return [(s, lr_at(s, train_cfg)) for s in grid]


def training_panels(train_info: dict[str, Any], train_cfg) -> list[Panel]:
    """The panels of ``training.png`` for a results.json ``training`` section.

    Loss (training and validation), then the validation probe's metrics (the
    ``val_<name>`` series, when there are any), then the learning rate. A log without
    validation points still gives the loss panel with the training curve alone.
    """
    loss = Panel("loss", "training objective")
    train_loss, val_loss = _points(train_info.get("loss_curve")), _points(train_info.get("val_loss_curve"))
    if train_loss:
        loss.lines["training"] = train_loss
    if val_loss:
        loss.lines["validation"] = val_loss
    panels = [loss]
    series = train_info.get("series") or {}
    probe = {name[len(PROBE_PREFIX):]: _points(v) for name, v in series.items() if name.startswith(PROBE_PREFIX)}
    if any(probe.values()):
        panels.append(Panel("validation probe", "metric on validation items",
                            {k: v for k, v in probe.items() if v}))
    steps = int(train_info.get("steps", train_cfg.steps))
    lr = learning_rates(train_cfg, steps)
    panels.append(Panel("learning rate", "learning rate (base)", {"schedule": lr} if lr else {}))
    return panels


def training_figure(panels: list[Panel], title: str = ""):
    """A matplotlib figure (Agg) with one stacked panel per :class:`Panel`, sharing the step axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, sharex=True, squeeze=False, figsize=(7.5, 1.2 + 2.1 * len(panels)))
    for ax, panel in zip(axes[:, 0], panels):
        for label, pts in panel.lines.items():
            steps, values = zip(*pts)
            marker = "o" if len(pts) <= 30 and label != "schedule" else None
            ax.plot(steps, values, label=label, marker=marker, markersize=3, linewidth=1.2)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
        if not panel.lines:
            ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(panel.ylabel, fontsize=8)
        ax.grid(alpha=0.3)
        if len(panel.lines) > 1:
            ax.legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("training step")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def training_png(panels: list[Panel], title: str = "") -> bytes:
    """:func:`training_figure` as PNG bytes."""
    import matplotlib.pyplot as plt

    fig = training_figure(panels, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (``pip install seqify[tensorboard]``) is importable."""
    return importlib.util.find_spec("tensorboard") is not None


def tensorboard_scalars(train_info: dict[str, Any], train_cfg) -> list[tuple[str, float, int]]:
    """(tag, value, step) of every scalar the event files hold: ``train/loss``,
    ``val/loss``, ``val/<probe metric>``, ``lr`` (at the logged steps) and
    ``train/<name>`` for each other series (a generator's statistics)."""
    from seqify.training import lr_at

    out = [("train/loss", v, s) for s, v in _points(train_info.get("loss_curve"))]
    out += [("val/loss", v, s) for s, v in _points(train_info.get("val_loss_curve"))]
    for name, series in (train_info.get("series") or {}).items():
        tag = f"val/{name[len(PROBE_PREFIX):]}" if name.startswith(PROBE_PREFIX) else f"train/{name}"
        out += [(tag, v, s) for s, v in _points(series)]
    out += [("lr", lr_at(s, train_cfg), s) for s, _ in _points(train_info.get("loss_curve"))]
    return out


def write_tensorboard(train_info: dict[str, Any], train_cfg, folder: Path) -> Path | None:
    """TensorBoard event files of the logged series in ``folder`` (replaced whole), or
    None, silently, when the ``tensorboard`` package is not installed."""
    if not tensorboard_available():
        return None
    from torch.utils.tensorboard import SummaryWriter

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:  # written beside, then moved into place: a rerun replaces the old events, never adds to them
        writer = SummaryWriter(log_dir=str(tmp))
        try:
            for tag, value, step in tensorboard_scalars(train_info, train_cfg):
                writer.add_scalar(tag, value, step)
        finally:
            writer.close()
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def write_training_curves(train_info: dict[str, Any], train_cfg, out: Path, *, title: str = "") -> dict[str, str]:
    """``out/training.png`` (atomically) and, with tensorboard installed,
    ``out/tensorboard/``; returns the entries for results.json ``files``."""
    out = Path(out)
    atomic_write_bytes(out / "training.png", training_png(training_panels(train_info, train_cfg), title))
    files = {"training_png": "training.png"}
    if write_tensorboard(train_info, train_cfg, out / "tensorboard") is not None:
        files["tensorboard"] = "tensorboard"
    return files
