"""``next-scale``: an image as VAR's multi-scale residual codes (lossy, learned).

The autoencoder of :mod:`seqify_image.vqnet` with its multi-scale residual quantizer:
scale ``s`` holds a ``pn x pn`` grid of codes (default scales 1, 2, 3, 4, 5, 7: 104
slots for MNIST at ``resolution`` 28), all from one codebook. The slots run scale by
scale, coarse to fine, raster within a scale; a slot's coordinates are (scale, row,
col) with row and col on its own scale's grid. ``decode`` sums every scale's
upsampled, phi-refined codes into the latent grid and runs the decoder. Fit, state,
batch encoding and blank follow :class:`seqify_image.vq.AutoencoderTokenizer`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, Field, field_validator, model_validator

from seqify.types import KindSpec, TokenizerSpec, TokenSet

from seqify_image.vq import AutoencoderTokenizer, VQOptions
from seqify_image.vqnet import VQAutoencoder

__all__ = ["NextScaleOptions", "NextScaleTokenizer"]


class NextScaleOptions(VQOptions):
    """Settings of the ``next-scale`` tokenizer: those of ``vq`` plus the scale schedule."""

    scales: tuple[int, ...] = Field((1, 2, 3, 4, 5, 7), description="side of each scale's token grid, coarse to "
                                    "fine (strictly increasing); the last must be the latent grid side resolution/4")
    n_phi: int = Field(4, ge=1, description="number of partially shared 3x3 refinement convolutions (phi), "
                                            "picked by a scale's relative depth (VAR: 4)")

    @field_validator("scales")
    @classmethod
    def _increasing(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(s < 1 for s in value) or any(b <= a for a, b in zip(value, value[1:])):
            raise ValueError(f"scales must be strictly increasing positive sides, got {tuple(value)}")
        return tuple(value)

    @model_validator(mode="after")
    def _ends_at_grid(self) -> "NextScaleOptions":
        grid = self.resolution // 4
        if self.scales[-1] != grid:
            raise ValueError(f"the last scale must be the latent grid side resolution/4 = {grid} "
                             f"(resolution {self.resolution}), got scales {self.scales}")
        return self


class NextScaleTokenizer(AutoencoderTokenizer):
    """An image as VAR's multi-scale residual codes, scale by scale (lossy, learned).

    One kind "code" (the codebook shared by all scales), coordinates (scale, row, col),
    ``sum(pn**2)`` slots. See :class:`NextScaleOptions` for the settings.
    """

    name = "next-scale"
    config_model: ClassVar[type[BaseModel]] = NextScaleOptions

    @property
    def scales(self) -> tuple[int, ...]:
        """Side of each scale's token grid, coarse to fine."""
        return tuple(self.options.scales)

    def _build(self) -> VQAutoencoder:
        o = self.options
        return VQAutoencoder(resolution=o.resolution, codebook_size=o.codebook_size, code_dim=o.code_dim,
                             channels=o.channels, scales=o.scales, n_phi=o.n_phi)

    def _spec(self) -> TokenizerSpec:
        g = self.grid
        return TokenizerSpec(kinds=(KindSpec("code", self.options.codebook_size),),
                             coord_names=("scale", "row", "col"), coord_sizes=(len(self.scales), g, g),
                             max_len=sum(pn * pn for pn in self.scales), lossless=False)

    def _layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        coords = []
        for s, pn in enumerate(self.scales):
            rows, cols = torch.meshgrid(torch.arange(pn), torch.arange(pn), indexing="ij")
            coords.append(torch.stack([torch.full((pn * pn,), s), rows.reshape(-1), cols.reshape(-1)], dim=1))
        coords_L3 = torch.cat(coords)
        return torch.zeros(coords_L3.shape[0], dtype=torch.long), coords_L3

    def scale_slices(self) -> list[slice]:
        """The slots of each scale in the canonical order (``blank()``, ``encode``)."""
        out, start = [], 0
        for pn in self.scales:
            out.append(slice(start, start + pn * pn))
            start += pn * pn
        return out

    def _tokens_to_codes(self, tokens: TokenSet) -> list[torch.Tensor] | None:
        L = sum(pn * pn for pn in self.scales)
        coords_L3 = tokens.coords.long().cpu()
        if len(tokens) != L or coords_L3.shape[1] != 3:
            raise ValueError(f"next-scale tokenizer: expected {L} slots with (scale, row, col) coordinates, got "
                             f"{len(tokens)} slots with coordinates of shape {tuple(coords_L3.shape)}")
        pn_L = torch.tensor(self.scales)[coords_L3[:, 0].clamp(0, len(self.scales) - 1)]
        if bool((coords_L3 < 0).any() | (coords_L3[:, 0] >= len(self.scales)).any()
                | (coords_L3[:, 1] >= pn_L).any() | (coords_L3[:, 2] >= pn_L).any()):
            raise ValueError("next-scale tokenizer: a slot's coordinates lie outside its scale's grid")
        offsets = torch.tensor([0] + [pn * pn for pn in self.scales]).cumsum(0)
        flat_L = offsets[coords_L3[:, 0]] + coords_L3[:, 1] * pn_L + coords_L3[:, 2]
        if torch.unique(flat_L).numel() != L:
            raise ValueError("next-scale tokenizer: the slots do not cover every scale's grid once each")
        values_L = tokens.values.long().cpu()
        if bool((values_L < 0).any() | (values_L >= self.options.codebook_size).any()):
            return None
        canon_L = torch.empty(L, dtype=torch.long)
        canon_L[flat_L] = values_L
        return [canon_L[sl].view(1, pn, pn) for sl, pn in zip(self.scale_slices(), self.scales)]
