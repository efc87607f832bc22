"""The plugin manager: built-in and third-party plugins load the same way.

Every plugin, built-in ones included, is a module listed under the ``seqify``
entry-point group and implements the hooks in :mod:`seqify.hookspecs`. The built-in
plugins (``DEFAULT_PLUGINS``) are the entry points of seqify's own package, declared in
its ``pyproject.toml`` and nowhere else.

``SEQIFY_LOAD_PLUGINS`` (comma-separated entry-point names) limits which plugins
load; set it to an empty string to load none. The test suite sets it to the
built-ins so that whatever else is installed cannot change test results.

A plugin that fails to import, or whose hook raises, is reported by name in
``registry.failed_plugins`` and on stderr; everything else keeps working.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points
from types import ModuleType

import pluggy

from seqify import hookspecs
from seqify.errors import RegistrationError
from seqify.registry import KINDS, Registry

ENTRY_POINT_GROUP = "seqify"


def builtin_plugins() -> dict[str, str]:
    """Entry-point name -> module of the plugins that ship with seqify, read from seqify's
    own package metadata (the ``[project.entry-points.seqify]`` table of its
    ``pyproject.toml``): declared once, there."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        eps = distribution("seqify").entry_points
    except PackageNotFoundError:  # not installed (a source tree on sys.path): no built-ins to name
        return {}
    return {ep.name: ep.value for ep in eps if ep.group == ENTRY_POINT_GROUP}


#: the built-in plugins, as :func:`builtin_plugins` reads them
DEFAULT_PLUGINS = builtin_plugins()

_HOOKS = {
    "modality": "register_modalities",
    "tokenizer": "register_tokenizers",
    "orderer": "register_orderers",
    "generator": "register_generators",
}

_registry: Registry | None = None


def _allowed() -> set[str] | None:
    raw = os.environ.get("SEQIFY_LOAD_PLUGINS")
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def build_registry(extra_plugins: list[ModuleType | object] = (), *, warn: bool = True) -> Registry:
    """Load every allowed plugin and collect what it registers into a new Registry.

    Args:
        extra_plugins: plugin objects to add directly (tests, notebooks).
        warn: print a line on stderr for each plugin that failed.
    """
    registry = Registry()
    # what a worker process rebuilds this registry from (modules by name: they do not pickle)
    registry.extra_plugins = [p.__name__ if isinstance(p, ModuleType) else p for p in extra_plugins]
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    allowed = _allowed()

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if allowed is not None and ep.name not in allowed:
            continue
        if pm.has_plugin(ep.name):
            continue
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:  # a broken plugin must not take the rest down
            registry.failed_plugins[ep.name] = f"failed to load: {type(exc).__name__}: {exc}"
    for plugin in extra_plugins:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        pm.register(plugin, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        raise RegistrationError(f"plugin {name!r} implements an unknown hook: {exc}") from None

    for kind in KINDS:
        hook = getattr(pm.hook, _HOOKS[kind])
        for impl in hook.get_hookimpls():  # registration order
            plugin_name = impl.plugin_name
            if plugin_name in registry.failed_plugins:
                continue

            def register(name, target, description="", *, modality=None, _k=kind, _p=plugin_name):
                registry.register(_k, name, target, description, plugin=_p, modality=modality)

            try:
                impl.function(register=register)
            except RegistrationError:
                raise
            except Exception as exc:
                registry.failed_plugins[plugin_name] = (
                    f"{_HOOKS[kind]} raised {type(exc).__name__}: {exc}"
                )
    if warn:
        for name, why in registry.failed_plugins.items():
            print(f"seqify: plugin {name!r} {why}; continuing without it", file=sys.stderr)
    return registry


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _registry
    if _registry is None:
        _registry = build_registry()
    return _registry


def reset_registry(registry: Registry | None = None) -> None:
    """Forget (or replace) the process-wide registry; for tests and notebooks."""
    global _registry
    _registry = registry


def import_plugin(module_name: str) -> ModuleType:
    """Import a plugin module by name (for ``extra_plugins``)."""
    return importlib.import_module(module_name)
