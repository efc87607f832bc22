"""Two tokenizations of a molecule: a fixed graph layout and a SMILES string.

``graph``: ``N`` node slots (atom type or "no atom") and ``N(N-1)/2`` edge slots
(no bond, single, double, triple) for a dataset's ``N = max_atoms`` (QM9 9 + 36 =
45 slots, ZINC250k 38 + 703 = 741). The slots run row-major over the upper triangle
of the adjacency matrix including the diagonal: (0,0), (0,1), ..., (0,N-1), (1,1),
(1,2), ...; slot (i,i) is node i, slot (i,j), i<j, the bond between i and j. Atoms
are numbered breadth-first over the RDKit canonical ranking (``chem.bfs_atom_order``).

``smiles``: the regex tokens of the kekulized canonical SMILES, variable length,
closed by an end token; its vocabulary is learned by ``fit``.

What ``fit`` learns (the graph tokenizer's dataset vocabulary, the SMILES tokens and
``max_len``) is saved by ``state_dict`` as plain str / int / list values (loadable with
``torch.load(weights_only=True)``) and restored by ``load_state_dict`` on a fresh
instance, which then encodes, decodes and reports ``spec`` exactly like the fitted one.
A state names its tokenizer and :data:`STATE_FORMAT`; a state of another tokenizer or
format is refused with a ValueError.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from rdkit import Chem

from seqify.protocols import BaseTokenizer
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

__all__ = ["STATE_FORMAT", "GraphTokenizer", "SmilesTokenizer", "smiles_tokens", "infer_dataset"]

#: version of the tokenizer states written by ``state_dict``; bump when their layout changes
STATE_FORMAT = 1

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


def _check_state(state: Any, name: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """The state if it is a dict written by tokenizer ``name`` in this format, else ValueError."""
    if not isinstance(state, dict):
        raise ValueError(f"{name} tokenizer: a state must be a dict, got {type(state).__name__}")
    owner = state.get("tokenizer")
    if owner != name:
        what = f"of tokenizer {owner!r}" if owner is not None else f"without a 'tokenizer' entry (keys {sorted(state)})"
        raise ValueError(f"{name} tokenizer: cannot load a state {what}")
    if state.get("format") != STATE_FORMAT:
        raise ValueError(
            f"{name} tokenizer: state format {state.get('format')!r}, this version reads format {STATE_FORMAT} "
            "(a checkpoint of another seqify version?)"
        )
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{name} tokenizer: the state lacks {missing}")
    return state


class GraphTokenizerOptions(BaseModel):
    """Settings of the graph tokenizer."""

    model_config = ConfigDict(extra="forbid")
    dataset: Literal["qm9", "zinc250k"] | None = Field(
        None, description="atom vocabulary and size limit; None: inferred from the training items by fit"
    )


class GraphTokenizer(BaseTokenizer):
    """Molecule <-> node and upper-triangle edge slots (fixed length, lossless).

    Args:
        dataset: "qm9" (9 atoms, 45 slots) or "zinc250k" (38 atoms, 741 slots); None
            (the default) lets ``fit`` choose the smallest vocabulary that covers the
            training items. ``seqify bench`` passes the dataset being run.
    """

    name = "graph"
    config_model: ClassVar[type[BaseModel]] = GraphTokenizerOptions
    #: the runner passes ``dataset=<the dataset being run>``
    takes_dataset: ClassVar[bool] = True

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

    def fit(self, items: list[str], *, device: torch.device | None = None, seed: int = 0) -> None:
        """Choose the vocabulary from the items when no dataset was given (else nothing).

        ``device`` and ``seed`` are accepted for the tokenizer protocol and ignored.
        """
        if self._vocab is None:
            self._vocab = infer_dataset(items)
            self._layout = None

    def state_dict(self) -> dict[str, Any]:
        """The dataset vocabulary in use, with its atom labels and size limit (plain values).

        Raises:
            RuntimeError: when no dataset was given and ``fit`` has not chosen one.
        """
        vocab = self.vocab
        return {
            "tokenizer": self.name,
            "format": STATE_FORMAT,
            "dataset": vocab.name,
            "atom_labels": list(vocab.atom_labels),
            "max_atoms": vocab.max_atoms,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Use the vocabulary a ``state_dict`` names (no fit needed afterwards).

        ``{}`` is accepted when the dataset was given to the constructor (nothing was
        learned then).

        Raises:
            ValueError: for a state of another tokenizer or format, an unknown
                dataset, a vocabulary that differs from this version's (other atom
                labels or size limit), or a dataset other than the one this
                tokenizer was built for.
        """
        if isinstance(state, dict) and not state and self.dataset is not None:
            return
        state = _check_state(state, self.name, ("dataset", "atom_labels", "max_atoms"))
        try:
            vocab = get_vocab(state["dataset"])
        except ValueError as exc:
            raise ValueError(f"graph tokenizer: cannot load the state: {exc}") from None
        saved = (list(state["atom_labels"]), state["max_atoms"])
        if saved != (list(vocab.atom_labels), vocab.max_atoms):
            raise ValueError(
                f"graph tokenizer: the state's {vocab.name} vocabulary (atoms {saved[0]}, max_atoms {saved[1]}) "
                f"differs from this version's (atoms {list(vocab.atom_labels)}, max_atoms {vocab.max_atoms})"
            )
        if self.dataset is not None and self.dataset != vocab.name:
            raise ValueError(
                f"graph tokenizer: built for dataset {self.dataset!r}, but the state is for {vocab.name!r}"
            )
        self._vocab = vocab
        self._layout = None

    def encode_batch(self, items: list[str]) -> list[TokenSet]:
        """``encode`` on each item (ValueError on the first that fails)."""
        return [self.encode(item) for item in items]

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

    def order_prior(self, batch: Any) -> torch.Tensor:
        """Breadth-first over the atoms, each atom followed at once by its bonds to the
        atoms placed before it: (0,0), (1,1), (0,1), (2,2), (0,2), (1,2), ... (the
        ``bfs`` orderer's order; atoms are numbered breadth-first over the canonical
        ranking). Read from the (i, j) coordinates alone."""
        i_BL, j_BL = batch.coords[..., 0].long(), batch.coords[..., 1].long()
        lo_BL, hi_BL = torch.minimum(i_BL, j_BL), torch.maximum(i_BL, j_BL)
        start_BL = hi_BL + hi_BL * (hi_BL - 1) // 2
        return (start_BL + torch.where(i_BL == j_BL, 0, 1 + lo_BL)).float()

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


class SmilesTokenizer(BaseTokenizer):
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
    takes_dataset: ClassVar[bool] = False
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

    def fit(self, items: list[str], *, device: torch.device | None = None, seed: int = 0) -> None:
        """Learn the token vocabulary and the maximum length from training items.

        ``device`` and ``seed`` are accepted for the tokenizer protocol and ignored.
        """
        if not items:
            raise ValueError("smiles tokenizer: fit needs at least one training item")
        seen: set[str] = set()
        longest = 0
        for item in items:
            toks = smiles_tokens(kekule_smiles(item))
            seen.update(toks)
            longest = max(longest, len(toks))
        self._set_vocab(tuple(sorted(seen)) + (self.END,), longest + 1 + self.slack)

    def _set_vocab(self, tokens: tuple[str, ...], max_len: int) -> None:
        self.tokens = tokens
        self._ids = {t: i for i, t in enumerate(tokens)}
        self.max_len = max_len

    def state_dict(self) -> dict[str, Any]:
        """The learned tokens (in id order, "<end>" last), ``max_len`` and ``slack``.

        Raises:
            RuntimeError: before ``fit``.
        """
        self._fitted()
        assert self.tokens is not None and self.max_len is not None
        return {
            "tokenizer": self.name,
            "format": STATE_FORMAT,
            "tokens": list(self.tokens),
            "max_len": self.max_len,
            "slack": self.slack,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the vocabulary and ``max_len`` of a ``state_dict`` (no fit needed afterwards).

        Raises:
            ValueError: for a state of another tokenizer or format, a malformed
                vocabulary (not distinct strings ending with "<end>"), a bad
                ``max_len``, or a state fitted with another ``slack``.
        """
        state = _check_state(state, self.name, ("tokens", "max_len", "slack"))
        tokens, max_len, slack = state["tokens"], state["max_len"], state["slack"]
        if (
            not isinstance(tokens, (list, tuple))
            or not all(isinstance(t, str) for t in tokens)
            or len(set(tokens)) != len(tokens)
            or not tokens
            or tokens[-1] != self.END
        ):
            raise ValueError(
                f"smiles tokenizer: the state's tokens must be distinct strings ending with {self.END!r}, "
                f"got {str(tokens)[:120]}"
            )
        if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 1:
            raise ValueError(f"smiles tokenizer: the state's max_len must be a positive int, got {max_len!r}")
        if slack != self.slack:
            raise ValueError(
                f"smiles tokenizer: the state was fitted with slack={slack!r}, this tokenizer has slack={self.slack}"
            )
        self._set_vocab(tuple(tokens), max_len)

    def encode_batch(self, items: list[str]) -> list[TokenSet]:
        """``encode`` on each item (ValueError on the first that fails)."""
        return [self.encode(item) for item in items]

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
