"""What a run is asked to do: the settings every command shares, one cell's request, its result."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class Reporter:
    """Progress callbacks; the CLI passes a rich implementation, the API a silent one."""

    def stage(self, name: str, total: int | None = None) -> None: ...

    def advance(self, n: int = 1, info: str = "") -> None: ...

    def log(self, message: str) -> None: ...


@dataclass(kw_only=True)
class RunSettings:
    """The settings ``seqify bench``, ``seqify matrix`` and ``seqify modelability`` share;
    each request type extends it (so each field is defined once).

    Args:
        dataset: one of the modality's datasets (default: its first).
        data: a file or folder for datasets that read one (``--data``).
        budget: "smoke", "quick" or "full".
        steps: override the number of training steps.
        seed: seeds data splits, training, orders and sampling.
        tokenizer_seed: seeds fitting a learned tokenizer (a VQ codebook), apart from
            the model's seed; None: the run ``seed``.
        tokenizer_state: a tokenizer state file (``tokenizer_state.pt`` of an earlier
            run) loaded instead of fitting: the same tokenizer on another machine.
        device: "auto", "cpu" or "cuda".
        config_file: TOML/YAML/JSON with any BenchConfig fields.
        overrides: a dict merged last (Python API).
        train_orderer: train under this orderer instead of the cell's own (e.g. a masked
            model trained on random orders, then solved in raster order); scoring and
            sampling always follow the cell's orderer.
    """

    dataset: str | None = None
    data: Path | None = None
    budget: str = "quick"
    steps: int | None = None
    seed: int = 0
    tokenizer_seed: int | None = None
    tokenizer_state: Path | None = None
    device: str = "auto"
    config_file: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    train_orderer: str | None = None

    @property
    def tokenizer_fit_seed(self) -> int:
        """The seed the tokenizer is fitted with: ``tokenizer_seed``, else ``seed``."""
        return self.seed if self.tokenizer_seed is None else self.tokenizer_seed

    def settings(self) -> dict[str, Any]:
        """The shared settings as keyword arguments (to build another request from them)."""
        return {f.name: getattr(self, f.name) for f in fields(RunSettings)}


@dataclass(kw_only=True)
class BenchRequest(RunSettings):
    """The inputs of one cell, as given on the command line (and :class:`RunSettings`).

    Args:
        modality: registered modality name.
        orderer: registered orderer name.
        out: output folder.
        tokenizer: registered tokenizer for the modality (default: the modality's
            ``default_tokenizer``, else its first).
        generator: registered generator (default: of the generators whose capabilities
            the orderer accepts, the one with the highest ``default_priority``).
        model_cache: folder of trained models shared between cells (``seqify matrix``).
        resume: resume training from ``out/train_state.pt`` when it holds this run's
            state (False: train from the start and overwrite it).
    """

    modality: str
    orderer: str
    out: Path
    tokenizer: str | None = None
    generator: str | None = None
    model_cache: Path | None = None
    resume: bool = True


@dataclass
class BenchResult:
    """What a cell wrote. Under ``torchrun`` only rank 0 writes: the other ranks get
    ``results`` None."""

    results: dict[str, Any] | None
    out: Path
    files: dict[str, str]

    @property
    def results_path(self) -> Path:
        return self.out / "results.json"


def request_dict(req: BenchRequest) -> dict[str, Any]:
    """The request as saved in a checkpoint (what ``seqify sample`` rebuilds it from)."""
    return {"modality": req.modality, "orderer": req.orderer, "dataset": req.dataset,
            "data": str(req.data) if req.data else None, "tokenizer": req.tokenizer, "generator": req.generator,
            "budget": req.budget, "steps": req.steps, "seed": req.seed, "train_orderer": req.train_orderer,
            "tokenizer_seed": req.tokenizer_seed,
            "tokenizer_state": str(req.tokenizer_state) if req.tokenizer_state else None}
