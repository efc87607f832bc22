"""Conformance kit and test doubles for plugin authors.

Run the ``check_*`` functions on your component in your own tests::

    from seqify.testing import check_tokenizer, check_orderer, check_generator
    check_tokenizer(MyTokenizer(), my_items)

    from seqify.testing import check_no_peeking, check_normalized
    check_no_peeking(MyGenerator)      # built on a tiny spec with random weights
    check_normalized(MyGenerator)      # exhaustive: probabilities sum to one

or run every check on every registered component at once::

    from seqify.testing import run_conformance
    for row in run_conformance():      # the process-wide registry
        print(row)                     # (kind, name, check, status, reason)

Each check raises AssertionError naming the component and what went wrong (the
``run_*`` / ``check_registered`` entries catch it and report ``failed``). A tokenizer
is checked on its modality's ``example_items`` and round trips are compared with its
``items_equal`` (see :class:`seqify.protocols.Modality`).

The doubles (a toy modality of short digit strings, its tokenizer, a per-slot
``UnigramGenerator``) let core logic run end to end without training a real model;
``PeekingGenerator`` and ``UnnormalizedGenerator`` are deliberately broken generators
that the checks must catch.

The package, one responsibility per module (import from ``seqify.testing``; the
modules are its layout, not separate APIs):

- ``checks``: one component on given data (:func:`check_tokenizer`,
  :func:`check_orderer`, :func:`check_generator`) and a tiny generator with random
  weights to check (:func:`tiny_config`, :func:`randomize_weights`,
  :func:`tiny_generator`);
- ``probes``: what the checks probe with (:data:`PROBE_SPEC`, :data:`NORM_SPEC`,
  :func:`probe_items`, fixed orders, perturbed items, completions, the structures
  orderers are tried on);
- ``invariants``: :func:`check_no_peeking`, :func:`check_normalized`,
  :func:`check_order_invariant_modelability`;
- ``conformance``: the registry-wide run (:func:`check_registered`,
  :func:`run_conformance`, :class:`ConformanceResult`, :data:`CHECKS`);
- ``doubles``: the test doubles and :class:`ToyPlugin`, which registers them.

Dependencies run one way: doubles <- probes <- checks <- invariants <- conformance.
"""

from seqify.testing.checks import (
    check_generator,
    check_orderer,
    check_tokenizer,
    nats_to_bits,
    randomize_weights,
    tiny_config,
    tiny_generator,
)
from seqify.testing.conformance import CHECKS, ConformanceResult, check_registered, register_item_source, run_conformance
from seqify.testing.doubles import (
    PeekingConfig,
    PeekingGenerator,
    ToyModality,
    ToyPlugin,
    ToyTokenizer,
    UnigramConfig,
    UnigramGenerator,
    UnnormalizedGenerator,
    toy_batch,
)
from seqify.testing.invariants import check_no_peeking, check_normalized, check_order_invariant_modelability
from seqify.testing.probes import NORM_SPEC, PROBE_SPEC, probe_items

__all__ = [
    # kit
    "check_tokenizer",
    "check_orderer",
    "check_generator",
    "check_no_peeking",
    "check_normalized",
    "check_order_invariant_modelability",
    "check_registered",
    "run_conformance",
    "ConformanceResult",
    "CHECKS",
    "register_item_source",
    "tiny_config",
    "tiny_generator",
    "randomize_weights",
    "probe_items",
    "PROBE_SPEC",
    "NORM_SPEC",
    # doubles
    "ToyTokenizer",
    "ToyModality",
    "UnigramConfig",
    "UnigramGenerator",
    "PeekingGenerator",
    "PeekingConfig",
    "UnnormalizedGenerator",
    "ToyPlugin",
    "toy_batch",
]
