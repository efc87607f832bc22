"""A third-party plugin written against seqify's previous documented API (API version 1).

``parity.py`` implements exactly the members docs/plugins.md documented then, with no
seqify base class: a modality (``datasets``, ``task``, ``load``, ``budget``,
``templates``, ``evaluate``, ``render``), a tokenizer (``spec``, ``fit(items)``,
``encode``, ``decode``) and a static orderer (flags, ``check``, ``train_orders``,
``infer_orders``). tests/test_plugin_api.py holds seqify to keeping it working.
"""

from seqify.hookspecs import hookimpl


@hookimpl
def register_modalities(register):
    register("parity", "tests.legacy_plugin.parity:ParityModality", "Bit strings whose last bit is their parity.")


@hookimpl
def register_tokenizers(register):
    register("bits", "tests.legacy_plugin.parity:BitTokenizer", "One slot per bit.", modality="parity")


@hookimpl
def register_orderers(register):
    register("parity-first", "tests.legacy_plugin.parity:ParityFirst", "The last slot first, then left to right.")
