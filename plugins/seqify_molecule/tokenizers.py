"""Two tokenizations of a molecule: a fixed graph layout and a SMILES string.

``graph``: ``N`` node slots (atom type or "no atom") and ``N(N-1)/2`` edge slots
(no bond, single, double, triple) for a dataset's ``N = max_atoms`` (QM9 9 + 36 =
45 slots, ZINC250k 38 + 703 = 741). The slots run row-major over the upper triangle
of the adjacency matrix including the diagonal: (0,0), (0,1), ..., (0,N-1), (1,1),
(1,2), ...; slot (i,i) is node i, slot (i,j), i<j, the bond between i and j. Atoms
are numbered breadth-first over the RDKit canonical ranking (``chem.bfs_atom_order``).

``smiles``: the regex tokens of the kekulized canonical SMILES, variable length,
closed by an end token; its vocabulary is learned by ``fit``.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from rdkit import Chem

from seqify.types import KindSpec, TokenizerSpec, TokenSet

from seqify_molecule.chem import (
    BOND_LABELS,
    VOCABS,
    MoleculeVocab,
    get_vocab,
    graph_to_mol,
    kekule_smiles,
    mol_to_graph,
)

__all__ = ["GraphTokenizer", "SmilesTokenizer", "smiles_tokens", "infer_dataset"]

#: the usual SMILES regex: bracket atoms, two-letter halogens, %nn ring bonds,
#: organic-subset atoms (aromatic too), ring digits, bonds, branches, dots
_SMILES_TOKEN = re.compile(r"\[[^\[\]]+\]|Br|Cl|%\d{2}|[BCNOPSFI]|[bcnops]|\d|[=#\-+\\/:~@?>*$.()]")
_ATOM_TOKEN = re.compile(r"\[[^\[\]]+\]|Br|Cl|[BCNOPSFI]|[bcnops]")


def smiles_tokens(smiles: str) -> list[str]:
    """Split a SMILES into regex tokens.

    Raises:
        ValueError: naming the first character the regex cannot read.
    """
    tokens = _SMILES_TOKEN.findall(smiles)
    if sum(len(t) for t in tokens) != len(smiles):
        pos = 0
        for t in tokens:
            found = smiles.find(t, pos)
            if found != pos:
                break
            pos += len(t)
        raise ValueError(f"SMILES {smiles!r}: cannot tokenize from position {pos} ({smiles[pos:pos + 8]!r})")
    return tokens


def infer_dataset(items: list[str]) -> MoleculeVocab:
    """The smallest dataset vocabulary (QM9, then ZINC250k) that covers every item.

    Reads atom tokens from the SMILES text (fast); each distinct bracket atom is
    parsed once by RDKit for its element and charge.

    Raises:
        ValueError: naming an item that no vocabulary covers.
    """
    bracket: dict[str, tuple[str, int]] = {}
    types: dict[tuple[str, int], str] = {}
    largest, largest_item = 0, ""
    for item in items:
        atoms = _ATOM_TOKEN.findall(item)
        if len(atoms) > largest:
            largest, largest_item = len(atoms), item
        for tok in atoms:
            if tok.startswith("["):
                if tok not in bracket:
                    mol = Chem.MolFromSmiles(tok, sanitize=False)
                    if mol is None or mol.GetNumAtoms() != 1:
                        raise ValueError(f"item {item!r}: cannot read atom {tok}")
                    atom = mol.GetAtomWithIdx(0)
                    bracket[tok] = (atom.GetSymbol(), atom.GetFormalCharge())
                key = bracket[tok]
            else:
                key = (tok.capitalize(), 0)
            types.setdefault(key, item)
    for vocab in VOCABS.values():
        missing = [t for t in types if vocab.atom_id(*t) is None]
        if not missing and largest <= vocab.max_atoms:
            return vocab
    zinc = VOCABS["zinc250k"]
    missing = [t for t in types if zinc.atom_id(*t) is None]
    if missing:
        element, charge = missing[0]
        raise ValueError(f"item {types[missing[0]]!r}: atom {element} (charge {charge}) is in no molecule vocabulary")
    raise ValueError(f"item {largest_item!r}: {largest} heavy atoms, more than any dataset allows")


class GraphTokenizerOptions(BaseModel):
    """Settings of the graph tokenizer."""

    model_config = ConfigDict(extra="forbid")
    dataset: Literal["qm9", "zinc250k"] | None = Field(
        None, description="atom vocabulary and size limit; None: inferred from the training items by fit"
    )


class GraphTokenizer:
    """Molecule <-> node and upper-triangle edge slots (fixed length, lossless).

    Args:
        dataset: "qm9" (9 atoms, 45 slots) or "zinc250k" (38 atoms, 741 slots); None
            (the default) lets ``fit`` choose the smallest vocabulary that covers the
            training items. ``seqify bench`` passes the dataset being run.
    """

    name = "graph"
    config_model: ClassVar[type[BaseModel]] = GraphTokenizerOptions

    def __init__(self, dataset: str | None = None):
        self.dataset = dataset
        self._vocab: MoleculeVocab | None = get_vocab(dataset) if dataset is not None else None
        self._layout: tuple[torch.Tensor, torch.Tensor] | None = None

    def __repr__(self) -> str:
        return f"GraphTokenizer(dataset={self._vocab.name if self._vocab else None!r})"

    @property
    def vocab(self) -> MoleculeVocab:
        if self._vocab is None:
            raise RuntimeError(
                "graph tokenizer: no dataset vocabulary yet; pass dataset='qm9' or 'zinc250k', "
                "or call fit(train_items) first"
            )
        return self._vocab

    @property
    def n_atoms(self) -> int:
        return self.vocab.max_atoms

    @property
    def spec(self) -> TokenizerSpec:
        vocab, N = self.vocab, self.vocab.max_atoms
        return TokenizerSpec(
            kinds=(
                KindSpec("atom", vocab.n_atom_values, labels=vocab.atom_labels),
                KindSpec("bond", len(BOND_LABELS), labels=BOND_LABELS),
            ),
            coord_names=("i", "j"),
            coord_sizes=(N, N),
            max_len=N + N * (N - 1) // 2,
        )

    def fit(self, items: list[str]) -> None:
        """Choose the vocabulary from the items when no dataset was given (else nothing)."""
        if self._vocab is None:
            self._vocab = infer_dataset(items)
            self._layout = None

    def slot_index(self, i: int, j: int) -> int:
        """Position of slot (i, j), i <= j, in the canonical (row-major upper-triangle) order."""
        if not 0 <= i <= j < self.n_atoms:
            raise ValueError(f"slot ({i}, {j}) is outside the upper triangle of {self.n_atoms} atoms")
        return i * self.n_atoms - i * (i - 1) // 2 + (j - i)

    def layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``kinds [L]`` (0 atom, 1 bond) and ``coords [L, 2]`` of the canonical slot order."""
        if self._layout is None:
            N = self.n_atoms
            coords = [(i, j) for i in range(N) for j in range(i, N)]
            coords_L2 = torch.tensor(coords, dtype=torch.long)
            kinds_L = (coords_L2[:, 0] != coords_L2[:, 1]).long()
            self._layout = (kinds_L, coords_L2)
        return self._layout

    def blank(self) -> TokenSet:
        """All slots open, values 0 (no atoms, no bonds): a template for generation."""
        kinds_L, coords_L2 = self.layout()
        L = kinds_L.shape[0]
        return TokenSet(torch.zeros(L, dtype=torch.long), kinds_L.clone(), coords_L2.clone(), torch.zeros(L, dtype=torch.bool))

    def encode(self, item: str) -> TokenSet:
        """A canonical SMILES to slots. Raises ValueError naming the problem."""
        atoms, bonds = mol_to_graph(item, self.vocab)
        kinds_L, coords_L2 = self.layout()
        values_L = torch.zeros(kinds_L.shape[0], dtype=torch.long)
        for i, atom_id in enumerate(atoms):
            values_L[self.slot_index(i, i)] = atom_id
        for i, j, bond_id in bonds:
            values_L[self.slot_index(i, j)] = bond_id
        return TokenSet(values_L, kinds_L.clone(), coords_L2.clone(), torch.zeros_like(values_L, dtype=torch.bool))

    def decode(self, tokens: TokenSet) -> Chem.Mol | None:
        """Slots to an unsanitized RDKit molecule (validity is judged by the metrics).

        Slots are read by their coordinates, so any slot layout works. "No atom"
        nodes are dropped and a bond touching one is ignored; None only when a value
        lies outside its kind's vocabulary.
        """
        values = tokens.values.tolist()
        coords = tokens.coords.tolist()
        atoms = [0] * self.n_atoms
        bonds = []
        for value, (i, j) in zip(values, coords):
            if i == j:
                if 0 <= i < self.n_atoms:
                    atoms[i] = value
            elif value:
                bonds.append((min(i, j), max(i, j), value))
        return graph_to_mol(atoms, bonds, self.vocab)


class SmilesTokenizerOptions(BaseModel):
    """Settings of the SMILES tokenizer."""

    model_config = ConfigDict(extra="forbid")
    slack: int = Field(8, ge=0, description="slots beyond the longest training item + end token")


class SmilesTokenizer:
    """Molecule <-> regex tokens of its kekulized canonical SMILES, then an end token.

    The string is ``Chem.MolToSmiles(mol, kekuleSmiles=True, isomericSmiles=False)``
    after ``Chem.Kekulize(mol, clearAromaticFlags=True)``, so this tokenizer sees the
    same kekulized molecule as ``graph``. One kind, "smiles": the tokens seen in the
    training items (sorted) and "<end>" last. ``max_len`` = longest training item +
    1 (end) + ``slack``.

    Args:
        slack: extra slots beyond the longest training item (default 8), so that a
            slightly longer test item still fits.
    """

    name = "smiles"
    config_model: ClassVar[type[BaseModel]] = SmilesTokenizerOptions
    END = "<end>"

    def __init__(self, slack: int = 8):
        if slack < 0:
            raise ValueError(f"slack must be >= 0, got {slack}")
        self.slack = slack
        self.tokens: tuple[str, ...] | None = None
        self._ids: dict[str, int] = {}
        self.max_len: int | None = None

    def __repr__(self) -> str:
        vocab = "unfitted" if self.tokens is None else f"{len(self.tokens)} tokens"
        return f"SmilesTokenizer(slack={self.slack}, vocab={vocab}, max_len={self.max_len})"

    @property
    def end_value(self) -> int:
        return self._fitted()[self.END]

    def _fitted(self) -> dict[str, int]:
        if self.tokens is None:
            raise RuntimeError("smiles tokenizer has no vocabulary yet: call fit(train_items) first")
        return self._ids

    @property
    def spec(self) -> TokenizerSpec:
        ids = self._fitted()
        assert self.tokens is not None and self.max_len is not None
        return TokenizerSpec(
            kinds=(KindSpec("smiles", len(self.tokens), labels=self.tokens),),
            coord_names=("position",),
            coord_sizes=(self.max_len,),
            max_len=self.max_len,
            variable_length=True,
            end_kind=0,
            end_value=ids[self.END],
        )

    def fit(self, items: list[str]) -> None:
        """Learn the token vocabulary and the maximum length from training items."""
        if not items:
            raise ValueError("smiles tokenizer: fit needs at least one training item")
        seen: set[str] = set()
        longest = 0
        for item in items:
            toks = smiles_tokens(kekule_smiles(item))
            seen.update(toks)
            longest = max(longest, len(toks))
        self.tokens = tuple(sorted(seen)) + (self.END,)
        self._ids = {t: i for i, t in enumerate(self.tokens)}
        self.max_len = longest + 1 + self.slack

    def blank(self) -> TokenSet:
        """``max_len`` open slots: a template for generation."""
        L = self.spec.max_len
        return TokenSet(
            torch.zeros(L, dtype=torch.long),
            torch.zeros(L, dtype=torch.long),
            torch.arange(L).unsqueeze(1),
            torch.zeros(L, dtype=torch.bool),
        )

    def encode(self, item: str) -> TokenSet:
        """A canonical SMILES to token slots (tokens, then the end token)."""
        ids = self._fitted()
        toks = smiles_tokens(kekule_smiles(item))
        unknown = [t for t in toks if t not in ids]
        if unknown:
            raise ValueError(f"SMILES {item!r}: token {unknown[0]!r} is not in the vocabulary learned by fit")
        assert self.max_len is not None
        if len(toks) + 1 > self.max_len:
            raise ValueError(
                f"SMILES {item!r}: {len(toks)} tokens + end is more than max_len {self.max_len}"
            )
        values_L = torch.tensor([ids[t] for t in toks] + [ids[self.END]], dtype=torch.long)
        L = values_L.shape[0]
        return TokenSet(values_L, torch.zeros(L, dtype=torch.long), torch.arange(L).unsqueeze(1), torch.zeros(L, dtype=torch.bool))

    def decode(self, tokens: TokenSet) -> Chem.Mol | None:
        """Tokens up to the first end token to ``Chem.MolFromSmiles(s, sanitize=False)`` (None if it does not parse)."""
        ids = self._fitted()
        assert self.tokens is not None
        end = ids[self.END]
        out = []
        for value in tokens.values.tolist():
            if value == end:
                break
            if not 0 <= value < len(self.tokens):
                return None
            out.append(self.tokens[value])
        return Chem.MolFromSmiles("".join(out), sanitize=False)
