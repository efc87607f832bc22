"""Molecules as graphs: per-dataset atom vocabularies, canonical SMILES, BFS numbering.

Conventions (the GDSS / MoFlow protocol, with formal charges kept exactly):

- molecules are kekulized, with implicit hydrogens; stereochemistry (and isotopes)
  are dropped;
- an atom type is an (element, formal charge) pair from a fixed per-dataset list,
  so decoding restores charges exactly (GDSS/MoFlow keep only the element and
  guess positive charges back from valences; anions are lost there);
- bonds are none / single / double / triple (no aromatic bonds after kekulization);
- a dataset item is the RDKit canonical, non-isomeric SMILES of the sanitized molecule.

The charged forms were read off the data: QM9 (qm9pack, 130,831 molecules) holds
N+, O-, C- and N-; ZINC250k holds C-, N+, N-, O+, O-, P+, S+ and S- (from the
bracket atoms of the 250k_rndm_zinc_drugs_clean SMILES vocabulary: [CH-], [CH2-],
[N+], [NH+], [NH2+], [NH3+], [n+], [nH+], [N-], [NH-], [n-], [O+], [OH+], [o+],
[O-], [P+], [PH+], [S+], [SH+], [s+], [S-]).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import cached_property

from rdkit import Chem, RDLogger

RDLogger.DisableLog("rdApp.*")

__all__ = [
    "MoleculeVocab",
    "VOCABS",
    "BOND_LABELS",
    "get_vocab",
    "canonicalize",
    "kekulized_mol",
    "kekule_smiles",
    "bfs_atom_order",
    "mol_to_graph",
    "graph_to_mol",
    "sanitized_smiles",
    "to_pyg",
]

#: bond values of the "bond" kind; 0 means no bond
BOND_LABELS = ("none", "single", "double", "triple")
_BOND_ID = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3}
_BOND_TYPE = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}


def _label(element: str, charge: int) -> str:
    if charge == 0:
        return element
    sign = "+" if charge > 0 else "-"
    return f"{element}{sign}{abs(charge) if abs(charge) > 1 else ''}"


@dataclass(frozen=True)
class MoleculeVocab:
    """The atom types and size limit of one dataset.

    Args:
        name: dataset name ("qm9", "zinc250k").
        atom_types: (element, formal charge) per atom id, starting at id 1; id 0 is
            "no atom".
        max_atoms: the largest number of heavy atoms a molecule may have.
    """

    name: str
    atom_types: tuple[tuple[str, int], ...]
    max_atoms: int

    @cached_property
    def _ids(self) -> dict[tuple[str, int], int]:
        return {t: i + 1 for i, t in enumerate(self.atom_types)}

    @property
    def atom_labels(self) -> tuple[str, ...]:
        """Label per atom id: "none", then e.g. "C", ..., "N+", "O-"."""
        return ("none",) + tuple(_label(e, c) for e, c in self.atom_types)

    @property
    def n_atom_values(self) -> int:
        """Size of the "atom" kind (atom types + "no atom")."""
        return len(self.atom_types) + 1

    @property
    def elements(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e for e, _ in self.atom_types))

    def atom_id(self, element: str, charge: int) -> int | None:
        """The id of (element, charge), or None when the dataset has no such type."""
        return self._ids.get((element, charge))

    def atom_type(self, atom_id: int) -> tuple[str, int]:
        """(element, charge) of an atom id >= 1."""
        return self.atom_types[atom_id - 1]


QM9 = MoleculeVocab(
    "qm9",
    (("C", 0), ("N", 0), ("O", 0), ("F", 0), ("C", -1), ("N", 1), ("N", -1), ("O", -1)),
    max_atoms=9,
)
ZINC250K = MoleculeVocab(
    "zinc250k",
    (
        ("C", 0), ("N", 0), ("O", 0), ("F", 0), ("P", 0), ("S", 0), ("Cl", 0), ("Br", 0), ("I", 0),
        ("C", -1), ("N", 1), ("N", -1), ("O", 1), ("O", -1), ("P", 1), ("S", 1), ("S", -1),
    ),
    max_atoms=38,
)
#: the vocabularies by dataset name, smallest first
VOCABS: dict[str, MoleculeVocab] = {"qm9": QM9, "zinc250k": ZINC250K}


def get_vocab(dataset: str) -> MoleculeVocab:
    """The vocabulary of a dataset; ValueError naming the known ones otherwise."""
    try:
        return VOCABS[dataset]
    except KeyError:
        raise ValueError(f"unknown molecule dataset {dataset!r} (known: {', '.join(VOCABS)})") from None


def vocab_problem(mol: Chem.Mol, vocab: MoleculeVocab) -> str | None:
    """Why ``mol`` does not fit ``vocab`` (atom type, size, radicals), or None."""
    for atom in mol.GetAtoms():
        element, charge = atom.GetSymbol(), atom.GetFormalCharge()
        if vocab.atom_id(element, charge) is None:
            what = "element" if element not in vocab.elements else "charged form"
            return (
                f"atom outside the vocabulary: {what} {_label(element, charge)} "
                f"(atom {atom.GetIdx()}; {vocab.name} has {', '.join(vocab.atom_labels[1:])})"
            )
        if atom.GetNumRadicalElectrons():
            return (
                f"radical: atom {atom.GetIdx()} ({element}) has unpaired electrons, which a "
                "graph with implicit hydrogens cannot represent"
            )
    n = mol.GetNumAtoms()
    if n > vocab.max_atoms:
        return f"molecule too large: {n} heavy atoms, more than {vocab.max_atoms} for {vocab.name}"
    if n == 0:
        return "empty molecule: no heavy atoms"
    return None


def canonicalize(smiles: str, vocab: MoleculeVocab | None = None) -> tuple[str | None, str | None]:
    """Parse, drop stereochemistry and canonicalize one SMILES.

    Args:
        smiles: the input SMILES (surrounding whitespace is ignored).
        vocab: when given, also check the atom types and size against it.

    Returns:
        ``(canonical SMILES, None)`` or ``(None, reason)``.
    """
    text = smiles.strip()
    if not text:
        return None, "empty SMILES"
    mol = Chem.MolFromSmiles(text)
    if mol is None:
        return None, f"RDKit cannot parse SMILES {text!r}"
    if vocab is not None:
        problem = vocab_problem(mol, vocab)
        if problem:
            return None, problem
    return Chem.MolToSmiles(mol, isomericSmiles=False), None


def kekulized_mol(smiles: str) -> Chem.Mol:
    """The sanitized, kekulized molecule of a SMILES (aromatic flags cleared).

    Raises:
        ValueError: when RDKit cannot parse or kekulize it.
    """
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot parse SMILES {smiles!r}")
    try:
        Chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception as exc:  # RDKit raises its own KekulizeException
        raise ValueError(f"cannot kekulize {smiles!r}: {exc}") from None
    return mol


def kekule_smiles(smiles: str) -> str:
    """Canonical kekulized SMILES without stereochemistry (what the SMILES tokenizer reads)."""
    mol = kekulized_mol(smiles)
    return Chem.MolToSmiles(mol, isomericSmiles=False, kekuleSmiles=True)


def bfs_atom_order(mol: Chem.Mol) -> list[int]:
    """Atom indices in breadth-first order of the RDKit canonical ranking.

    The search starts at the lowest-ranked atom and visits neighbours in rank order;
    a disconnected molecule continues from the lowest-ranked unvisited atom. Every
    atom after the first of its fragment thus has an earlier neighbour (GraphAF-style).
    """
    ranks = list(Chem.CanonicalRankAtoms(mol, breakTies=True))
    by_rank = sorted(range(mol.GetNumAtoms()), key=ranks.__getitem__)
    seen = [False] * mol.GetNumAtoms()
    order: list[int] = []
    for start in by_rank:
        if seen[start]:
            continue
        seen[start] = True
        queue = deque([start])
        while queue:
            a = queue.popleft()
            order.append(a)
            nbrs = sorted((n.GetIdx() for n in mol.GetAtomWithIdx(a).GetNeighbors()), key=ranks.__getitem__)
            for n in nbrs:
                if not seen[n]:
                    seen[n] = True
                    queue.append(n)
    return order


def mol_to_graph(smiles: str, vocab: MoleculeVocab) -> tuple[list[int], list[tuple[int, int, int]]]:
    """A SMILES as atom type ids (BFS numbering) and bonds ``(i, j, bond id)`` with i < j.

    Raises:
        ValueError: naming the problem (unparseable, atom outside the vocabulary,
            too many atoms, a bond type that is not single/double/triple).
    """
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot parse SMILES {smiles!r}")
    problem = vocab_problem(mol, vocab)
    if problem:
        raise ValueError(f"{smiles!r}: {problem}")
    order = bfs_atom_order(mol)  # ranks of the aromatic form: independent of the Kekule structure
    try:
        Chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception as exc:
        raise ValueError(f"cannot kekulize {smiles!r}: {exc}") from None
    node_of = {a: k for k, a in enumerate(order)}
    atoms = [vocab.atom_id(mol.GetAtomWithIdx(a).GetSymbol(), mol.GetAtomWithIdx(a).GetFormalCharge()) for a in order]
    bonds = []
    for bond in mol.GetBonds():
        bond_id = _BOND_ID.get(bond.GetBondType())
        if bond_id is None:
            raise ValueError(f"{smiles!r}: bond type {bond.GetBondType()} is not single, double or triple")
        i, j = sorted((node_of[bond.GetBeginAtomIdx()], node_of[bond.GetEndAtomIdx()]))
        bonds.append((i, j, bond_id))
    bonds.sort()
    return atoms, bonds  # type: ignore[return-value]


def graph_to_mol(atoms: list[int], bonds: list[tuple[int, int, int]], vocab: MoleculeVocab) -> Chem.Mol | None:
    """Build an unsanitized molecule from atom ids (0 = no atom) and bonds.

    A bond that touches a "no atom" node, or whose id is 0, is ignored; an atom or
    bond id outside the vocabulary gives None. Validity is judged later (sanitization
    in the metrics), not here.
    """
    rw = Chem.RWMol()
    index: dict[int, int] = {}
    for node, atom_id in enumerate(atoms):
        if atom_id == 0:
            continue
        if not 0 < atom_id < vocab.n_atom_values:
            return None
        element, charge = vocab.atom_type(atom_id)
        atom = Chem.Atom(element)
        atom.SetFormalCharge(charge)
        index[node] = rw.AddAtom(atom)
    for i, j, bond_id in bonds:
        if bond_id == 0 or i not in index or j not in index or i == j:
            continue
        if bond_id not in _BOND_TYPE:
            return None
        rw.AddBond(index[i], index[j], _BOND_TYPE[bond_id])
    return rw.GetMol()


def sanitized_smiles(mol: Chem.Mol | None) -> str | None:
    """Canonical non-isomeric SMILES of a copy of ``mol`` if it is a valid molecule, else None.

    Valid means: at least one atom, ``Chem.SanitizeMol`` succeeds on a copy without
    any correction, and the resulting SMILES parses again. Disconnected fragments
    are allowed (the GDSS "validity without correction" rule).
    """
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    copy = Chem.Mol(mol)
    try:
        Chem.SanitizeMol(copy)
        smiles = Chem.MolToSmiles(copy, isomericSmiles=False)
    except Exception:
        return None
    again = Chem.MolFromSmiles(smiles)
    if again is None:
        return None
    return Chem.MolToSmiles(again, isomericSmiles=False)


def to_pyg(item: str, *, dataset: str = "qm9"):
    """A dataset item as a ``torch_geometric.data.Data`` graph.

    Nodes follow the graph tokenizer's BFS numbering. ``x`` is ``[n]`` long atom
    type ids (the graph tokenizer's "atom" values, 1-based: 0 = "no atom" never
    occurs), ``edge_index`` is ``[2, 2E]`` with each bond in both directions,
    ``edge_attr`` is ``[2E]`` long bond ids (1 single, 2 double, 3 triple); the
    item's SMILES is kept as ``smiles``.

    Args:
        item: a canonical SMILES.
        dataset: whose atom vocabulary to use ("qm9" or "zinc250k"; default "qm9").
    """
    import torch
    from torch_geometric.data import Data

    vocab = get_vocab(dataset)
    atoms, bonds = mol_to_graph(item, vocab)
    x = torch.tensor(atoms, dtype=torch.long)
    if bonds:
        src = [i for i, j, _ in bonds] + [j for i, j, _ in bonds]
        dst = [j for i, j, _ in bonds] + [i for i, j, _ in bonds]
        edge_index = torch.tensor([src, dst], dtype=torch.long)
        edge_attr = torch.tensor([b for _, _, b in bonds] * 2, dtype=torch.long)
    else:
        edge_index = torch.zeros(2, 0, dtype=torch.long)
        edge_attr = torch.zeros(0, dtype=torch.long)
    return Data(x=x, edge_index=edge_index, edge_attr=edge_attr, num_nodes=len(atoms), smiles=item)
