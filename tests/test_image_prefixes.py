"""Generation with a prefix of ``flextok``'s tokens (seqify_image.prefixes,
FlexTokTokenizer.decode_prefixes, benchmarks/flextok_generation.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from seqify.evaluate import sample_items
from seqify.types import TokenSet

from seqify_generators.causal import CausalTransformer
from seqify_image.aligned import FlexTokTokenizer
from seqify_image.prefixes import prefix_lengths, sample_prefixes
from seqify_orderers.orderers import Random, Raster, Reverse

from tests.test_image_tokenizers import _mnist

#: a 6-token flextok at resolution 12: fitted in well under a second
TINY = dict(resolution=12, codebook_size=16, code_dim=4, channels=4, fit_steps=5, fit_batch_size=8, n_tokens=6)


@pytest.fixture(scope="module")
def tokenizer() -> FlexTokTokenizer:
    tok = FlexTokTokenizer(**TINY)
    tok.fit(_mnist(32), seed=0)
    return tok


@pytest.fixture(scope="module")
def model(tokenizer) -> CausalTransformer:
    torch.manual_seed(0)
    return CausalTransformer(tokenizer.spec, {"d_model": 32, "n_layers": 2, "n_heads": 2}).eval()


def _first_slots(blank: TokenSet, k: int) -> TokenSet:
    """A template of the first ``k`` positions only."""
    return TokenSet(blank.values[:k].clone(), blank.kinds[:k].clone(), blank.coords[:k].clone(),
                    blank.given[:k].clone())


def test_prefixes_are_what_k_steps_of_sampling_draw(tokenizer, model):
    prefixes = sample_prefixes(model, tokenizer, Raster(), n=7, seed=3, batch_size=7)
    assert list(prefixes) == [1, 2, 4, 6]
    full_NT = prefixes[6]
    assert full_NT.shape == (7, 6) and int(full_NT.min()) >= 0 and int(full_NT.max()) < 16
    blank = tokenizer.blank()
    for k in (1, 2, 4):
        assert prefixes[k].shape == (7, k) and torch.equal(prefixes[k], full_NT[:, :k])
        # sampling only the first k positions of the batch, from the same random state, draws the same tokens
        short = sample_items(model, [_first_slots(blank, k) for _ in range(7)], Raster(), batch_size=7,
                             device=torch.device("cpu"), seed=3, temperature=1.0)
        assert torch.equal(torch.stack([t.values for t in short]), prefixes[k])
    # another seed draws other sequences (the comparison above is not vacuous)
    assert not torch.equal(sample_prefixes(model, tokenizer, Raster(), n=7, seed=4, batch_size=7)[6], full_NT)


def test_sequences_read_by_position(tokenizer):
    ts = tokenizer.encode_batch(_mnist(3))
    seq_NT = tokenizer.sequences(ts)
    assert torch.equal(seq_NT, torch.stack([t.values for t in ts]))
    back_L = torch.arange(6).flip(0)  # the same slots listed last position first
    t = ts[0]
    flipped = TokenSet(t.values[back_L], t.kinds[back_L], t.coords[back_L], t.given[back_L])
    assert torch.equal(tokenizer.sequences([flipped])[0], seq_NT[0])
    bad = ts[0].with_values(torch.full((6,), 99))
    with pytest.raises(ValueError, match="token set 0 has values outside the codebook"):
        tokenizer.sequences([bad])


def test_decoded_prefix_is_an_image_and_the_full_prefix_is_the_decode(tokenizer):
    ts = tokenizer.encode_batch(_mnist(4))
    seq_NT = tokenizer.sequences(ts)
    full = tokenizer.decode_prefixes(seq_NT)
    one = tokenizer.decode_prefixes(seq_NT[:, :1])
    assert len(one) == 4 and all(item.pixels.shape == (12, 12) and item.pixels.dtype == np.float32 for item in one)
    assert all(0 <= item.pixels.min() and item.pixels.max() <= 1 for item in one)
    for a, b in zip(full, tokenizer.decode_batch(ts)):
        np.testing.assert_array_equal(a.pixels, b.pixels)
    assert not np.array_equal(one[0].pixels, full[0].pixels)
    # the first k codes alone decide a k-prefix's image
    other = seq_NT.clone()
    other[:, 2:] = (other[:, 2:] + 1) % 16
    np.testing.assert_array_equal(tokenizer.decode_prefixes(other[:, :2])[0].pixels,
                                  tokenizer.decode_prefixes(seq_NT[:, :2])[0].pixels)


@pytest.mark.parametrize("lengths, needle", [([0], "outside 1..6"), ([7], "outside 1..6"), ([], "none given"),
                                             ([2, 2], "repeated")])
def test_bad_lengths_are_named(lengths, needle):
    with pytest.raises(ValueError, match=needle):
        prefix_lengths(6, lengths)


def test_default_lengths():
    assert prefix_lengths(32) == [1, 2, 4, 8, 16, 32]
    assert prefix_lengths(6) == [1, 2, 4, 6]
    assert prefix_lengths(6, [6, 3]) == [3, 6]


def test_bad_prefix_inputs_are_clear_errors(tokenizer, model):
    with pytest.raises(ValueError, match=r"1 <= k <= 6, got shape \(2, 7\)"):
        tokenizer.decode_prefixes(torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(ValueError, match=r"1 <= k <= 6, got shape \(2, 0\)"):
        tokenizer.decode_prefixes(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="outside the codebook"):
        tokenizer.decode_prefixes(torch.full((2, 3), 16))
    with pytest.raises(ValueError, match="outside 1..6"):
        sample_prefixes(model, tokenizer, Raster(), n=2, lengths=[8], seed=0)
    with pytest.raises(ValueError, match="n must be at least 1"):
        sample_prefixes(model, tokenizer, Raster(), n=0, seed=0)


def test_an_order_other_than_position_order_is_refused(tokenizer, model):
    with pytest.raises(ValueError, match="orderer 'reverse' does not: its order is not position 0, 1, 2"):
        sample_prefixes(model, tokenizer, Reverse(), n=2, seed=0)
    with pytest.raises(ValueError, match="stochastic orderer"):
        sample_prefixes(model, tokenizer, Random(), n=2, seed=0)


@pytest.mark.slow
def test_generation_script_on_a_smoke_cell(tmp_path):
    """About 35 s on one thread: a smoke cell, then 6 lengths x (16 samples + 500 test
    reconstructions) through the extractor."""
    import importlib.util
    from pathlib import Path

    from seqify.bench import BenchRequest, run_bench

    run_bench(BenchRequest(modality="image", tokenizer="flextok", orderer="raster", generator="causal", budget="smoke",
                           out=tmp_path))
    cell = json.loads((tmp_path / "results.json").read_text())
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "flextok_generation.py"
    spec = importlib.util.spec_from_file_location("flextok_generation", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    result = script.main([str(tmp_path), "--n-samples", str(cell["metrics"]["n_samples"])])
    rows = result["rows"]
    assert [r["k"] for r in rows] == [1, 2, 4, 8, 16, 32]
    # the same sample stream, count and batches as the cell: its full-length samples are the cell's own
    assert rows[-1]["fd"] == pytest.approx(cell["metrics"]["fd"], rel=1e-9)
    assert all(r["fd_interval"][0] <= r["fd"] <= r["fd_interval"][1] for r in rows)
    assert rows[0]["recon_mse"] > rows[-1]["recon_mse"]
    saved = json.loads((tmp_path / "flextok_generation.json").read_text())
    assert [r["k"] for r in saved["rows"]] == [1, 2, 4, 8, 16, 32]
    assert saved["n_samples"] == cell["metrics"]["n_samples"]
    for name in ("flextok_generation.png", "flextok_generation_samples.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_folder_without_a_checkpoint_is_named(tmp_path):
    from seqify.errors import SeqifyError
    from seqify_image.prefixes import load_trained_cell

    with pytest.raises(SeqifyError, match="checkpoint.pt' not found: give the --out folder"):
        load_trained_cell(tmp_path)
