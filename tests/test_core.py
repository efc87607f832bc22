"""The core's declared extension points, tokenizer state, seeding and option checks."""

import json

import numpy as np
import warnings

import pytest
import torch

from seqify import seeding
from seqify.bench import BenchRequest, resolve_cell, run_bench, run_sample, train_signature
from seqify.config import TrainConfig
from seqify.dataset import TokenTable, items_fingerprint
from seqify.errors import ConfigError, RegistrationError
from seqify.hookspecs import hookimpl
from seqify.plugins import build_registry
from seqify.protocols import BaseTokenizer, check_component, tokenizer_fingerprint
from seqify.testing import ToyModality, ToyPlugin, ToyTokenizer


@pytest.fixture(scope="module")
def registry():
    return build_registry([ToyPlugin()])


# ------------------------------------------------------------------ declared protocols


del_render = type("NoRenderModality", (), {k: v for k, v in vars(ToyModality).items() if k != "render"})


class _BrokenPlugin:
    @hookimpl
    def register_modalities(self, register):
        register("broken", "tests.test_core:del_render", "A modality without render.")


def test_a_component_missing_a_protocol_member_fails_at_load_with_its_name():
    reg = build_registry([ToyPlugin(), _BrokenPlugin()])
    with pytest.raises(RegistrationError, match=r"modality 'broken'.*missing .*render"):
        reg.get("modality", "broken")
    with pytest.raises(TypeError, match="missing spec, decode"):
        check_component("tokenizer", "bare", type("Bare", (), {"name": "bare", "encode": None}))
    # the base class supplies the optional members: the class itself comes back, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_component("tokenizer", "digits", ToyTokenizer) is ToyTokenizer


def test_budgets_name_a_size_that_any_generator_interprets(registry):
    # the unigram double has its own (size-free) settings: every built-in budget runs it
    for modality in ("sudoku", "toy"):
        cell = resolve_cell(BenchRequest(modality=modality, orderer="raster", generator="unigram", out="x",
                                         budget="quick"), registry)
        assert cell.generator_config.model_dump() == {"smoothing": 0.0}
    causal = resolve_cell(BenchRequest(modality="sudoku", orderer="raster", generator="causal", out="x",
                                       budget="quick"), registry)
    assert (causal.generator_config.d_model, causal.generator_config.n_layers) == (128, 4)  # "small"
    mine = resolve_cell(BenchRequest(modality="sudoku", orderer="raster", generator="causal", out="x", budget="quick",
                                     overrides={"generator": {"n_layers": 2}}), registry)
    assert (mine.generator_config.d_model, mine.generator_config.n_layers) == (128, 2)  # settings win over the size
    with pytest.raises(ConfigError, match="size: 'huge' is not a size"):
        resolve_cell(BenchRequest(modality="sudoku", orderer="raster", generator="causal", out="x",
                                  overrides={"size": "huge"}), registry)


def test_data_is_never_ignored(registry, tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("quizzes,solutions\n")
    cell = resolve_cell(BenchRequest(modality="sudoku", orderer="raster", out="x", data=f), registry)
    assert cell.names["dataset"] == "csv"  # the only dataset that reads a file is picked
    with pytest.raises(ConfigError, match="dataset 'generated' of modality 'sudoku' reads no file"):
        resolve_cell(BenchRequest(modality="sudoku", orderer="raster", out="x", dataset="generated", data=f), registry)
    with pytest.raises(ConfigError, match="modality 'toy' reads no data files"):
        resolve_cell(BenchRequest(modality="toy", orderer="raster", generator="unigram", out="x", data=f), registry)


# ------------------------------------------------------------------ tokenizer state and cache keys


def test_item_fingerprints_see_every_element_of_large_arrays():
    a = np.zeros((64, 64), dtype=np.uint8)
    b = a.copy()
    b[32, 32] = 1  # equal borders: repr() of both arrays is the same abbreviated text
    assert repr(a) == repr(b)
    assert items_fingerprint([a]) != items_fingerprint([b])
    assert items_fingerprint([torch.from_numpy(a)]) != items_fingerprint([torch.from_numpy(b)])
    assert items_fingerprint([a]) == items_fingerprint([a.copy()])
    assert items_fingerprint([a]) != items_fingerprint([a.astype(np.int16)])  # dtype counts


class Fitted(BaseTokenizer):
    """A toy tokenizer with learned state: an offset added to every digit."""

    name = "fitted"

    def __init__(self):
        self.offset = torch.zeros(1, dtype=torch.long)

    def __repr__(self):
        return "Fitted()"

    def fit(self, items, *, device=None, seed=0):
        self.offset = torch.tensor([seed % 3])

    def state_dict(self):
        return {"offset": self.offset.clone()}

    def load_state_dict(self, state):
        self.offset = state["offset"].clone()


def test_tokenizer_fingerprint_covers_the_learned_state():
    a, b = Fitted(), Fitted()
    a.fit([], seed=1)
    b.fit([], seed=2)
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(b)
    b.load_state_dict(a.state_dict())
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b)
    with pytest.raises(ValueError, match="has no state"):
        ToyTokenizer().load_state_dict({"offset": torch.zeros(1)})


def test_sample_restores_the_tokenizer_instead_of_fitting_again(registry, tmp_path, monkeypatch):
    run_bench(BenchRequest(modality="toy", orderer="raster", generator="unigram", out=tmp_path / "run",
                           budget="smoke"), registry=registry)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["tokenizer"] == {}
    fitted = []
    monkeypatch.setattr(ToyTokenizer, "fit", lambda self, items, **kw: fitted.append(1))
    monkeypatch.setattr(ToyTokenizer, "load_state_dict", lambda self, s: fitted.append("restored"))
    res = run_sample(tmp_path / "run", tmp_path / "more", n=8, registry=registry)
    assert fitted == ["restored"] and res.results["n_samples"] == 8


# ------------------------------------------------------------------ seeds


def test_named_streams_are_distinct_and_stable():
    seeds = {seeding.stream_seed(0, s) for s in seeding.STREAMS}
    assert len(seeds) == len(seeding.STREAMS)
    assert seeding.stream_seed(0, "init") == seeding.stream_seed(0, "init") != seeding.stream_seed(1, "init")
    with pytest.raises(ValueError, match="unknown random stream"):
        seeding.stream_seed(0, "nope")


def test_validation_leaves_the_training_streams_alone():
    """The masked loss draws its cut from the global stream; validation must not shift it."""
    from seqify.training import train
    from seqify_generators.masked import MaskedTransformer
    from seqify_orderers.orderers import Random

    tok = ToyTokenizer()
    table = TokenTable.from_tokensets([tok.encode(s) for s in ToyModality.make(64, 0)])
    logs = []
    for eval_every in (0, 3):
        seeding.seed_global(0, "init")
        model = MaskedTransformer(tok.spec, {"d_model": 16, "n_layers": 1, "n_heads": 2})
        cfg = TrainConfig(steps=10, batch_size=8, warmup_steps=1, eval_every=eval_every, val_items=16)
        logs.append(train(model, table, table, Random(), cfg, device=torch.device("cpu"), seed=0))
    assert logs[0].loss == logs[1].loss
    assert len(logs[1].val_loss) > len(logs[0].val_loss)


@pytest.mark.slow
def test_same_command_same_seed_same_numbers_on_sudoku(tmp_path):
    """The issue's case: the masked Sudoku cell twice with one seed gives identical numbers."""
    reg = build_registry()
    runs = []
    for name in ("a", "b"):
        req = BenchRequest(modality="sudoku", orderer="margin", generator="masked", train_orderer="random",
                           budget="smoke", steps=30, seed=0, out=tmp_path / name)
        runs.append(run_bench(req, registry=reg).results)
    a, b = runs
    assert a["training"]["loss_curve"] == b["training"]["loss_curve"]
    assert a["modelability"] == b["modelability"] and a["metrics"] == b["metrics"]


def test_same_seed_same_weights_different_seed_different(registry, tmp_path):
    outs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        res = run_bench(BenchRequest(modality="toy", orderer="random", generator="masked", out=tmp_path / name,
                                     budget="smoke", seed=seed, overrides={"size": "micro"}), registry=registry)
        outs[name] = res.results
    assert outs["a"]["training"]["loss_curve"] == outs["b"]["training"]["loss_curve"]
    assert outs["a"]["modelability"] == outs["b"]["modelability"]
    assert outs["a"]["training"]["loss_curve"][0] != outs["c"]["training"]["loss_curve"][0]


# ------------------------------------------------------------------ signatures and headline


def test_learned_and_margin_cells_never_share_a_model(registry):
    sigs = {}
    for orderer in ("learned", "margin"):
        req = BenchRequest(modality="toy", orderer=orderer, generator="masked", train_orderer="random", out="x",
                           budget="smoke")
        sigs[orderer] = train_signature(resolve_cell(req, registry), req, "fp")
    assert sigs["learned"] != sigs["margin"]


def test_the_headline_metric_is_named_by_the_modality(registry, tmp_path):
    res = run_bench(BenchRequest(modality="toy", orderer="raster", generator="unigram", out=tmp_path,
                                 budget="smoke"), registry=registry)
    assert res.results["headline"] == {"exact": res.results["metrics"]["exact"]}
    assert json.loads((tmp_path / "results.json").read_text())["headline"] == res.results["headline"]
