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
from seqify_image.vq import _CHUNK, AutoencoderTokenizer, VQOptions, VQTokenizer
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

    def sequences(self, tokens: list[TokenSet]) -> torch.Tensor:
        """The codes of each token set by position, ``[N, n_tokens]`` (any slot order).

        Raises ValueError naming the token set whose layout is not flextok's, or whose
        values lie outside the codebook."""
        T = self.options.n_tokens
        out_NT = torch.empty(len(tokens), T, dtype=torch.long)
        for n, tokenset in enumerate(tokens):
            try:
                codes = self._tokens_to_codes(tokenset)
            except ValueError as exc:
                raise ValueError(f"token set {n}: {exc}") from None
            if codes is None:
                raise ValueError(f"flextok tokenizer: token set {n} has values outside the codebook "
                                 f"[0, {self.options.codebook_size})")
            out_NT[n] = codes[0].view(T)
        return out_NT

    @torch.no_grad()
    def decode_prefixes(self, codes_NK: torch.Tensor) -> list[ImageItem]:
        """Images (at ``resolution``, pixels clipped to [0, 1]) from ``k`` codes each.

        Each row holds the first ``k`` codes of a sequence (``1 <= k <= n_tokens``); the
        decoder gets the learned mask vector in place of the other ``n_tokens - k``, as
        in training's nested dropout (FlexTok decodes a truncated register sequence
        the same way: the tail becomes its dropout mask token).

        Args:
            codes_NK: ``[N, k]`` code ids (any integer dtype).

        Raises:
            ValueError: for another shape, a ``k`` outside ``1..n_tokens``, or a code
                outside the codebook.
        """
        T, V = self.options.n_tokens, self.options.codebook_size
        codes_NK = torch.as_tensor(codes_NK)
        if codes_NK.ndim != 2 or not 1 <= codes_NK.shape[1] <= T:
            raise ValueError(f"flextok tokenizer: decode_prefixes takes [N, k] codes with 1 <= k <= {T}, got "
                             f"shape {tuple(codes_NK.shape)}")
        codes_NK = codes_NK.long().cpu()
        if bool((codes_NK < 0).any() | (codes_NK >= V).any()):
            raise ValueError(f"flextok tokenizer: decode_prefixes got codes outside the codebook [0, {V})")
        N, k = codes_NK.shape
        full_N1T = torch.zeros(N, 1, T, dtype=torch.long)  # the tail is never read: masked in decode_f
        full_N1T[:, 0, :k] = codes_NK
        out: list[ImageItem] = []
        for start in range(0, N, _CHUNK):
            x_B1RR = self.model.decode_prefix(full_N1T[start : start + _CHUNK], k).clamp(0.0, 1.0)
            out.extend(ImageItem(pixels=x_1RR[0].numpy().astype(np.float32), label=None,
                                 source=f"{self.name}:prefix{k}") for x_1RR in x_B1RR)
        return out

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
