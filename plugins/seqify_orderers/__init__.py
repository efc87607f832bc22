"""Built-in generic orderers: they use only the token structure, so they run on any modality."""

from seqify.hookspecs import hookimpl

_M = "seqify_orderers.orderers"
_S = "seqify_orderers.spatial"


@hookimpl
def register_orderers(register):
    register("raster", f"{_M}:Raster", "The tokenizer's canonical order (slot index).")
    register("reverse", f"{_M}:Reverse", "The canonical order backwards.")
    register("random", f"{_M}:Random", "A fresh random permutation per example (any-order training).")
    register("fixed-random", f"{_M}:FixedRandom", "One seeded random permutation, used for every example.")
    register("rar", f"{_M}:RAR", "Random with probability r annealed to raster during training (RAR); raster at inference.")
    register("parallel", f"{_M}:Parallel", "k slots per step along a base order (RandAR / MaskGIT parallel decoding).")
    register("top-prob", f"{_M}:TopProb", "Adaptive: fill the slot whose most likely value is most probable.")
    register("margin", f"{_M}:Margin", "Adaptive: fill the slot with the largest top-1 minus top-2 probability margin.")
    register("entropy", f"{_M}:Entropy", "Adaptive: fill the slot whose predictive distribution has the lowest entropy.")
    register("spiral", f"{_S}:Spiral", "Grid: outer ring inward, each ring clockwise from its top-left cell (per scale).")
    register("zigzag", f"{_S}:Zigzag", "Grid: JPEG zigzag over anti-diagonals, alternating direction (per scale).")
    register("diagonal", f"{_S}:Diagonal", "Grid: anti-diagonals r + c in turn, each from its top row down (per scale).")
    register("column", f"{_S}:Column", "Grid: column-major, the transpose of raster (per scale).")
    register("hilbert", f"{_S}:Hilbert", "Grid: Hilbert curve on the smallest power-of-two square covering the grid (per scale).")
    register("morton", f"{_S}:Morton", "Z-order: the bits of all coordinate axes interleaved (any number of axes).")
    register("next-scale", f"{_S}:NextScale", "VAR: one block per scale (first axis 'scale'), coarse to fine; trains next-block-only.")
