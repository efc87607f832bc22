"""The molecule plugin: loaders, tokenizers, graph orderers, metrics, rendering."""

from __future__ import annotations

import csv
import itertools
import sys
from pathlib import Path

import pytest
import torch
from rdkit import Chem

from seqify.data import RowReport
from seqify.errors import DataError
from seqify.protocols import GeneratorCaps, Modality, Splits, Tokenizer
from seqify.types import KindSpec, TokenizerSpec, TokenSet, collate

from seqify_molecule import chem, datasets
from seqify_molecule.chem import sanitized_smiles, to_pyg
from seqify_molecule.metrics import FCDScorer, molecule_metrics
from seqify_molecule.modality import MOLECULE_BUDGETS, Molecule
from seqify_molecule.orderers import BFS, NodesFirst
from seqify_molecule.tokenizers import GraphTokenizer, SmilesTokenizer, infer_dataset, smiles_tokens

ZINC_SUBSET = Path("/work/shared/data/zinc250k_subset.smi")
needs_zinc = pytest.mark.skipif(not ZINC_SUBSET.is_file(), reason="ZINC subset not available")


# ---------------------------------------------------------------- fixtures


def _first_qm9(n: int, charged: int = 40) -> list[str]:
    """The first ``n`` QM9 molecules of part 1, plus ``charged`` charged ones (canonical)."""
    rows = datasets._read_qm9_csv(datasets.qm9_files()[0])
    plain, with_charge = [], []
    for _, _, raw in rows:
        smiles, _ = chem.canonicalize(raw, chem.get_vocab("qm9"))
        if smiles is None:
            continue
        if ("+" in smiles or "-]" in smiles) and len(with_charge) < charged:
            with_charge.append(smiles)
        elif len(plain) < n:
            plain.append(smiles)
        if len(plain) >= n and len(with_charge) >= charged:
            break
    return plain + with_charge


@pytest.fixture(scope="module")
def qm9_items() -> list[str]:
    return _first_qm9(300)


@pytest.fixture(scope="module")
def zinc_items() -> list[str]:
    if not ZINC_SUBSET.is_file():
        pytest.skip("ZINC subset not available")
    vocab = chem.get_vocab("zinc250k")
    out = []
    with open(ZINC_SUBSET) as fh:
        for line in itertools.islice(fh, 300):
            smiles, reason = chem.canonicalize(line.split()[0], vocab)
            assert reason is None
            out.append(smiles)
    return out


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_NONNUMERIC)
        w.writerow(header)
        w.writerows(rows)
    return path


# ---------------------------------------------------------------- loaders


def test_qm9_files_found_without_importing_qm9pack():
    files = datasets.qm9_files()
    assert [f.name for f in files] == ["qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv"]
    assert all(f.is_file() for f in files)
    assert "qm9pack" not in sys.modules


def test_qm9_test_ids_all_found():
    ids = datasets.qm9_test_ids()
    assert len(ids) == len(set(ids)) == 13_082
    present = set()
    for f in datasets.qm9_files():
        present.update(datasets._qm9_id(ident) for _, ident, _ in datasets._read_qm9_csv(f))
    assert len(present) == 130_831
    assert len(set(ids) & present) == 13_082


def test_qm9_bad_rows_reported_and_skipped(tmp_path):
    path = _write_csv(
        tmp_path / "qm9_tiny.csv",
        ["XYZ_file", "Index", "SMILES"],
        [
            ["a.xyz", 1, "CCO"],
            ["b.xyz", 2, "C1CC(("],  # unparseable
            ["c.xyz", 3, "CCS"],  # S is not a QM9 element
            ["d.xyz", 4, "CCCCCCCCCC"],  # 10 heavy atoms
            ["e.xyz", 5, "[NH3+]CC([O-])=O"],  # charged, valid
            ["f.xyz", 6, "C[C@H](N)O"],  # GDB id 6 is a test id; stereo is dropped
            ["g.xyz", 7, "C[OH2+]"],  # a charged form QM9 does not have
        ],
    )
    report = RowReport()
    train, val, test, info = datasets.load_qm9(path, seed=0, limit=None, report=report, use_cache=False)
    glycine = Chem.MolToSmiles(Chem.MolFromSmiles("[NH3+]CC([O-])=O"))
    assert sorted(train + val) == sorted(["CCO", glycine])
    assert test == ["CC(N)O"]
    assert info["test_ids_found"] == 1 and info["rows_skipped"] == 4
    bad = {b.row: b.reason for b in report.bad}
    assert set(bad) == {2, 3, 4, 7}
    assert all(b.source == "qm9_tiny.csv" for b in report.bad)
    assert "cannot parse" in bad[2]
    assert "element S" in bad[3]
    assert "10 heavy atoms" in bad[4] and "9" in bad[4]
    assert "charged form O+" in bad[7]
    assert report.read == 7


def test_qm9_csv_without_columns_is_a_clear_error(tmp_path):
    path = _write_csv(tmp_path / "x.csv", ["a", "b"], [["1", "C"]])
    with pytest.raises(DataError, match="SMILES"):
        datasets.load_qm9(path, seed=0, limit=None, report=RowReport(), use_cache=False)


def test_zinc_standard_csv(tmp_path):
    rows = [
        [0, "CC(C)(C)c1ccc2occ(CC(=O)Nc3ccccc3F)c2c1\n", 5.0, 0.7, 2.0],
        [1, "C[NH+]1CCC(C(=O)[O-])CC1\n", 0.1, 0.6, 3.0],
        [2, "CC[Se]C\n", 1.0, 0.5, 2.0],  # Se: outside the vocabulary
        [3, "C" * 39 + "\n", 9.0, 0.1, 1.0],  # 39 heavy atoms
        [4, "not a smiles\n", 0, 0, 0],
    ] + [[5 + k, "c1ccccc1" + "C" * k + "\n", 1.0, 0.5, 1.5] for k in range(20)]
    path = _write_csv(tmp_path / "250k_rndm_zinc_drugs_clean_3.csv", ["", "smiles", "logP", "qed", "SAS"], rows)
    report = RowReport()
    train, val, test, info = datasets.load_zinc250k(path, seed=0, limit=None, report=report, use_cache=False)
    kept = train + val + test
    assert len(kept) == 22 and len(test) == 2 and len(val) == 1
    assert "C[NH+]1CCC(C(=O)[O-])CC1" in kept
    assert all("\n" not in s for s in kept)
    bad = {b.row: b.reason for b in report.bad}
    assert set(bad) == {3, 4, 5}
    assert "element Se" in bad[3] and "39 heavy atoms" in bad[4] and "cannot parse" in bad[5]
    # seeded: the same seed gives the same split, another seed another one
    again = datasets.load_zinc250k(path, seed=0, limit=None, report=RowReport(), use_cache=False)
    other = datasets.load_zinc250k(path, seed=1, limit=None, report=RowReport(), use_cache=False)
    assert again[2] == test and other[2] != test


def test_zinc_smi_file_and_limit(tmp_path):
    path = tmp_path / "mols.smi"
    path.write_text("CCO mol1\nc1ccccc1O mol2\n\nCC(=O)O\n" + "".join(f"{'C' * k}O\n" for k in range(1, 30)))
    report = RowReport()
    train, val, test, info = datasets.load_zinc250k(path, seed=0, limit=5, report=report, use_cache=False)
    assert len(train) == 5 and info["n_train"] == 5
    assert len(val) <= 5
    assert report.skipped == 0 and report.read == 32


def test_zinc_missing_path_says_which_file():
    with pytest.raises(DataError, match=r"smiles.*\.smi"):
        Molecule().load("zinc250k", None, seed=0, limit=None, report=RowReport())


def test_load_cache_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQIFY_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "m.smi"
    path.write_text("CCO\nCCN\nC1CC(\n")
    r1, r2 = RowReport(), RowReport()
    first = datasets.load_zinc250k(path, seed=0, limit=None, report=r1)
    assert list((tmp_path / "cache" / "molecule").glob("zinc250k-*.json"))
    second = datasets.load_zinc250k(path, seed=0, limit=None, report=r2)
    assert first[:3] == second[:3]
    assert [str(b) for b in r1.bad] == [str(b) for b in r2.bad] and r2.skipped == 1


# ---------------------------------------------------------------- graph tokenizer


def test_graph_slot_counts_and_order():
    qm9, zinc = GraphTokenizer(dataset="qm9"), GraphTokenizer(dataset="zinc250k")
    assert qm9.spec.max_len == 45 and zinc.spec.max_len == 741
    assert isinstance(qm9, Tokenizer)
    assert qm9.spec.coord_names == ("i", "j") and qm9.spec.coord_sizes == (9, 9)
    assert qm9.spec.kinds[1].labels == ("none", "single", "double", "triple")
    assert qm9.spec.kinds[0].labels[0] == "none" and "N+" in qm9.spec.kinds[0].labels
    kinds, coords = qm9.layout()
    expected = [(i, j) for i in range(9) for j in range(i, 9)]
    assert [tuple(c) for c in coords.tolist()] == expected
    assert coords[:10].tolist() == [[0, j] for j in range(9)] + [[1, 1]]
    assert kinds.tolist() == [0 if i == j else 1 for i, j in expected]
    assert qm9.slot_index(1, 1) == 9 and qm9.slot_index(8, 8) == 44


def test_graph_encode_layout_and_bfs_numbering():
    tok = GraphTokenizer(dataset="qm9")
    ts = tok.encode("CC(=O)[O-]")  # acetate
    values = ts.values.tolist()
    atoms = [values[tok.slot_index(i, i)] for i in range(9)]
    labels = tok.spec.kinds[0].labels
    assert sorted(labels[a] for a in atoms if a) == ["C", "C", "O", "O-"]
    assert atoms[4:] == [0] * 5
    # every atom after the first has a bond to an earlier atom (BFS numbering)
    for j in range(1, 4):
        assert any(values[tok.slot_index(i, j)] for i in range(j))
    # no bond touches a "no atom" node
    assert all(values[tok.slot_index(i, j)] == 0 for i in range(9) for j in range(max(i + 1, 4), 9))
    assert ts.given.sum() == 0


def test_graph_round_trip_qm9(qm9_items):
    tok = GraphTokenizer(dataset="qm9")
    assert any("+" in s for s in qm9_items) and any("-]" in s for s in qm9_items)
    for s in qm9_items:
        mol = tok.decode(tok.encode(s))
        assert sanitized_smiles(mol) == s


def test_graph_round_trip_zinc(zinc_items):
    tok = GraphTokenizer(dataset="zinc250k")
    assert any("+" in s for s in zinc_items) and any("-]" in s for s in zinc_items)
    for s in zinc_items:
        assert sanitized_smiles(tok.decode(tok.encode(s))) == s


def test_graph_fit_infers_dataset(qm9_items, zinc_items):
    tok = GraphTokenizer()
    with pytest.raises(RuntimeError, match="fit"):
        tok.spec
    tok.fit(qm9_items)
    assert tok.spec.max_len == 45
    big = GraphTokenizer()
    big.fit(zinc_items)
    assert big.spec.max_len == 741
    assert infer_dataset(["CCO", "C[NH3+]"]).name == "qm9"
    assert infer_dataset(["CCS"]).name == "zinc250k"
    with pytest.raises(ValueError, match="Se"):
        infer_dataset(["C[Se]C"])


def test_graph_encode_errors_name_the_problem():
    tok = GraphTokenizer(dataset="qm9")
    with pytest.raises(ValueError, match="element S"):
        tok.encode("CCS")
    with pytest.raises(ValueError, match="10 heavy atoms"):
        tok.encode("CCCCCCCCCC")
    with pytest.raises(ValueError, match="cannot parse"):
        tok.encode("C1CC(")


def test_graph_decode_ignores_bonds_to_missing_atoms_and_keeps_charges():
    tok = GraphTokenizer(dataset="qm9")
    labels = tok.spec.kinds[0].labels
    values = torch.zeros(45, dtype=torch.long)
    values[tok.slot_index(0, 0)] = labels.index("N+")
    values[tok.slot_index(1, 1)] = labels.index("C")
    values[tok.slot_index(0, 1)] = 1
    values[tok.slot_index(1, 5)] = 2  # node 5 has no atom: ignored
    mol = tok.decode(tok.blank().with_values(values))
    assert mol.GetNumAtoms() == 2 and mol.GetNumBonds() == 1
    assert sanitized_smiles(mol) == "C[NH3+]"
    values[tok.slot_index(2, 2)] = 99  # outside the atom vocabulary
    assert tok.decode(tok.blank().with_values(values)) is None


def test_to_pyg():
    data = to_pyg("C=CO", dataset="qm9")
    assert data.num_nodes == 3
    assert data.x.dtype == torch.long and data.x.shape == (3,)
    assert data.edge_index.shape == (2, 4) and data.edge_attr.tolist().count(2) == 2
    # both directions of every bond
    pairs = set(map(tuple, data.edge_index.t().tolist()))
    assert all((j, i) in pairs for i, j in pairs)
    # the same numbering and ids as the graph tokenizer
    tok = GraphTokenizer(dataset="qm9")
    ts = tok.encode("C=CO")
    assert data.x.tolist() == [int(ts.values[tok.slot_index(i, i)]) for i in range(3)]
    for (i, j), b in zip(data.edge_index.t().tolist(), data.edge_attr.tolist()):
        assert int(ts.values[tok.slot_index(min(i, j), max(i, j))]) == b


# ---------------------------------------------------------------- SMILES tokenizer


def test_smiles_regex_tokens():
    assert smiles_tokens("C[NH3+]C(Cl)Br") == ["C", "[NH3+]", "C", "(", "Cl", ")", "Br"]
    assert smiles_tokens("C%12CC%12") == ["C", "%12", "C", "C", "%12"]
    assert smiles_tokens("C1=CC=CC=C1") == ["C", "1", "=", "C", "C", "=", "C", "C", "=", "C", "1"]
    with pytest.raises(ValueError, match="position 1"):
        smiles_tokens("CXC")


def test_smiles_tokenizer_round_trip_and_spec(qm9_items):
    tok = SmilesTokenizer(slack=2)
    with pytest.raises(RuntimeError, match="fit"):
        tok.spec
    train = qm9_items[:200]
    tok.fit(train)
    spec = tok.spec
    assert spec.variable_length and spec.end_kind == 0
    labels = spec.kinds[0].labels
    assert labels[-1] == "<end>" and spec.end_value == len(labels) - 1
    assert list(labels[:-1]) == sorted(labels[:-1])
    assert "c" not in labels  # kekulized: no aromatic atoms
    longest = max(len(smiles_tokens(chem.kekule_smiles(s))) for s in train)
    assert spec.max_len == longest + 1 + 2
    assert spec.coord_names == ("position",)
    for s in train:
        ts = tok.encode(s)
        assert int(ts.values[-1]) == spec.end_value
        assert ts.coords[:, 0].tolist() == list(range(len(ts)))
        assert sanitized_smiles(tok.decode(ts)) == s
    # decoding stops at the first end token (generated slots after it are ignored)
    ts = tok.encode(train[5])
    padded = torch.cat([ts.values, torch.zeros(3, dtype=torch.long)])
    assert sanitized_smiles(tok.decode(TokenSet(padded, torch.zeros_like(padded), torch.arange(len(padded))[:, None], torch.zeros(len(padded), dtype=torch.bool)))) == train[5]


def test_smiles_unknown_token_is_named():
    tok = SmilesTokenizer()
    tok.fit(["CCO", "CCN"])
    with pytest.raises(ValueError, match=r"'F'"):
        tok.encode("CCF")
    tok.fit(["C1CC1"])  # tokens: "1", "C", "<end>"
    one = tok.spec.kinds[0].labels.index("1")
    bad = TokenSet(torch.tensor([one, one, one]), torch.zeros(3, dtype=torch.long), torch.arange(3)[:, None], torch.zeros(3, dtype=torch.bool))
    assert tok.decode(bad) is None  # "111" does not parse
    out_of_range = bad.with_values(torch.tensor([0, 7, 0]))
    assert tok.decode(out_of_range) is None


def _same_tokens(a: TokenSet, b: TokenSet) -> bool:
    return all(torch.equal(x, y) for x, y in zip((a.values, a.kinds, a.coords, a.given), (b.values, b.kinds, b.coords, b.given)))


def _through_torch_save(state: dict, path: Path) -> dict:
    torch.save(state, path)
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("make", [lambda: GraphTokenizer(), lambda: GraphTokenizer(dataset="qm9"), lambda: SmilesTokenizer(slack=3)])
def test_tokenizer_state_round_trip_into_a_fresh_tokenizer(tmp_path, qm9_items, make):
    fitted = make()
    fitted.fit(qm9_items, device=torch.device("cpu"), seed=3)  # the protocol's keywords
    state = _through_torch_save(fitted.state_dict(), tmp_path / "tok.pt")
    fresh = make()  # never fitted
    fresh.load_state_dict(state)
    assert fresh.spec == fitted.spec and repr(fresh) == repr(fitted)
    assert fresh.state_dict() == fitted.state_dict()
    for s in qm9_items:
        a, b = fitted.encode(s), fresh.encode(s)
        assert _same_tokens(a, b)
        assert sanitized_smiles(fresh.decode(a)) == sanitized_smiles(fitted.decode(a)) == s
    assert all(_same_tokens(a, b) for a, b in zip(fitted.encode_batch(qm9_items[:5]), fresh.encode_batch(qm9_items[:5])))
    assert _same_tokens(fresh.blank(), fitted.blank())


def test_graph_state_keeps_a_fitted_zinc_vocabulary(tmp_path):
    fitted = GraphTokenizer()
    fitted.fit(["CCS", "CCO"])  # S: not in QM9, so fit picks ZINC250k
    state = _through_torch_save(fitted.state_dict(), tmp_path / "g.pt")
    assert state["dataset"] == "zinc250k" and state["max_atoms"] == 38
    fresh = GraphTokenizer()
    fresh.load_state_dict(state)
    assert fresh.spec == fitted.spec and fresh.spec.max_len == 741
    assert _same_tokens(fresh.encode("CCS"), fitted.encode("CCS"))


def test_tokenizer_state_errors_name_the_problem():
    graph, smiles = GraphTokenizer(), SmilesTokenizer()
    with pytest.raises(RuntimeError, match="fit"):
        graph.state_dict()
    with pytest.raises(RuntimeError, match="fit"):
        smiles.state_dict()
    smiles.fit(["CCO", "CCN"])
    qm9 = GraphTokenizer(dataset="qm9").state_dict()
    with pytest.raises(ValueError, match="state of tokenizer 'smiles'"):
        GraphTokenizer().load_state_dict(smiles.state_dict())
    with pytest.raises(ValueError, match="state of tokenizer 'graph'"):
        SmilesTokenizer().load_state_dict(qm9)
    with pytest.raises(ValueError, match="without a 'tokenizer' entry"):
        SmilesTokenizer().load_state_dict({"vocab": ["C"]})
    with pytest.raises(ValueError, match="format 99"):
        SmilesTokenizer().load_state_dict({**smiles.state_dict(), "format": 99})
    with pytest.raises(ValueError, match="slack=8.*slack=2"):
        SmilesTokenizer(slack=2).load_state_dict(smiles.state_dict())
    with pytest.raises(ValueError, match="ending with '<end>'"):
        SmilesTokenizer().load_state_dict({**smiles.state_dict(), "tokens": ["C", "O"]})
    with pytest.raises(ValueError, match="built for dataset 'zinc250k'.*'qm9'"):
        GraphTokenizer(dataset="zinc250k").load_state_dict(qm9)
    with pytest.raises(ValueError, match="differs from this version"):
        GraphTokenizer().load_state_dict({**qm9, "atom_labels": qm9["atom_labels"][:-1]})
    with pytest.raises(ValueError, match="unknown molecule dataset 'pcba'"):
        GraphTokenizer().load_state_dict({**qm9, "dataset": "pcba"})
    with pytest.raises(ValueError, match="without a 'tokenizer' entry"):
        GraphTokenizer().load_state_dict({})  # nothing to say which vocabulary
    GraphTokenizer(dataset="qm9").load_state_dict({})  # fixed by the constructor: nothing was learned


# ---------------------------------------------------------------- orderers


def _three_atom_batch() -> tuple[object, TokenizerSpec]:
    coords = [(i, j) for i in range(3) for j in range(i, 3)]  # canonical order
    c = torch.tensor(coords)
    ts = TokenSet(torch.zeros(6, dtype=torch.long), (c[:, 0] != c[:, 1]).long(), c, torch.zeros(6, dtype=torch.bool))
    spec = TokenizerSpec((KindSpec("atom", 3), KindSpec("bond", 4)), ("i", "j"), (3, 3), 6)
    return collate([ts]), spec


def _coords_in_order(batch, order) -> list[tuple[int, int]]:
    return [tuple(batch.coords[0, k].tolist()) for k in order.perm[0].tolist()]


def test_bfs_order_on_three_atoms():
    batch, _ = _three_atom_batch()
    order = BFS().infer_orders(batch, rng=torch.Generator().manual_seed(0))
    order.validate(batch)
    assert _coords_in_order(batch, order) == [(0, 0), (1, 1), (0, 1), (2, 2), (0, 2), (1, 2)]
    assert order.block[0].tolist() == list(range(6))


def test_nodes_first_order_on_three_atoms():
    batch, _ = _three_atom_batch()
    order = NodesFirst().train_orders(batch, progress=0.5, rng=torch.Generator().manual_seed(0))
    order.validate(batch)
    assert _coords_in_order(batch, order) == [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]


def test_graph_orders_valid_on_real_batches():
    tok = GraphTokenizer(dataset="qm9")
    batch = collate([tok.encode(s) for s in ("CCO", "c1ccncc1", "C[NH3+]")])
    rng = torch.Generator().manual_seed(0)
    for orderer in (BFS(), NodesFirst()):
        order = orderer.infer_orders(batch, rng=rng)
        order.validate(batch)
        seen = _coords_in_order(batch, order)
        assert len(seen) == 45 and len(set(seen)) == 45
    bfs = _coords_in_order(batch, BFS().infer_orders(batch, rng=rng))
    assert bfs[:6] == [(0, 0), (1, 1), (0, 1), (2, 2), (0, 2), (1, 2)]
    assert bfs[-1] == (7, 8)


def test_graph_orderers_refuse_non_graph_tokenizers():
    caps = GeneratorCaps()
    grid = TokenizerSpec((KindSpec("cell", 10),), ("row", "col"), (9, 9), 81)
    for orderer in (BFS(), NodesFirst()):
        reason = orderer.check(grid, caps)
        assert reason is not None and "graph tokenizer" in reason and "('row', 'col')" in reason
        assert orderer.check(GraphTokenizer(dataset="qm9").spec, caps) is None
        assert orderer.check(GraphTokenizer(dataset="qm9").spec, GeneratorCaps(any_order=False)) is not None


# ---------------------------------------------------------------- metrics, rendering, modality


def test_validity_rules():
    tok = GraphTokenizer(dataset="qm9")
    labels = tok.spec.kinds[0].labels
    values = torch.zeros(45, dtype=torch.long)
    values[tok.slot_index(0, 0)] = labels.index("C")
    for k in range(1, 6):  # a pentavalent carbon
        values[tok.slot_index(k, k)] = labels.index("F")
        values[tok.slot_index(0, k)] = 1
    pentavalent = tok.decode(tok.blank().with_values(values))
    assert pentavalent is not None and sanitized_smiles(pentavalent) is None
    two_fragments = Chem.MolFromSmiles("CC.O", sanitize=False)
    samples = [Chem.MolFromSmiles("CCO", sanitize=False), pentavalent, None, two_fragments, Chem.Mol()]
    m = molecule_metrics(samples, train=[], test=[], fcd=False)
    assert m["n_samples"] == 5 and m["validity"] == pytest.approx(2 / 5)
    assert m["valid_connected"] == pytest.approx(1 / 5)


def test_uniqueness_and_novelty():
    mols = [Chem.MolFromSmiles(s, sanitize=False) for s in ("CCO", "OCC", "CCN", "C=O", "C1CC1(")]
    m = molecule_metrics(mols, train=["CCO", "CCC"], test=[], fcd=False)
    assert m["validity"] == pytest.approx(4 / 5)
    assert m["uniqueness"] == pytest.approx(3 / 4)  # CCO twice
    assert m["novelty"] == pytest.approx(2 / 3)  # CCN, C=O new; CCO in train


def test_fcd_self_near_zero_other_positive(tmp_path, monkeypatch, qm9_items, zinc_items):
    monkeypatch.setenv("SEQIFY_CACHE", str(tmp_path))
    scorer = FCDScorer(exact_sqrtm=False)  # scipy's sqrtm is slow on a busy 2-core machine
    ref = qm9_items[:24]
    assert abs(scorer.distance(ref, ref, dataset="t")) < 1e-2
    cached = list((tmp_path / "fcd").glob("t-*.npz"))
    assert len(cached) == 1
    assert scorer.distance(zinc_items[:24], ref, dataset="t") > 1.0
    mols = [Chem.MolFromSmiles(s) for s in zinc_items[:20]] + [None]
    m = molecule_metrics(mols, train=[], test=ref, dataset="t", scorer=scorer)
    assert m["fcd"] > 1.0 and m["fcd_n_samples"] == 20 and m["fcd_n_reference"] == 24
    assert "number of samples" in m["fcd_note"]


def test_frechet_distance_matches_fcd_torch():
    from fcd_torch.utils import calculate_frechet_distance

    from seqify_molecule.metrics import frechet_distance

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 16, generator=g).double(), (torch.randn(200, 16, generator=g) * 1.5 + 0.3).double()
    args = (a.mean(0).numpy(), torch.cov(a.T).numpy(), b.mean(0).numpy(), torch.cov(b.T).numpy())
    assert frechet_distance(*args) == pytest.approx(float(calculate_frechet_distance(*args)), rel=1e-8)
    assert frechet_distance(args[0], args[1], args[0], args[1]) == pytest.approx(0.0, abs=1e-8)


def test_samples_smi_and_render(tmp_path):
    mod = Molecule()
    samples = [Chem.MolFromSmiles("OCC", sanitize=False), None, Chem.MolFromSmiles("C(C)(C)(C)(C)C", sanitize=False)]
    (path,) = mod.save_samples(samples, tmp_path)
    assert path.name == "samples.smi"
    assert path.read_text() == "CCO\nINVALID\nINVALID\n"
    png = mod.render(samples, tmp_path / "samples.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = mod.render([None], tmp_path / "none.png")
    assert empty.read_bytes()[:4] == b"\x89PNG"


def test_modality_templates_budget_and_protocol():
    mod = Molecule()
    assert isinstance(mod, Modality) and mod.task == "generate" and mod.datasets == ("qm9", "zinc250k")
    rng = torch.Generator().manual_seed(0)
    graph = mod.templates(GraphTokenizer(dataset="zinc250k"), [], 3, rng)
    assert len(graph) == 3 and all(len(t) == 741 and not t.given.any() and not t.values.any() for t in graph)
    smiles = SmilesTokenizer()
    smiles.fit(["CCO", "CCCCCC"])
    tmpl = mod.templates(smiles, [], 2, rng)
    assert len(tmpl[0]) == smiles.spec.max_len == 6 + 1 + 8
    from seqify.config import resolve_config

    for name in ("smoke", "quick", "full"):
        for dataset in mod.datasets:
            cfg = resolve_config(mod.budget(name, dataset=dataset))
            assert cfg.eval.n_samples >= 1
    assert resolve_config(mod.budget("full", dataset="qm9")).eval.n_samples == 10_000
    assert resolve_config(mod.budget("quick", dataset="zinc250k")).train.batch_size < MOLECULE_BUDGETS["quick"]["train"]["batch_size"]
    assert "per_dataset" in mod.budget("quick")


def test_evaluate_through_the_modality(qm9_items):
    splits = Splits(train=qm9_items[:50], val=[], test=qm9_items[50:70], info={"dataset": "qm9-test"})
    samples = [Chem.MolFromSmiles(s, sanitize=False) for s in qm9_items[:30]] + [None] * 10
    m = Molecule().evaluate(samples, splits)
    assert m["validity"] == pytest.approx(0.75) and m["novelty"] == 0.0
    assert m["fcd"] is not None and m["fcd"] > 0
    assert m["fcd_method"] == "fcd_torch.calculate_frechet_distance"


def test_novelty_counts_validation_molecules_as_known(qm9_items):
    train, val, test = qm9_items[:40], qm9_items[40:60], qm9_items[60:80]
    splits = Splits(train=train, val=val, test=test, info={"dataset": "qm9-test"})
    samples = [Chem.MolFromSmiles(s, sanitize=False) for s in val[:10] + train[:5]]
    m = Molecule().evaluate(samples, splits)
    assert m["novelty"] == 0.0  # validation molecules are training data in the GDSS/MoFlow protocol
    assert m["novelty_n_reference"] == len(set(train + val))
    assert "validation" in m["novelty_note"] and "non-test" in m["metric_rules"]
    fresh = [Chem.MolFromSmiles(s, sanitize=False) for s in test[:4]]
    assert Molecule().evaluate(fresh, splits)["novelty"] == 1.0


def test_novelty_reference_includes_molecules_cut_by_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQIFY_CACHE", str(tmp_path / "cache"))
    test_ids = set(datasets.qm9_test_ids())
    ids = [i for i in range(1, 200) if i not in test_ids][:30]
    chains = ["C" * k for k in range(1, 10)] + ["C" * k + "O" for k in range(1, 9)] + ["C" * k + "N" for k in range(1, 9)]
    chains += ["OCO", "NCN", "OCCO", "NCCN", "CC(C)C"]
    rows = [[f"m{k}.xyz", i, smi] for k, (i, smi) in enumerate(zip(ids, chains))] + [["t.xyz", min(test_ids), "C#N"]]
    path = _write_csv(tmp_path / "qm9_small.csv", ["XYZ_file", "Index", "SMILES"], rows)
    splits = Molecule().load("qm9", path, seed=0, limit=4, report=RowReport())
    assert isinstance(splits, datasets.MoleculeSplits)
    assert len(splits.train) == 4 and splits.test == ["C#N"]
    assert splits.non_test == frozenset(Chem.CanonSmiles(s) for s in chains)
    assert splits.info["novelty_reference_size"] == len(chains) and "limit" in splits.info["novelty_reference"]
    cut = sorted(splits.non_test - set(splits.train) - set(splits.val))
    assert len(cut) >= 20  # left out by limit=4, yet known
    m = Molecule().evaluate([Chem.MolFromSmiles(s, sanitize=False) for s in cut[:6]], splits)
    assert m["novelty"] == 0.0 and m["novelty_n_reference"] == len(chains)
    assert Molecule().evaluate([Chem.MolFromSmiles("C#N", sanitize=False)] * 2, splits)["novelty"] == 1.0
    # the 4-tuple loaders are unchanged
    assert datasets.load_qm9(path, seed=0, limit=4, report=RowReport())[:3] == (splits.train, splits.val, splits.test)


def test_registered_through_entry_points(fresh_registry):
    from seqify.plugins import get_registry

    reg = get_registry()
    assert reg.get("modality", "molecule") is Molecule
    assert reg.get("tokenizer", "graph", "molecule") is GraphTokenizer
    assert reg.get("tokenizer", "smiles", "molecule") is SmilesTokenizer
    assert reg.get("orderer", "bfs") is BFS and reg.get("orderer", "nodes-first") is NodesFirst


def test_example_items_are_canonical_and_round_trips_compare_molecules(monkeypatch):
    mod = Molecule()
    items = mod.example_items(8)
    assert len(items) == 8 and len(mod.example_items(3)) == 3
    assert items == [chem.canonicalize(s)[0] for s in items]  # already canonical
    assert mod.items_equal(Chem.MolFromSmiles("OCC"), "CCO")  # a Mol is compared by its canonical SMILES
    assert not mod.items_equal(Chem.MolFromSmiles("CCN"), "CCO") and not mod.items_equal(None, "CCO")
    monkeypatch.setattr("seqify_molecule.modality.EXAMPLE_MOLECULES", ("CCO", "C1CC"))  # unclosed ring
    with pytest.raises(ValueError, match="example molecule 'C1CC'"):
        mod.example_items(2)


# ---------------------------------------------------------------- slow: whole datasets


@pytest.mark.slow
def test_graph_and_smiles_round_trip_all_qm9():
    report = RowReport()
    splits = Molecule().load("qm9", None, seed=0, limit=None, report=report)
    assert report.skipped == 0 and splits.info["test_ids_found"] == 13_082
    items = splits.train + splits.val + splits.test
    assert len(items) == 130_831
    graph, smiles = GraphTokenizer(dataset="qm9"), SmilesTokenizer()
    smiles.fit(items)
    bad = [s for s in items if sanitized_smiles(graph.decode(graph.encode(s))) != s]
    assert bad == []
    bad = [s for s in items if sanitized_smiles(smiles.decode(smiles.encode(s))) != s]
    assert bad == []


@pytest.mark.slow
@needs_zinc
def test_graph_and_smiles_round_trip_all_zinc_subset():
    report = RowReport()
    splits = Molecule().load("zinc250k", ZINC_SUBSET, seed=0, limit=None, report=report)
    items = splits.train + splits.val + splits.test
    assert len(items) == 29_445 and report.skipped == 0
    graph, smiles = GraphTokenizer(dataset="zinc250k"), SmilesTokenizer()
    smiles.fit(items)
    bad = [s for s in items if sanitized_smiles(graph.decode(graph.encode(s))) != s]
    assert bad == []
    bad = [s for s in items if sanitized_smiles(smiles.decode(smiles.encode(s))) != s]
    assert bad == []
