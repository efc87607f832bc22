"""The component registry: names -> lazily imported classes, with their plugin of origin.

Plugins register ``"module:attr"`` strings (or objects), so listing components never
imports torch. A class is imported the first time it is resolved and checked
against its protocol then (:func:`seqify.protocols.check_component`): a plugin whose
class lacks a required member fails at load, with its name; one that lacks optional
members gets seqify's defaults for them, with a warning.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from seqify.errors import RegistrationError, UnknownComponentError
from seqify.compat import check_component

KINDS = ("modality", "tokenizer", "orderer", "generator")


@dataclass
class ComponentInfo:
    """One registered component."""

    kind: str
    name: str
    target: Any  # "module:attr" string or the object itself
    description: str
    plugin: str
    modality: str | None = None  # tokenizers belong to a modality
    _checked: bool = False  # checked against its protocol (on first load)

    @property
    def key(self) -> tuple[str, str]:
        return (self.modality or "", self.name)

    def load(self) -> Any:
        """Import (once) and return the registered object."""
        if isinstance(self.target, str):
            module_name, _, attr = self.target.partition(":")
            if not attr:
                raise RegistrationError(
                    f"{self.kind} {self.name!r} from plugin {self.plugin!r}: target "
                    f"{self.target!r} must look like 'package.module:Name'"
                )
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self.target = obj
        if not self._checked:
            try:  # a class lacking optional members comes back with seqify's defaults mixed in
                self.target = check_component(self.kind, self.name, self.target, plugin=self.plugin)
            except TypeError as exc:
                raise RegistrationError(str(exc)) from None
            self._checked = True
        return self.target


class Registry:
    """All registered components, by kind and name."""

    def __init__(self) -> None:
        self._items: dict[str, dict[tuple[str, str], ComponentInfo]] = {k: {} for k in KINDS}
        self.failed_plugins: dict[str, str] = {}
        #: the extra plugins it was built with (:func:`seqify.plugins.build_registry`; module names for modules)
        self.extra_plugins: list[Any] = []

    def register(
        self,
        kind: str,
        name: str,
        target: Any,
        description: str = "",
        *,
        plugin: str = "<direct>",
        modality: str | None = None,
    ) -> ComponentInfo:
        if kind not in self._items:
            raise RegistrationError(f"unknown component kind {kind!r} (one of {', '.join(KINDS)})")
        if not isinstance(name, str) or not name or name != name.strip():
            raise RegistrationError(f"plugin {plugin!r}: invalid {kind} name {name!r}")
        if kind == "tokenizer" and not modality:
            raise RegistrationError(
                f"plugin {plugin!r}: tokenizer {name!r} must say which modality it serves "
                "(register(name, target, description, modality=...))"
            )
        info = ComponentInfo(kind, name, target, description.strip().splitlines()[0] if description.strip() else "", plugin, modality)
        existing = self._items[kind].get(info.key)
        if existing is not None:
            where = f" for modality {modality!r}" if modality else ""
            raise RegistrationError(
                f"{kind} {name!r}{where} is registered twice: by plugin "
                f"{existing.plugin!r} and by plugin {plugin!r}"
            )
        self._items[kind][info.key] = info
        return info

    def infos(self, kind: str, modality: str | None = None) -> list[ComponentInfo]:
        items = self._items[kind].values()
        if modality is not None:
            items = [i for i in items if i.modality == modality]
        return sorted(items, key=lambda i: (i.modality or "", i.name))

    def names(self, kind: str, modality: str | None = None) -> list[str]:
        return [i.name for i in self.infos(kind, modality)]

    def info(self, kind: str, name: str, modality: str | None = None) -> ComponentInfo:
        key = (modality or "", name) if kind == "tokenizer" else ("", name)
        found = self._items[kind].get(key)
        if found is None:
            scope = f"modality {modality!r}" if kind == "tokenizer" and modality else ""
            raise UnknownComponentError(kind, name, self.names(kind, modality if kind == "tokenizer" else None), scope)
        return found

    def get(self, kind: str, name: str, modality: str | None = None) -> Any:
        """The registered class (imported now if needed)."""
        return self.info(kind, name, modality).load()
