"""The per-component checks (one tokenizer, orderer or generator on given data) and
the helpers that build a small generator with random weights to check.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from seqify.protocols import orderer_kind
from seqify.testing.probes import PROBE_SPEC
from seqify.types import OrderBatch, TokenBatch, TokenizerSpec


def check_tokenizer(tokenizer: Any, items: list[Any], *, equal=lambda a, b: a == b) -> None:
    """Fit, then encode -> decode every item; values inside their kinds; shapes agree."""
    tokenizer.fit(items)
    spec: TokenizerSpec = tokenizer.spec
    for n, item in enumerate(items):
        ts = tokenizer.encode(item)
        assert len(ts) <= spec.max_len, f"item {n}: {len(ts)} slots > max_len {spec.max_len}"
        assert ts.coords.shape[1] == len(spec.coord_sizes), f"item {n}: wrong number of coordinate axes"
        sizes = torch.tensor([k.size for k in spec.kinds])
        assert bool((ts.values >= 0).all() and (ts.values < sizes[ts.kinds]).all()), f"item {n}: value outside its kind"
        assert bool((ts.coords < torch.tensor(spec.coord_sizes)).all()), f"item {n}: coordinate outside coord_sizes"
        if spec.lossless:
            back = tokenizer.decode(ts)
            assert equal(back, item), f"item {n}: round trip gave {back!r}, expected {item!r}"


def check_orderer(orderer: Any, batch: TokenBatch, *, seed: int = 0) -> None:
    """Training and (for static orderers) inference orders are valid for ``batch``.

    Adaptive and learned orderers choose inference orders step by step with a model,
    so only their training orders are checked here.
    """
    rng = torch.Generator().manual_seed(seed)
    for progress in (0.0, 0.5, 1.0):
        orderer.train_orders(batch, progress=progress, rng=rng).validate(batch)
    if orderer_kind(orderer) == "static":
        orderer.infer_orders(batch, rng=rng).validate(batch)


def check_generator(model: Any, batch: TokenBatch, order: OrderBatch, *, atol: float = 1e-4) -> None:
    """Finite loss; per-slot log-probs finite, <= 0 and only on predicted slots."""
    loss = model.loss(batch, order)
    assert torch.isfinite(loss), "loss is not finite"
    scores, _ = model.score(batch, order)
    assert torch.equal(scores.scored, batch.target), "scored slots must be exactly the predicted ones"
    logp = scores.logp[scores.scored]
    assert bool(torch.isfinite(logp).all()), "non-finite log-probability"
    assert bool((logp <= atol).all()), "log-probability above 0"


_TINY_SETTINGS = {"d_model": 32, "n_layers": 2, "n_heads": 4, "dropout": 0.0}


def _label(generator: Any, name: str | None) -> str:
    if name:
        return name
    cls = generator if isinstance(generator, type) else type(generator)
    return cls.__name__


def tiny_config(generator_cls: type) -> Any:
    """The generator's ``config_model`` with small transformer sizes where it has them
    (``d_model`` 32, ``n_layers`` 2, ``n_heads`` 4, no dropout), else its defaults."""
    config_model = getattr(generator_cls, "config_model", None)
    if config_model is None:
        return None
    fields = getattr(config_model, "model_fields", {})
    overrides = {k: v for k, v in _TINY_SETTINGS.items() if k in fields}
    try:
        return config_model(**overrides)
    except Exception:  # the generator's own constraints win: fall back to its defaults
        return config_model()


@torch.no_grad()
def randomize_weights(model: torch.nn.Module, *, seed: int = 0, std: float = 0.5) -> torch.nn.Module:
    """Overwrite every parameter with seeded N(0, std) noise (in place) and set eval mode.

    Freshly initialised transformers (std 0.02, zero biases) predict nearly uniform,
    nearly context-free distributions; large random weights make every output depend
    visibly on every input it reads, so a leak shows up as a change in the scores.
    """
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.copy_((torch.randn(p.shape, generator=g) * std).to(p.dtype))
    return model.eval()


def tiny_generator(
    generator_cls: type, spec: TokenizerSpec = PROBE_SPEC, *, config: Any = None, seed: int = 0, std: float = 0.5
) -> torch.nn.Module:
    """``generator_cls(spec, config)`` with :func:`tiny_config` and random weights
    (:func:`randomize_weights`), in eval mode; deterministic for a seed."""
    torch.manual_seed(seed)
    model = generator_cls(spec, tiny_config(generator_cls) if config is None else config)
    return randomize_weights(model, seed=seed, std=std)


def _resolve_generator(generator: Any, spec: TokenizerSpec | None, default_spec: TokenizerSpec, config: Any,
                       seed: int, randomize: bool | None) -> tuple[torch.nn.Module, TokenizerSpec]:
    """A class is built on ``spec`` (default ``default_spec``) with random weights; an
    instance is used as it is (on its own ``spec``), randomized only on request, on a copy."""
    if isinstance(generator, type):
        spec = default_spec if spec is None else spec
        return tiny_generator(generator, spec, config=config, seed=seed), spec
    model = generator
    if randomize:
        model = randomize_weights(copy.deepcopy(model), seed=seed)
    model_spec = getattr(model, "spec", None)
    spec = spec if spec is not None else model_spec
    if spec is None:
        raise ValueError(f"{type(model).__name__} has no .spec: pass spec=")
    model.eval()
    return model, spec


def nats_to_bits(nats: float) -> float:
    return nats / math.log(2)
