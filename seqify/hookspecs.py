"""The hooks a seqify plugin can implement. Each receives a ``register`` callback."""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("seqify")
hookimpl = pluggy.HookimplMarker("seqify")


@hookspec
def register_modalities(register):
    """Register modalities: ``register(name, "module:Class", description)``."""


@hookspec
def register_tokenizers(register):
    """Register tokenizers: ``register(name, "module:Class", description, modality=...)``."""


@hookspec
def register_orderers(register):
    """Register orderers: ``register(name, "module:Class", description)``."""


@hookspec
def register_generators(register):
    """Register generators: ``register(name, "module:Class", description)``."""
