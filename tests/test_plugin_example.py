"""The tutorial's finished plugin (docs/plugin-example), installed by `make test`, works."""

import importlib.util

import pytest

from seqify.plugins import DEFAULT_PLUGINS, build_registry
from seqify.testing import check_orderer, toy_batch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("seqify_center_out") is None,
                                reason="docs/plugin-example is not installed (make test installs it)")


def test_example_plugin_loads_through_its_entry_point(monkeypatch):
    monkeypatch.setenv("SEQIFY_LOAD_PLUGINS", ",".join([*DEFAULT_PLUGINS, "center-out"]))
    reg = build_registry()
    info = reg.info("orderer", "center-out")
    assert info.plugin == "center-out"
    orderer = info.load()()
    batch = toy_batch(3)
    check_orderer(orderer, batch)
    # 4 positions, centre 1.5; slot 0 is given; then 1 and 2 (distance .25), then 3
    assert orderer.infer_orders(batch, rng=None).perm[0].tolist() == [0, 1, 2, 3]
