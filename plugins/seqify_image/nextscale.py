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

import copy
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

    @property
    def slot_input_dim(self) -> int:
        """Width of :meth:`slot_inputs`' features: the code dimension (VAR's ``Cvae``)."""
        return self.options.code_dim

    def _quantizer_on(self, device: torch.device):
        """The fitted multi-scale quantizer on ``device`` (a copy kept per device; CPU: the tokenizer's own)."""
        quantizer = self.model.quantizer
        if torch.device(device).type == "cpu":
            return quantizer
        cached = self.__dict__.get("_quantizer_copy")  # (the quantizer it copies, device, the copy)
        if cached is None or cached[0] is not quantizer or cached[1] != str(device):
            cached = (quantizer, str(device), copy.deepcopy(quantizer).to(device).eval())
            self.__dict__["_quantizer_copy"] = cached
        return cached[2]

    @torch.no_grad()
    def slot_inputs(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """VAR's ``f_hat`` inputs: for a slot of scale ``k``, the running reconstruction of
        scales ``< k`` area-downsampled to scale ``k``'s grid, at the slot's cell
        (:meth:`seqify_image.vqnet.MultiScaleQuantizer.scale_inputs`); zeros at scale 0.
        The level of a slot is its scale. Values of scale ``k`` and finer are never read
        for scale ``k``'s inputs, so a batch whose finer scales are not decoded yet gives
        the right inputs for the next scale.

        Args:
            batch: a :class:`~seqify.types.TokenBatch` of next-scale tokens (coordinates
                scale, row, col; padding allowed).

        Returns:
            ``inputs_BLF`` (float32, ``F = code_dim``) and ``level_BL`` (the scale).
        """
        values_BL, coords_BLC, pad_BL = batch.values, batch.coords.long(), batch.pad
        device = values_BL.device
        B, L = values_BL.shape
        scales = self.scales
        pn_S = torch.tensor(scales, device=device)
        offsets_S = torch.tensor([0, *[pn * pn for pn in scales]], device=device).cumsum(0)[:-1]
        scale_BL = coords_BLC[..., 0].masked_fill(pad_BL, 0).clamp(0, len(scales) - 1)
        pn_BL = pn_S[scale_BL]
        flat_BL = offsets_S[scale_BL] + coords_BLC[..., 1].clamp_min(0) * pn_BL + coords_BLC[..., 2].clamp_min(0)
        N = sum(pn * pn for pn in scales)
        flat_BL = flat_BL.clamp(0, N - 1).masked_fill(pad_BL, 0)
        canon_BN = torch.zeros(B, N + 1, dtype=torch.long, device=device)  # column N takes the padding
        codes_BL = values_BL.clamp(0, self.options.codebook_size - 1)
        canon_BN.scatter_(1, flat_BL.masked_fill(pad_BL, N), codes_BL)
        codes = [canon_BN[:, sl].view(B, pn, pn) for sl, pn in zip(self.scale_slices(), scales)]
        per_scale = self._quantizer_on(device).scale_inputs(codes)
        feats_BND = torch.cat([f.flatten(2).transpose(1, 2) for f in per_scale], dim=1).float()
        inputs_BLF = feats_BND.gather(1, flat_BL[..., None].expand(-1, -1, feats_BND.shape[2]))
        return inputs_BLF.masked_fill(pad_BL[..., None], 0.0), scale_BL

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
