"""The molecule modality: QM9 and ZINC250k, unconditional generation, GDSS/MOSES metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from seqify.config import budget_preset
from seqify.data import RowReport
from seqify.errors import UnknownComponentError
from seqify.protocols import BaseModality, Splits
from seqify.types import TokenSet

from seqify_molecule.chem import canonicalize, sanitized_smiles
from seqify_molecule.datasets import load_splits
from seqify_molecule.metrics import molecule_metrics, write_samples_smi
from seqify_molecule.render import render_molecules

__all__ = ["Molecule", "MOLECULE_BUDGETS"]

#: Budget presets in the shape of ``seqify.config.BenchConfig``; ``per_dataset``
#: entries are merged on top for that dataset (ZINC250k's 741 slots cost ~16x
#: QM9's 45 per step). smoke: seconds (ZINC250k sampling still walks 741 slots);
#: quick: minutes on a 2-core CPU (1,000 QM9 samples and 100 ZINC250k samples, not
#: the protocol's 10,000, so their FCDs are not comparable to published ones);
#: full: one GPU, 10,000 samples, a model of roughly GDSS's parameter count.
MOLECULE_BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "train": {"steps": 15, "batch_size": 16, "warmup_steps": 2, "val_items": 32},
        "eval": {"n_test": 32, "n_samples": 32, "batch_size": 32},
        "data": {"limit": 300},
        "size": "micro",
    },
    "quick": {
        "train": {"steps": 1500, "batch_size": 64, "lr": 1e-3, "warmup_steps": 100, "val_items": 256},
        "eval": {"n_test": 1000, "n_samples": 1000, "batch_size": 250},
        "data": {"limit": None},
        "size": "small",
        "per_dataset": {
            "zinc250k": {  # 741 slots: a smaller model so that a cell stays within minutes
                "train": {"steps": 300, "batch_size": 16},
                "eval": {"n_test": 128, "n_samples": 100, "batch_size": 100},
                "data": {"limit": 5_000},
                "size": "tiny",
            }
        },
    },
    "full": {
        "train": {"steps": 50_000, "batch_size": 256, "lr": 3e-4, "warmup_steps": 1000, "eval_every": 5000, "val_items": 2048},
        "eval": {"n_test": 13_082, "n_samples": 10_000, "batch_size": 1000},
        "data": {"limit": None},
        "size": "base",
        "per_dataset": {
            "zinc250k": {
                "train": {"steps": 30_000, "batch_size": 64},
                "eval": {"n_test": 24_887, "n_samples": 10_000, "batch_size": 500},
            }
        },
    },
}


#: a few small molecules (charges, rings, a triple bond, an aromatic ring) the
#: conformance kit tries the tokenizers on (:meth:`Molecule.example_items`)
EXAMPLE_MOLECULES = ("CCO", "CC(=O)[O-]", "C[NH3+]", "N#CC=O", "NC1CC1", "OC(F)(F)F", "c1ccoc1", "CC1=CC(=O)NC1")


class Molecule(BaseModality):
    """Molecular graphs: QM9 (qm9pack, MoFlow test ids) and ZINC250k (a file you give).

    Items are canonical non-isomeric SMILES; see :mod:`seqify_molecule.datasets` for
    the splits and :mod:`seqify_molecule.metrics` for the exact metric rules.
    """

    name = "molecule"
    datasets: ClassVar[tuple[str, ...]] = ("qm9", "zinc250k")
    task: ClassVar[Literal["complete", "generate"]] = "generate"
    #: qm9 reads the qm9pack files, or a CSV of yours; zinc250k needs your file
    file_datasets: ClassVar[tuple[str, ...]] = ("qm9", "zinc250k")
    default_tokenizer: ClassVar[str | None] = "graph"
    headline_metrics: ClassVar[tuple[str, ...]] = ("validity", "fcd")

    def __repr__(self) -> str:
        return "Molecule()"

    def load(
        self, dataset: str, path: Path | None, *, seed: int, limit: int | None, report: RowReport
    ) -> Splits:
        """Load QM9 or ZINC250k into fixed splits (see :mod:`seqify_molecule.datasets`).

        Args:
            dataset: "qm9" or "zinc250k".
            path: None for QM9 (qm9pack); the ZINC250k CSV or .smi file.
            seed: seeds the validation (and ZINC test) split and the training order.
            limit: at most this many training items (validation is capped to it too).
            report: bad rows (unparseable, atom outside the vocabulary, too large) go here.
        """
        if dataset not in self.datasets:
            raise UnknownComponentError("dataset", dataset, self.datasets, "modality 'molecule'")
        # MoleculeSplits: also every non-test molecule (even those cut by limit), for novelty
        return load_splits(dataset, path, seed=seed, limit=limit, report=report)

    def budget(self, budget: str, *, dataset: str | None = None) -> dict[str, Any]:
        """Overrides for "smoke", "quick" or "full" (see :data:`MOLECULE_BUDGETS`).

        Args:
            budget: the budget name.
            dataset: merge that dataset's ``per_dataset`` entry and drop the rest;
                None (default) returns the preset with its ``per_dataset`` table.
        """
        return budget_preset(MOLECULE_BUDGETS, budget, dataset)

    def templates(
        self, tokenizer: Any, test_tokens: list[TokenSet], n: int, rng: torch.Generator
    ) -> list[TokenSet]:
        """``n`` all-open token sets in the tokenizer's layout (unconditional generation)."""
        blank = tokenizer.blank()
        if blank is None and test_tokens:
            longest = max(test_tokens, key=len)
            blank = TokenSet(
                torch.zeros_like(longest.values), longest.kinds.clone(), longest.coords.clone(),
                torch.zeros_like(longest.given),
            )
        elif blank is None:
            raise ValueError(f"tokenizer {tokenizer!r} has no blank() layout and no test tokens were given")
        return [blank.with_values(blank.values) for _ in range(n)]

    def evaluate(
        self, samples: list[Any], splits: Splits, *, templates: list[TokenSet] | None = None
    ) -> dict[str, Any]:
        """Validity, valid_connected, uniqueness, novelty and FCD (vs ``splits.test``).

        Novelty is measured against every non-test molecule: ``splits.non_test`` when
        the splits come from :meth:`load` (train and validation before ``limit``), and
        always ``splits.train`` and ``splits.val`` (see
        :data:`seqify_molecule.metrics.NOVELTY_NOTE`). See
        :func:`seqify_molecule.metrics.molecule_metrics` for the exact rules.
        """
        dataset = str(splits.info.get("dataset", "custom"))
        reference = set(getattr(splits, "non_test", ())) | set(splits.train) | set(splits.val or ())
        return molecule_metrics(samples, list(reference), splits.test, dataset=dataset)

    def render(self, samples: list[Any], path: Path, *, splits: Splits | None = None) -> Path:
        """A grid of up to 16 valid samples with their SMILES, as PNG."""
        return render_molecules(samples, path)

    def save_samples(self, samples: list[Any], out_dir: Path, *, splits: Splits | None = None) -> list[Path]:
        """``samples.smi``: one line per sample, canonical SMILES or ``INVALID``."""
        return [write_samples_smi(samples, Path(out_dir) / "samples.smi")]

    def example_items(self, n: int, seed: int = 0) -> list[str]:
        """The canonical SMILES of the first ``n`` of :data:`EXAMPLE_MOLECULES` (no file
        needed; ``seed`` is unused). Raises ValueError naming a molecule that fails."""
        out = []
        for raw in EXAMPLE_MOLECULES[:n]:
            smiles, why = canonicalize(raw)
            if smiles is None:
                raise ValueError(f"example molecule {raw!r}: {why}")
            out.append(smiles)
        return out

    def items_equal(self, decoded: Any, item: str) -> bool:
        """A decoded molecule is ``item`` when its sanitized canonical SMILES is."""
        return sanitized_smiles(decoded) == item
