"""CUDA paths (bf16 autocast, fused attention, KV cache on the device). Skipped without a GPU."""

import pytest
import torch

from seqify.testing import toy_batch
from seqify.training import autocast
from seqify_generators.causal import CausalTransformer
from seqify_generators.masked import MaskedTransformer
from seqify_orderers.orderers import Margin, Random

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_causal_kv_cache_matches_recompute_on_cuda():
    batch = toy_batch(8).to("cuda")
    from seqify.testing import ToyTokenizer

    spec = ToyTokenizer().spec
    model = CausalTransformer(spec, {"d_model": 32, "n_layers": 2, "n_heads": 2}).cuda()
    a = model.sample(batch, Random(), rng=torch.Generator().manual_seed(0), use_cache=True)
    b = model.sample(batch, Random(), rng=torch.Generator().manual_seed(0), use_cache=False)
    assert torch.equal(a.values, b.values)


def test_masked_trains_and_samples_under_bf16_autocast():
    from seqify.testing import ToyTokenizer

    batch = toy_batch(16).to("cuda")
    model = MaskedTransformer(ToyTokenizer().spec, {"d_model": 32, "n_layers": 2, "n_heads": 2}).cuda()
    order = Random().train_orders(batch, progress=0.0, rng=torch.Generator().manual_seed(0)).to("cuda")
    with autocast(torch.device("cuda")):
        loss = model.loss(batch, order)
        out = model.sample(batch, Margin(), rng=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    assert torch.equal(out.values[batch.given], batch.values[batch.given])
