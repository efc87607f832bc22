"""Cell resolution: every component looked up, configured and checked before any data loads."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqify import __version__
from seqify.bench.request import BenchRequest
from seqify.config import (BUDGETS, BenchConfig, deep_merge, for_dataset, key_dump, load_config_file, resolve_config,
                           validate_model)
from seqify.errors import ConfigError, DataError, NotApplicableError, UnknownComponentError
from seqify.plugins import get_registry
from seqify.protocols import orderer_kind
from seqify.registry import Registry


@dataclass
class Cell:
    """Resolved components of one cell, before any data is loaded."""

    modality: Any
    tokenizer: Any
    orderer: Any
    train_orderer: Any
    generator_cls: type
    names: dict[str, str]
    config: BenchConfig
    generator_config: Any


def _choose(kind: str, value: str | None, options: list[str]) -> str:
    if value is None:
        return options[0]
    if value not in options:
        raise UnknownComponentError(kind, value, options)
    return value


def _neutral_spec():
    """The structure the default generator is chosen with when the tokenizer's spec is
    only known after fitting (a learned codebook)."""
    from seqify.types import KindSpec, TokenizerSpec

    return TokenizerSpec(kinds=(KindSpec("value", 2),), coord_names=("pos",), coord_sizes=(2,), max_len=2)


def default_generator(registry: Registry, orderer: Any, spec: Any = None) -> str:
    """The generator a cell runs when none is named, chosen by capability: of the
    registered generators whose ``caps`` the orderer accepts (``orderer.check`` with the
    tokenizer's spec when it is known before fitting), the one the orderer prefers
    (``orderer.generator_preference(caps)``), then the one with the highest
    ``default_priority`` (ties by name). When the orderer accepts none, the
    highest-priority generator, whose ``check`` then says why the cell cannot run."""
    ranked = []
    preference = getattr(orderer, "generator_preference", None)
    for name in registry.names("generator"):
        try:
            cls = registry.get("generator", name)
        except Exception:  # a broken plugin's generator is never a default
            continue
        fits = orderer.check(spec if spec is not None else _neutral_spec(), cls.caps) is None
        preferred = int(preference(cls.caps)) if fits and callable(preference) else 0
        ranked.append((not fits, -preferred, -cls.default_priority, name))
    if not ranked:
        raise NotApplicableError("no generator is registered")
    return min(ranked)[-1]


def known_spec(tokenizer: Any) -> Any:
    """The tokenizer's spec when it is known before fitting, else None."""
    try:
        return tokenizer.spec
    except Exception:
        return None


def pick_dataset(modality: Any, req: BenchRequest) -> str:
    """The dataset to run; ``--data`` is never ignored silently.

    With ``--data`` and no ``--dataset``, the modality's only file-reading dataset is
    picked; a dataset that reads no file, given with ``--data``, is an error.
    """
    datasets = list(modality.datasets)
    files = list(modality.file_datasets)
    if req.dataset is None and req.data is not None:
        if len(files) == 1:
            return files[0]
        if not files:
            raise ConfigError(f"--data {str(req.data)!r}: modality {req.modality!r} reads no data files "
                              f"(its datasets {', '.join(datasets)} come with seqify or its packages)")
        raise ConfigError(f"--data {str(req.data)!r}: say which dataset it holds with --dataset "
                          f"(one of {', '.join(files)})")
    dataset = _choose("dataset", req.dataset, datasets)
    if req.data is not None and dataset not in files:
        hint = f" (the datasets that read a file: {', '.join(files)})" if files else ""
        raise ConfigError(f"--data {str(req.data)!r} was given, but dataset {dataset!r} of modality "
                          f"{req.modality!r} reads no file and would ignore it{hint}")
    return dataset


def generator_settings(generator_cls: type, size: str, settings: dict[str, Any]) -> Any:
    """The generator's validated settings: its preset for ``size``, then ``settings`` on top."""
    sizes = generator_cls.sizes
    if sizes and size not in sizes:
        raise ConfigError(f"size: {size!r} is not a size of generator {generator_cls.__name__} "
                          f"(one of {', '.join(sizes)})")
    return validate_model(generator_cls.config_model, deep_merge(dict(sizes.get(size, {})), settings), "generator")


def build_component(kind: str, name: str, cls: type, settings: dict[str, Any], **context: Any) -> Any:
    """The one way a tokenizer, orderer or modality is built: ``settings`` validated
    against the class's ``config_model`` (a ConfigError naming the field otherwise),
    then ``cls(**context, **settings given)``. ``context`` carries what the runner
    adds, e.g. a tokenizer's ``dataset``."""
    model = cls.config_model
    if model is None:
        if settings:
            raise ConfigError(f"{kind} {name!r} takes no settings (got {kind}.{next(iter(settings))})")
        options: dict[str, Any] = {}
    else:
        options = validate_model(model, settings, kind).model_dump(exclude_unset=True)
    try:
        return cls(**context, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{kind} {name!r}: invalid setting: {exc}") from None


def resolve_cell(req: BenchRequest, registry: Registry | None = None) -> Cell:
    """Look up and configure every component; raise before any heavy work on bad input."""
    registry = registry or get_registry()
    if req.budget not in BUDGETS:
        raise UnknownComponentError("budget", req.budget, BUDGETS)
    if req.device not in ("auto", "cpu", "cuda"):
        raise UnknownComponentError("device", req.device, ["auto", "cpu", "cuda"])
    if req.tokenizer_state is not None:
        if req.tokenizer_seed is not None:
            raise ConfigError("a tokenizer seed and a tokenizer state file exclude each other (a loaded state is not "
                              "fitted): give --tokenizer-seed(s) or --tokenizer-state")
        if not Path(req.tokenizer_state).is_file():
            raise DataError(f"tokenizer state file {str(req.tokenizer_state)!r} not found "
                            "(give a run's tokenizer_state.pt)")
    modality_cls = registry.get("modality", req.modality)
    dataset = pick_dataset(modality_cls, req)
    tok_names = registry.names("tokenizer", req.modality)
    if not tok_names:
        raise NotApplicableError(f"no tokenizer is registered for modality {req.modality!r}")
    tokenizer_name = req.tokenizer or modality_cls.default_tokenizer or tok_names[0]
    tokenizer_cls = registry.get("tokenizer", tokenizer_name, req.modality)
    orderer_cls = registry.get("orderer", req.orderer)
    train_orderer_cls = registry.get("orderer", req.train_orderer) if req.train_orderer else None
    file_data = load_config_file(req.config_file) if req.config_file else None
    cli = dict(req.overrides)
    if req.steps is not None:
        cli = {**cli, "train": {**cli.get("train", {}), "steps": req.steps}}
    preset = modality_cls().budget(req.budget)

    def configure(generator: str | None) -> tuple[BenchConfig, Any, Any]:
        config = resolve_config(for_dataset(preset, dataset, tokenizer_name, generator), file_data, cli)
        tokenizer = build_component("tokenizer", tokenizer_name, tokenizer_cls, config.tokenizer,
                                    **({"dataset": dataset} if tokenizer_cls.takes_dataset else {}))
        orderer = build_component("orderer", req.orderer, orderer_cls, config.orderer)
        return config, tokenizer, orderer

    generator_name = req.generator
    if generator_name is None:  # by capability, with the settings of the budget before its per-generator table
        _, tokenizer, orderer = configure(None)
        generator_name = default_generator(registry, orderer, known_spec(tokenizer))
    generator_cls = registry.get("generator", generator_name)
    config, tokenizer, orderer = configure(generator_name)
    modality = build_component("modality", req.modality, modality_cls, config.modality)
    generator_config = generator_settings(generator_cls, config.size, config.generator)
    train_orderer = orderer
    if train_orderer_cls is not None and req.train_orderer != req.orderer:
        train_orderer = build_component("train_orderer", req.train_orderer, train_orderer_cls, config.train_orderer)
    names = {
        "modality": req.modality,
        "dataset": dataset,
        "tokenizer": tokenizer_name,
        "orderer": req.orderer,
        "train_orderer": req.train_orderer or req.orderer,
        "generator": generator_name,
    }
    return Cell(modality, tokenizer, orderer, train_orderer, generator_cls, names, config, generator_config)


def check_applicable(cell: Cell) -> str | None:
    """The reason this cell cannot run, if the tokenizer's spec is known before fitting."""
    spec = known_spec(cell.tokenizer)
    return None if spec is None else check_spec(cell, spec)


def check_spec(cell: Cell, spec) -> str | None:
    """The reason this cell cannot run with this (fitted) tokenizer spec, or None."""
    caps = cell.generator_cls.caps
    if spec.variable_length and not caps.variable_length:
        return (f"tokenizer {cell.names['tokenizer']!r} is variable-length (an end token decides), but generator "
                f"{cell.names['generator']!r} generates only fixed-length items")
    reason = cell.orderer.check(spec, caps)
    if reason is None and cell.train_orderer is not cell.orderer:
        reason = cell.train_orderer.check(spec, cell.generator_cls.caps)
        if reason is None and cell.train_orderer.adaptive:
            reason = "an adaptive orderer cannot be a training orderer (it trains on random orders: use 'random')"
    return reason


def pick_device(name: str):
    """The device for ``name`` ("auto", "cpu" or "cuda"); under torchrun, "auto" and
    "cuda" mean this process's GPU (``cuda:LOCAL_RANK``)."""
    import os

    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was asked for but torch sees no CUDA device (use --device auto or cpu)")
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(name)


def train_signature(cell: Cell, req: BenchRequest, tokenizer_state: str) -> str:
    """Cells with equal signatures train the same model, which can then be shared.

    It covers the training orders, the module trained (a learned orderer's wrapper
    and its settings), the settings of every part, and the fitted tokenizer's
    fingerprint (:func:`seqify.protocols.tokenizer_fingerprint`): cells whose tokenizer
    seeds fit different states train apart, while a tokenizer without state (or one
    whose fit ignores the seed) lets them share one model.
    """
    sig = {
        "seqify": __version__,
        **{k: v for k, v in cell.names.items() if k not in ("orderer", "train_orderer")},
        "data": str(req.data) if req.data else None,
        "train_orders": cell.train_orderer.train_signature,
        "wrapper": cell.orderer.train_signature if orderer_kind(cell.orderer) == "trainable" else None,
        # neither changes the model: the probe runs in forked random streams
        "train": cell.config.train.model_dump(exclude={"checkpoint_every", "probe_items"}),
        "data_cfg": cell.config.data.model_dump(),
        "modality_cfg": cell.config.modality,
        "generator_cfg": key_dump(cell.generator_config),
        "tokenizer_cfg": cell.config.tokenizer,
        "tokenizer_state": tokenizer_state,
        "seed": req.seed,
    }
    return hashlib.sha1(json.dumps(sig, sort_keys=True, default=str).encode()).hexdigest()[:16]

