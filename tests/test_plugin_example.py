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


@pytest.mark.parametrize("modality,extra", [("sudoku", {}), ("molecule", {"tokenizer": "graph"}), ("toy", {})])
def test_example_generator_with_its_own_settings_runs_on_every_builtin_modality(tmp_path, monkeypatch, modality, extra):
    """Budgets name a size; the example generator maps it to its own settings schema."""
    from seqify.bench import BenchRequest, run_bench
    from seqify.testing import ToyPlugin

    monkeypatch.setenv("SEQIFY_LOAD_PLUGINS", ",".join([*DEFAULT_PLUGINS, "center-out"]))
    reg = build_registry([ToyPlugin()])
    res = run_bench(BenchRequest(modality=modality, orderer="raster", generator="bag-of-slots", out=tmp_path,
                                 budget="smoke", steps=5, **extra), registry=reg)
    from seqify_center_out.generator import BagOfSlots

    size = res.results["config"]["size"]  # named by the modality's budget, mapped by the generator's own schema
    assert res.results["generator_config"] == {**BagOfSlots.sizes[size], "pool": "mean"}
    assert size == ("small" if modality == "toy" else "micro")
    m = res.results["modelability"]
    assert m["kind"] == "exact" and 0 < m["nats_per_token"] < 20
    assert res.results["metrics"]


def test_example_generator_scores_exactly_and_sums_to_one():
    """The example's likelihoods are normalised: over every completion of a 2-open-slot item, they sum to 1."""
    import itertools

    import torch

    from seqify.testing import ToyTokenizer
    from seqify.types import blocks_of_one, collate
    from seqify_center_out.generator import BagOfSlots

    tok = ToyTokenizer(length=3)
    torch.manual_seed(0)
    model = BagOfSlots(tok.spec, {"hidden": 8}).eval()
    items = ["1" + a + b for a, b in itertools.product("0123456789", repeat=2)]
    batch = collate([tok.encode(s) for s in items])
    perm = torch.tensor([[0, 2, 1]] * len(items))
    scores, _ = model.score(batch, blocks_of_one(batch, perm))
    total = scores.logp.sum(1).exp().sum()
    assert float(total) == pytest.approx(1.0, abs=1e-4)
