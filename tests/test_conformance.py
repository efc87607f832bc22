"""The conformance kit (seqify.testing) over every registered component, and proof that
its checks catch the deliberately broken doubles."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import torch

from seqify.hookspecs import hookimpl
from seqify.plugins import build_registry
from seqify.testing import (
    CHECKS,
    PeekingConfig,
    PeekingGenerator,
    ToyModality,
    ToyPlugin,
    ToyTokenizer,
    UnigramGenerator,
    UnnormalizedGenerator,
    check_no_peeking,
    check_normalized,
    check_order_invariant_modelability,
    check_registered,
    register_item_source,
    run_conformance,
    tiny_generator,
)
from seqify.types import blocks_of_one

ROOT = Path(__file__).resolve().parents[1]

# Built at collection (conftest limits the plugins to the built-ins), so a component a
# plugin registers gets its own test case without editing this file.
REGISTRY = build_registry([ToyPlugin()], warn=False)
GENERATORS = REGISTRY.names("generator")
ORDERERS = REGISTRY.names("orderer")
#: tokenizers whose items take more than a few seconds to make (none today: the molecule
#: and Sudoku modalities' example_items are a few fixed SMILES and 6 generated puzzles)
SLOW_TOKENIZERS: set[tuple[str, str]] = set()
TOKENIZERS = [
    pytest.param(i.modality, i.name, id=f"{i.modality}/{i.name}",
                 marks=[pytest.mark.slow] if (i.modality, i.name) in SLOW_TOKENIZERS else [])
    for i in REGISTRY.infos("tokenizer")
]


def _failures(rows) -> str:
    return "\n".join(f"{r.kind} {r.name} {r.check}: {r.reason}" for r in rows if r.status == "failed")


# ------------------------------------------------------------- every registered component


def test_the_registry_has_the_built_in_components():
    assert {"causal", "masked", "unigram"} <= set(GENERATORS)
    assert {"raster", "reverse", "random", "margin", "bfs", "nodes-first", "learned"} <= set(ORDERERS)
    assert {("molecule", "graph"), ("molecule", "smiles"), ("sudoku", "cells"), ("toy", "digits")} <= {
        (i.modality, i.name) for i in REGISTRY.infos("tokenizer")
    }


@pytest.mark.parametrize("name", GENERATORS)
def test_registered_generator_conforms(name):
    rows = check_registered("generator", name, registry=REGISTRY)
    assert not _failures(rows), _failures(rows)
    assert {r.check: r.status for r in rows} == {
        "check_generator": "passed", "check_no_peeking": "passed", "check_normalized": "passed"
    }


@pytest.mark.parametrize("name", ORDERERS)
def test_registered_orderer_conforms(name):
    rows = check_registered("orderer", name, registry=REGISTRY)
    assert not _failures(rows), _failures(rows)
    if not any(r.status == "passed" for r in rows):
        pytest.skip(f"orderer {name!r} serves none of the kit's probe structures: "
                    + "; ".join(r.reason for r in rows))
    for r in rows:
        if r.status == "skipped":
            assert name in r.reason  # an orderer that refuses a structure says why, by name


@pytest.mark.parametrize(("modality", "name"), TOKENIZERS)
def test_registered_tokenizer_conforms(modality, name):
    start = time.perf_counter()
    rows = check_registered("tokenizer", name, registry=REGISTRY, modality=modality)
    assert not _failures(rows), _failures(rows)
    assert [r.status for r in rows] == ["passed"]
    assert time.perf_counter() - start < 30, "too slow for the default tests: add it to SLOW_TOKENIZERS"


def test_run_conformance_reports_every_component_and_check():
    rows = run_conformance(REGISTRY)
    assert not _failures(rows), _failures(rows)
    assert {r.status for r in rows} <= {"passed", "skipped"}
    assert {r.name for r in rows if r.kind == "generator"} == set(GENERATORS)
    assert {r.name for r in rows if r.kind == "orderer"} == set(ORDERERS)
    assert {r.name for r in rows if r.kind == "tokenizer"} == {f"{i.modality}/{i.name}" for i in REGISTRY.infos("tokenizer")}
    runner = [r for r in rows if r.kind == "runner"]
    assert [(r.check, r.status) for r in runner] == [("check_order_invariant_modelability", "passed")]
    assert {r.check.split("[")[0] for r in rows} <= set(CHECKS)


def test_a_broken_registered_generator_is_reported_not_raised():
    class Plugin:
        @hookimpl
        def register_generators(self, register):
            register("peeking", "seqify.testing:PeekingGenerator", "reads the next slot's true value")
            register("missing", "seqify.testing:NoSuchGenerator", "cannot be imported")

    reg = build_registry([Plugin()], warn=False)
    rows = {r.check: r for r in check_registered("generator", "peeking", registry=reg)}
    assert rows["check_no_peeking"].status == "failed"
    assert "peeking peeks under order 'raster'" in rows["check_no_peeking"].reason
    assert rows["check_generator"].status == "passed"  # finite, <= 0: only the kit's new checks see the leak
    [load] = check_registered("generator", "missing", registry=reg)
    assert (load.check, load.status) == ("load", "failed") and "NoSuchGenerator" in load.reason


# ------------------------------------------------------------- tokenizers: items from the modality


class StrictToy(ToyModality):
    """Judges every round trip a failure."""

    def items_equal(self, decoded, item):
        return False


class ChosenItems(ToyModality):
    """Gives the items in ``ITEMS`` and records how it was asked."""

    ITEMS = ["0123", "4567", "8901"]
    calls: list = []

    def example_items(self, n, seed=0):
        ChosenItems.calls.append((n, seed))
        return self.ITEMS[:n]


def _toy_registry(modality_cls):
    class Plugin:
        @hookimpl
        def register_modalities(self, register):
            register("custom", modality_cls, "a toy modality variant")

        @hookimpl
        def register_tokenizers(self, register):
            register("digits", ToyTokenizer, "one slot per digit", modality="custom")

    return build_registry([Plugin()], warn=False)


def test_tokenizer_round_trips_are_judged_by_the_modality():
    [row] = check_registered("tokenizer", "digits", registry=_toy_registry(StrictToy), modality="custom")
    assert row.status == "failed" and "item 0: round trip gave" in row.reason  # lossless, yet items_equal says no
    [row] = check_registered("tokenizer", "digits", registry=REGISTRY, modality="toy")
    assert row.status == "passed"  # the same tokenizer under the plain toy modality


def test_tokenizer_items_come_from_the_modality(monkeypatch):
    monkeypatch.setattr(ChosenItems, "calls", [])
    reg = _toy_registry(ChosenItems)
    [row] = check_registered("tokenizer", "digits", registry=reg, n_items=2, seed=5)
    assert (row.status, row.reason) == ("passed", "2 items") and ChosenItems.calls == [(2, 5)]
    monkeypatch.setattr(ChosenItems, "ITEMS", ["0123", "45x7"])
    [row] = check_registered("tokenizer", "digits", registry=reg)
    assert row.status == "failed" and "expected 4 digits, got '45x7'" in row.reason


def test_deprecated_item_sources_still_work_and_win(monkeypatch):
    import seqify.testing.conformance

    monkeypatch.setattr(seqify.testing.conformance, "_ITEM_SOURCES", {})
    with pytest.warns(DeprecationWarning, match="register_item_source is deprecated"):
        register_item_source("custom", lambda n: ToyModality.make(n, 0), lambda a, b: a == b)
    [row] = check_registered("tokenizer", "digits", registry=_toy_registry(StrictToy), n_items=4)
    assert row.status == "passed" and row.reason.startswith("4 items; items from register_item_source")


# ------------------------------------------------------------- the core names no plugin


def _core_modules():
    return sorted((ROOT / "seqify").rglob("*.py"))


def test_the_core_imports_no_plugin():
    with open(ROOT / "pyproject.toml", "rb") as f:
        builtin = set(tomllib.load(f)["project"]["entry-points"]["seqify"].values())
    assert {"seqify_sudoku", "seqify_molecule"} <= builtin
    found = []
    for path in _core_modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
                  in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
                names = [str(node.args[0].value)]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top.startswith("seqify_") or top in builtin:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not found, "\n".join(found)


def test_the_kit_never_branches_on_a_learned_flag():
    paths = sorted((ROOT / "seqify" / "testing").glob("*.py"))
    assert paths
    for path in paths:
        tree = ast.parse(path.read_text(), str(path))
        attrs = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "learned"]
        strings = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value == "learned"]
        assert not attrs and not strings, f"{path.name} reads a 'learned' flag at lines {attrs + strings}"


# ------------------------------------------------------------- the checks catch what they claim


def test_peeking_generator_is_caught_naming_generator_order_and_slot():
    with pytest.raises(AssertionError, match=r"PeekingGenerator peeks under order 'raster': changing the value of "
                                             r"slot \d+ of item \d+ \(block \d+\) changed the score of slot \d+"):
        check_no_peeking(PeekingGenerator)


def test_peeking_generator_without_its_leak_passes_and_is_not_vacuous():
    summary = check_no_peeking(PeekingGenerator, config=PeekingConfig(peek=0))
    assert set(summary["orders"]) == {"raster", "reverse", "random"}  # caps.blocks is False
    assert summary["sensitive"] > 0  # its scores do depend on earlier slots


def test_peeking_is_caught_on_a_model_instance():
    torch.manual_seed(0)
    from seqify.testing import PROBE_SPEC

    model = PeekingGenerator(PROBE_SPEC)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(AssertionError, match="my-model peeks"):
        check_no_peeking(model, randomize=True, name="my-model")  # randomizes a copy
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the caller's model is left alone
    with pytest.raises(AssertionError, match="my-model peeks"):
        check_no_peeking(model, name="my-model")  # as it is


def test_a_block_whose_slots_see_each_other_is_caught():
    masked = REGISTRY.get("generator", "masked")

    class IgnoresBlocks(masked):
        """Scores a block's slots one after the other instead of together."""

        def score(self, batch, order=None, orderer=None):
            scores, _ = super().score(batch, blocks_of_one(batch, order.perm))
            return scores, order

    with pytest.raises(AssertionError, match=r"IgnoresBlocks peeks under order 'random-blocks-of-2'"):
        check_no_peeking(IgnoresBlocks)


def test_check_normalized_catches_probabilities_that_do_not_sum_to_one():
    with pytest.raises(AssertionError, match=r"UnnormalizedGenerator is not normalized under order 'raster'.*1\.105"):
        check_normalized(UnnormalizedGenerator)
    totals = check_normalized(UnigramGenerator)
    assert all(abs(v - 1) < 1e-4 for v in totals.values())
    assert {"raster, 0 given", "raster, 1 given", "shuffled-blocks-of-2, 1 given", "adaptive, 0 given"} <= set(totals)


def test_check_normalized_catches_a_slot_that_reads_its_own_value():
    masked = REGISTRY.get("generator", "masked")

    class SeesEverything(masked):
        def _logp(self, prep, gid_BL, known_BL):
            return super()._logp(prep, gid_BL, torch.ones_like(known_BL))

    with pytest.raises(AssertionError, match=r"SeesEverything is not normalized.*slot \d+ over its values"):
        check_normalized(SeesEverything)


def test_tiny_generator_is_deterministic():
    a = tiny_generator(REGISTRY.get("generator", "causal"), seed=3)
    b = tiny_generator(REGISTRY.get("generator", "causal"), seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not a.training


def test_order_invariant_modelability_with_the_unigram_double():
    res = check_order_invariant_modelability(REGISTRY)
    assert set(res) == {"raster", "random"}
    assert res["raster"]["nats_per_token"] == pytest.approx(res["random"]["nats_per_token"], abs=1e-6)
    assert res["raster"]["kind"] == "exact" and res["random"]["kind"] == "estimate"
    assert res["random"]["n_items"] == 23


def test_order_invariant_modelability_catches_order_dependent_bookkeeping(monkeypatch):
    import seqify.evaluate

    real = seqify.evaluate.modelability

    def counts_tokens_once_per_order(model, table, orderer, **kw):
        out = real(model, table, orderer, **kw)
        if orderer.stochastic:  # the classic slip: divide by tokens x orders
            out["nats_per_token"] /= kw.get("orders_per_item", 1)
        return out

    monkeypatch.setattr(seqify.evaluate, "modelability", counts_tokens_once_per_order)
    with pytest.raises(AssertionError, match="nats_per_token .* under 'random' but .* under 'raster'"):
        check_order_invariant_modelability(REGISTRY)


# ------------------------------------------------------------- the benchmark script


def test_benchmark_script_prints_the_table_and_catches_the_broken_doubles():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "conformance.py"), "--kinds", "generator,runner"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "check_no_peeking" in out.stdout and "causal" in out.stdout and "masked" in out.stdout
    assert "PeekingGenerator" in out.stdout and "caught" in out.stdout
