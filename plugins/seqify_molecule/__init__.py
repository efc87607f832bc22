"""Built-in molecule plugin: QM9 and ZINC250k, graph and SMILES tokenizers, graph orders.

Kept light: only "module:Class" strings are registered here; RDKit and torch load
when a component is first used.
"""

from seqify.hookspecs import hookimpl

_P = "seqify_molecule"


@hookimpl
def register_modalities(register):
    register("molecule", f"{_P}.modality:Molecule", "Molecular graphs: QM9 (shipped) and ZINC250k (your file); validity, uniqueness, novelty, FCD.")


@hookimpl
def register_tokenizers(register):
    register("graph", f"{_P}.tokenizers:GraphTokenizer", "Node slots + upper-triangle bond slots (kekulized, charges kept, BFS atom numbering).", modality="molecule")
    register("smiles", f"{_P}.tokenizers:SmilesTokenizer", "Regex tokens of the kekulized canonical SMILES, variable length with an end token.", modality="molecule")


@hookimpl
def register_orderers(register):
    register("bfs", f"{_P}.orderers:BFS", "Graph: each node, then its bonds to earlier nodes (needs (i, j) coordinates).")
    register("nodes-first", f"{_P}.orderers:NodesFirst", "Graph: all nodes first, then all bonds in slot order (needs (i, j) coordinates).")
