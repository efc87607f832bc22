"""A picture of generated molecules: a grid of up to 16 valid ones, drawn by RDKit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rdkit import Chem
from rdkit.Chem import Draw

from seqify_molecule.chem import sanitized_smiles
from seqify.io import atomic_write_bytes

__all__ = ["render_molecules"]


def _message_png(text: str) -> bytes:
    """A small PNG carrying one line of text (when there is nothing to draw)."""
    import io

    from PIL import Image, ImageDraw

    img = Image.new("RGB", (600, 120), "white")
    ImageDraw.Draw(img).text((12, 50), text, fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def render_molecules(
    samples: list[Any], path: Path, *, max_mols: int = 16, per_row: int = 4, size: int = 250
) -> Path:
    """Draw the first ``max_mols`` valid samples to a PNG (legends: their SMILES), atomically.

    Args:
        samples: RDKit molecules (unsanitized) or None.
        path: where to write the PNG.
        max_mols: at most this many molecules (default 16).
        per_row: molecules per grid row (default 4).
        size: pixels per molecule (default 250).
    """
    mols, legends = [], []
    for sample in samples:
        smiles = sanitized_smiles(sample)
        if smiles is None:
            continue
        mols.append(Chem.MolFromSmiles(smiles))
        legends.append(smiles if len(smiles) <= 40 else smiles[:37] + "...")
        if len(mols) == max_mols:
            break
    if mols:
        png = Draw.MolsToGridImage(
            mols, molsPerRow=per_row, subImgSize=(size, size), legends=legends, returnPNG=True
        )
        if not isinstance(png, bytes):  # builds without Cairo return a PIL image
            import io

            buf = io.BytesIO()
            png.save(buf, format="PNG")
            png = buf.getvalue()
    else:
        png = _message_png(f"no valid molecule among {len(samples)} samples")
    return atomic_write_bytes(Path(path), png)
