"""Autoencoders whose tokens are shaped for a sequential model (tokenization-level alignment).

Each is a :class:`~seqify_image.vqnet.VQAutoencoder` (same convolutional encoder,
codebook and quantizer) that changes what training asks of the tokens through
:meth:`~seqify_image.vqnet.VQAutoencoder.training_losses`, so
:func:`~seqify_image.vqnet.fit_autoencoder` trains all of them:

- :class:`CausalDecoderAutoencoder` (AliTok, Wu et al.): stage 1 reconstructs each
  patch of the latent grid from the codes up to it in raster order only (a
  :class:`CausalTransformer` decoder), so the encoder must put into each code what
  its patch needs from its predecessors; stage 2 freezes the encoder and codebook and
  trains the usual bidirectional convolutional decoder on the frozen codes.
- :class:`CRTAutoencoder` (causally regularized tokenization, Ramanujan et al.): the
  plain VQ-VAE objective plus ``weight`` times the error of a small causal predictor
  that guesses each pre-quantization latent from the quantized latents before it.
- :class:`FlexAutoencoder` (FlexTok's nested dropout, One-D-Piece's tail-token drop):
  a 1-D sequence of ``n_tokens`` codes from a flatten + linear head; training keeps a
  random prefix and replaces the tail by a learned mask vector, so every prefix
  decodes to a coarse image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqify_image.vqnet import VQAutoencoder

__all__ = ["CausalTransformer", "CausalDecoderAutoencoder", "CRTAutoencoder", "FlexAutoencoder"]


class CausalTransformer(nn.Module):
    """A small decoder-only transformer over a sequence of vectors: output ``i`` sees
    inputs ``0..i`` only (pre-norm blocks, learned positions, no dropout).

    Args:
        in_dim: length of an input vector.
        length: longest sequence (the positions learned).
        width: model width.
        layers: transformer blocks.
        heads: attention heads (dividing ``width``).
    """

    def __init__(self, in_dim: int, length: int, *, width: int = 64, layers: int = 2, heads: int = 4):
        super().__init__()
        self.length, self.width = int(length), int(width)
        self.proj_in = nn.Linear(in_dim, width)
        self.pos_LW = nn.Parameter(torch.randn(length, width) * 0.02)
        self.blocks = nn.ModuleList([
            nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(layers)
        ])
        self.norm = nn.LayerNorm(width)
        self.register_buffer("mask_LL", torch.triu(torch.full((length, length), float("-inf")), diagonal=1),
                             persistent=False)

    def __repr__(self) -> str:
        return f"CausalTransformer(length={self.length}, width={self.width}, layers={len(self.blocks)})"

    def forward(self, x_BLD: torch.Tensor) -> torch.Tensor:
        """``[B, L, width]`` features, position ``i`` computed from ``x_BLD[:, :i + 1]``."""
        L = x_BLD.shape[1]
        if L > self.length:
            raise ValueError(f"sequence of {L} vectors, longer than the {self.length} positions learned")
        h_BLW = self.proj_in(x_BLD) + self.pos_LW[:L]
        mask_LL = self.mask_LL[:L, :L]
        for block in self.blocks:
            h_BLW = block(h_BLW, src_mask=mask_LL, is_causal=True)
        return self.norm(h_BLW)


def _raster(f_BDhw: torch.Tensor) -> torch.Tensor:
    """The latent grid as its raster sequence ``[B, h * w, D]``."""
    return f_BDhw.flatten(2).transpose(1, 2)


class CausalDecoderAutoencoder(VQAutoencoder):
    """AliTok's two-stage tokenizer at VQ-VAE scale (no prefix tokens).

    ``stage`` 1: reconstruction through :meth:`decode_causal` (patch ``i`` of the
    ``R/4 x R/4`` grid from codes ``0..i`` in raster order); ``stage`` 2 (also what
    :meth:`decode_codes` uses): the convolutional decoder of :class:`VQAutoencoder`,
    trained on the frozen codes. A fresh instance is in stage 2.

    Args:
        resolution, codebook_size, code_dim, channels: as for :class:`VQAutoencoder`.
        width, layers, heads: the causal transformer decoder of stage 1.
    """

    def __init__(self, *, resolution: int = 28, codebook_size: int = 64, code_dim: int = 16, channels: int = 32,
                 width: int = 64, layers: int = 2, heads: int = 4):
        super().__init__(resolution=resolution, codebook_size=codebook_size, code_dim=code_dim, channels=channels)
        self.patch = self.resolution // self.grid
        self.causal_decoder = CausalTransformer(code_dim, self.grid * self.grid, width=width, layers=layers,
                                                heads=heads)
        self.patch_head = nn.Sequential(nn.Linear(width, 2 * width), nn.SiLU(),
                                        nn.Linear(2 * width, self.patch * self.patch))
        with torch.no_grad():  # start near a flat image, as the convolutional decoder does
            self.patch_head[-1].weight.mul_(0.1)
        #: 1: train encoder, codebook and causal decoder; 2: train the convolutional decoder only
        self.stage = 2

    def decode_causal(self, f_BDhw: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 1, R, R]`` in (0, 1), each ``patch x patch`` block decoded from the
        latent vectors up to its own in raster order."""
        B, _, h, w = f_BDhw.shape
        p = self.patch
        pixels_BLP = self.patch_head(self.causal_decoder(_raster(f_BDhw)))
        logits_B1RR = pixels_BLP.view(B, h, w, p, p).permute(0, 1, 3, 2, 4).reshape(B, 1, h * p, w * p)
        return torch.sigmoid(logits_B1RR)

    def training_losses(self, x_B1HW, rng):
        zero = x_B1HW.new_zeros(())
        if self.stage == 1:
            f_hat_BDhw, vq_loss, _ = self.quantizer(self.encode_f(x_B1HW))
            return self.decode_causal(f_hat_BDhw), vq_loss, zero
        with torch.no_grad():  # encoder and codebook frozen
            f_hat_BDhw = self.quantizer.codes_to_f(self.quantizer.f_to_codes(self.encode_f(x_B1HW)))
        return self.decode_f(f_hat_BDhw), zero, zero

    def output_biases(self) -> list[torch.Tensor]:
        return [self.patch_head[-1].bias] if self.stage == 1 else [self.decoder[-1].bias]


class CRTAutoencoder(VQAutoencoder):
    """A VQ-VAE trained with a causal regularizer on its latents (CRT).

    The extra loss is ``weight`` times :meth:`causal_loss`: a :class:`CausalTransformer`
    reads the straight-through quantized latents in raster order (shifted right, a
    learned start vector first) and predicts each pre-quantization latent; its squared
    error, divided per channel by the channel's variance across images (so neither
    shrinking the latents nor adding a fixed pattern per position can lower it),
    trains the predictor and, through both its inputs and its targets, the encoder.
    With ``weight`` 0 the predictor is never run and training is exactly the
    :class:`VQAutoencoder`'s.

    Args:
        resolution, codebook_size, code_dim, channels: as for :class:`VQAutoencoder`.
        weight: weight of the causal loss (the trade-off).
        width, layers, heads: the causal predictor.
    """

    def __init__(self, *, resolution: int = 28, codebook_size: int = 64, code_dim: int = 16, channels: int = 32,
                 weight: float = 1.0, width: int = 64, layers: int = 2, heads: int = 4):
        super().__init__(resolution=resolution, codebook_size=codebook_size, code_dim=code_dim, channels=channels)
        self.weight = float(weight)
        self.start_D = nn.Parameter(torch.zeros(code_dim))
        self.predictor = CausalTransformer(code_dim, self.grid * self.grid, width=width, layers=layers, heads=heads)
        self.predictor_head = nn.Linear(width, code_dim)

    def causal_loss(self, f_BDhw: torch.Tensor, f_hat_BDhw: torch.Tensor) -> torch.Tensor:
        """Squared error of predicting each latent of ``f_BDhw`` from the quantized
        latents ``f_hat_BDhw`` before it in raster order, per channel over that
        channel's variance across the images (at each position), averaged over the
        channels: 1 is no better than the mean latent of each position."""
        target_BLD, z_BLD = _raster(f_BDhw), _raster(f_hat_BDhw)
        B, _, D = z_BLD.shape
        inputs_BLD = torch.cat([self.start_D.expand(B, 1, D), z_BLD[:, :-1]], dim=1)
        pred_BLD = self.predictor_head(self.predictor(inputs_BLD))
        error_D = (pred_BLD - target_BLD).pow(2).mean(dim=(0, 1))
        spread_D = target_BLD.var(dim=0).mean(dim=0)  # across images, per position: what a position alone leaves
        return (error_D / spread_D.clamp_min(1e-8)).mean()

    def training_losses(self, x_B1HW, rng):
        f_BDhw = self.encode_f(x_B1HW)
        f_hat_BDhw, vq_loss, _ = self.quantizer(f_BDhw)
        recon_B1HW = self.decode_f(f_hat_BDhw)
        if self.weight == 0:
            return recon_B1HW, vq_loss, x_B1HW.new_zeros(())
        return recon_B1HW, vq_loss, self.weight * self.causal_loss(f_BDhw, f_hat_BDhw)


class FlexAutoencoder(VQAutoencoder):
    """A 1-D sequence of ``n_tokens`` codes whose prefixes decode to coarse images.

    The encoder's ``[B, D, R/4, R/4]`` latent grid is flattened and mapped by a linear
    head to ``n_tokens`` vectors of ``code_dim``, quantized with the shared codebook
    (carried as a ``[B, D, 1, n_tokens]`` grid, so the quantizer is the VQ-VAE's).
    Decoding maps the sequence back to the latent grid with a linear layer and runs the
    convolutional decoder. With ``nested_dropout`` each training image keeps a prefix
    of uniform length in ``1..n_tokens``; the dropped tail is replaced by a learned mask
    vector, which is also what :meth:`decode_prefix` puts after a prefix.

    Args:
        resolution, codebook_size, code_dim, channels: as for :class:`VQAutoencoder`.
        n_tokens: length of the token sequence.
        nested_dropout: train on random prefixes (False: always the whole sequence).
    """

    def __init__(self, *, resolution: int = 28, codebook_size: int = 64, code_dim: int = 16, channels: int = 32,
                 n_tokens: int = 32, nested_dropout: bool = True):
        super().__init__(resolution=resolution, codebook_size=codebook_size, code_dim=code_dim, channels=channels)
        self.n_tokens, self.nested_dropout = int(n_tokens), bool(nested_dropout)
        grid_values = code_dim * self.grid * self.grid
        self.to_tokens = nn.Linear(grid_values, self.n_tokens * code_dim)
        self.from_tokens = nn.Linear(self.n_tokens * code_dim, grid_values)
        self.mask_D = nn.Parameter(torch.zeros(code_dim))

    def encode_f(self, x_B1HW: torch.Tensor) -> torch.Tensor:
        """The token vectors before quantization, ``[B, D, 1, n_tokens]``."""
        grid_BDhw = super().encode_f(x_B1HW)
        B, D = grid_BDhw.shape[:2]
        return self.to_tokens(grid_BDhw.flatten(1)).view(B, self.n_tokens, D).transpose(1, 2)[:, :, None, :]

    def decode_f(self, f_BD1T: torch.Tensor, keep_B: torch.Tensor | None = None) -> torch.Tensor:
        """Images ``[B, 1, R, R]`` in (0, 1) from token vectors; with ``keep_B`` only the
        first ``keep_B[b]`` tokens of image ``b`` are used (the rest: the mask vector)."""
        B, D = f_BD1T.shape[:2]
        tokens_BTD = f_BD1T[:, :, 0, :].transpose(1, 2)
        if keep_B is not None:
            drop_BT = torch.arange(self.n_tokens, device=f_BD1T.device)[None, :] >= keep_B.to(f_BD1T.device)[:, None]
            tokens_BTD = torch.where(drop_BT[..., None], self.mask_D.to(tokens_BTD), tokens_BTD)
        grid_BDhw = self.from_tokens(tokens_BTD.reshape(B, -1)).view(B, D, self.grid, self.grid)
        return super().decode_f(grid_BDhw)

    def training_losses(self, x_B1HW, rng):
        f_hat_BD1T, vq_loss, _ = self.quantizer(self.encode_f(x_B1HW))
        keep_B = torch.randint(1, self.n_tokens + 1, (len(x_B1HW),), generator=rng) if self.nested_dropout else None
        return self.decode_f(f_hat_BD1T, keep_B), vq_loss, x_B1HW.new_zeros(())

    @torch.no_grad()
    def decode_prefix(self, codes_B1T: torch.Tensor, keep: int) -> torch.Tensor:
        """Images ``[B, 1, R, R]`` from the first ``keep`` codes of each sequence."""
        if not 1 <= keep <= self.n_tokens:
            raise ValueError(f"a prefix keeps 1..{self.n_tokens} tokens, got {keep}")
        f_BD1T = self.quantizer.codes_to_f([codes_B1T])
        return self.decode_f(f_BD1T, torch.full((len(codes_B1T),), keep))
