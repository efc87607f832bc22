"""Tokenizers aligned with a sequential model: ``vq-causal``, ``vq-crt`` and ``flextok``.

They change the tokens themselves so that an autoregressive model finds them easier,
trading some reconstruction for modelability (the networks are in
:mod:`seqify_image.alignnet`; docs/aligned-tokenizers.md compares them with the papers):

- ``vq-causal`` (AliTok): the ``vq`` encoder and codebook trained through a causal
  decoder (each patch from the codes up to it in raster order), then a bidirectional
  convolutional decoder trained on the frozen codes. No prefix tokens.
- ``vq-crt`` (causally regularized tokenization): ``vq`` plus ``crt_weight`` times the
  error of a small causal predictor of each latent from the ones before it.
- ``flextok`` (nested dropout / tail-token drop): ``n_tokens`` codes in a 1-D
  sequence whose every prefix decodes to a coarse image
  (:meth:`FlexTokTokenizer.prefix_reconstruction` gives the curve).

``vq-causal`` and ``vq-crt`` lay their codes out exactly as ``vq`` does (the
``R/4 x R/4`` grid in raster order); fit, state and batch encoding follow
:class:`seqify_image.vq.AutoencoderTokenizer`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from pydantic import BaseModel, Field, model_validator

from seqify.types import KindSpec, TokenizerSpec, TokenSet

from seqify_image.alignnet import CausalDecoderAutoencoder, CRTAutoencoder, FlexAutoencoder
from seqify_image.items import ImageItem
from seqify_image.vq import AutoencoderTokenizer, VQOptions, VQTokenizer
from seqify_image.vqnet import VQAutoencoder, fit_autoencoder, images_to_tensor

__all__ = ["CausalNetOptions", "VQCausalOptions", "VQCRTOptions", "FlexTokOptions", "VQCausalTokenizer",
           "VQCRTTokenizer", "FlexTokTokenizer"]


class CausalNetOptions(VQOptions):
    """Settings of ``vq`` plus the small causal transformer of ``vq-causal`` / ``vq-crt``."""

    causal_width: int = Field(64, ge=8, description="width of the causal transformer (AliTok's stage-1 decoder, "
                                                    "CRT's predictor)")
    causal_layers: int = Field(2, ge=1, le=12, description="blocks of the causal transformer")
    causal_heads: int = Field(4, ge=1, description="attention heads of the causal transformer (dividing its width)")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "CausalNetOptions":
        if self.causal_width % self.causal_heads:
            raise ValueError(f"causal_heads ({self.causal_heads}) must divide causal_width ({self.causal_width})")
        return self


def _net_settings(o: VQOptions) -> dict[str, int]:
    """The settings every autoencoder of :mod:`seqify_image.alignnet` takes from ``vq``'s."""
    return dict(resolution=o.resolution, codebook_size=o.codebook_size, code_dim=o.code_dim, channels=o.channels)


def _causal_settings(o: CausalNetOptions) -> dict[str, int]:
    """The causal transformer's settings."""
    return dict(width=o.causal_width, layers=o.causal_layers, heads=o.causal_heads)


class VQCausalOptions(CausalNetOptions):
    """Settings of ``vq-causal``: ``fit_steps`` is stage 1 (causal decoder), ``decoder_steps`` stage 2."""

    decoder_steps: int = Field(300, ge=1, description="Adam steps of stage 2: the bidirectional convolutional "
                                                      "decoder trained on the frozen encoder and codebook")


class VQCRTOptions(CausalNetOptions):
    """Settings of ``vq-crt``: those of ``vq``, the predictor, and the weight of its loss."""

    crt_weight: float = Field(0.3, ge=0, le=100, description="weight of the causal loss (the predictor's error "
                              "over the latents' variance) next to reconstruction; 0: exactly vq's training")


class FlexTokOptions(VQOptions):
    """Settings of ``flextok``: those of ``vq`` plus the sequence length and nested dropout."""

    n_tokens: int = Field(32, ge=1, le=256, description="tokens per image (a 1-D sequence)")
    nested_dropout: bool = Field(True, description="train on random prefixes (uniform length 1..n_tokens), the "
                                                   "tail replaced by a learned mask vector")


class VQCausalTokenizer(VQTokenizer):
    """``vq``'s codes from an encoder trained through a causal decoder (AliTok).

    ``fit`` runs stage 1 (``fit_steps``: encoder, codebook and a causal transformer
    decoder that reconstructs patch ``i`` from codes ``0..i``), then stage 2
    (``decoder_steps``: the convolutional decoder on the frozen codes); ``decode`` uses
    the stage-2 decoder. ``fit_stats`` has ``causal_recon_mse`` (stage 1's final
    training MSE) next to ``final_recon_mse`` (stage 2's). See :class:`VQCausalOptions`.
    """

    name = "vq-causal"
    config_model: ClassVar[type[BaseModel]] = VQCausalOptions

    def _build(self) -> VQAutoencoder:
        return CausalDecoderAutoencoder(**_net_settings(self.options), **_causal_settings(self.options))

    def _fit_model(self, model, x_N1RR, *, device, seed):
        o = self.options
        batch_size = min(o.fit_batch_size, len(x_N1RR))
        model.stage = 1
        causal = fit_autoencoder(model, x_N1RR, steps=o.fit_steps, batch_size=batch_size, lr=o.lr, device=device,
                                 seed=seed)
        model.stage = 2
        stats = fit_autoencoder(model, x_N1RR, steps=o.decoder_steps, batch_size=batch_size, lr=o.lr,
                                device=device, seed=seed, parameters=list(model.decoder.parameters()))
        stats["seconds"] += causal["seconds"]
        stats["causal_recon_mse"] = causal["final_recon_mse"]
        stats["codes_reseeded"] = causal["codes_reseeded"]
        return stats


class VQCRTTokenizer(VQTokenizer):
    """``vq``'s codes from a VQ-VAE trained with a causal regularizer (CRT).

    ``fit`` adds ``crt_weight`` times the causal predictor's error to ``vq``'s loss;
    ``fit_stats["final_extra_loss"]`` is that weighted term at the end of training.
    See :class:`VQCRTOptions`.
    """

    name = "vq-crt"
    config_model: ClassVar[type[BaseModel]] = VQCRTOptions

    def _build(self) -> VQAutoencoder:
        return CRTAutoencoder(**_net_settings(self.options), **_causal_settings(self.options),
                              weight=self.options.crt_weight)


class FlexTokTokenizer(AutoencoderTokenizer):
    """An image as a 1-D sequence of ``n_tokens`` codes, coarse content first (nested dropout).

    One kind "code", one coordinate "position" (0..n_tokens - 1, the canonical order).
    The length is fixed: every image has ``n_tokens`` tokens, and
    :meth:`prefix_reconstruction` measures how well the first ``k`` of them alone
    reconstruct. See :class:`FlexTokOptions`.
    """

    name = "flextok"
    config_model: ClassVar[type[BaseModel]] = FlexTokOptions

    def _build(self) -> VQAutoencoder:
        o = self.options
        return FlexAutoencoder(**_net_settings(o), n_tokens=o.n_tokens, nested_dropout=o.nested_dropout)

    def _spec(self) -> TokenizerSpec:
        T = self.options.n_tokens
        return TokenizerSpec(kinds=(KindSpec("code", self.options.codebook_size),), coord_names=("position",),
                             coord_sizes=(T,), max_len=T, lossless=False)

    def _layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.options.n_tokens
        return torch.zeros(T, dtype=torch.long), torch.arange(T)[:, None]

    def _tokens_to_codes(self, tokens: TokenSet) -> list[torch.Tensor] | None:
        T = self.options.n_tokens
        coords_L1 = tokens.coords.long().cpu()
        if len(tokens) != T or coords_L1.shape[1] != 1 or bool((coords_L1 < 0).any() | (coords_L1 >= T).any()):
            raise ValueError(f"flextok tokenizer: expected {T} slots with a (position,) coordinate in [0, {T}), got "
                             f"{len(tokens)} slots with coordinates of shape {tuple(coords_L1.shape)}")
        position_L = coords_L1[:, 0]
        if torch.unique(position_L).numel() != T:
            raise ValueError(f"flextok tokenizer: the slots do not cover the {T} positions once each")
        values_L = tokens.values.long().cpu()
        if bool((values_L < 0).any() | (values_L >= self.options.codebook_size).any()):
            return None
        sequence_L = torch.empty(T, dtype=torch.long)
        sequence_L[position_L] = values_L
        return [sequence_L.view(1, 1, T)]

    @torch.no_grad()
    def prefix_reconstruction(self, items: list[ImageItem], lengths: list[int] | None = None) -> dict[int, float]:
        """Reconstruction MSE (at ``resolution``, pixels in [0, 1]) of ``items`` from the
        first ``k`` tokens alone, for each ``k`` of ``lengths`` (default: 1, 2, 4, ...
        and ``n_tokens``)."""
        T = self.options.n_tokens
        if lengths is None:
            lengths = sorted({2**i for i in range(T.bit_length()) if 2**i <= T} | {T})
        model = self.model
        x_N1RR = images_to_tensor(self._pixels(items), self.options.resolution)
        codes_N1T = model.encode_codes(x_N1RR)[0]
        out = {}
        for k in lengths:
            recon_N1RR = model.decode_prefix(codes_N1T, int(k)).clamp(0.0, 1.0)
            out[int(k)] = float(np.mean(((recon_N1RR - x_N1RR) ** 2).numpy()))
        return out
