"""The runner end to end on the test doubles (no real model training)."""

import json
import math
import sqlite3

import pytest

from seqify.bench import BenchRequest, run_bench
from seqify.errors import ConfigError, NotApplicableError, UnknownComponentError
from seqify.matrix import MatrixRequest, run_matrix
from seqify.plugins import build_registry
from seqify.testing import ToyPlugin

KEYS = {"modality", "dataset", "tokenizer", "orderer", "generator", "seed", "device", "config", "modelability", "metrics", "timings"}


@pytest.fixture(scope="module")
def registry():
    return build_registry([ToyPlugin()])


def test_bench_writes_results_with_the_contract_keys(tmp_path, registry):
    req = BenchRequest(modality="toy", orderer="random", generator="unigram", out=tmp_path, budget="smoke", seed=3)
    res = run_bench(req, registry=registry)
    data = json.loads((tmp_path / "results.json").read_text())
    assert KEYS <= set(data)
    m = data["modelability"]
    assert {"nats_per_token", "nats_per_item", "bits_per_item", "top1_accuracy", "kind"} <= set(m)
    assert m["kind"] == "estimate"  # random orders
    assert m["tokens_per_item"] == 3  # 4 digits, the first is given
    assert m["nats_per_item"] == pytest.approx(m["nats_per_token"] * 3)
    assert m["bits_per_item"] == pytest.approx(m["nats_per_item"] / math.log(2))
    assert 0 < m["nats_per_token"] < math.log(10) + 1e-6  # learned something, never worse than uniform+eps
    assert data["metrics"]["n"] == 16 and data["seed"] == 3
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "samples.png").is_file()
    assert res.results["config"]["train"]["steps"] == 30


def test_same_seed_same_numbers(tmp_path, registry):
    a = run_bench(BenchRequest(modality="toy", orderer="raster", generator="unigram", out=tmp_path / "a", budget="smoke"), registry=registry)
    b = run_bench(BenchRequest(modality="toy", orderer="raster", generator="unigram", out=tmp_path / "b", budget="smoke"), registry=registry)
    assert a.results["modelability"] == b.results["modelability"]
    assert a.results["modelability"]["kind"] == "exact"


def test_bad_requests_fail_before_work(tmp_path, registry):
    with pytest.raises(UnknownComponentError, match="did you mean 'raster'"):
        run_bench(BenchRequest(modality="toy", orderer="rastr", generator="unigram", out=tmp_path), registry=registry)
    with pytest.raises(UnknownComponentError, match="unknown budget"):
        run_bench(BenchRequest(modality="toy", orderer="raster", generator="unigram", out=tmp_path, budget="huge"), registry=registry)
    with pytest.raises(ConfigError, match=r"train\.steps"):
        run_bench(BenchRequest(modality="toy", orderer="raster", generator="unigram", out=tmp_path,
                               overrides={"train": {"steps": -2}}), registry=registry)
    assert not (tmp_path / "results.json").exists()


def test_matrix_resumes_from_its_index_and_shares_models(tmp_path, registry):
    req = MatrixRequest(modalities=["toy"], orderers=["random", "margin", "raster"], generators=["unigram"],
                        out=tmp_path, budget="smoke")
    first = run_matrix(req, registry=registry)
    assert first.ran == 3 and first.reused == 0
    by = {r["orderer"]: r for r in first.rows}
    assert all(r["status"] == "done" for r in first.rows)
    # margin is trained on random orders, like 'random': the second of the two reuses its model
    assert by["margin"]["shared_model"] and not by["random"]["shared_model"] and not by["raster"]["shared_model"]
    second = run_matrix(req, registry=registry)
    assert second.ran == 0 and second.reused == 3
    assert [r["nats_per_token"] for r in second.rows] == [r["nats_per_token"] for r in first.rows]
    con = sqlite3.connect(tmp_path / "index.sqlite")
    assert con.execute("SELECT count(*) FROM cells WHERE status='done'").fetchone()[0] == 3
    for name in ("comparison.md", "comparison.csv", "heatmap.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_matrix_lists_inapplicable_cells_with_reason(tmp_path):
    from seqify.testing import ToyTokenizer

    class NoAnyOrder:
        from seqify.hookspecs import hookimpl

        @hookimpl
        def register_generators(self, register):
            register("fixed-only", "tests.test_bench:FixedOnly", "a generator that trains in one order only")

    reg = build_registry([ToyPlugin(), NoAnyOrder()])
    res = run_matrix(MatrixRequest(modalities=["toy"], orderers=["reverse"], generators=["fixed-only"], out=tmp_path,
                                   budget="smoke"), registry=reg)
    assert res.rows[0]["status"] == "not_applicable"
    assert "needs a generator that trains in any order" in res.rows[0]["reason"]
    assert "not_applicable" in (tmp_path / "comparison.md").read_text()


from seqify.protocols import GeneratorCaps  # noqa: E402
from seqify.testing import UnigramGenerator  # noqa: E402


class FixedOnly(UnigramGenerator):
    caps = GeneratorCaps(any_order=False)


def test_sample_from_a_checkpoint_reproduces_the_run(tmp_path, registry):
    from seqify.bench import run_sample

    run = run_bench(BenchRequest(modality="toy", orderer="raster", generator="unigram", out=tmp_path / "run",
                                 budget="smoke", seed=1), registry=registry)
    again = run_sample(tmp_path / "run", tmp_path / "more", registry=registry)
    assert again.results["metrics"] == run.results["metrics"]  # same weights, same seed, same samples
    other = run_sample(tmp_path / "run", tmp_path / "more2", n=8, seed=7, registry=registry)
    assert other.results["metrics"]["n"] == 8
    scored = run_sample(tmp_path / "run", tmp_path / "more3", score=16, registry=registry)
    assert scored.results["modelability"] == run.results["modelability"]  # same 16 test items, same weights
    import torch

    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)  # nothing but tensors and strings
    assert set(state) >= {"model", "request_json", "config_json"}


def test_matrix_reruns_a_cell_whose_settings_changed_but_reuses_its_model(tmp_path, registry):
    base = dict(modalities=["toy"], orderers=["raster"], generators=["unigram"], out=tmp_path, budget="smoke")
    first = run_matrix(MatrixRequest(**base), registry=registry)
    changed = run_matrix(MatrixRequest(**base, overrides={"eval": {"temperature": 0.0}}), registry=registry)
    assert first.ran == 1 and changed.ran == 1 and changed.reused == 0
    assert changed.rows[0]["shared_model"]  # evaluation changed, training did not
    con = sqlite3.connect(tmp_path / "index.sqlite")
    assert con.execute("SELECT count(*) FROM cells").fetchone()[0] == 2


def test_modelability_compares_tokenizations_on_one_table_and_plot(tmp_path):
    """Two tokenizations of the toy modality side by side, with the lossless one at error 0."""
    import csv

    from seqify.hookspecs import hookimpl
    from seqify.modelability import ModelabilityRequest, run_modelability
    from seqify.testing import ToyTokenizer

    class Coarse(ToyTokenizer):
        """A lossy double: digits 5..9 become 5 (so the reconstruction error is not 0)."""

        name = "coarse"

        @property
        def spec(self):
            from dataclasses import replace

            return replace(super().spec, lossless=False)

        def encode(self, item):
            ts = super().encode(item)
            return ts.with_values(ts.values.clamp(max=5))

    class Plugin:
        @hookimpl
        def register_tokenizers(self, register):
            register("coarse", Coarse, "lossy toy", modality="toy")

    reg = build_registry([ToyPlugin(), Plugin()])
    res = run_modelability(ModelabilityRequest(modality="toy", tokenizers=["digits", "coarse"], out=tmp_path,
                                               orderer="raster", generator="unigram", budget="smoke"), registry=reg)
    rows = {r["tokenizer"]: r for r in res.rows}
    assert rows["digits"]["reconstruction_metric"] == "lossless" and rows["digits"]["reconstruction_error"] == 0.0
    assert rows["coarse"]["status"] == "done" and rows["coarse"]["reconstruction_metric"] == ""  # toy names none
    coarse = json.loads(next((tmp_path / "cells").glob("toy-coarse-*")).joinpath("results.json").read_text())
    assert 0 < coarse["reconstruction"]["exact_share"] < 1  # items with a digit above 5 do not come back
    # the coarse tokens carry less information: fewer bits per item
    assert rows["coarse"]["bits_per_item"] < rows["digits"]["bits_per_item"]
    assert (tmp_path / "modelability.png").is_file()
    table = list(csv.DictReader((tmp_path / "modelability.csv").open()))
    assert sorted(t["tokenizer"] for t in table) == ["coarse", "digits"]
    cell = next((tmp_path / "cells").glob("toy-digits-*"))
    assert (cell / "order_map.png").is_file()
    assert json.loads((cell / "order_map.json").read_text())["mean_step"][1:] == [0.0, 1.0, 2.0]  # raster, slot 0 given


def test_matrix_cells_trained_in_another_order_get_their_own_folder(tmp_path, registry):
    base = dict(modalities=["toy"], generators=["unigram"], out=tmp_path, budget="smoke")
    run_matrix(MatrixRequest(orderers=["reverse"], **base), registry=registry)
    run_matrix(MatrixRequest(orderers=["reverse"], train_orderer="raster", **base), registry=registry)
    folders = sorted(p.name for p in (tmp_path / "cells").iterdir())
    assert folders == ["toy-default-reverse-unigram", "toy-default-reverse-unigram-trained-raster"]
    own = json.loads((tmp_path / "cells" / folders[0] / "results.json").read_text())
    assert own["train_orderer"] == "reverse"  # not overwritten by the cell trained in raster order


def test_sample_restores_the_generator_settings_a_run_trained_with(tmp_path):
    from seqify.bench.sample import _trained_generator_config
    from seqify_generators.causal import CausalTransformer
    from seqify_generators.masked import MaskedTransformer

    recorded = {"block_layout": "merged", "slot_inputs": True, "d_model": 64}
    assert _trained_generator_config({"generator_config_json": json.dumps(recorded)}, tmp_path,
                                     CausalTransformer) == recorded
    # a checkpoint from before the record: the settings whose defaults changed, as they were then
    assert _trained_generator_config({}, tmp_path, CausalTransformer) == {"block_layout": "split",
                                                                          "slot_inputs": False}
    assert _trained_generator_config({}, tmp_path, MaskedTransformer) == {}
    # ... unless the run's results.json recorded them
    (tmp_path / "results.json").write_text(json.dumps({"generator_config": {"block_layout": "merged", "d_model": 64}}))
    assert _trained_generator_config({}, tmp_path, CausalTransformer) == {"block_layout": "merged",
                                                                          "slot_inputs": False}
