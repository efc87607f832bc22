"""Data preparation: load a cell's dataset, fit (or restore) its tokenizer, tokenize every split."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqify.bench.request import BenchRequest, Reporter
from seqify.bench.resolve import Cell, check_spec
from seqify.data import RowReport
from seqify.errors import DataError, NotApplicableError
from seqify.io import load_checkpoint, save_checkpoint
from seqify.compat import call_supported
from seqify.dataset import tokenizer_fingerprint


@dataclass
class Prepared:
    """A cell's data after loading and tokenizing."""

    splits: Any
    tokenizer: Any
    spec: Any
    train: Any
    val: Any
    test: Any
    report: RowReport
    tokenizer_fingerprint: str
    test_kept: list[int]  # index into the loaded test items of each row of ``test``
    val_kept: list[int] = field(default_factory=list)  # the same for ``val``
    # where the tokenizer's state came from: seed, source, cache_file, state_file, fingerprint
    tokenizer_info: dict[str, Any] = field(default_factory=dict)
    # condition classes the modality declares for the dataset (Modality.num_conditions; 0: none)
    n_conditions: int = 0
    # when it declares some: each table row's condition (Modality.condition), per split name
    conditions: dict[str, list[Any]] = field(default_factory=dict)


#: how a cell's tokenizer got its state (``tokenizer_state.source`` in results.json)
FITTED, RESTORED, LOADED, FROM_CHECKPOINT = ("fitted here", "restored from cache", "loaded from file",
                                             "restored from checkpoint")


def fit_tokenizer(tokenizer, items: list[Any], *, seed: int, device, rep: Reporter) -> dict[str, Any]:
    """Fit ``tokenizer`` on ``items`` from the ``tokenizer`` stream of ``seed``, or restore
    the state an earlier run fitted identically (same settings, same items, same seed):
    a fitted tokenizer is shared by every cell of a matrix, fitted once. Fitting runs
    with deterministic algorithms on (:func:`seqify.seeding.deterministic`).

    Returns:
        ``{"source": FITTED or RESTORED, "cache_file": the cache entry (None for a
        tokenizer without state, which is never cached)}``.
    """
    from seqify import seeding
    from seqify.dataset import items_fingerprint
    from seqify.io import cache_dir

    key = hashlib.sha1(f"{tokenizer!r}|{items_fingerprint(items)}|{seed}".encode()).hexdigest()[:20]
    path = cache_dir() / "tokenizers" / f"{type(tokenizer).__name__}-{key}.pt"
    if path.is_file():
        try:
            tokenizer.load_state_dict(load_checkpoint(path)["state"])
            rep.log(f"tokenizer {tokenizer!r}: restored the state fitted earlier ({path})")
            return {"source": RESTORED, "cache_file": str(path)}
        except Exception:  # a damaged or outdated cache entry is fitted again, never trusted
            pass
    with seeding.forked(seed, "tokenizer", device), seeding.deterministic():
        call_supported(tokenizer.fit, items, device=device, seed=seeding.stream_seed(seed, "tokenizer"))
    state = tokenizer.state_dict()
    if state:
        save_checkpoint(path, {"state": state})
    return {"source": FITTED, "cache_file": str(path) if state else None}


def load_tokenizer_state(tokenizer, path: Path) -> None:
    """Load a saved tokenizer state into ``tokenizer`` instead of fitting it: a run's
    ``tokenizer_state.pt``, or an entry of the tokenizer cache (both hold
    ``{"state": tokenizer.state_dict()}``).

    Args:
        tokenizer: the cell's tokenizer, built with the settings the state was fitted with.
        path: the state file (``--tokenizer-state``).

    Raises:
        DataError: naming the file, when it is missing, cannot be read, holds no
            tokenizer state or does not load into ``tokenizer``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"tokenizer state file {str(path)!r} not found (give a run's tokenizer_state.pt)")
    try:
        saved = load_checkpoint(path)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise DataError(f"tokenizer state file {str(path)!r} cannot be read: {type(exc).__name__}: {first}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict):
        raise DataError(f"tokenizer state file {str(path)!r} holds no tokenizer state (expected a dict with 'state', "
                        "as seqify writes to a run's tokenizer_state.pt)")
    try:
        tokenizer.load_state_dict(saved["state"])
    except Exception as exc:
        raise DataError(f"tokenizer state file {str(path)!r} does not load into {tokenizer!r}: "
                        f"{type(exc).__name__}: {exc}") from None


def prepare_data(
    cell: Cell, req: BenchRequest, rep: Reporter, timings: dict[str, float], *, device=None,
    tokenizer_state: dict[str, Any] | None = None, evaluate_every_item: bool = False,
) -> Prepared:
    """Load the dataset, fit the tokenizer with ``req.tokenizer_fit_seed`` (or restore
    ``tokenizer_state``, a checkpoint's, or load the file ``req.tokenizer_state``),
    tokenize every split (cached under the tokenizer's fingerprint). With ``evaluate_every_item`` (a
    model evaluated on a dataset it was not trained on), every item of the dataset,
    whatever its split, is in the test split."""
    from seqify.dataset import tokenize_split

    rep.stage("loading data")
    t = time.perf_counter()
    report = RowReport()
    splits = cell.modality.load(cell.names["dataset"], req.data, seed=req.seed, limit=cell.config.data.limit, report=report)
    if evaluate_every_item:
        splits.test = [*splits.train, *splits.val, *splits.test]
        splits.info = {**splits.info, "test_is_every_item": True}
    timings["load_s"] = time.perf_counter() - t

    rep.stage("tokenizing")
    t = time.perf_counter()
    tokenizer = cell.tokenizer
    info: dict[str, Any] = {"seed": None, "source": FROM_CHECKPOINT, "cache_file": None, "state_file": None}
    if tokenizer_state is not None:
        tokenizer.load_state_dict(tokenizer_state)
    elif req.tokenizer_state is not None:
        load_tokenizer_state(tokenizer, req.tokenizer_state)
        info.update(source=LOADED, state_file=str(req.tokenizer_state))
        rep.log(f"tokenizer {tokenizer!r}: loaded the state in {req.tokenizer_state}")
    else:
        seed = req.tokenizer_fit_seed
        info.update(seed=seed, **fit_tokenizer(tokenizer, splits.train, seed=seed, device=device, rep=rep))
    timings["fit_tokenizer_s"] = time.perf_counter() - t
    spec = tokenizer.spec
    reason = check_spec(cell, spec)
    if reason:
        raise NotApplicableError(reason)
    fingerprint = tokenizer_fingerprint(tokenizer)
    info["fingerprint"] = fingerprint
    key = f"{cell.names['modality']}|{cell.names['dataset']}|{cell.names['tokenizer']}|{fingerprint}|{spec!r}"
    train_table, train_kept = tokenize_split(tokenizer, splits.train, split="train", report=report, cache_key=key)
    val_table, val_kept = (tokenize_split(tokenizer, splits.val, split="val", report=report, cache_key=key)
                           if splits.val else (None, []))
    test_table, test_kept = tokenize_split(tokenizer, splits.test, split="test", report=report, cache_key=key)
    n_conditions = int(cell.modality.num_conditions(splits))
    conditions: dict[str, list[Any]] = {}
    if n_conditions > 0:  # read while the rows still map to the loaded items through `kept`
        for name, items, kept in (("train", splits.train, train_kept), ("val", splits.val, val_kept),
                                  ("test", splits.test, test_kept)):
            conditions[name] = [cell.modality.condition(items[i]) for i in kept]
    if cell.modality.task == "complete" and len(test_kept) != len(splits.test):
        # completions must stay aligned with the test items they complete; for generation the
        # reference set (e.g. FCD's) stays whole, and the skipped items are in the row report
        splits.test = [splits.test[i] for i in test_kept]
    timings["tokenize_s"] = time.perf_counter() - t
    return Prepared(splits, tokenizer, spec, train_table, val_table, test_table, report, fingerprint, test_kept,
                    val_kept, info, n_conditions, conditions)


def decode_all(tokenizer, tokensets: list[Any]) -> list[Any]:
    """``tokenizer.decode`` of each token set; None where it cannot be decoded."""
    out = []
    for ts in tokensets:
        try:
            out.append(tokenizer.decode(ts))
        except (ValueError, KeyError):
            out.append(None)
    return out

