"""A small convolutional VQ-VAE and VAR's multi-scale residual quantizer.

The autoencoder maps a ``[B, 1, R, R]`` grayscale image (``R = resolution``, 28 for
MNIST) to a ``[B, D, R/4, R/4]`` latent grid (two stride-2 convolutions; 7 x 7 for
MNIST), quantizes it, and decodes it back through a mirrored stack with a sigmoid
output. Two quantizers share one :class:`Codebook`:

- :class:`VectorQuantizer`: every latent vector becomes its nearest code (one token per
  cell of the latent grid), as in VQ-VAE.
- :class:`MultiScaleQuantizer`: VAR's residual quantizer (FoundationVision/VAR,
  ``models/quant.py``). Per scale ``pn`` of the schedule, the residual is
  area-downsampled to ``pn x pn`` (not at the last scale), each vector becomes its
  nearest code in the codebook shared by all scales, the codes are bicubic-upsampled
  back to the full grid and refined by ``phi`` (a 3x3 convolution blended
  ``0.5 * h + 0.5 * conv(h)``; a few ``phi`` partially shared by the scales, picked by
  the scale's relative depth), added to the reconstruction ``f_hat`` and subtracted
  from the residual.

The codebook is learned by a loss, as in VAR (no EMA): per scale
``beta * MSE(f_hat.detach(), f) + MSE(f_hat, f.detach())`` with ``beta = 0.25`` (the
first term commits the encoder, the second moves the codes and ``phi``), averaged
over the scales, and a straight-through estimator carries the reconstruction
gradient to the encoder. Codes left unused for a while are re-seeded from the vectors
the quantizer was just given, so the whole codebook stays in use.

:func:`fit_autoencoder` trains either model with Adam on reconstruction MSE plus the
quantizer loss, from a ``torch.Generator`` seed (batches, re-seeding); the caller seeds
the initial weights (see :func:`build_seeded`). A subclass adds a loss or a
training-only path through :meth:`VQAutoencoder.training_losses` (the aligned
autoencoders of :mod:`seqify_image.alignnet` do).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BETA",
    "PHI_RATIO",
    "Codebook",
    "VectorQuantizer",
    "MultiScaleQuantizer",
    "Phi",
    "PhiPartiallyShared",
    "VQAutoencoder",
    "build_seeded",
    "fit_autoencoder",
    "images_to_tensor",
    "codebook_usage",
]

#: weight of the commitment term (VQ-VAE, VAR)
BETA = 0.25
#: blend of phi's convolution into its input: ``(1 - r) * h + r * conv(h)`` (VAR: 0.5)
PHI_RATIO = 0.5


# ------------------------------------------------------------------ codebook


class Codebook(nn.Module):
    """``size`` codes of ``dim`` values, looked up by nearest L2 distance.

    It counts how often each code is picked in training (``usage_K``), so that
    :meth:`reseed_dead` can move the codes nobody picked onto real inputs.

    Args:
        size: number of codes ``K``.
        dim: length ``D`` of a code.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.size, self.dim = int(size), int(dim)
        self.weight = nn.Parameter(torch.empty(self.size, self.dim).uniform_(-1.0 / self.size, 1.0 / self.size))
        self.register_buffer("usage_K", torch.zeros(self.size), persistent=False)
        #: the vectors given to the last training lookups (``[N, D]``, detached), re-seeding draws from them
        self.recent_ND: torch.Tensor | None = None

    def __repr__(self) -> str:
        return f"Codebook(size={self.size}, dim={self.dim})"

    def nearest(self, x_ND: torch.Tensor) -> torch.Tensor:
        """``[N]`` index of the nearest code (L2) of each row of ``x_ND``."""
        w_KD = self.weight.detach()
        d_NK = (x_ND.detach().pow(2).sum(1, keepdim=True) - 2.0 * x_ND.detach() @ w_KD.t()
                + w_KD.pow(2).sum(1)[None, :])
        idx_N = d_NK.argmin(dim=1)
        if self.training:
            self.usage_K += torch.bincount(idx_N, minlength=self.size).to(self.usage_K)
            recent = x_ND.detach().reshape(-1, self.dim)
            self.recent_ND = recent if self.recent_ND is None else torch.cat([self.recent_ND, recent])
        return idx_N

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """The codes of ``idx`` (any shape), with a trailing ``D`` axis."""
        return F.embedding(idx, self.weight)

    @torch.no_grad()
    def reseed_dead(self, rng: torch.Generator, *, all_codes: bool = False) -> torch.Tensor:
        """Move every code unused since the last call (or every code) onto a random
        vector of the recent inputs; reset the usage counts.

        Args:
            rng: CPU generator that picks the vectors.
            all_codes: re-seed the whole codebook (its initialisation from data).

        Returns:
            ``[K]`` bool, the codes that were moved.
        """
        dead_K = torch.ones_like(self.usage_K, dtype=torch.bool) if all_codes else self.usage_K == 0
        n_dead = int(dead_K.sum())
        if n_dead and self.recent_ND is not None and len(self.recent_ND):
            pool_ND = self.recent_ND
            pick_N = torch.randint(len(pool_ND), (n_dead,), generator=rng).to(pool_ND.device)
            self.weight[dead_K] = pool_ND[pick_N].to(self.weight)
        self.usage_K.zero_()
        self.recent_ND = None
        return dead_K.cpu()


# ------------------------------------------------------------------ phi


class Phi(nn.Conv2d):
    """VAR's refinement of an upsampled code map: ``(1 - r) * h + r * conv3x3(h)``.

    Args:
        dim: channels ``D``.
        ratio: the blend ``r`` (VAR: 0.5).
    """

    def __init__(self, dim: int, ratio: float = PHI_RATIO):
        super().__init__(dim, dim, kernel_size=3, stride=1, padding=1)
        self.ratio = float(ratio)

    def forward(self, h_BDHW: torch.Tensor) -> torch.Tensor:
        return h_BDHW * (1.0 - self.ratio) + super().forward(h_BDHW) * self.ratio


class PhiPartiallyShared(nn.Module):
    """``n`` :class:`Phi` shared by the scales: a scale at relative depth ``t`` in
    [0, 1] (first scale 0, last 1) uses the phi whose tick is nearest to ``t``, the
    ticks spread evenly over [1/(3n), 1 - 1/(3n)] (VAR's ``PhiPartiallyShared``).

    Args:
        dim: channels ``D``.
        n: number of distinct phi.
    """

    def __init__(self, dim: int, n: int):
        super().__init__()
        if n < 1:
            raise ValueError(f"need at least one phi, got n={n}")
        self.phis = nn.ModuleList([Phi(dim) for _ in range(n)])
        self.ticks = np.linspace(1 / 3 / n, 1 - 1 / 3 / n, n) if n > 1 else np.array([0.5])

    def index(self, scale: int, n_scales: int) -> int:
        """Which phi serves scale ``scale`` of ``n_scales``."""
        depth = scale / (n_scales - 1) if n_scales > 1 else 1.0
        return int(np.argmin(np.abs(self.ticks - depth)))

    def for_scale(self, scale: int, n_scales: int) -> Phi:
        """The phi of scale ``scale`` of ``n_scales``."""
        return self.phis[self.index(scale, n_scales)]


# ------------------------------------------------------------------ quantizers


class VectorQuantizer(nn.Module):
    """Every latent vector to its nearest code: one token per cell of the grid.

    Args:
        codebook: the codes.
        beta: commitment weight.
    """

    def __init__(self, codebook: Codebook, beta: float = BETA):
        super().__init__()
        self.codebook = codebook
        self.beta = float(beta)

    def __repr__(self) -> str:
        return f"VectorQuantizer({self.codebook!r}, beta={self.beta})"

    def forward(self, f_BDhw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Quantize with a straight-through gradient.

        Returns:
            ``f_hat_BDhw`` (straight-through), the quantizer loss, and ``[codes_Bhw]``.
        """
        codes_Bhw = self.f_to_codes(f_BDhw)[0]
        q_BDhw = self.codes_to_f([codes_Bhw])
        loss = self.beta * F.mse_loss(q_BDhw.detach(), f_BDhw) + F.mse_loss(q_BDhw, f_BDhw.detach())
        f_hat_BDhw = f_BDhw + (q_BDhw - f_BDhw).detach()
        return f_hat_BDhw, loss, [codes_Bhw]

    def f_to_codes(self, f_BDhw: torch.Tensor) -> list[torch.Tensor]:
        """``[codes_Bhw]``: the nearest code of every cell."""
        B, D, h, w = f_BDhw.shape
        idx_N = self.codebook.nearest(f_BDhw.permute(0, 2, 3, 1).reshape(-1, D))
        return [idx_N.view(B, h, w)]

    def codes_to_f(self, codes: Sequence[torch.Tensor]) -> torch.Tensor:
        """The latent grid ``[B, D, h, w]`` of ``[codes_Bhw]``."""
        return self.codebook.lookup(codes[0]).permute(0, 3, 1, 2).contiguous()


class MultiScaleQuantizer(nn.Module):
    """VAR's multi-scale residual quantizer over one shared codebook.

    Args:
        codebook: the codes, shared by every scale.
        scales: side ``pn`` of each scale's token grid, coarse to fine; the last is the
            latent grid's side.
        n_phi: number of partially shared phi (VAR: 4).
        beta: commitment weight.
    """

    def __init__(self, codebook: Codebook, scales: Sequence[int], n_phi: int = 4, beta: float = BETA):
        super().__init__()
        self.codebook = codebook
        self.scales = tuple(int(s) for s in scales)
        if not self.scales or any(s < 1 for s in self.scales) or list(self.scales) != sorted(set(self.scales)):
            raise ValueError(f"scales must be increasing positive sizes, got {self.scales}")
        self.phi = PhiPartiallyShared(codebook.dim, n_phi)
        self.beta = float(beta)

    def __repr__(self) -> str:
        return (f"MultiScaleQuantizer({self.codebook!r}, scales={self.scales}, "
                f"n_phi={len(self.phi.phis)}, beta={self.beta})")

    def _check_grid(self, f_BDhw: torch.Tensor) -> None:
        h, w = f_BDhw.shape[-2:]
        if h != w or h != self.scales[-1]:
            raise ValueError(f"the last scale ({self.scales[-1]}) must be the latent grid's side, got a {h}x{w} grid")

    def _scale_map(self, codes_Bpp: torch.Tensor, si: int, side: int) -> torch.Tensor:
        """Scale ``si``'s codes as a refined full-grid map ``[B, D, side, side]``."""
        h_BDpp = self.codebook.lookup(codes_Bpp).permute(0, 3, 1, 2).contiguous()
        if si != len(self.scales) - 1:
            h_BDpp = F.interpolate(h_BDpp, size=(side, side), mode="bicubic")
        return self.phi.for_scale(si, len(self.scales))(h_BDpp)

    def _run(self, f_BDhw: torch.Tensor, *, with_loss: bool
             ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[float]]:
        """Quantize scale by scale: ``f_hat``, the loss (``with_loss``) or the error
        after each scale (otherwise), and the codes of each scale."""
        self._check_grid(f_BDhw)
        B, D, side, _ = f_BDhw.shape
        f_nograd = f_BDhw.detach()
        rest_BDhw = f_nograd.clone()
        f_hat_BDhw = torch.zeros_like(f_nograd)
        loss = f_BDhw.new_zeros(())
        codes: list[torch.Tensor] = []
        errors: list[float] = []
        last = len(self.scales) - 1
        for si, pn in enumerate(self.scales):
            small_BDpp = F.interpolate(rest_BDhw, size=(pn, pn), mode="area") if si != last else rest_BDhw
            idx_N = self.codebook.nearest(small_BDpp.permute(0, 2, 3, 1).reshape(-1, D))
            codes_Bpp = idx_N.view(B, pn, pn)
            h_BDhw = self._scale_map(codes_Bpp, si, side)
            f_hat_BDhw = f_hat_BDhw + h_BDhw
            rest_BDhw = rest_BDhw - h_BDhw.detach()
            codes.append(codes_Bpp)
            if with_loss:
                loss = loss + self.beta * F.mse_loss(f_hat_BDhw.detach(), f_BDhw) + F.mse_loss(f_hat_BDhw, f_nograd)
            else:
                errors.append(float(F.mse_loss(f_hat_BDhw, f_nograd)))
        loss = loss / len(self.scales)
        return f_hat_BDhw, loss, codes, errors

    def forward(self, f_BDhw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Quantize scale by scale with a straight-through gradient.

        Returns:
            ``f_hat_BDhw`` (straight-through), the quantizer loss (mean over scales), and
            the codes of each scale, ``[codes_Bpp]`` coarse to fine.
        """
        f_hat_BDhw, loss, codes, _ = self._run(f_BDhw, with_loss=True)
        f_st_BDhw = (f_hat_BDhw.detach() - f_BDhw.detach()) + f_BDhw
        return f_st_BDhw, loss, codes

    @torch.no_grad()
    def f_to_codes(self, f_BDhw: torch.Tensor) -> list[torch.Tensor]:
        """The codes of each scale, ``[codes_Bpp]`` coarse to fine."""
        return self._run(f_BDhw, with_loss=False)[2]

    @torch.no_grad()
    def residual_errors(self, f_BDhw: torch.Tensor) -> list[float]:
        """MSE between ``f`` and ``f_hat`` after each scale (should fall as scales are added)."""
        return self._run(f_BDhw, with_loss=False)[3]

    @torch.no_grad()
    def scale_inputs(self, codes: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """VAR's teacher-forced inputs (``idxBl_to_var_input``): for each scale ``k``, the
        running reconstruction ``f_hat`` of scales ``< k`` (each upsampled to the latent
        grid and refined by its phi, summed), area-downsampled to scale ``k``'s grid:
        ``[B, D, pn_k, pn_k]`` per scale, zeros for the first (whose input in VAR is the
        start token). Scale ``k``'s input reads no code of scale ``k`` or finer.

        Args:
            codes: ``[codes_Bpp]`` coarse to fine (at least the scales before the last).
        """
        side, last = self.scales[-1], len(self.scales) - 1
        B = codes[0].shape[0]
        f_hat_BDhw = torch.zeros(B, self.codebook.dim, side, side, device=codes[0].device)
        out = []
        for si, pn in enumerate(self.scales):
            out.append(F.interpolate(f_hat_BDhw, size=(pn, pn), mode="area") if si != last else f_hat_BDhw.clone())
            if si != last:
                f_hat_BDhw = f_hat_BDhw + self._scale_map(codes[si], si, side)
        return out

    def codes_to_f(self, codes: Sequence[torch.Tensor]) -> torch.Tensor:
        """``f_hat [B, D, side, side]``: the sum of every scale's upsampled, refined codes."""
        if len(codes) != len(self.scales):
            raise ValueError(f"need codes for {len(self.scales)} scales, got {len(codes)}")
        side = self.scales[-1]
        f_hat_BDhw = None
        for si, (pn, codes_Bpp) in enumerate(zip(self.scales, codes)):
            if tuple(codes_Bpp.shape[-2:]) != (pn, pn):
                raise ValueError(f"scale {si}: codes of shape {tuple(codes_Bpp.shape)}, expected [B, {pn}, {pn}]")
            h_BDhw = self._scale_map(codes_Bpp, si, side)
            f_hat_BDhw = h_BDhw if f_hat_BDhw is None else f_hat_BDhw + h_BDhw
        return f_hat_BDhw


# ------------------------------------------------------------------ autoencoder


class ResBlock(nn.Module):
    """``x + conv1x1(silu(conv3x3(silu(x))))``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class VQAutoencoder(nn.Module):
    """Convolutional VQ-VAE: ``[B, 1, R, R]`` images <-> codes on a ``R/4 x R/4`` grid.

    Encoder: 3x3 conv to ``channels``, two 4x4 stride-2 convs (``channels``, then
    ``2 * channels``), a residual block, a 1x1 conv to ``code_dim``; SiLU between
    them (no dead units). The decoder mirrors it (transposed convs) and ends in a
    sigmoid; its last conv starts small, so the first outputs are near a flat image
    (:func:`fit_autoencoder` sets that image to the mean pixel) and the sigmoid never
    starts saturated.

    Args:
        resolution: image side ``R`` the network works at (a multiple of 4).
        codebook_size: number of codes ``K``.
        code_dim: length ``D`` of a code (latent channels).
        channels: width of the first convolutions (the 7x7 stage has twice as many).
        scales: None for one token per latent cell (VQ-VAE); else the multi-scale
            schedule, ending at ``R / 4``.
        n_phi: number of partially shared phi (multi-scale only).
    """

    def __init__(self, *, resolution: int = 28, codebook_size: int = 64, code_dim: int = 16, channels: int = 32,
                 scales: Sequence[int] | None = None, n_phi: int = 4):
        super().__init__()
        if resolution < 8 or resolution % 4:
            raise ValueError(f"resolution must be a multiple of 4 and at least 8, got {resolution}")
        self.resolution, self.grid = int(resolution), int(resolution) // 4
        C, D = int(channels), int(code_dim)
        self.encoder = nn.Sequential(
            nn.Conv2d(1, C, 3, padding=1), nn.SiLU(),
            nn.Conv2d(C, C, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(C, 2 * C, 4, stride=2, padding=1),
            ResBlock(2 * C), nn.SiLU(),
            nn.Conv2d(2 * C, D, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(D, 2 * C, 3, padding=1),
            ResBlock(2 * C), nn.SiLU(),
            nn.ConvTranspose2d(2 * C, C, 4, stride=2, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(C, C, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(C, 1, 3, padding=1),
        )
        with torch.no_grad():  # start near a flat image: a saturated sigmoid would never recover
            self.decoder[-1].weight.mul_(0.1)
        self.codebook = Codebook(codebook_size, D)
        if scales is None:
            self.quantizer: VectorQuantizer | MultiScaleQuantizer = VectorQuantizer(self.codebook)
        else:
            scales = tuple(int(s) for s in scales)
            if not scales or scales[-1] != self.grid:
                raise ValueError(f"the scale schedule {scales} must end at the latent grid side {self.grid} "
                                 f"(resolution {resolution} / 4)")
            self.quantizer = MultiScaleQuantizer(self.codebook, scales, n_phi)

    @property
    def scales(self) -> tuple[int, ...]:
        """Token grid side of each scale (one scale, the latent grid, for the VQ-VAE)."""
        return getattr(self.quantizer, "scales", (self.grid,))

    def encode_f(self, x_B1HW: torch.Tensor) -> torch.Tensor:
        """Latent grid ``[B, D, R/4, R/4]`` before quantization."""
        return self.encoder(x_B1HW * 2.0 - 1.0)

    def decode_f(self, f_BDhw: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 1, R, R]`` in (0, 1) from a latent grid."""
        return torch.sigmoid(self.decoder(f_BDhw))

    def forward(self, x_B1HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Reconstruction ``[B, 1, R, R]``, quantizer loss, codes per scale."""
        f_hat_BDhw, vq_loss, codes = self.quantizer(self.encode_f(x_B1HW))
        return self.decode_f(f_hat_BDhw), vq_loss, codes

    def training_losses(self, x_B1HW: torch.Tensor, rng: torch.Generator
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One training step's reconstruction ``[B, 1, R, R]``, quantizer loss and extra
        loss (0 here): the hook through which a subclass adds a loss or a training-only
        path (see :mod:`seqify_image.alignnet`). ``rng`` is :func:`fit_autoencoder`'s
        generator, for anything random; torch's global random state must stay untouched."""
        recon_B1HW, vq_loss, _ = self(x_B1HW)
        return recon_B1HW, vq_loss, vq_loss.new_zeros(())

    def output_biases(self) -> list[torch.Tensor]:
        """The biases of the output layers, which :func:`fit_autoencoder` starts at the
        logit of the mean pixel."""
        return [self.decoder[-1].bias]

    @torch.no_grad()
    def encode_codes(self, x_B1HW: torch.Tensor) -> list[torch.Tensor]:
        """Codes per scale, ``[codes_Bpp]`` coarse to fine."""
        return self.quantizer.f_to_codes(self.encode_f(x_B1HW))

    @torch.no_grad()
    def decode_codes(self, codes: Sequence[torch.Tensor]) -> torch.Tensor:
        """Images ``[B, 1, R, R]`` in (0, 1) from codes per scale."""
        return self.decode_f(self.quantizer.codes_to_f(codes))


def build_seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``factory()`` with its initial weights drawn from ``seed``, leaving torch's
    global random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return factory()


def images_to_tensor(pixels: Sequence[np.ndarray], resolution: int) -> torch.Tensor:
    """``[N, 1, R, R]`` float32 images from ``[H, W]`` arrays in [0, 1], resized (bilinear,
    antialiased) when their size is not ``resolution``; the arrays are not modified."""
    shapes = {p.shape for p in pixels}
    out = []
    for shape in sorted(shapes):
        idx = [i for i, p in enumerate(pixels) if p.shape == shape]
        x_N1HW = torch.from_numpy(np.stack([np.asarray(pixels[i], dtype=np.float32) for i in idx]))[:, None]
        if shape != (resolution, resolution):
            x_N1HW = F.interpolate(x_N1HW, size=(resolution, resolution), mode="bilinear",
                                   align_corners=False, antialias=True).clamp_(0.0, 1.0)
        out.append((idx, x_N1HW))
    if len(out) == 1:
        return out[0][1]
    x_N1RR = torch.empty(len(pixels), 1, resolution, resolution)
    for idx, part in out:
        x_N1RR[idx] = part
    return x_N1RR


def codebook_usage(codes: Sequence[torch.Tensor], size: int) -> dict[str, float]:
    """How much of the codebook a set of codes uses.

    Returns:
        ``used`` (distinct codes), ``perplexity`` (exp of the entropy of the code
        frequencies; ``size`` when all codes are equally frequent).
    """
    counts_K = torch.zeros(size)
    for c in codes:
        counts_K += torch.bincount(c.reshape(-1).cpu(), minlength=size).float()
    p_K = counts_K / counts_K.sum().clamp_min(1)
    entropy = -(p_K[p_K > 0] * p_K[p_K > 0].log()).sum()
    return {"used": int((counts_K > 0).sum()), "perplexity": float(entropy.exp())}


def fit_autoencoder(
    model: VQAutoencoder,
    images_NHW: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    device: torch.device | str | None = None,
    seed: int = 0,
    reseed_every: int = 25,
    log: Callable[[str], None] | None = None,
    parameters: Sequence[nn.Parameter] | None = None,
) -> dict[str, Any]:
    """Train ``model`` (in place) with Adam on reconstruction MSE plus the quantizer loss
    plus the model's extra loss (:meth:`VQAutoencoder.training_losses`).

    The output bias starts at the logit of the mean pixel and the codebook on the
    first batch's latent vectors; every ``reseed_every`` steps (until 90% of the
    steps) each code unused since the last re-seed moves onto a random vector the
    quantizer was given in that step. Batches and
    re-seeding draw from a ``torch.Generator`` seeded with ``seed``; nothing touches
    torch's global random state. The model ends in eval mode on the CPU.

    Args:
        model: the autoencoder (its initial weights are the caller's: see :func:`build_seeded`).
        images_NHW: ``[N, H, W]`` (or ``[N, 1, H, W]``) float images in [0, 1] at the
            model's resolution; not modified.
        steps: optimizer steps.
        batch_size: images per step (sampled without replacement within an epoch).
        lr: Adam learning rate (cosine-decayed to a tenth over the steps).
        device: where to train; None: CPU.
        seed: seeds batch sampling and code re-seeding.
        reseed_every: steps between dead-code re-seeds.
        log: called with a progress line every tenth of the steps.
        parameters: the parameters to train (None: all of the model's). When the
            codebook is not among them it is frozen: neither initialised nor re-seeded.

    Returns:
        Training statistics: ``seconds``, ``final_recon_mse`` and ``final_extra_loss``
        (means of the last tenth of the steps), ``codes_reseeded`` (total, after
        initialisation).
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}")
    x_N1HW = images_NHW if images_NHW.dim() == 4 else images_NHW[:, None]
    R = model.resolution
    if x_N1HW.shape[1:] != (1, R, R):
        raise ValueError(f"images must be [N, {R}, {R}] at the model's resolution, got {tuple(images_NHW.shape)}")
    if len(x_N1HW) == 0:
        raise ValueError("no images to fit on")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    rng = torch.Generator().manual_seed(int(seed))
    model.to(dev).train()
    x_N1HW = x_N1HW.to(dev, torch.float32)
    params = list(model.parameters() if parameters is None else parameters)
    train_codebook = any(p is model.codebook.weight for p in params)
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps)))
    N = len(x_N1HW)
    perm = torch.randperm(N, generator=rng)
    cursor, reseeded, recon_tail, extra_tail = 0, 0, [], []
    t0 = time.perf_counter()

    def next_batch() -> torch.Tensor:
        nonlocal perm, cursor
        if cursor + batch_size > N:
            perm, cursor = torch.randperm(N, generator=rng), 0
        idx = perm[cursor : cursor + batch_size]
        cursor += batch_size
        return x_N1HW[idx.to(dev)]

    with torch.no_grad():  # the output starts at the mean pixel
        mean = float(x_N1HW.mean().clamp(0.02, 0.98))
        for bias in model.output_biases():
            bias.fill_(math.log(mean / (1.0 - mean)))
    if train_codebook:  # initialise the codebook on data: one pass of the quantizer, then every code re-seeded
        with torch.no_grad():
            model.quantizer(model.encode_f(next_batch()))
        model.codebook.reseed_dead(rng, all_codes=True)

    for step in range(steps):
        xb_B1HW = next_batch()
        recon_B1HW, vq_loss, extra_loss = model.training_losses(xb_B1HW, rng)
        recon = F.mse_loss(recon_B1HW, xb_B1HW)
        loss = recon + vq_loss + extra_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step >= steps - max(1, steps // 10):
            recon_tail.append(float(recon.detach()))
            extra_tail.append(float(extra_loss.detach()))
        if train_codebook and (step + 1) % reseed_every == 0 and step + 1 < int(0.9 * steps):
            dead_K = model.codebook.reseed_dead(rng)
            reseeded += int(dead_K.sum())
            state = opt.state.get(model.codebook.weight, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][dead_K.to(state[key].device)] = 0.0
        else:
            model.codebook.recent_ND = None  # a re-seed draws from the vectors of its own step only
        if log is not None and (step + 1) % max(1, steps // 10) == 0:
            log(f"step {step + 1}/{steps}: recon {float(recon):.4f} vq {float(vq_loss):.4f} "
                f"extra {float(extra_loss):.4f} ({time.perf_counter() - t0:.0f}s)")
    model.codebook.recent_ND = None
    model.codebook.usage_K.zero_()
    model.cpu().eval()
    return {
        "seconds": time.perf_counter() - t0,
        "final_recon_mse": float(np.mean(recon_tail)) if recon_tail else float("nan"),
        "final_extra_loss": float(np.mean(extra_tail)) if extra_tail else float("nan"),
        "codes_reseeded": reseeded,
    }
