"""Tokenizer seeds, saved tokenizer states and figures over seeds (issues 20 and 21), on the test doubles."""

import csv
import json
import math
import shutil
import sqlite3

import pytest
import torch
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from seqify.bench import BenchRequest, resolve_cell, run_bench
from seqify.cli import app
from seqify.errors import ConfigError, DataError
from seqify.hookspecs import hookimpl
from seqify.matrix import SCHEMA, MatrixRequest, MatrixResult, _cell_key, run_matrix
from seqify.plugins import build_registry
from seqify.testing import ToyPlugin, ToyTokenizer

runner = CliRunner()


class Shuffled(ToyTokenizer):
    """A fitted double: each digit goes through a permutation that ``fit`` draws from its seed."""

    name = "shuffled"
    #: torch's deterministic-algorithms flag as each fit saw it
    fits_saw: list[bool] = []

    def __init__(self, length: int = 4):
        super().__init__(length)
        self.perm = None

    def __repr__(self) -> str:
        return f"Shuffled(length={self.length})"

    def fit(self, items, *, device=None, seed=0):
        Shuffled.fits_saw.append(torch.are_deterministic_algorithms_enabled())
        self.perm = torch.randperm(10, generator=torch.Generator().manual_seed(seed))

    def state_dict(self):
        return {"perm": self.perm.clone()}

    def load_state_dict(self, state):
        perm = state["perm"]
        if perm.shape != (10,):
            raise ValueError(f"a permutation of 10 digits was expected, got shape {tuple(perm.shape)}")
        self.perm = perm.clone()

    def encode(self, item):
        ts = super().encode(item)
        return ts.with_values(self.perm[ts.values])

    def decode(self, tokens):
        return "".join(str(int(v)) for v in torch.argsort(self.perm)[tokens.values])


class ShuffledPlugin:
    @hookimpl
    def register_tokenizers(self, register):
        register("shuffled", Shuffled, "a fitted toy tokenizer (test double)", modality="toy")


@pytest.fixture(scope="module")
def registry():
    return build_registry([ToyPlugin(), ShuffledPlugin()])


def _cell(registry, **kw):
    return dict(modality="toy", orderer="raster", generator="unigram", budget="smoke", **kw)


def _results(folder):
    return json.loads((folder / "results.json").read_text())


# ------------------------------------------------------------------ one cell


def test_no_tokenizer_seed_is_the_run_seed_with_the_same_cache_entry_and_numbers(tmp_path, registry):
    a = run_bench(BenchRequest(**_cell(registry, tokenizer="shuffled", seed=3), out=tmp_path / "a"), registry=registry)
    b = run_bench(BenchRequest(**_cell(registry, tokenizer="shuffled", seed=3, tokenizer_seed=3), out=tmp_path / "b"),
                  registry=registry)
    fa, fb = a.results["tokenizer_state"], b.results["tokenizer_state"]
    assert fa["seed"] == fb["seed"] == 3 and fb["source"] == "restored from cache"
    assert fa["cache_file"] == fb["cache_file"] and fa["fingerprint"] == fb["fingerprint"]
    assert a.results["modelability"] == b.results["modelability"] and a.results["metrics"] == b.results["metrics"]
    assert a.results["tokenizer"] == "shuffled"  # the name stays where it was
    # the cell key of a cell without a tokenizer seed is the one older indexes hold
    cell = resolve_cell(BenchRequest(**_cell(registry), out=tmp_path / "c"), registry)
    key = json.loads(_cell_key(cell, "smoke", 0))
    assert key[:8] == ["toy", "steps", "digits", "raster", "raster", "unigram", "smoke", 0] and len(key) == 9
    assert json.loads(_cell_key(cell, "smoke", 0, 2)) == [*key, "tokenizer_seed=2"]


def test_fitting_runs_with_deterministic_algorithms_and_restores_the_setting(tmp_path, registry, monkeypatch):
    monkeypatch.setenv("SEQIFY_CACHE", str(tmp_path / "cache"))  # an empty cache: the tokenizer is fitted
    Shuffled.fits_saw.clear()
    res = run_bench(BenchRequest(**_cell(registry, tokenizer="shuffled", tokenizer_seed=11), out=tmp_path / "a"),
                    registry=registry)
    assert Shuffled.fits_saw == [True] and res.results["tokenizer_state"]["source"] == "fitted here"
    assert not torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # a strict setting of the caller stays strict, and is kept
    try:
        run_bench(BenchRequest(**_cell(registry, tokenizer="shuffled", tokenizer_seed=12), out=tmp_path / "b"),
                  registry=registry)
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_a_saved_tokenizer_state_loads_on_another_run(tmp_path, registry, monkeypatch):
    first = run_bench(BenchRequest(**_cell(registry, tokenizer="shuffled", tokenizer_seed=5), out=tmp_path / "run"),
                      registry=registry)
    assert first.files["tokenizer_state"] == "tokenizer_state.pt"
    copied = tmp_path / "elsewhere" / "tokenizer_state.pt"  # "another machine": a copy, and an empty cache
    copied.parent.mkdir()
    shutil.copy(tmp_path / "run" / "tokenizer_state.pt", copied)
    monkeypatch.setenv("SEQIFY_CACHE", str(tmp_path / "empty-cache"))
    fitted = []
    monkeypatch.setattr(Shuffled, "fit", lambda self, items, **kw: fitted.append(1))
    second = run_bench(BenchRequest(**_cell(registry, tokenizer="shuffled", tokenizer_state=copied),
                                    out=tmp_path / "again"), registry=registry)
    got, want = second.results["tokenizer_state"], first.results["tokenizer_state"]
    assert not fitted and got["source"] == "loaded from file" and got["state_file"] == str(copied)
    assert got["fingerprint"] == want["fingerprint"] and got["seed"] is None and got["cache_file"] is None
    assert second.results["modelability"] == first.results["modelability"]  # same state, same run seed
    assert torch.equal(torch.load(tmp_path / "again" / "tokenizer_state.pt", weights_only=True)["state"]["perm"],
                       torch.load(copied, weights_only=True)["state"]["perm"])
    # a fixed tokenizer has no state: no file beside its results
    fixed = run_bench(BenchRequest(**_cell(registry), out=tmp_path / "fixed"), registry=registry)
    assert not (tmp_path / "fixed" / "tokenizer_state.pt").exists() and "tokenizer_state" not in fixed.files
    assert fixed.results["tokenizer_state"]["cache_file"] is None


def test_a_bad_tokenizer_state_file_is_a_clear_error_naming_it(tmp_path, registry):
    def run(path, **kw):
        return run_bench(BenchRequest(**_cell(registry, tokenizer="shuffled", tokenizer_state=path, **kw),
                                      out=tmp_path / "out"), registry=registry)

    missing = tmp_path / "nope.pt"
    with pytest.raises(DataError, match=r"tokenizer state file '.*nope\.pt' not found"):
        run(missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"'.*garbage\.pt' cannot be read"):
        run(garbage)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(DataError, match=r"'.*other\.pt' holds no tokenizer state"):
        run(other)
    wrong = tmp_path / "wrong.pt"
    torch.save({"state": {"perm": torch.arange(3)}}, wrong)
    with pytest.raises(DataError, match=r"'.*wrong\.pt' does not load into Shuffled\(length=4\): .*shape \(3,\)"):
        run(wrong)
    with pytest.raises(ConfigError, match="exclude each other"):
        run(wrong, tokenizer_seed=1)
    assert not (tmp_path / "out" / "results.json").exists()
    res = runner.invoke(app, ["bench", "--modality", "sudoku", "--orderer", "raster", "--tokenizer-state",
                              str(missing), "--out", str(tmp_path / "cli")])
    assert res.exit_code == 2 and "nope.pt' not found" in res.output and "Traceback" not in res.output


# ------------------------------------------------------------------ matrix


def test_tokenizer_seeds_are_cells_of_their_own_that_share_a_model_only_with_one_tokenizer_state(tmp_path, registry):
    res = run_matrix(MatrixRequest(modalities=["toy"], orderers=["raster"], generators=["unigram"],
                                   tokenizers=["shuffled", "digits"], tokenizer_seeds=[0, 1], out=tmp_path,
                                   budget="smoke"), registry=registry)
    assert res.ran == 4 and all(r["status"] == "done" for r in res.rows)
    folders = sorted(p.name for p in (tmp_path / "cells").iterdir())
    assert folders == ["toy-digits-raster-unigram-t0", "toy-digits-raster-unigram-t1",
                       "toy-shuffled-raster-unigram-t0", "toy-shuffled-raster-unigram-t1"]
    con = sqlite3.connect(tmp_path / "index.sqlite")
    assert sorted(con.execute("SELECT tokenizer, tokenizer_seed FROM cells")) == [
        ("digits", 0), ("digits", 1), ("shuffled", 0), ("shuffled", 1)]
    shuffled = [_results(tmp_path / "cells" / f"toy-shuffled-raster-unigram-t{t}") for t in (0, 1)]
    assert [r["tokenizer_state"]["seed"] for r in shuffled] == [0, 1]
    states = [torch.load(tmp_path / "cells" / f"toy-shuffled-raster-unigram-t{t}" / "tokenizer_state.pt",
                         weights_only=True)["state"]["perm"] for t in (0, 1)]
    assert not torch.equal(*states)  # two fits
    # the tokenizer seed reaches the train signature through the fitted state: two models for two states ...
    assert shuffled[0]["model"]["train_signature"] != shuffled[1]["model"]["train_signature"]
    assert not any(r.get("training", {}).get("reused_model") for r in shuffled)
    # ... and one model when both seeds give the same (empty) state of a fixed tokenizer
    digits = [_results(tmp_path / "cells" / f"toy-digits-raster-unigram-t{t}") for t in (0, 1)]
    assert digits[0]["model"]["train_signature"] == digits[1]["model"]["train_signature"]
    assert digits[1]["training"]["reused_model"]
    table = list(csv.DictReader((tmp_path / "comparison.csv").open()))
    assert sorted((r["tokenizer"], r["seed"], r["tokenizer_seed"]) for r in table) == [
        ("digits", "0", "0"), ("digits", "0", "1"), ("shuffled", "0", "0"), ("shuffled", "0", "1")]
    assert (tmp_path / "summary.md").is_file() and res.files["summary_csv"] == "summary.csv"


def test_summary_over_seeds_equals_a_hand_computation(tmp_path, registry):
    req = MatrixRequest(modalities=["toy"], orderers=["raster"], generators=["unigram"], seeds=[0, 1, 2],
                        out=tmp_path, budget="smoke")
    res = run_matrix(req, registry=registry)
    assert sorted(p.name for p in (tmp_path / "cells").iterdir()) == [
        f"toy-default-raster-unigram-s{s}" for s in (0, 1, 2)]
    bits = [r["bits_per_item"] for r in sorted(res.rows, key=lambda r: r["seed"])]
    assert len(set(bits)) == 3  # three seeds, three data sets, three figures
    mean = sum(bits) / 3
    sd = math.sqrt(sum((b - mean) ** 2 for b in bits) / 2)
    half = scipy_stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    summary = {r["metric"]: r for r in csv.DictReader((tmp_path / "summary.csv").open())}
    got = summary["bits_per_item"]
    assert got["n"] == "3" and got["seeds"] == "0,1,2" and got["tokenizer_seeds"] == "0,1,2"
    assert float(got["mean"]) == pytest.approx(mean) and float(got["sd"]) == pytest.approx(sd)
    assert (float(got["ci95_low"]), float(got["ci95_high"])) == pytest.approx((mean - half, mean + half))
    assert {"nats_per_token", "top1_accuracy", "exact"} <= set(summary)  # "exact": the toy headline metric
    assert "reconstruction_error" not in summary  # a lossless tokenizer measures none
    exact = [r["headline_values"]["exact"] for r in res.rows]
    assert float(summary["exact"]["mean"]) == pytest.approx(sum(exact) / 3)
    again = run_matrix(req, registry=registry)
    assert again.ran == 0 and again.reused == 3


def test_a_single_seed_writes_no_summary(tmp_path, registry):
    run_matrix(MatrixRequest(modalities=["toy"], orderers=["raster"], generators=["unigram"], out=tmp_path,
                             budget="smoke"), registry=registry)
    assert not (tmp_path / "summary.md").exists()
    assert [p.name for p in (tmp_path / "cells").iterdir()] == ["toy-default-raster-unigram"]


def test_an_index_written_before_tokenizer_seeds_still_resumes(tmp_path, registry):
    req = MatrixRequest(modalities=["toy"], orderers=["raster", "reverse"], generators=["unigram"], out=tmp_path,
                        budget="smoke")
    run_matrix(req, registry=registry)
    old = tmp_path / "old"
    old.mkdir()
    con = sqlite3.connect(old / "index.sqlite")  # the schema of an older seqify: no tokenizer_seed column
    con.execute(SCHEMA.replace("    tokenizer_seed INTEGER, -- NULL: the tokenizer was fitted with the run seed "
                               "(or loaded)\n", ""))
    columns = "key, modality, dataset, tokenizer, orderer, train_orderer, generator, budget, seed, status, reason, " \
              "results_json, out_dir, finished_at"
    assert "tokenizer_seed" not in {r[1] for r in con.execute("PRAGMA table_info(cells)")}
    new = sqlite3.connect(tmp_path / "index.sqlite")
    con.executemany(f"INSERT INTO cells ({columns}) VALUES ({','.join('?' * 14)})",
                    new.execute(f"SELECT {columns} FROM cells").fetchall())
    con.commit()
    con.close()
    resumed = run_matrix(MatrixRequest(modalities=["toy"], orderers=["raster", "reverse"], generators=["unigram"],
                                       out=old, budget="smoke"), registry=registry)
    assert resumed.ran == 0 and resumed.reused == 2
    con = sqlite3.connect(old / "index.sqlite")
    assert "tokenizer_seed" in {r[1] for r in con.execute("PRAGMA table_info(cells)")}
    assert [r["tokenizer_seed"] for r in resumed.rows] == [0, 0]  # fitted with the run seed
    more = run_matrix(MatrixRequest(modalities=["toy"], orderers=["raster"], generators=["unigram"],
                                    tokenizer_seeds=[1], out=old, budget="smoke"), registry=registry)
    assert more.ran == 1 and con.execute("SELECT count(*) FROM cells").fetchone()[0] == 3


# ------------------------------------------------------------------ the CLI


def test_cli_parses_seeds_and_tokenizer_seeds(tmp_path, monkeypatch):
    import seqify.bench
    import seqify.matrix
    import seqify.modelability

    asked = []

    def fake(kind):
        def run(req, *args, **kw):
            asked.append((kind, req))
            if kind == "matrix":
                return MatrixResult([], req.out, 0, 0, {})
            return seqify.modelability.ModelabilityResult([], req.out, {})
        return run

    monkeypatch.setattr(seqify.matrix, "run_matrix", fake("matrix"))
    monkeypatch.setattr(seqify.modelability, "run_modelability", fake("modelability"))
    state = tmp_path / "tokenizer_state.pt"
    res = runner.invoke(app, ["matrix", "--modalities", "toy", "--orderers", "raster", "--seeds", "0, 1,2",
                              "--tokenizer-seeds", "3,4", "--tokenizer-state", str(state), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["modelability", "--modality", "toy", "--tokenizers", "digits", "--seeds", "5",
                              "--tokenizer-seeds", "6,7", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    (_, matrix), (_, modelability) = asked
    assert matrix.seeds == [0, 1, 2] and matrix.tokenizer_seeds == [3, 4] and matrix.tokenizer_state == state
    assert modelability.seeds == [5] and modelability.tokenizer_seeds == [6, 7] and modelability.tokenizer_state is None
    bad = runner.invoke(app, ["matrix", "--modalities", "toy", "--orderers", "raster", "--seeds", "0,one",
                              "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "--seeds '0,one': expected comma-separated integers" in bad.output
    monkeypatch.setattr(seqify.bench, "run_bench", lambda req, rep: asked.append(("bench", req)) or
                        seqify.bench.BenchResult(None, req.out, {}))
    res = runner.invoke(app, ["bench", "--modality", "toy", "--orderer", "raster", "--tokenizer-seed", "9",
                              "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert asked[-1][1].tokenizer_seed == 9 and asked[-1][1].tokenizer_state is None


def test_modelability_over_seeds_keeps_a_row_per_seed_and_plots_the_mean(tmp_path, registry):
    from seqify.modelability import ModelabilityRequest, run_modelability

    res = run_modelability(ModelabilityRequest(modality="toy", tokenizers=["digits", "shuffled"], out=tmp_path,
                                               generator="unigram", budget="smoke", seeds=[0, 1]), registry=registry)
    assert sorted((r["tokenizer"], r["seed"]) for r in res.rows) == [
        ("digits", 0), ("digits", 1), ("shuffled", 0), ("shuffled", 1)]
    assert res.files["plot"] == "modelability.png" and (tmp_path / "modelability.png").stat().st_size > 1000
    summary = [r for r in csv.DictReader((tmp_path / res.files["summary_csv"]).open())
               if r["metric"] == "bits_per_item"]
    assert sorted((r["tokenizer"], r["n"], r["seeds"]) for r in summary) == [
        ("digits", "2", "0,1"), ("shuffled", "2", "0,1")]
    table = list(csv.DictReader((tmp_path / "modelability.csv").open()))
    assert {"seed", "tokenizer_seed"} <= set(table[0])
