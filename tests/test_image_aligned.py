"""The aligned image tokenizers ``vq-causal``, ``vq-crt`` and ``flextok`` and their networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from seqify.testing import check_tokenizer
from seqify.types import TokenSet

from seqify_image.aligned import FlexTokTokenizer, VQCausalTokenizer, VQCRTTokenizer
from seqify_image.alignnet import CausalDecoderAutoencoder, CausalTransformer, CRTAutoencoder, FlexAutoencoder
from seqify_image.items import ImageItem
from seqify_image.vq import VQTokenizer
from seqify_image.vqnet import build_seeded, images_to_tensor

from tests.test_image_tokenizers import _mnist

#: the smallest networks, at resolution 12 (a 3 x 3 latent grid): a fit takes well under a second
TINY = dict(resolution=12, codebook_size=16, code_dim=4, channels=4, fit_steps=5, fit_batch_size=8)
CAUSAL = dict(causal_width=8, causal_layers=1, causal_heads=2)
SETTINGS = {
    "vq-causal": {**TINY, **CAUSAL, "decoder_steps": 5},
    "vq-crt": {**TINY, **CAUSAL, "crt_weight": 1.0},
    "flextok": {**TINY, "n_tokens": 6},
}
CLASSES = {"vq-causal": VQCausalTokenizer, "vq-crt": VQCRTTokenizer, "flextok": FlexTokTokenizer}


@pytest.fixture(scope="module")
def images() -> dict[str, list[ImageItem]]:
    items = _mnist(48)
    return {"train": items[:32], "test": items[32:]}


@pytest.fixture(scope="module")
def fitted(images) -> dict[str, object]:
    out = {}
    for name, cls in CLASSES.items():
        tok = cls(**SETTINGS[name])
        tok.fit(images["train"], seed=0)
        out[name] = tok
    return out


def _values(toks: list[TokenSet]) -> torch.Tensor:
    return torch.stack([t.values for t in toks])


def _weights(tok) -> dict[str, torch.Tensor]:
    return tok.state_dict()["weights"]


# ---------------------------------------------------------------- registration, spec, options


def test_registered_for_images():
    from seqify.plugins import get_registry

    reg = get_registry()
    names = reg.names("tokenizer", "image")
    assert {"vq-causal", "vq-crt", "flextok"} <= set(names)
    assert reg.get("tokenizer", "flextok", "image") is FlexTokTokenizer


def test_layouts(fitted, images):
    for name in ("vq-causal", "vq-crt"):  # vq's grid, raster order
        tok = fitted[name]
        ts = tok.encode(images["test"][0])
        assert tok.spec.coord_names == ("row", "col") and tok.spec.max_len == 9
        assert ts.coords.tolist() == [[r, c] for r in range(3) for c in range(3)]
    tok = fitted["flextok"]
    ts = tok.encode(images["test"][0])
    assert tok.spec.coord_names == ("position",) and tok.spec.coord_sizes == (6,) and tok.spec.max_len == 6
    assert ts.coords[:, 0].tolist() == list(range(6)) and torch.equal(tok.blank().coords, ts.coords)
    assert not tok.spec.lossless and not tok.spec.variable_length


@pytest.mark.parametrize("bad, field", [
    (dict(crt_weight=-0.1), "crt_weight"),
    (dict(causal_width=12, causal_heads=5), "causal_heads"),
    (dict(causal_layers=0), "causal_layers"),
    (dict(predictor_width=8), "predictor_width"),  # no such setting
])
def test_bad_crt_settings_are_pydantic_errors(bad, field):
    with pytest.raises(ValidationError, match=field):
        VQCRTTokenizer(**bad)


def test_bad_causal_and_flextok_settings_are_pydantic_errors():
    with pytest.raises(ValidationError, match="decoder_steps"):
        VQCausalTokenizer(decoder_steps=0)
    with pytest.raises(ValidationError, match="n_tokens"):
        FlexTokTokenizer(n_tokens=0)
    with pytest.raises(ValidationError, match="multiple of 4"):
        FlexTokTokenizer(resolution=10)
    with pytest.raises(ValidationError, match="crt_weight"):
        FlexTokTokenizer(crt_weight=1.0)  # a setting of another tokenizer


def test_bad_setting_through_a_cell_is_a_config_error(tmp_path):
    from seqify.bench import BenchRequest, resolve_cell
    from seqify.errors import ConfigError

    with pytest.raises(ConfigError, match="crt_weight"):
        resolve_cell(BenchRequest(modality="image", tokenizer="vq-crt", orderer="raster", generator="causal",
                                  out=tmp_path, overrides={"tokenizer": {"crt_weight": -1}}))
    cell = resolve_cell(BenchRequest(modality="image", tokenizer="vq-crt", orderer="raster", generator="causal",
                                     out=tmp_path, overrides={"tokenizer": {"crt_weight": 2.5}}))
    assert cell.tokenizer.options.crt_weight == 2.5 and "crt_weight=2.5" in repr(cell.tokenizer)


# ---------------------------------------------------------------- causality


def test_causal_transformer_output_depends_on_the_past_only():
    net = build_seeded(lambda: CausalTransformer(3, 10, width=8, layers=2, heads=2), 0).eval()
    x_BLD = torch.randn(2, 10, 3)
    changed_BLD = x_BLD.clone()
    changed_BLD[:, 6] += 1.0
    a, b = net(x_BLD), net(changed_BLD)
    assert torch.equal(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_alitok_decoder_is_causal_in_raster_order():
    model = build_seeded(lambda: CausalDecoderAutoencoder(resolution=16, codebook_size=8, code_dim=4, channels=4,
                                                         width=8, layers=1, heads=2), 0).eval()
    f_BDhw = torch.randn(2, 4, 4, 4)
    changed = f_BDhw.clone()
    changed[:, :, 1, 2] += 1.0  # raster position 6 of the 4 x 4 grid
    a_B1RR, b_B1RR = model.decode_causal(f_BDhw), model.decode_causal(changed)
    p = model.patch
    differs_hw = ((a_B1RR - b_B1RR).abs() > 0).reshape(2, 4, p, 4, p).any(dim=(0, 2, 4))
    position_L = torch.arange(16)
    assert not differs_hw.reshape(-1)[position_L < 6].any()  # patches decoded before it are untouched
    assert differs_hw.reshape(-1)[6:].all()  # its own patch and every later one see it
    # the stage-2 decoder is bidirectional: the patch left of the change, decoded earlier, sees it
    full_a, full_b = model.decode_f(f_BDhw), model.decode_f(changed)
    assert not torch.equal(full_a[..., p : 2 * p, p : 2 * p], full_b[..., p : 2 * p, p : 2 * p])


def test_crt_predictor_sees_only_earlier_latents():
    model = build_seeded(lambda: CRTAutoencoder(resolution=12, codebook_size=8, code_dim=4, channels=4,
                                               width=8, layers=1, heads=2), 0).eval()
    z_BLD = torch.randn(2, 9, 4)
    changed = z_BLD.clone()
    changed[:, 4] += 1.0
    start = model.start_D.expand(2, 1, 4)

    def predict(z):
        return model.predictor_head(model.predictor(torch.cat([start, z[:, :-1]], dim=1)))

    a, b = predict(z_BLD), predict(changed)
    assert torch.equal(a[:, :5], b[:, :5])  # the guesses of latents 0..4 do not see latent 4
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_crt_loss_cannot_be_lowered_by_shrinking_the_latents():
    model = build_seeded(lambda: CRTAutoencoder(resolution=12, codebook_size=8, code_dim=4, channels=4,
                                               width=8, layers=1, heads=2), 0).eval()
    with torch.no_grad():
        model.predictor_head.weight.zero_()
        model.predictor_head.bias.zero_()  # predicts 0 everywhere
    f = torch.randn(8, 4, 3, 3)
    assert torch.allclose(model.causal_loss(f, f), model.causal_loss(0.01 * f, 0.01 * f), rtol=1e-4)


# ---------------------------------------------------------------- training paths


def test_crt_weight_zero_is_exactly_vq(images):
    plain = VQTokenizer(**TINY)
    crt0 = VQCRTTokenizer(**TINY, **CAUSAL, crt_weight=0.0)
    crt1 = VQCRTTokenizer(**TINY, **CAUSAL, crt_weight=1.0)
    for tok in (plain, crt0, crt1):
        tok.fit(images["train"], seed=0)
    w_plain, w0, w1 = _weights(plain), _weights(crt0), _weights(crt1)
    assert set(w_plain) < set(w0) and any(k.startswith("predictor.") for k in w0)
    assert all(torch.equal(w_plain[k], w0[k]) for k in w_plain)
    assert not all(torch.equal(w_plain[k], w1[k]) for k in w_plain)
    test = images["test"]
    assert torch.equal(_values(plain.encode_batch(test)), _values(crt0.encode_batch(test)))
    assert crt0.fit_stats["final_extra_loss"] == 0.0 and crt1.fit_stats["final_extra_loss"] > 0.0


def test_alitok_stage_two_trains_the_decoder_only(images):
    def fit(decoder_steps):
        tok = VQCausalTokenizer(**{**SETTINGS["vq-causal"], "decoder_steps": decoder_steps})
        tok.fit(images["train"], seed=0)
        return _weights(tok)

    short, long = fit(1), fit(6)
    frozen = [k for k in short if not k.startswith("decoder.")]
    assert any(k.startswith("encoder.") for k in frozen) and "codebook.weight" in frozen
    assert any(k.startswith("causal_decoder.") for k in frozen)
    assert all(torch.equal(short[k], long[k]) for k in frozen)  # encoder, codebook, causal decoder: stage 1's
    assert not all(torch.equal(short[k], long[k]) for k in short if k.startswith("decoder."))


def test_alitok_fit_stats(fitted):
    stats = fitted["vq-causal"].fit_stats
    assert np.isfinite(stats["causal_recon_mse"]) and np.isfinite(stats["final_recon_mse"])
    assert stats["used"] >= 2


@pytest.mark.parametrize("name", list(CLASSES))
def test_fit_is_deterministic_and_leaves_the_global_rng_alone(name, images):
    rng_before = torch.get_rng_state()
    a, b = CLASSES[name](**SETTINGS[name]), CLASSES[name](**SETTINGS[name])
    a.fit(images["train"], seed=3)
    b.fit(images["train"], seed=3)
    assert torch.equal(torch.get_rng_state(), rng_before)
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# ---------------------------------------------------------------- flextok prefixes


def test_flex_prefix_of_full_length_is_the_full_decode(fitted, images):
    tok = fitted["flextok"]
    model = tok.model
    x = images_to_tensor([item.pixels for item in images["test"]], 12)
    codes_B1T = model.encode_codes(x)[0]
    assert codes_B1T.shape == (len(x), 1, 6)
    assert torch.equal(model.decode_prefix(codes_B1T, 6), model.decode_codes([codes_B1T]))
    assert not torch.equal(model.decode_prefix(codes_B1T, 1), model.decode_prefix(codes_B1T, 6))
    with pytest.raises(ValueError, match="1..6"):
        model.decode_prefix(codes_B1T, 0)
    curve = tok.prefix_reconstruction(images["test"])
    assert list(curve) == [1, 2, 4, 6] and all(np.isfinite(v) for v in curve.values())


def test_flex_nested_dropout_masks_the_tail_only():
    model = build_seeded(lambda: FlexAutoencoder(resolution=12, codebook_size=8, code_dim=4, channels=4,
                                                n_tokens=5), 0).eval()
    f_BD1T = torch.randn(1, 4, 1, 5)
    changed = f_BD1T.clone()
    changed[..., 3:] += 1.0
    keep = torch.tensor([3])
    assert torch.equal(model.decode_f(f_BD1T, keep), model.decode_f(changed, keep))  # the tail is not read
    assert not torch.equal(model.decode_f(f_BD1T), model.decode_f(changed))


def test_flex_prefixes_get_better_with_length():
    items = _mnist(160)
    tok = FlexTokTokenizer(resolution=16, codebook_size=16, code_dim=4, channels=8, n_tokens=8, fit_steps=80,
                           fit_batch_size=32, lr=5e-3)
    tok.fit(items[:128], seed=0)
    curve = tok.prefix_reconstruction(items[128:], [1, 8])
    assert curve[8] < curve[1], curve


# ---------------------------------------------------------------- state and conformance


@pytest.mark.parametrize("name", list(CLASSES))
def test_state_round_trip_through_weights_only_load(name, fitted, images, tmp_path):
    tok = fitted[name]
    torch.save(tok.state_dict(), tmp_path / "tok.pt")
    fresh = CLASSES[name](**SETTINGS[name])
    fresh.load_state_dict(torch.load(tmp_path / "tok.pt", weights_only=True))
    assert fresh.spec == tok.spec and repr(fresh) == repr(tok)
    a, b = tok.encode_batch(images["test"]), fresh.encode_batch(images["test"])
    assert torch.equal(_values(a), _values(b))
    np.testing.assert_array_equal(tok.decode(a[0]).pixels, fresh.decode(b[0]).pixels)
    other = {"vq-causal": "vq-crt", "vq-crt": "flextok", "flextok": "vq-causal"}[name]
    with pytest.raises(ValueError, match=f"of tokenizer '{name}'"):
        CLASSES[other](**SETTINGS[other]).load_state_dict(tok.state_dict())


def test_fingerprint_follows_the_crt_weight(images):
    from seqify.protocols import tokenizer_fingerprint

    a = VQCRTTokenizer(**{**SETTINGS["vq-crt"], "crt_weight": 0.5})
    b = VQCRTTokenizer(**{**SETTINGS["vq-crt"], "crt_weight": 0.5})
    c = VQCRTTokenizer(**{**SETTINGS["vq-crt"], "crt_weight": 2.0})
    for tok in (a, b, c):
        tok.fit(images["train"], seed=0)
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b) != tokenizer_fingerprint(c)


@pytest.mark.parametrize("name", list(CLASSES))
def test_decode_rejects_foreign_layouts_and_reads_by_coordinates(name, fitted, images):
    tok = fitted[name]
    ts = tok.encode(images["test"][0])
    perm = torch.randperm(len(ts), generator=torch.Generator().manual_seed(0))
    shuffled = TokenSet(ts.values[perm], ts.kinds[perm], ts.coords[perm], ts.given[perm], dict(ts.meta))
    np.testing.assert_array_equal(tok.decode(shuffled).pixels, tok.decode(ts).pixels)
    assert tok.decode(ts.with_values(torch.full_like(ts.values, 16))) is None
    with pytest.raises(ValueError, match=f"{name} tokenizer"):
        tok.decode(TokenSet(ts.values[:2], ts.kinds[:2], ts.coords[:2], ts.given[:2]))


@pytest.mark.parametrize("name", list(CLASSES))
def test_conformance(name, images):
    check_tokenizer(CLASSES[name](**SETTINGS[name]), images["train"][:16])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CLASSES))
def test_smoke_cell(name, tmp_path):
    import json

    from seqify.bench import BenchRequest, run_bench

    run_bench(BenchRequest(modality="image", tokenizer=name, orderer="raster", generator="causal", budget="smoke",
                           out=tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["tokenizer"] == name and results["reconstruction"]["mse"] > 0
    assert 0 <= results["modelability"]["top1_accuracy"] <= 1 and results["metrics"]["fd"] is not None
