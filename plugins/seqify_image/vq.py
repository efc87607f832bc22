"""``vq``: an image as the 7 x 7 grid of codes of a small VQ-VAE (lossy, learned).

``fit`` trains the autoencoder of :mod:`seqify_image.vqnet` on the training images;
``encode`` maps an image to its ``R/4 x R/4`` codes in raster order (49 slots for
MNIST at ``resolution`` 28), ``decode`` runs the decoder on them. What ``fit`` learned
(the weights) is saved by ``state_dict`` with the settings as plain values (loadable
with ``torch.load(weights_only=True)``) and restored by ``load_state_dict`` on a fresh
instance with the same settings, which then encodes and decodes exactly like the
fitted one. :class:`AutoencoderTokenizer` holds what ``vq`` and ``next-scale``
(:mod:`seqify_image.nextscale`) share.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from seqify.protocols import BaseTokenizer
from seqify.types import KindSpec, TokenizerSpec, TokenSet

from seqify_image.items import ImageItem
from seqify_image.vqnet import VQAutoencoder, build_seeded, codebook_usage, fit_autoencoder, images_to_tensor

__all__ = ["STATE_FORMAT", "NotFittedError", "VQOptions", "AutoencoderTokenizer", "VQTokenizer"]

#: version of the states written by ``state_dict``; bump when their layout changes
STATE_FORMAT = 1

#: images run through the network at once by ``encode_batch`` and ``decode_batch``
_CHUNK = 512


class VQOptions(BaseModel):
    """Settings of the ``vq`` tokenizer (defaults: MNIST, about a minute of CPU fitting)."""

    model_config = ConfigDict(extra="forbid")
    resolution: int = Field(28, ge=8, description="image side the network works at (a multiple of 4); "
                                                  "images of another size are resized; the latent grid is resolution/4")
    codebook_size: int = Field(64, ge=2, le=65536, description="number of codes (the token vocabulary)")
    code_dim: int = Field(16, ge=1, description="length of a code vector (latent channels)")
    channels: int = Field(32, ge=1, description="width of the first convolutions "
                                                "(the latent-grid stage has twice as many)")
    fit_steps: int = Field(600, ge=1, description="Adam steps of fit")
    fit_batch_size: int = Field(64, ge=1, description="images per fit step")
    lr: float = Field(2e-3, gt=0, description="Adam learning rate (cosine-decayed to a tenth)")

    @field_validator("resolution")
    @classmethod
    def _multiple_of_4(cls, value: int) -> int:
        if value % 4:
            raise ValueError(f"resolution must be a multiple of 4 (two stride-2 downsamplings), got {value}")
        return value


class NotFittedError(RuntimeError, AttributeError):
    """A learned tokenizer used before ``fit`` or ``load_state_dict``.

    Also an AttributeError (as scikit-learn's is), so ``hasattr`` and the protocol's
    ``isinstance`` check answer False instead of raising on an unfitted tokenizer.
    """


def _plain(value: Any) -> Any:
    """Settings as weights-only-loadable plain values (tuples become lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class AutoencoderTokenizer(BaseTokenizer):
    """What the learned image tokenizers share: settings, fit, state, batch encoding.

    A subclass sets ``name`` and ``config_model`` and says which autoencoder to build
    (:meth:`_build`) and how its codes lie out as slots (:meth:`_layout`).

    Args:
        **options: the fields of ``config_model`` (ValueError for an unknown or invalid one).
    """

    name = "autoencoder"
    config_model: ClassVar[type[BaseModel]] = VQOptions

    def __init__(self, **options: Any):
        self.options = self.config_model(**options)
        self._model: VQAutoencoder | None = None
        self._layout_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        #: statistics of the last ``fit`` (seconds, final reconstruction MSE, codebook usage); {} after a load
        self.fit_stats: dict[str, Any] = {}

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.options.model_dump().items())
        return f"{type(self).__name__}({settings})"

    # ------------------------------------------------------------ subclass hooks

    def _build(self) -> VQAutoencoder:
        """A freshly initialised autoencoder for these settings."""
        raise NotImplementedError

    def _layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``kinds [L]`` and ``coords [L, C]`` of the slots, in canonical order."""
        raise NotImplementedError

    def _spec(self) -> TokenizerSpec:
        raise NotImplementedError

    def _fit_model(self, model: VQAutoencoder, x_N1RR: torch.Tensor, *, device: torch.device | None,
                   seed: int) -> dict[str, Any]:
        """Train ``model`` in place on ``x_N1RR`` (one :func:`fit_autoencoder` run here;
        a subclass may train in stages) and return its statistics."""
        o = self.options
        return fit_autoencoder(model, x_N1RR, steps=o.fit_steps, batch_size=min(o.fit_batch_size, len(x_N1RR)),
                               lr=o.lr, device=device, seed=seed)

    # ------------------------------------------------------------ common

    @property
    def grid(self) -> int:
        """Side of the latent grid (``resolution / 4``)."""
        return self.options.resolution // 4

    @property
    def model(self) -> VQAutoencoder:
        """The fitted autoencoder (eval mode, CPU)."""
        if self._model is None:
            raise NotFittedError(f"{self.name} tokenizer: not fitted; call fit(train_items) or "
                               "load_state_dict(state) first")
        return self._model

    @property
    def spec(self) -> TokenizerSpec:
        """One kind "code" of ``codebook_size`` values; lossy. :class:`NotFittedError` before fit / load."""
        self.model  # noqa: B018 -- raises before fit
        return self._spec()

    def layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``kinds [L]`` and ``coords [L, C]`` of the canonical slot order (cached)."""
        if self._layout_cache is None:
            self._layout_cache = self._layout()
        return self._layout_cache

    def blank(self) -> TokenSet:
        """All slots open, values 0, in the canonical order: a template for generation."""
        kinds_L, coords_LC = self.layout()
        L = kinds_L.shape[0]
        return TokenSet(torch.zeros(L, dtype=torch.long), kinds_L.clone(), coords_LC.clone(),
                        torch.zeros(L, dtype=torch.bool))

    def _pixels(self, items: list[Any]) -> list[np.ndarray]:
        out = []
        for n, item in enumerate(items):
            pixels = getattr(item, "pixels", None)
            if not isinstance(pixels, np.ndarray) or pixels.ndim != 2:
                raise ValueError(f"{self.name} tokenizer: item {n} is not an image (expected an ImageItem with "
                                 f"[H, W] pixels), got {type(item).__name__}: {item!r:.80}")
            if min(pixels.shape) < 1 or not np.isfinite(pixels).all():
                raise ValueError(f"{self.name} tokenizer: image {getattr(item, 'source', '') or n} has empty "
                                 "or non-finite pixels")
            out.append(pixels)
        return out

    def fit(self, items: list[Any], *, device: torch.device | None = None, seed: int = 0) -> None:
        """Train the autoencoder on the training images (replaces any earlier fit).

        Args:
            items: training :class:`ImageItem` s (resized to ``resolution`` when needed).
            device: where to train; None: CPU. The fitted model lives on the CPU.
            seed: seeds the initial weights, the batches and the codebook re-seeding
                (torch's global random state is left as it was).
        """
        if not items:
            raise ValueError(f"{self.name} tokenizer: fit needs at least one training image")
        o = self.options
        x_N1RR = images_to_tensor(self._pixels(items), o.resolution)
        model = build_seeded(self._build, seed)
        stats = self._fit_model(model, x_N1RR, device=device, seed=seed)
        self._model = model
        codes = []
        for start in range(0, len(x_N1RR), _CHUNK):
            codes.extend(model.encode_codes(x_N1RR[start : start + _CHUNK]))
        stats.update(codebook_usage(codes, o.codebook_size))
        self.fit_stats = stats

    def state_dict(self) -> dict[str, Any]:
        """The weights (CPU tensors) and the settings (plain values), named by tokenizer and format."""
        return {
            "tokenizer": self.name,
            "format": STATE_FORMAT,
            "settings": _plain(self.options.model_dump()),
            "weights": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the weights of a ``state_dict`` (no fit needed afterwards).

        Raises:
            ValueError: for a state that is not a dict, of another tokenizer or format,
                written with other settings (naming them), or whose weights do not fit
                the network.
        """
        if not isinstance(state, dict):
            raise ValueError(f"{self.name} tokenizer: a state must be a dict, got {type(state).__name__}")
        owner = state.get("tokenizer")
        if owner != self.name:
            what = (f"of tokenizer {owner!r}" if owner is not None
                    else f"without a 'tokenizer' entry (keys {sorted(state)})")
            raise ValueError(f"{self.name} tokenizer: cannot load a state {what}")
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{self.name} tokenizer: state format {state.get('format')!r}, this version reads "
                             f"format {STATE_FORMAT} (a checkpoint of another seqify version?)")
        missing = [k for k in ("settings", "weights") if k not in state]
        if missing:
            raise ValueError(f"{self.name} tokenizer: the state lacks {missing}")
        mine, theirs = _plain(self.options.model_dump()), state["settings"]
        if not isinstance(theirs, dict):
            raise ValueError(f"{self.name} tokenizer: the state's settings must be a dict, got {type(theirs).__name__}")
        differ = sorted(set(mine) | set(theirs), key=str)
        differ = [k for k in differ if _plain(theirs.get(k)) != mine.get(k)]
        if differ:
            pairs = ", ".join(f"{k}: state {theirs.get(k)!r} vs this {mine.get(k)!r}" for k in differ)
            raise ValueError(f"{self.name} tokenizer: the state was written with other settings ({pairs}); "
                             "build the tokenizer with the state's settings")
        model = self._build()
        try:
            model.load_state_dict(state["weights"], strict=True)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise ValueError(f"{self.name} tokenizer: the state's weights do not fit the network: {exc}") from None
        self._model = model.cpu().eval()
        self.fit_stats = {}

    # ------------------------------------------------------------ encode / decode

    def _codes_to_tokensets(self, codes: list[torch.Tensor], items: list[Any]) -> list[TokenSet]:
        B = codes[0].shape[0]
        values_BL = torch.cat([c.reshape(B, -1) for c in codes], dim=1)
        kinds_L, coords_LC = self.layout()
        given_L = torch.zeros(kinds_L.shape[0], dtype=torch.bool)
        out = []
        for b, item in enumerate(items):
            label = getattr(item, "label", None)
            meta = {"label": int(label)} if label is not None else {}
            out.append(TokenSet(values_BL[b].clone(), kinds_L.clone(), coords_LC.clone(), given_L.clone(), meta))
        return out

    def encode(self, item: ImageItem) -> TokenSet:
        """One image to its slots. Raises ValueError naming the problem for a non-image."""
        return self.encode_batch([item])[0]

    def encode_batch(self, items: list[ImageItem]) -> list[TokenSet]:
        """Images to slots, the encoder run on up to 512 images at once.

        Raises ValueError naming the first item that is not an image.
        """
        if not items:
            return []
        model = self.model
        pixels = self._pixels(items)
        out: list[TokenSet] = []
        for start in range(0, len(items), _CHUNK):
            x_B1RR = images_to_tensor(pixels[start : start + _CHUNK], self.options.resolution)
            out.extend(self._codes_to_tokensets(model.encode_codes(x_B1RR), items[start : start + _CHUNK]))
        return out

    def _tokens_to_codes(self, tokens: TokenSet) -> list[torch.Tensor] | None:
        """The codes per scale ``[1, pn, pn]`` a token set holds (read by coordinates),
        None when a value lies outside the codebook; ValueError for another layout."""
        raise NotImplementedError

    def decode(self, tokens: TokenSet) -> ImageItem | None:
        """Slots back to an image at ``resolution`` (values clipped to [0, 1]).

        Slots are read by their coordinates, so any slot order works. Returns None when
        a value lies outside the codebook; raises ValueError for a token set that does
        not cover the layout.
        """
        return self.decode_batch([tokens])[0]

    def decode_batch(self, tokens: list[TokenSet]) -> list[ImageItem | None]:
        """:meth:`decode` on several token sets, the decoder run on a batch at once."""
        model = self.model
        out: list[ImageItem | None] = [None] * len(tokens)
        valid = [(n, c) for n, c in ((n, self._tokens_to_codes(t)) for n, t in enumerate(tokens)) if c is not None]
        for start in range(0, len(valid), _CHUNK):
            part = valid[start : start + _CHUNK]
            codes = [torch.cat([c[s] for _, c in part]) for s in range(len(part[0][1]))]
            x_B1RR = model.decode_codes(codes).clamp(0.0, 1.0)
            for (n, _), x_1RR in zip(part, x_B1RR):
                label = tokens[n].meta.get("label")
                out[n] = ImageItem(pixels=x_1RR[0].numpy().astype(np.float32), label=label,
                                   source=f"{self.name}:decoded")
        return out


class VQTokenizer(AutoencoderTokenizer):
    """An image as the ``R/4 x R/4`` codes of a VQ-VAE, in raster order (lossy, learned).

    One kind "code" of ``codebook_size`` values, coordinates (row, col) on the latent
    grid: 49 slots for MNIST at ``resolution`` 28. See :class:`VQOptions` for the settings.
    """

    name = "vq"
    config_model: ClassVar[type[BaseModel]] = VQOptions

    def _build(self) -> VQAutoencoder:
        o = self.options
        return VQAutoencoder(resolution=o.resolution, codebook_size=o.codebook_size, code_dim=o.code_dim,
                             channels=o.channels, scales=None)

    def _spec(self) -> TokenizerSpec:
        g = self.grid
        return TokenizerSpec(kinds=(KindSpec("code", self.options.codebook_size),), coord_names=("row", "col"),
                             coord_sizes=(g, g), max_len=g * g, lossless=False)

    def _layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.grid
        rows, cols = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
        return torch.zeros(g * g, dtype=torch.long), torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)

    def _tokens_to_codes(self, tokens: TokenSet) -> list[torch.Tensor] | None:
        g = self.grid
        coords_L2 = tokens.coords.long().cpu()
        if len(tokens) != g * g or coords_L2.shape[1] != 2 or bool((coords_L2 < 0).any() | (coords_L2 >= g).any()):
            raise ValueError(f"{self.name} tokenizer: expected {g * g} slots with (row, col) coordinates in "
                             f"[0, {g}), got {len(tokens)} slots with coordinates of shape {tuple(coords_L2.shape)}")
        flat_L = coords_L2[:, 0] * g + coords_L2[:, 1]
        if torch.unique(flat_L).numel() != g * g:
            raise ValueError(f"{self.name} tokenizer: the slots do not cover the {g}x{g} grid once each")
        values_L = tokens.values.long().cpu()
        if bool((values_L < 0).any() | (values_L >= self.options.codebook_size).any()):
            return None
        grid_L = torch.empty(g * g, dtype=torch.long)
        grid_L[flat_L] = values_L
        return [grid_L.view(1, g, g)]
