"""The registry-wide conformance run: every check that applies to each registered
generator, orderer and tokenizer, and the runner's bookkeeping, reported as rows.

A tokenizer is checked on its modality's ``example_items(n, seed)`` and its lossless
round trip compared with the modality's ``items_equal(decoded, item)`` (both optional
protocol members with defaults in :class:`seqify.protocols.BaseModality`), so the kit
names no plugin: a modality that wants fast or special items overrides them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from seqify.config import for_dataset
from seqify.protocols import BaseModality, GeneratorCaps, orderer_kind
from seqify.testing.checks import check_generator, check_orderer, check_tokenizer, tiny_generator
from seqify.testing.invariants import check_no_peeking, check_normalized, check_order_invariant_modelability
from seqify.testing.probes import PROBE_SPEC, _orders, _probes, probe_items
from seqify.types import collate


#: check name -> what it asserts (one line, for tables)
CHECKS: dict[str, str] = {
    "load": "the registered class imports, passes the registry's protocol check and builds with its defaults",
    "check_generator": "finite loss; log-probs finite, <= 0, exactly on the predicted slots (random order; blocks of 2 if caps.blocks)",
    "check_no_peeking": "changing a slot not yet revealed never changes the scores of slots predicted at or before it (raster, reverse, random; blocks; adaptive)",
    "check_normalized": "exp(sum of scored log-probs) over every completion of a tiny template sums to 1 (0 and 1 given; blocks; adaptive)",
    "check_orderer": "training (and static inference) orders are valid: a permutation, given first, padding last, blocks well formed",
    "check_tokenizer": "fit; every item (the modality's example_items) encodes inside its kinds, coordinates and max_len; lossless tokenizers round-trip (items_equal)",
    "check_order_invariant_modelability": "modelability of the order-free unigram double is identical under raster and random (runner bookkeeping)",
}


class ConformanceResult(NamedTuple):
    """One row of a conformance report."""

    kind: str  # "generator", "orderer", "tokenizer" or "runner"
    name: str  # registered name ("modality/name" for tokenizers)
    check: str  # e.g. "check_no_peeking" or "check_orderer[graph]"
    status: str  # "passed", "failed" or "skipped"
    reason: str  # why it failed or was skipped, or a note


_ALL_CAPS = GeneratorCaps(any_order=True, blocks=True, adaptive=True, variable_length=True, hidden_states=True)


def _run(rows: list[ConformanceResult], kind: str, name: str, check: str, fn: Callable[[], Any],
         note: Callable[[Any], str] = lambda _: "") -> None:
    try:
        out = fn()
    except _Skip as exc:
        rows.append(ConformanceResult(kind, name, check, "skipped", str(exc)))
    except Exception as exc:  # AssertionError from a check, or the component crashed
        reason = str(exc) if isinstance(exc, AssertionError) else f"{type(exc).__name__}: {exc}"
        rows.append(ConformanceResult(kind, name, check, "failed", reason))
    else:
        rows.append(ConformanceResult(kind, name, check, "passed", note(out)))


class _Skip(Exception):
    pass


def _generator_rows(registry: Any, name: str, seed: int) -> list[ConformanceResult]:
    rows: list[ConformanceResult] = []
    try:
        cls = registry.get("generator", name)
    except Exception as exc:
        return [ConformanceResult("generator", name, "load", "failed", f"{type(exc).__name__}: {exc}")]
    caps: GeneratorCaps = cls.caps

    def generator_check() -> str:
        model = tiny_generator(cls, PROBE_SPEC, seed=seed)
        batch = collate(probe_items(PROBE_SPEC, 4, n_given=2, seed=seed))
        orders = _orders(batch, caps, seed=seed, block_size=2)
        used = [o for o in orders if o in ("random", "raster") or "blocks" in o]
        for order_name in used:
            try:
                check_generator(model, batch, orders[order_name])
            except AssertionError as exc:
                raise AssertionError(f"{name} under order {order_name!r}: {exc}") from None
        return "orders: " + ", ".join(used)

    _run(rows, "generator", name, "check_generator", generator_check, lambda note: note)
    _run(rows, "generator", name, "check_no_peeking", lambda: check_no_peeking(cls, seed=seed, name=name),
         lambda s: ("orders: " + ", ".join(s["orders"])
                    + ("" if s["sensitive"] else "; the scores never depended on context (vacuous)")))
    _run(rows, "generator", name, "check_normalized", lambda: check_normalized(cls, seed=seed, name=name),
         lambda t: f"{len(t)} cases, worst |sum - 1| = {max(abs(v - 1) for v in t.values()):.1e}")
    return rows


def _orderer_rows(registry: Any, name: str, seed: int) -> list[ConformanceResult]:
    rows: list[ConformanceResult] = []
    try:
        orderer = registry.get("orderer", name)()
    except Exception as exc:
        return [ConformanceResult("orderer", name, "load", "failed", f"{type(exc).__name__}: {exc}")]
    for probe, spec, batch in _probes():
        def one(spec=spec, batch=batch) -> str:
            reason = orderer.check(spec, _ALL_CAPS)
            if reason is not None:
                raise _Skip(reason)
            check_orderer(orderer, batch, seed=seed)
            if orderer_kind(orderer) != "static":
                return "training orders only (inference orders come from a model)"
            return ""

        _run(rows, "orderer", name, f"check_orderer[{probe}]", one, lambda note: note)
    return rows


#: modality name -> (items(n), equal(decoded, item)) given to the deprecated
#: :func:`register_item_source`; they take precedence over the modality's own
_ITEM_SOURCES: dict[str, tuple[Callable[[int], list[Any]], Callable[[Any, Any], bool]]] = {}


def register_item_source(modality: str, items: Callable[[int], list[Any]],
                         equal: Callable[[Any, Any], bool] | None = None) -> None:
    """Deprecated (API 2): give the modality ``example_items`` and ``items_equal`` instead.

    Still works: the conformance run takes ``items(n)`` and ``equal`` for ``modality``
    from here rather than from the modality.
    """
    warnings.warn("seqify.testing.register_item_source is deprecated: implement example_items(n, seed) and "
                  "items_equal(decoded, item) on the modality instead", DeprecationWarning, stacklevel=2)
    _ITEM_SOURCES[modality] = (items, equal or (lambda a, b: a == b))


def _tokenizer_rows(registry: Any, modality: str, name: str, n_items: int, seed: int) -> list[ConformanceResult]:
    label = f"{modality}/{name}"
    rows: list[ConformanceResult] = []

    def one() -> str:
        mod_cls = registry.get("modality", modality)
        mod = mod_cls()
        # the settings the modality's smoke budget gives this tokenizer (e.g. a few fit steps)
        settings = for_dataset(mod.budget("smoke"), mod_cls.datasets[0], name).get("tokenizer", {})
        tokenizer = registry.get("tokenizer", name, modality)(**settings)
        note = ""
        if modality in _ITEM_SOURCES:
            make, equal = _ITEM_SOURCES[modality]
            items, note = make(n_items), "items from register_item_source (deprecated)"
        else:
            items, equal = mod.example_items(n_items, seed=seed), mod.items_equal
            if getattr(mod_cls, "example_items", None) is BaseModality.example_items:
                note = "items from the default example_items (the first dataset that loads without a file)"
        if not items:
            raise _Skip(f"modality {modality!r} gave no items")
        check_tokenizer(tokenizer, list(items), equal=equal)
        return f"{len(items)} items" + (f"; {note}" if note else "")

    _run(rows, "tokenizer", label, "check_tokenizer", one, lambda note: note)
    return rows


def check_registered(kind: str, name: str, *, registry: Any = None, modality: str | None = None,
                     seed: int = 0, n_items: int = 6) -> list[ConformanceResult]:
    """Run the checks that apply to one registered component; never raises for a failed check.

    generator: :func:`check_generator`, :func:`check_no_peeking` and
    :func:`check_normalized` on the class built with random weights on the tiny specs.
    orderer: :func:`check_orderer` on each probe structure (a sequence, a grid with
    given slots, an (i, j) graph, a padded variable-length sequence) that its
    ``check`` accepts with an all-capable generator; the others are skipped with its
    reason. tokenizer: :func:`check_tokenizer` on the modality's
    ``example_items(n_items, seed)``, round trips compared with its ``items_equal``,
    built with the settings the modality's smoke budget gives it; ``modality`` is
    needed when two modalities register the name.

    Returns:
        One :class:`ConformanceResult` per check.
    """
    if registry is None:
        from seqify.plugins import get_registry

        registry = get_registry()
    if kind == "generator":
        return _generator_rows(registry, name, seed)
    if kind == "orderer":
        return _orderer_rows(registry, name, seed)
    if kind == "tokenizer":
        if modality is None:
            owners = [i.modality for i in registry.infos("tokenizer") if i.name == name]
            if len(owners) != 1:
                raise ValueError(f"tokenizer {name!r} is registered for modalities {owners}: pass modality=")
            modality = owners[0]
        return _tokenizer_rows(registry, modality, name, n_items, seed)
    raise ValueError(f"unknown kind {kind!r} (generator, orderer or tokenizer)")


def run_conformance(registry: Any = None, *, kinds: Iterable[str] = ("generator", "orderer", "tokenizer", "runner"),
                    seed: int = 0, n_items: int = 6,
                    on_result: Callable[[ConformanceResult], None] | None = None) -> list[ConformanceResult]:
    """Every check on every registered generator, orderer and tokenizer, plus the
    runner's :func:`check_order_invariant_modelability`; see :func:`check_registered`.

    Args:
        registry: default the process-wide one (:func:`seqify.plugins.get_registry`).
        kinds: which parts to run.
        on_result: called with each row as it is made (progress output).

    Returns:
        The rows; nothing is raised for a failed check (look for status "failed").
    """
    if registry is None:
        from seqify.plugins import get_registry

        registry = get_registry()
    kinds = tuple(kinds)
    rows: list[ConformanceResult] = []

    def add(new: list[ConformanceResult]) -> None:
        for row in new:
            rows.append(row)
            if on_result is not None:
                on_result(row)

    for kind in ("generator", "orderer"):
        if kind in kinds:
            for name in registry.names(kind):
                add(check_registered(kind, name, registry=registry, seed=seed))
    if "tokenizer" in kinds:
        for info in registry.infos("tokenizer"):
            add(check_registered("tokenizer", info.name, registry=registry, modality=info.modality,
                                 seed=seed, n_items=n_items))
    if "runner" in kinds:
        part: list[ConformanceResult] = []
        _run(part, "runner", "evaluate.modelability", "check_order_invariant_modelability",
             lambda: check_order_invariant_modelability(registry, seed=seed),
             lambda res: "nats/token " + ", ".join(f"{k} {v['nats_per_token']:.9f}" for k, v in res.items()))
        add(part)
    return rows
