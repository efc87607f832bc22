"""How seqify loads a component and calls it: required and optional members derived from
the protocols, defaults for what a plugin lacks, arguments it does not accept.

:func:`check_component` runs when the registry first loads a class; :func:`call_supported`
is how the runner calls a member whose signature grew within an API version. The
compatibility policy is in docs/plugins.md ("Compatibility").
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Protocol

from seqify.protocols import (
    AdaptiveOrderer,
    BaseGenerator,
    BaseModality,
    BaseOrderer,
    BaseTokenizer,
    BaseTrainableOrderer,
    Generator,
    GeneratorCaps,
    HiddenStates,
    Modality,
    StaticOrderer,
    Tokenizer,
    TrainableOrderer,
    orderer_kind,
)

__all__ = ["PluginCompatibilityWarning", "protocol_members", "component_protocol", "required_members",
           "optional_members", "check_component", "call_supported", "unsupported_keywords"]


class PluginCompatibilityWarning(UserWarning):
    """A component lacks optional members and runs with seqify's defaults for them."""


def protocol_members(protocol: type) -> tuple[str, ...]:
    """The members a protocol class declares (its own and its protocol bases'), in order:
    annotated attributes, methods and properties, private and dunder names excluded."""
    names: list[str] = []
    for klass in reversed(protocol.__mro__):
        if not getattr(klass, "_is_protocol", False) or klass is Protocol:
            continue
        for name in [*getattr(klass, "__annotations__", {}), *vars(klass)]:
            if not name.startswith("_") and name not in names:
                names.append(name)
    return tuple(names)


def _provided(defaults: type) -> set[str]:
    return {name for klass in defaults.__mro__[:-1] for name in [*vars(klass), *getattr(klass, "__annotations__", {})]
            if hasattr(defaults, name)}


def component_protocol(kind: str, cls: Any) -> tuple[type, type]:
    """``(protocol, defaults class)`` that ``cls``, registered as a ``kind``, implements."""
    if kind == "orderer":
        which = orderer_kind(cls)
        protocol = {"static": StaticOrderer, "adaptive": AdaptiveOrderer, "trainable": TrainableOrderer}[which]
        return protocol, (BaseTrainableOrderer if which == "trainable" else BaseOrderer)
    return {"tokenizer": (Tokenizer, BaseTokenizer), "generator": (Generator, BaseGenerator),
            "modality": (Modality, BaseModality)}[kind]


def required_members(kind: str, cls: Any = None) -> tuple[str, ...]:
    """The members a ``kind`` must implement itself: its protocol's members that the
    defaults class does not provide (``name`` defaults to the registered name)."""
    protocol, defaults = component_protocol(kind, cls)
    provided = _provided(defaults) | {"name"}
    return tuple(m for m in protocol_members(protocol) if m not in provided)


def optional_members(kind: str, cls: Any = None) -> tuple[str, ...]:
    """The members of a ``kind``'s protocol that have defaults."""
    protocol, defaults = component_protocol(kind, cls)
    provided = _provided(defaults)
    return tuple(m for m in protocol_members(protocol) if m in provided and m != "name")


def check_component(kind: str, name: str, cls: Any, *, plugin: str = "") -> Any:
    """Check ``cls`` against its protocol when the registry first loads it.

    Raises TypeError naming the component and each required member it lacks. A
    component that lacks optional members (one that does not subclass the base class,
    say, written against an earlier API) is returned as a subclass that takes seqify's
    defaults for them, with one :class:`PluginCompatibilityWarning` naming them;
    otherwise ``cls`` itself is returned. A class without ``name`` gets the registered
    name.
    """
    if kind not in ("tokenizer", "orderer", "generator", "modality") or not isinstance(cls, type):
        return cls
    protocol, defaults = component_protocol(kind, cls)
    where = f"{kind} {name!r}{_from(plugin)}"
    missing = [m for m in required_members(kind, cls) if not hasattr(cls, m)]
    if missing:
        raise TypeError(
            f"{where} does not implement the {protocol.__name__} protocol: missing {', '.join(missing)} "
            f"(see seqify.protocols.{protocol.__name__}; seqify.protocols.{defaults.__name__} gives defaults "
            "for the optional members)"
        )
    if kind == "generator":
        caps = getattr(cls, "caps")
        if not isinstance(caps, GeneratorCaps):
            raise TypeError(f"{where}: caps must be a seqify.protocols.GeneratorCaps")
        lacking = [m for m in protocol_members(HiddenStates) if not hasattr(cls, m)]
        if caps.hidden_states and lacking:
            raise TypeError(f"{where} declares caps.hidden_states but lacks {', '.join(lacking)} "
                            "(see seqify.protocols.HiddenStates)")
    legacy_flag = getattr(cls, "learned", None)  # API 1's flag for a trainable orderer
    if kind == "orderer" and legacy_flag is not None:
        warnings.warn(f"{where}: the `learned` flag is deprecated since API 2 (a trainable orderer is one "
                      "without infer_orders: subclass seqify.protocols.BaseTrainableOrderer)",
                      DeprecationWarning, stacklevel=3)
    absent = [m for m in optional_members(kind, cls) if not hasattr(cls, m)]
    if not absent and hasattr(cls, "name"):
        return cls
    if absent:
        warnings.warn(
            f"{where} lacks the optional members {', '.join(absent)}: it runs with seqify's defaults for them "
            f"(seqify.protocols.{defaults.__name__}; subclass it to take them explicitly)",
            PluginCompatibilityWarning, stacklevel=3,
        )
    namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__}
    if not hasattr(cls, "name"):
        namespace["name"] = name
    return type(cls.__name__, (cls, defaults), namespace)


def call_supported(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` without the keyword arguments ``fn`` does not accept.

    How the runner calls members whose signature grew within an API version (e.g. a
    ``reconstruction`` written before it received ``splits``): an implementation keeps
    working, it is just not given what it never asked for.
    """
    accepted = _accepted_keywords(fn)
    if accepted is not None:
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    return fn(*args, **kwargs)


def unsupported_keywords(fn: Any, kwargs: dict[str, Any]) -> list[str]:
    """The names in ``kwargs`` that ``fn`` does not accept (none when it takes ``**kwargs``):
    for optional arguments that the user asked for, whose silent omission would be wrong."""
    accepted = _accepted_keywords(fn)
    return [] if accepted is None else [k for k in kwargs if k not in accepted]


def _accepted_keywords(fn: Any) -> set[str] | None:
    """The keyword names ``fn`` accepts; None when it takes ``**kwargs`` (or has no signature)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)}


def _from(plugin: str) -> str:
    return f" (plugin {plugin!r})" if plugin else ""
