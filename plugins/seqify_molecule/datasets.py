"""Molecule datasets: QM9 (shipped by the ``qm9pack`` wheel) and ZINC250k (a file you give).

Both loaders read SMILES, canonicalize them (``chem.canonicalize``: stereochemistry
dropped, RDKit canonical non-isomeric SMILES) and check them against the dataset's
atom vocabulary and size limit. A row RDKit cannot parse, with an atom outside the
vocabulary or with too many atoms is reported (source, row, reason) and skipped.

The validated rows are cached under ``$SEQIFY_CACHE`` (default ``~/.cache/seqify``)
in a small JSON file keyed by the source files' sizes and modification times, the
RDKit version and :data:`CACHE_VERSION`; a damaged cache is rebuilt, never trusted.

Splits:

- QM9: test = the 13,082 molecules whose GDB ids are in the MoFlow/GDSS test index
  (``data/qm9_test_gdb_ids.json``); validation = 5% of the rest (seeded); train = the rest.
- ZINC250k: seeded split, test 10%, validation 5%, train 85%.

Novelty reference: :func:`load_splits` returns :class:`MoleculeSplits`, whose
``non_test`` holds the canonical SMILES of every valid molecule outside the test split
(train and validation, and also those a ``limit`` left out of them), the training
set of the published protocol (GDSS with the MoFlow split: every molecule outside the
test ids is a training molecule). QM9 (qm9pack): 117,749 non-test molecules, 117,674
distinct canonical SMILES, whatever the ``limit``.

Row numbers are 1-based data rows (the header is not counted) for CSV files and
1-based line numbers for ``.smi`` files.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import importlib.util
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqify.data import RowReport
from seqify.errors import DataError
from seqify.io import atomic_write_bytes, cache_dir
from seqify.protocols import Splits

from seqify_molecule.chem import MoleculeVocab, canonicalize, get_vocab

__all__ = [
    "CACHE_VERSION",
    "QM9_VAL_FRACTION",
    "ZINC_TEST_FRACTION",
    "ZINC_VAL_FRACTION",
    "qm9_files",
    "qm9_test_ids",
    "MoleculeSplits",
    "load_qm9",
    "load_splits",
    "load_zinc250k",
]

#: bump when the validation or the cache layout changes
CACHE_VERSION = 2
QM9_VAL_FRACTION = 0.05
ZINC_TEST_FRACTION = 0.10
ZINC_VAL_FRACTION = 0.05
_QM9_PARTS = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")

csv.field_size_limit(1 << 30)  # qm9pack rows carry long XYZ columns


@dataclass(frozen=True)
class Row:
    """One validated input row: where it came from, its id, and its canonical SMILES or why not."""

    source: str
    row: int
    ident: str
    smiles: str | None
    reason: str | None


@dataclass
class MoleculeSplits(Splits):
    """Splits plus ``non_test``: the canonical SMILES of every valid non-test molecule.

    ``non_test`` covers train and validation before ``limit`` cut them, so molecules
    the limit left out still count as known for novelty (see the module docstring).
    It is kept out of ``info``, which goes into ``results.json``.
    """

    non_test: frozenset[str] = field(default_factory=frozenset)


# ---------------------------------------------------------------- QM9 files


def qm9_files() -> list[Path]:
    """The three QM9 CSV files inside the installed ``qm9pack`` wheel.

    Found through ``importlib.util.find_spec`` without importing qm9pack (its
    ``__init__`` fails on recent setuptools).

    Raises:
        DataError: when qm9pack is not installed or its files are missing.
    """
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("dataset 'qm9' needs the qm9pack package (pip install qm9pack), or give a QM9 CSV path")
    for location in spec.submodule_search_locations:
        files = [Path(location) / "data" / name for name in _QM9_PARTS]
        if all(f.is_file() for f in files):
            return files
    raise DataError(
        f"qm9pack is installed at {list(spec.submodule_search_locations)} but its data files "
        f"{', '.join(_QM9_PARTS)} are missing"
    )


def qm9_test_ids() -> list[int]:
    """The GDB ids of the QM9 test split (MoFlow/GDSS index), shipped with this plugin."""
    text = importlib.resources.files("seqify_molecule").joinpath("data/qm9_test_gdb_ids.json").read_text()
    return [int(i) for i in json.loads(text)]


def _qm9_id(value: str) -> int | None:
    """A GDB id from ``"1234"`` or ``"gdb_1234"`` (None when there is none)."""
    try:
        return int(value.strip().rsplit("_", 1)[-1])
    except ValueError:
        return None


def _read_qm9_csv(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(row, id, SMILES or None) from a CSV with an ``Index``/``mol_id`` and a SMILES column."""
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file, expected a header with Index and SMILES columns")
        names = [h.strip() for h in header]
        id_col = next((names.index(c) for c in ("Index", "mol_id", "gdb_id") if c in names), None)
        smi_col = next((names.index(c) for c in ("SMILES", "SMILES1", "smiles") if c in names), None)
        if id_col is None or smi_col is None:
            raise DataError(
                f"{path}: a QM9 CSV needs an id column (Index, mol_id or gdb_id) and a SMILES column "
                f"(SMILES, SMILES1 or smiles); found columns {names[:12]}"
            )
        for n, fields in enumerate(reader, start=1):
            if len(fields) <= max(id_col, smi_col):
                yield n, "", None
                continue
            yield n, fields[id_col], fields[smi_col]


# ---------------------------------------------------------------- ZINC files


def _read_zinc(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(row, id, SMILES or None) from the ZINC250k CSV (``smiles`` column) or a .smi file."""
    with open(path, newline="") as fh:
        first = fh.readline()
    is_csv = path.suffix.lower() == ".csv" or ("," in first and "smiles" in first.lower())
    if is_csv:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            header = [h.strip().lower() for h in next(reader, [])]
            if "smiles" not in header:
                raise DataError(
                    f"{path}: no 'smiles' column (columns: {header[:12]}); give the standard "
                    "ZINC250k CSV (250k_rndm_zinc_drugs_clean_3.csv, columns smiles,logP,qed,SAS) "
                    "or a .smi file with one SMILES per line"
                )
            col = header.index("smiles")
            for n, fields in enumerate(reader, start=1):
                if not any(f.strip() for f in fields):
                    continue  # a blank line is not a row
                yield n, str(n), fields[col] if len(fields) > col else None
        return
    with open(path) as fh:
        for n, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            if n == 1 and parts[0].lower() == "smiles":
                continue  # a header line
            yield n, parts[1] if len(parts) > 1 else str(n), parts[0]


# ---------------------------------------------------------------- validation + cache


def _file_key(files: list[Path]) -> list[list[Any]]:
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    return out


def _validated_rows(
    files: list[Path],
    read: Callable[[Path], Iterator[tuple[int, str, str | None]]],
    vocab: MoleculeVocab,
    *,
    use_cache: bool = True,
) -> list[Row]:
    """Every row of ``files``, canonicalized and checked against ``vocab`` (cached)."""
    from rdkit import __version__ as rdkit_version

    key = json.dumps([CACHE_VERSION, rdkit_version, vocab.name, vocab.atom_types, vocab.max_atoms, _file_key(files)])
    path = cache_dir() / "molecule" / f"{vocab.name}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"
    if use_cache and path.is_file():
        try:
            data = json.loads(path.read_text())
            if data["key"] == key:
                sources = data["sources"]
                return [Row(sources[r[0]], *r[1:]) for r in data["rows"]]
        except (ValueError, KeyError, TypeError, IndexError):
            pass  # damaged: rebuild
    rows = []
    for f in files:
        for n, ident, raw in read(f):
            if raw is None:
                rows.append(Row(f.name, n, ident, None, "missing SMILES field"))
                continue
            smiles, reason = canonicalize(raw, vocab)
            rows.append(Row(f.name, n, ident, smiles, reason))
    if use_cache:
        sources = [f.name for f in files]
        payload = {
            "key": key,
            "sources": sources,
            "rows": [[sources.index(r.source), r.row, r.ident, r.smiles, r.reason] for r in rows],
        }
        try:
            atomic_write_bytes(path, json.dumps(payload, separators=(",", ":")).encode())
        except OSError:
            pass  # an unwritable cache only costs time
    return rows


def _report_rows(rows: list[Row], report: RowReport) -> list[Row]:
    report.seen(len(rows))
    good = []
    for r in rows:
        if r.smiles is None:
            report.add(r.source, r.row, r.reason or "invalid")
        else:
            good.append(r)
    return good


def _common_info(vocab: MoleculeVocab, rows: list[Row], good: list[Row]) -> dict[str, Any]:
    return {
        "dataset": vocab.name,
        "rows_read": len(rows),
        "rows_kept": len(good),
        "rows_skipped": len(rows) - len(good),
        "unique_smiles": len({r.smiles for r in good}),
        "atom_types": list(vocab.atom_labels[1:]),
        "max_atoms": vocab.max_atoms,
        "representation": (
            "RDKit canonical non-isomeric SMILES of the sanitized molecule; graphs are kekulized "
            "with implicit hydrogens; stereochemistry dropped; formal charges kept as atom types"
        ),
    }


def _take(items: list[str], limit: int | None) -> list[str]:
    return items if limit is None else items[:limit]


#: how the novelty reference is made (in ``info``; the set itself is ``MoleculeSplits.non_test``)
NOVELTY_REFERENCE = (
    "every valid molecule outside the test split (train + validation, including molecules "
    "left out by data.limit), as GDSS with the MoFlow split takes every non-test molecule as training data"
)


def _novelty_info(non_test: frozenset[str]) -> dict[str, Any]:
    return {"novelty_reference": NOVELTY_REFERENCE, "novelty_reference_size": len(non_test)}


def load_qm9(
    path: Path | None, *, seed: int, limit: int | None, report: RowReport, use_cache: bool = True
) -> tuple[list[str], list[str], list[str], dict[str, Any]]:
    """QM9 as (train, val, test, info); :func:`load_splits` also gives the novelty reference.

    Args:
        path: None for the qm9pack files, or a CSV (or a folder of CSVs) with an id
            column (Index, mol_id "gdb_N" or gdb_id) and a SMILES column.
        seed: seeds the validation carve-out and the order of the training items.
        limit: at most this many training items (the first of the seeded shuffle);
            validation is capped to the same number; the test split is always whole.
        report: bad rows are added here and skipped.
        use_cache: read and write the validated-rows cache.
    """
    return _load_qm9(path, seed=seed, limit=limit, report=report, use_cache=use_cache)[:4]


def _load_qm9(
    path: Path | None, *, seed: int, limit: int | None, report: RowReport, use_cache: bool = True
) -> tuple[list[str], list[str], list[str], dict[str, Any], frozenset[str]]:
    vocab = get_vocab("qm9")
    if path is None:
        files = qm9_files()
    else:
        path = Path(path)
        if path.is_dir():
            files = sorted(path.glob("*.csv"))
        else:
            files = [path]
        if not files or not all(f.is_file() for f in files):
            raise DataError(f"QM9 path {str(path)!r} is not a CSV file or a folder of CSV files")
    rows = _validated_rows(files, _read_qm9_csv, vocab, use_cache=use_cache)
    good = _report_rows(rows, report)
    if not good:
        raise DataError(f"no valid QM9 molecules in {', '.join(str(f) for f in files)}")
    test_ids = set(qm9_test_ids())
    in_test = [_qm9_id(r.ident) in test_ids for r in rows]
    test = [r.smiles for r, t in zip(rows, in_test) if t and r.smiles is not None]
    rest = [r.smiles for r, t in zip(rows, in_test) if not t and r.smiles is not None]
    random.Random(seed).shuffle(rest)
    n_val = round(QM9_VAL_FRACTION * len(rest))
    val, train = rest[:n_val], rest[n_val:]
    non_test = frozenset(rest)
    found_rows = sum(in_test)
    info = {
        **_common_info(vocab, rows, good),
        "source": "qm9pack (qm9_part1-3.csv)" if path is None else str(path),
        "split": (
            f"test = molecules whose GDB id is in the MoFlow/GDSS QM9 test index "
            f"({len(test_ids)} ids); validation = {QM9_VAL_FRACTION:.0%} of the rest, seeded; "
            "train = the rest, in seeded order"
        ),
        "test_ids_listed": len(test_ids),
        "test_ids_found": found_rows,
        "test_ids_valid": len(test),
        "seed": seed,
        "limit": limit,
        "n_train": len(_take(train, limit)),
        "n_val": len(_take(val, limit)),
        "n_test": len(test),
        **_novelty_info(non_test),
    }
    return _take(train, limit), _take(val, limit), test, info, non_test


def load_zinc250k(
    path: Path | None, *, seed: int, limit: int | None, report: RowReport, use_cache: bool = True
) -> tuple[list[str], list[str], list[str], dict[str, Any]]:
    """ZINC250k as (train, val, test, info), split 85 / 5 / 10 by a seeded shuffle
    (:func:`load_splits` also gives the novelty reference).

    Args:
        path: the standard ZINC250k CSV (a ``smiles`` column; other columns and an
            unnamed index column are ignored; SMILES are stripped of the newline
            the file keeps inside the quotes) or a ``.smi`` file (one SMILES per
            line, an optional second column).
        seed: seeds the split and the order of the training items.
        limit: at most this many training items; validation is capped to the same number.
        report: bad rows are added here and skipped.
        use_cache: read and write the validated-rows cache.
    """
    return _load_zinc250k(path, seed=seed, limit=limit, report=report, use_cache=use_cache)[:4]


def _load_zinc250k(
    path: Path | None, *, seed: int, limit: int | None, report: RowReport, use_cache: bool = True
) -> tuple[list[str], list[str], list[str], dict[str, Any], frozenset[str]]:
    if path is None:
        raise DataError(
            "dataset 'zinc250k' needs a file: give --data PATH with the standard ZINC250k CSV "
            "(250k_rndm_zinc_drugs_clean_3.csv, with a 'smiles' column) or a .smi file with "
            "one SMILES per line"
        )
    path = Path(path)
    if not path.is_file():
        raise DataError(f"ZINC250k file {str(path)!r} does not exist")
    vocab = get_vocab("zinc250k")
    rows = _validated_rows([path], _read_zinc, vocab, use_cache=use_cache)
    good = _report_rows(rows, report)
    if not good:
        raise DataError(f"no valid ZINC250k molecules in {path}")
    items = [r.smiles for r in good]
    random.Random(seed).shuffle(items)
    n_test = round(ZINC_TEST_FRACTION * len(items))
    n_val = round(ZINC_VAL_FRACTION * len(items))
    test, val, train = items[:n_test], items[n_test : n_test + n_val], items[n_test + n_val :]
    non_test = frozenset(items[n_test:])
    info = {
        **_common_info(vocab, rows, good),
        "source": str(path),
        "split": (
            f"seeded shuffle: test {ZINC_TEST_FRACTION:.0%}, validation {ZINC_VAL_FRACTION:.0%}, "
            f"train the rest (not the MoFlow test index, which needs its own file)"
        ),
        "seed": seed,
        "limit": limit,
        "n_train": len(_take(train, limit)),
        "n_val": len(_take(val, limit)),
        "n_test": len(test),
        **_novelty_info(non_test),
    }
    return _take(train, limit), _take(val, limit), test, info, non_test


def load_splits(
    dataset: str, path: Path | None, *, seed: int, limit: int | None, report: RowReport, use_cache: bool = True
) -> MoleculeSplits:
    """QM9 or ZINC250k as :class:`MoleculeSplits` (the arguments of :func:`load_qm9`)."""
    loaders = {"qm9": _load_qm9, "zinc250k": _load_zinc250k}
    if dataset not in loaders:
        raise ValueError(f"unknown molecule dataset {dataset!r} (known: {', '.join(loaders)})")
    train, val, test, info, non_test = loaders[dataset](
        path, seed=seed, limit=limit, report=report, use_cache=use_cache
    )
    return MoleculeSplits(train, val, test, info, non_test=non_test)
