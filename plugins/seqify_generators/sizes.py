"""Size presets of the built-in transformers: a budget names a size, the generator
maps it to its own settings (``Generator.sizes``)."""

from __future__ import annotations

from typing import Any

__all__ = ["TRANSFORMER_SIZES"]

#: size name -> TransformerConfig fields. micro: seconds (tests); tiny / small: minutes
#: on a 2-core CPU; base: one GPU (about Kim et al.'s 6M-parameter Sudoku model);
#: large: a GPU for hours.
TRANSFORMER_SIZES: dict[str, dict[str, Any]] = {
    "micro": {"d_model": 32, "n_layers": 2, "n_heads": 2},
    "tiny": {"d_model": 64, "n_layers": 2, "n_heads": 4},
    "small": {"d_model": 128, "n_layers": 4, "n_heads": 4},
    "base": {"d_model": 256, "n_layers": 8, "n_heads": 8},
    "large": {"d_model": 512, "n_layers": 12, "n_heads": 8},
}
