import importlib.metadata
import inspect
import re
from pathlib import Path

import pytest

from seqify import hookspecs
from seqify.errors import RegistrationError, UnknownComponentError
from seqify.hookspecs import hookimpl
from seqify.plugins import DEFAULT_PLUGINS, build_registry
from seqify.registry import Registry
from seqify.testing import ToyPlugin

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_builtin_plugins_register_through_entry_points():
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="seqify")}
    for name, module in DEFAULT_PLUGINS.items():
        assert eps.get(name) == module
    reg = build_registry()
    assert not reg.failed_plugins
    assert {"raster", "reverse", "random", "fixed-random", "rar", "top-prob", "margin", "entropy"} <= set(reg.names("orderer"))
    assert all(i.plugin == "orderers" for i in reg.infos("orderer") if i.name in ("raster", "margin"))


def test_unknown_name_suggests_close_match():
    reg = build_registry()
    with pytest.raises(UnknownComponentError, match=r"unknown orderer 'rastr'; did you mean 'raster'"):
        reg.get("orderer", "rastr")


def test_collision_is_an_error_naming_both_plugins():
    class Dup:
        @hookimpl
        def register_orderers(self, register):
            register("raster", "x:Y", "a second raster")

    with pytest.raises(RegistrationError, match=r"'raster' is registered twice: by plugin 'orderers' and by plugin 'Dup'"):
        build_registry([Dup()])


def test_tokenizers_are_scoped_by_modality():
    reg = Registry()
    reg.register("tokenizer", "graph", "a:B", "x", plugin="p", modality="molecule")
    reg.register("tokenizer", "graph", "a:C", "x", plugin="q", modality="pointcloud")
    assert reg.info("tokenizer", "graph", "pointcloud").plugin == "q"
    with pytest.raises(RegistrationError, match="must say which modality"):
        reg.register("tokenizer", "bare", "a:B", "x", plugin="p")


def test_broken_plugin_is_reported_and_the_rest_keep_working(monkeypatch, capsys):
    real = importlib.metadata.entry_points

    def fake(group=None):
        eps = list(real(group=group))
        eps.append(importlib.metadata.EntryPoint("broken", "seqify_does_not_exist", "seqify"))
        return eps

    monkeypatch.setattr("seqify.plugins.entry_points", fake)
    monkeypatch.setenv("SEQIFY_LOAD_PLUGINS", ",".join([*DEFAULT_PLUGINS, "broken"]))

    class Raises:
        @hookimpl
        def register_generators(self, register):
            raise RuntimeError("boom")

    reg = build_registry([Raises()])
    assert "ModuleNotFoundError" in reg.failed_plugins["broken"]
    assert "register_generators raised RuntimeError: boom" in reg.failed_plugins["Raises"]
    assert "raster" in reg.names("orderer")
    err = capsys.readouterr().err
    assert "plugin 'broken'" in err and "continuing without it" in err


def test_misspelled_hook_is_an_error():
    class Typo:
        @hookimpl
        def register_ordrers(self, register):
            pass

    with pytest.raises(RegistrationError, match="unknown hook"):
        build_registry([Typo()])


def test_allowlist_limits_plugins(monkeypatch):
    monkeypatch.setenv("SEQIFY_LOAD_PLUGINS", "")
    assert build_registry().names("orderer") == []
    monkeypatch.setenv("SEQIFY_LOAD_PLUGINS", "orderers")
    assert "raster" in build_registry().names("orderer")


def test_extra_plugin_registers_like_a_third_party_one():
    reg = build_registry([ToyPlugin()])
    assert reg.info("modality", "toy").plugin == "ToyPlugin"
    assert reg.get("tokenizer", "digits", "toy").__name__ == "ToyTokenizer"


@pytest.mark.parametrize("hook", ["register_modalities", "register_tokenizers", "register_orderers", "register_generators"])
def test_every_hook_is_documented_with_its_signature(hook):
    spec = getattr(hookspecs, hook)
    assert list(inspect.signature(spec).parameters) == ["register"]
    assert spec.__doc__
    text = (DOCS / "plugins.md").read_text()
    assert re.search(rf"`{hook}\(register\)`", text), f"{hook} missing from docs/plugins.md"
