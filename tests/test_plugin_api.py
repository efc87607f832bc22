"""The stable plugin API: members derived from the protocols, defaults for what an older
plugin lacks, the core naming no plugin, capability-based defaults, transfer evaluation."""

import ast
import json
import tomllib
import warnings
from pathlib import Path

import pytest

from seqify import protocols
from seqify.data import RowReport
from seqify.bench import BenchRequest, check_applicable, default_generator, resolve_cell, run_bench, run_sample
from seqify.matrix import MatrixRequest, run_matrix
from seqify.plugins import DEFAULT_PLUGINS, build_registry
from seqify.protocols import PluginCompatibilityWarning, optional_members, protocol_members, required_members
from tests import legacy_plugin

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def registry():
    return build_registry([legacy_plugin])


# ------------------------------------------------------------------ derived members


def test_required_and_optional_members_are_derived_from_the_protocols():
    for kind, (protocol, defaults) in {"modality": (protocols.Modality, protocols.BaseModality),
                                       "tokenizer": (protocols.Tokenizer, protocols.BaseTokenizer),
                                       "generator": (protocols.Generator, protocols.BaseGenerator)}.items():
        members = set(protocol_members(protocol))
        required, optional = set(required_members(kind)), set(optional_members(kind))
        assert required | optional == members - {"name"} and not required & optional
        assert all(hasattr(defaults, m) for m in optional) and not any(hasattr(defaults, m) for m in required)
    # what API 1 documented as required is exactly what API 2 requires
    assert set(required_members("modality")) == {"datasets", "task", "load", "budget", "templates", "evaluate", "render"}
    assert set(required_members("tokenizer")) == {"spec", "encode", "decode"}
    static = type("S", (), {"infer_orders": None})
    assert set(required_members("orderer", static)) == {"check", "train_orders", "infer_orders"}
    assert "select" not in protocol_members(protocols.StaticOrderer)  # no member implemented only to refuse it
    assert set(required_members("orderer", type("A", (), {"adaptive": True}))) == {"check", "train_orders", "select"}
    assert set(required_members("orderer", type("T", (), {}))) == {"check", "train_orders", "wrap"}
    assert protocols.API_VERSION == 2


def test_the_built_in_orderers_are_each_one_kind(registry):
    kinds = {name: protocols.orderer_kind(registry.get("orderer", name)) for name in registry.names("orderer")}
    assert kinds["raster"] == "static" and kinds["margin"] == "adaptive" and kinds["learned"] == "trainable"
    for name, kind in kinds.items():
        cls = registry.get("orderer", name)
        assert hasattr(cls, "infer_orders") == (kind == "static"), name
        assert hasattr(cls, "select") == (kind == "adaptive"), name


# ------------------------------------------------------------------ an API-1 plugin


def test_a_plugin_written_against_the_previous_api_loads_with_one_warning_per_component():
    reg = build_registry([legacy_plugin])
    for kind, name, modality, lacking in [
        ("modality", "parity", None, "file_datasets, config_model, default_tokenizer, headline_metrics"),
        ("tokenizer", "bits", "parity", "config_model, takes_dataset"),
        ("orderer", "parity-first", None, "config_model, produces_blocks, train_signature, wrap, modelability"),
    ]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cls = reg.get(kind, name, modality)
            reg.get(kind, name, modality)  # loaded once: no second warning
        found = [w for w in caught if issubclass(w.category, PluginCompatibilityWarning)]
        assert len(found) == 1, [str(w.message) for w in caught]
        message = str(found[0].message)
        assert f"{kind} {name!r}" in message and lacking in message and "defaults" in message
        assert cls.__module__ == "tests.legacy_plugin.parity"
    orderer = reg.get("orderer", "parity-first")()
    assert orderer.wrap("the generator", None) == "the generator"  # the default wrap is the identity
    assert orderer.diagnostics(None, None, out=Path("."), train_log=None, device="cpu", seed=0) == {}


def test_the_api_1_plugin_runs_in_a_matrix_beside_sudoku_and_qm9(registry, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginCompatibilityWarning)
        result = run_matrix(MatrixRequest(modalities=["parity", "sudoku", "molecule"], orderers=["parity-first", "raster"],
                                          generators=["causal"], out=tmp_path, budget="smoke", steps=5), registry=registry)
    rows = {(r["modality"], r["orderer"]): r for r in result.rows}
    assert len(rows) == 6
    for key in [("parity", "parity-first"), ("parity", "raster"), ("sudoku", "parity-first"), ("sudoku", "raster"),
                ("molecule", "raster")]:
        assert rows[key]["status"] == "done", rows[key]
    # the cell it cannot serve says why (the graph tokenization has two kinds)
    refused = rows[("molecule", "parity-first")]
    assert refused["status"] == "not_applicable" and "parity-first" in refused["reason"] and "2 kinds" in refused["reason"]
    parity = json.loads((tmp_path / "cells" / "parity-default-parity-first-causal" / "results.json").read_text())
    assert 0.0 <= parity["metrics"]["parity_correct"] <= 1.0 and parity["metrics"]["n"] == 16
    assert parity["modelability"]["kind"] == "exact" and parity["modelability"]["nats_per_token"] > 0
    assert "order_diagnostics" not in parity  # the default diagnostics are empty


# ------------------------------------------------------------------ the core names no plugin


def _builtin_component_names(reg) -> set[str]:
    return {i.name for kind in ("modality", "tokenizer", "orderer", "generator") for i in reg.infos(kind)
            if i.plugin in DEFAULT_PLUGINS}


def test_the_core_never_branches_on_a_plugin_name_or_a_learned_flag(registry):
    names = _builtin_component_names(registry)
    plugin_modules = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["seqify"].values())
    problems = []
    for path in sorted((ROOT / "seqify").rglob("*.py")):
        tree = ast.parse(path.read_text())
        # the conformance kit names its own probe orders ("random", "raster" built in place)
        kit = "testing" in path.relative_to(ROOT / "seqify").parts
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and not kit:
                for side in [node.left, *node.comparators]:
                    for const in ast.walk(side):
                        if isinstance(const, ast.Constant) and const.value in names:
                            problems.append(f"{path.name}:{node.lineno} compares with {const.value!r}")
            if isinstance(node, ast.Attribute) and node.attr == "learned":
                problems.append(f"{path.name}:{node.lineno} reads .learned")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                problems += [f"{path.name}:{node.lineno} imports {m}" for m in mods if m.split(".")[0] in plugin_modules]
    assert not problems, problems


def test_the_default_generator_is_chosen_by_capability(registry):
    chosen = {name: default_generator(registry, registry.get("orderer", name)()) for name in
              ("raster", "random", "margin", "entropy", "learned", "parity-first")}
    assert chosen == {"raster": "causal", "random": "causal", "margin": "masked", "entropy": "masked",
                      "learned": "masked", "parity-first": "causal"}
    cell = resolve_cell(BenchRequest(modality="sudoku", orderer="margin", out="x", budget="smoke"), registry)
    assert cell.names["generator"] == "masked"


def test_a_trainable_orderer_checks_its_generator_capability_before_any_data_loads(registry):
    cell = resolve_cell(BenchRequest(modality="sudoku", orderer="learned", generator="causal", out="x", budget="smoke"),
                        registry)
    assert check_applicable(cell) is None  # the learned order runs on the causal generator's block layout
    cell = resolve_cell(BenchRequest(modality="sudoku", orderer="learned", generator="causal", out="x", budget="smoke",
                                     overrides={"orderer": {"margin_init": 5.0}}), registry)
    reason = check_applicable(cell)  # ... but not with a setting that reads every open slot's predictions
    assert reason is not None and "margin_init" in reason and "masked" in reason
    no_states = protocols.GeneratorCaps(any_order=True, blocks=False, hidden_states=False)
    reason = registry.get("orderer", "learned")().check(cell.tokenizer.spec, no_states)
    assert reason is not None and "hidden_states" in reason


def test_an_orderer_may_prefer_a_generator_among_those_it_accepts(registry):
    class Prefers(registry.get("orderer", "raster")):
        def generator_preference(self, caps):
            return 1 if caps.adaptive else 0

    assert default_generator(registry, registry.get("orderer", "raster")()) == "causal"
    assert default_generator(registry, Prefers()) == "masked"  # preferred over causal's higher default_priority


def test_the_training_orderer_is_built_with_its_settings(registry):
    cell = resolve_cell(BenchRequest(modality="sudoku", orderer="raster", generator="causal", train_orderer="fixed-random",
                                     out="x", budget="smoke", overrides={"train_orderer": {"seed": 7}}), registry)
    assert "7" in repr(cell.train_orderer) and cell.train_orderer is not cell.orderer


# ------------------------------------------------------------------ transfer evaluation


def test_sample_completes_a_public_csv_with_a_model_trained_on_generated_puzzles(registry, tmp_path):
    run = tmp_path / "run"
    run_bench(BenchRequest(modality="sudoku", orderer="margin", generator="masked", train_orderer="random",
                           budget="smoke", steps=5, out=run), registry=registry)
    trained = json.loads((run / "results.json").read_text())
    assert trained["dataset"] == "generated"
    # the public Kaggle layout, with a pandas index column, two malformed rows among them
    csv = tmp_path / "public.csv"
    splits = registry.get("modality", "sudoku")().load("generated", None, seed=5, limit=8, report=RowReport())
    rows = [f"{i},{p.puzzle},{p.solution}" for i, p in enumerate(splits.test[:6])]
    rows.insert(2, "99,12345,678")
    rows.append("100," + "1" * 81 + "," + "2" * 81)
    csv.write_text(",quizzes,solutions\n" + "\n".join(rows) + "\n")
    got = run_sample(run, tmp_path / "transfer", dataset="csv", data=csv, registry=registry)
    res = got.results
    assert res["trained_on"] == {"dataset": "generated", "data": None}
    assert res["evaluated_on"]["dataset"] == "csv" and res["evaluated_on"]["data"] == str(csv)
    assert res["evaluated_on"]["bad_rows"]["rows_skipped"] == 2
    assert res["metrics"]["n"] == 6  # every good puzzle of the CSV completed, none dropped
    assert json.loads((tmp_path / "transfer" / "sample_results.json").read_text())["dataset"] == "csv"
