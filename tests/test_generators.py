"""The built-in generators: causal (sigma-GPT style, KV cache) and masked (any-order)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError

from seqify.errors import NotApplicableError
from seqify.ordering import StaticOrderer
from seqify.protocols import Generator
from seqify.types import KindSpec, OrderBatch, TokenBatch, TokenizerSpec, TokenSet, collate
from seqify_generators.causal import CausalTransformer
from seqify_generators.masked import MaskedTransformer
from seqify_orderers.orderers import Margin, Random, Raster, TopProb

TINY = {"d_model": 32, "n_layers": 2, "n_heads": 4}

# two kinds, 12 slots on a 3 x 4 grid; kind of slot i is i % 2
SPEC = TokenizerSpec(
    kinds=(KindSpec("a", 3), KindSpec("b", 5)),
    coord_names=("row", "col"),
    coord_sizes=(3, 4),
    max_len=12,
)
# one kind of 4 values; value 3 is END
VAR_SPEC = TokenizerSpec(
    kinds=(KindSpec("tok", 4),),
    coord_names=("pos",),
    coord_sizes=(10,),
    max_len=10,
    variable_length=True,
    end_kind=0,
    end_value=3,
)


def grid_items(n: int, seed: int = 0, n_given: int = 3) -> list[TokenSet]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.arange(12)
    kinds = idx % 2
    coords = torch.stack([idx // 4, idx % 4], dim=1)
    sizes = torch.tensor([3, 5])[kinds]
    items = []
    for _ in range(n):
        values = (torch.rand(12, generator=g) * sizes).long()
        given = torch.zeros(12, dtype=torch.bool)
        given[torch.randperm(12, generator=g)[:n_given]] = True
        items.append(TokenSet(values, kinds.clone(), coords.clone(), given))
    return items


def grid_batch(n: int = 6, seed: int = 0, n_given: int = 3) -> TokenBatch:
    return collate(grid_items(n, seed, n_given))


def var_batch(n: int = 6, seed: int = 0) -> TokenBatch:
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        length = int(torch.randint(3, 11, (1,), generator=g))
        values = torch.randint(0, 3, (length,), generator=g)
        values[-1] = 3  # END
        idx = torch.arange(length)
        items.append(TokenSet(values, torch.zeros(length, dtype=torch.long), idx[:, None], torch.zeros(length, dtype=torch.bool)))
    return collate(items, length=10)


def model(cls, spec=SPEC, seed: int = 0):
    torch.manual_seed(seed)
    return cls(spec, cls.config_model(**TINY))


def random_order(batch: TokenBatch, seed: int = 1) -> OrderBatch:
    return Random().infer_orders(batch, rng=torch.Generator().manual_seed(seed))


def with_blocks(order: OrderBatch, size: int) -> OrderBatch:
    """The same permutation, predicted slots grouped into blocks of ``size``."""
    block = torch.where(order.block >= 0, order.block // size, order.block)
    return OrderBatch(order.perm, block)


class BlocksOf3(StaticOrderer):
    """A random permutation decoded three slots at a time (test double)."""

    name = "blocks-of-3"

    def infer_orders(self, batch, *, rng):
        return with_blocks(Random().infer_orders(batch, rng=rng), 3)


def true_gid(spec: TokenizerSpec, batch: TokenBatch) -> torch.Tensor:
    offsets = torch.tensor(spec.vocab_offsets)
    return offsets[batch.kinds] + batch.values


# --------------------------------------------------------------------------- registration


def test_plugin_registers_both_without_importing_torch():
    code = (
        "import sys, seqify_generators\n"
        "got = []\n"
        "seqify_generators.register_generators(lambda n, t, d: got.append((n, t, d)))\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "print(sorted((n, t) for n, t, d in got if d))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "('causal', 'seqify_generators.causal:CausalTransformer')" in out
    assert "('masked', 'seqify_generators.masked:MaskedTransformer')" in out


@pytest.mark.parametrize("cls", [CausalTransformer, MaskedTransformer])
def test_protocol_config_and_repr(cls):
    m = cls(SPEC, None)
    assert isinstance(m, Generator)
    assert m.config == cls.config_model()
    assert m.config.d_model == 128 and m.config.n_layers == 4
    text = repr(m)
    assert cls.__name__ in text and "d_model=128" in text and "params=" in text
    assert m.num_parameters() == sum(p.numel() for p in m.parameters())
    with pytest.raises(ValidationError):
        cls.config_model(d_modle=64)
    with pytest.raises(ValidationError, match="multiple of n_heads"):
        cls.config_model(d_model=30, n_heads=4)
    assert all(f.description for f in cls.config_model.model_fields.values())


def test_caps():
    assert CausalTransformer.caps.variable_length and not CausalTransformer.caps.blocks
    assert not CausalTransformer.caps.adaptive
    assert MaskedTransformer.caps.blocks and MaskedTransformer.caps.adaptive
    assert not MaskedTransformer.caps.variable_length


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("cls", [CausalTransformer, MaskedTransformer])
def test_loss_decreases_when_overfitting(cls):
    m = model(cls)
    batch = grid_batch(8)
    order = random_order(batch)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    torch.manual_seed(0)
    for _ in range(100):
        loss = m.loss(batch, order)
        assert loss.dim() == 0 and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)


def test_causal_loss_is_mean_nll_of_score():
    m = model(CausalTransformer)
    batch = grid_batch(5)
    order = random_order(batch)
    scores, _ = m.score(batch, order)
    expected = -scores.logp[scores.scored].mean()
    assert torch.allclose(m.loss(batch, order), expected, atol=1e-5)


@torch.no_grad()
def test_masked_loss_with_one_block_is_mean_nll_given_the_clues():
    m = model(MaskedTransformer)
    batch = grid_batch(5)
    order = random_order(batch)
    one_block = OrderBatch(order.perm, torch.where(order.block >= 0, 0, order.block))  # cut is always 0
    logp = m(batch)  # only the given slots known
    nll = -logp.gather(2, true_gid(SPEC, batch)[..., None]).squeeze(2)
    expected = torch.stack([nll[b][batch.target[b]].mean() for b in range(5)]).mean()
    assert torch.allclose(m.loss(batch, one_block), expected, atol=1e-5)


@pytest.mark.parametrize("cls", [CausalTransformer, MaskedTransformer])
def test_padding_values_do_not_change_the_loss(cls):
    m = model(cls, VAR_SPEC)
    batch = var_batch(6)
    assert batch.pad.any()
    order = Raster().infer_orders(batch, rng=torch.Generator())
    noisy_values = torch.where(batch.pad, torch.randint(1, 4, batch.values.shape), batch.values)
    noisy_coords = torch.where(batch.pad[..., None], 7, batch.coords)
    noisy = TokenBatch(noisy_values, batch.kinds, noisy_coords, batch.given, batch.pad, batch.meta)
    assert not torch.equal(noisy.values, batch.values)
    torch.manual_seed(3)
    a = m.loss(batch, order)
    torch.manual_seed(3)
    b = m.loss(noisy, order)
    assert torch.isfinite(a) and torch.equal(a.detach(), b.detach())


# --------------------------------------------------------------------------- exact scoring


@torch.no_grad()
def test_causal_score_equals_step_by_step_recomputation():
    m = model(CausalTransformer)
    batch = grid_batch(4)
    order = random_order(batch)
    scores, used = m.score(batch, order)
    assert torch.equal(used.perm, order.perm)
    gid = true_gid(SPEC, batch)
    for b in range(4):
        total = 0.0
        for t in range(batch.length):
            slot = int(order.perm[b, t])
            if not bool(batch.target[b, slot]):
                continue
            logp_t = m(batch, order, positions=t + 1)[b, t]  # only the prefix is run
            total += float(logp_t[gid[b, slot]])
        assert abs(total - float(scores.logp[b].sum())) < 1e-5


def test_causal_score_ignores_values_later_in_the_order():
    m = model(CausalTransformer)
    batch = grid_batch(4)
    order = random_order(batch)
    scores, _ = m.score(batch, order)
    rank = order.rank()
    late = (rank >= 7) & batch.target
    changed = batch.with_values(torch.where(late, (batch.values + 1) % 3, batch.values))
    scores2, _ = m.score(changed, order)
    early = rank < 7
    assert torch.allclose(scores.logp[early], scores2.logp[early], atol=1e-6)
    assert not torch.allclose(scores.logp[late], scores2.logp[late])


@pytest.mark.parametrize("block_size", [1, 3])
@torch.no_grad()
def test_masked_score_equals_sequential_unmasking_by_hand(block_size):
    m = model(MaskedTransformer)
    batch = grid_batch(4)
    order = with_blocks(random_order(batch), block_size)
    order.validate(batch)
    scores, _ = m.score(batch, order)
    gid = true_gid(SPEC, batch)
    slot_block = order.slot_block()
    for b in range(4):
        total = 0.0
        for t in range(batch.length):
            slot = int(order.perm[b, t])
            k = int(slot_block[b, slot])
            if k < 0:
                continue
            known = batch.given | ((slot_block >= 0) & (slot_block < k))
            total += float(m(batch, known)[b, slot, gid[b, slot]])
        assert abs(total - float(scores.logp[b].sum())) < 1e-5


def test_masked_blocks_score_differs_from_blocks_of_one():
    m = model(MaskedTransformer)
    batch = grid_batch(4)
    order = random_order(batch)
    one, _ = m.score(batch, order)
    three, _ = m.score(batch, with_blocks(order, 3))
    assert not torch.allclose(one.logp, three.logp)


@pytest.mark.parametrize("cls", [CausalTransformer, MaskedTransformer])
@torch.no_grad()
def test_probabilities_normalized_within_each_kind(cls):
    m = model(cls)
    batch = grid_batch(4)
    order = random_order(batch)
    if cls is CausalTransformer:
        logp = m(batch, order)
        slot_kinds = batch.kinds.gather(1, order.perm)
    else:
        logp = m(batch)
        slot_kinds = batch.kinds
    allowed = SPEC.kind_mask()[slot_kinds]
    assert torch.all(torch.isneginf(logp[~allowed]))
    inside = logp.masked_fill(~allowed, float("-inf")).logsumexp(-1)
    assert torch.allclose(inside, torch.zeros_like(inside), atol=1e-5)


@pytest.mark.parametrize("cls", [CausalTransformer, MaskedTransformer])
def test_given_and_padding_slots_are_not_scored(cls):
    m = model(cls)
    items = grid_items(4)
    items[1] = TokenSet(items[1].values[:8], items[1].kinds[:8], items[1].coords[:8], items[1].given[:8])
    batch = collate(items)
    assert batch.pad.any() and batch.given.any()
    scores, order = m.score(batch, random_order(batch))
    assert torch.equal(scores.scored, batch.target)
    assert torch.all(scores.logp[~batch.target] == 0) and not scores.correct[~batch.target].any()
    assert torch.all(scores.logp[batch.target] < 0)
    order.validate(batch)


def test_score_with_a_static_orderer_uses_a_fixed_seed():
    batch = grid_batch(3)
    for cls in (CausalTransformer, MaskedTransformer):
        m = model(cls)
        s1, o1 = m.score(batch, orderer=Random())
        s2, o2 = m.score(batch, orderer=Random())
        assert torch.equal(o1.perm, o2.perm) and torch.equal(s1.logp, s2.logp)


# --------------------------------------------------------------------------- KV cache


@torch.no_grad()
def test_kv_cache_gives_identical_samples_and_matching_logits():
    m = model(CausalTransformer)
    template = grid_batch(5)
    order = random_order(template)
    a, logp_a = m.generate(template, order, rng=torch.Generator().manual_seed(7), use_cache=True, return_logp=True)
    b, logp_b = m.generate(template, order, rng=torch.Generator().manual_seed(7), use_cache=False, return_logp=True)
    assert torch.equal(a.values, b.values)
    predicted = template.target
    assert torch.allclose(logp_a[predicted], logp_b[predicted], atol=1e-5)
    # the step distributions are the teacher-forced ones of the finished samples
    teacher = m(a, order)  # position t predicts perm[t]
    teacher_by_slot = torch.zeros_like(teacher).scatter(1, order.perm[..., None].expand_as(teacher), teacher)
    assert torch.allclose(logp_a[predicted], teacher_by_slot[predicted], atol=1e-5)
    # through the public sample(): same seed, with and without cache
    s1 = m.sample(template, Random(), rng=torch.Generator().manual_seed(11), use_cache=True)
    s2 = m.sample(template, Random(), rng=torch.Generator().manual_seed(11), use_cache=False)
    assert torch.equal(s1.values, s2.values)


# --------------------------------------------------------------------------- sampling


def _check_sample(template: TokenBatch, out: TokenBatch):
    assert out.values.shape == template.values.shape
    assert torch.equal(out.values[template.given], template.values[template.given])
    sizes = torch.tensor([k.size for k in SPEC.kinds])[out.kinds]
    real = ~out.pad
    assert torch.all((out.values[real] >= 0) & (out.values[real] < sizes[real]))


@pytest.mark.parametrize(
    "cls,orderer",
    [
        (CausalTransformer, Raster()),
        (CausalTransformer, Random()),
        (MaskedTransformer, Random()),
        (MaskedTransformer, BlocksOf3()),
        (MaskedTransformer, TopProb()),
        (MaskedTransformer, Margin()),
    ],
    ids=["causal-raster", "causal-random", "masked-random", "masked-blocks", "masked-top-prob", "masked-margin"],
)
def test_samples_keep_given_slots_and_kind_ranges(cls, orderer):
    m = model(cls)
    template = grid_batch(6, n_given=4)
    # scramble the non-given values: the template's other values must be ignored
    template = template.with_values(torch.where(template.given, template.values, 99))
    out = m.sample(template, orderer, rng=torch.Generator().manual_seed(0))
    _check_sample(template, out)
    assert torch.equal(out.pad, template.pad) and torch.equal(out.kinds, template.kinds)
    again = m.sample(template, orderer, rng=torch.Generator().manual_seed(0))
    assert torch.equal(out.values, again.values)
    other = m.sample(template, orderer, rng=torch.Generator().manual_seed(1))
    assert not torch.equal(out.values, other.values)


@pytest.mark.parametrize("cls", [CausalTransformer, MaskedTransformer])
def test_greedy_sampling_ignores_the_seed(cls):
    m = model(cls)
    template = grid_batch(4)
    a = m.sample(template, Raster(), rng=torch.Generator().manual_seed(0), temperature=0)
    b = m.sample(template, Raster(), rng=torch.Generator().manual_seed(5), temperature=0)
    assert torch.equal(a.values, b.values)
    with pytest.raises(ValueError, match="temperature"):
        m.sample(template, Raster(), rng=torch.Generator(), temperature=-1)


@pytest.mark.parametrize("orderer", [TopProb(), Margin()], ids=["top-prob", "margin"])
@torch.no_grad()
def test_masked_adaptive_score_order_covers_every_slot_once(orderer):
    m = model(MaskedTransformer)
    batch = grid_batch(4)
    scores, order = m.score(batch, orderer=orderer)
    order.validate(batch)
    n_pred = batch.target.sum(1)
    assert torch.equal(order.num_blocks, n_pred)  # blocks of one
    slot_block = order.slot_block()
    for b in range(4):
        assert sorted(slot_block[b][batch.target[b]].tolist()) == list(range(int(n_pred[b])))
    # the scores are those of sequential unmasking along the chosen order
    again, _ = m.score(batch, order)
    assert torch.allclose(scores.logp, again.logp, atol=1e-5)
    # and each step chose the slot the orderer prefers given the true values so far
    for b in range(2):
        known = batch.given.clone()
        for slot in order.perm[b][order.block[b] >= 0].tolist():
            open_ = batch.target & ~known
            assert int(orderer.select(m(batch, known), open_)[b]) == slot
            known[b, slot] = True


def test_causal_rejects_adaptive_orderers_and_blocks():
    m = model(CausalTransformer)
    batch = grid_batch(3)
    with pytest.raises(NotApplicableError, match="masked"):
        m.score(batch, orderer=TopProb())
    with pytest.raises(NotApplicableError, match="masked"):
        m.sample(batch, Margin(), rng=torch.Generator())
    blocks = with_blocks(random_order(batch), 3)
    with pytest.raises(NotApplicableError, match="block"):
        m.score(batch, blocks)
    with pytest.raises(NotApplicableError, match="block"):
        m.loss(batch, blocks)
    with pytest.raises(NotApplicableError, match="block"):
        m.sample(batch, BlocksOf3(), rng=torch.Generator())


def test_masked_refuses_variable_length_sampling():
    m = model(MaskedTransformer, VAR_SPEC)
    with pytest.raises(NotApplicableError, match="variable-length"):
        m.sample(var_batch(2), Raster(), rng=torch.Generator())


def test_bad_values_name_the_item_and_slot():
    m = model(CausalTransformer)
    batch = grid_batch(3)
    values = batch.values.clone()
    values[2, 5] = 7  # slot 5 is kind "b" of size 5
    with pytest.raises(ValueError, match=r"item 2, slot 5: value 7 is outside kind 'b'"):
        m.score(batch.with_values(values), random_order(batch))


# --------------------------------------------------------------------------- variable length


def test_causal_variable_length_sampling_pads_after_end():
    m = model(CausalTransformer, VAR_SPEC)
    template = collate(
        [TokenSet(torch.zeros(10, dtype=torch.long), torch.zeros(10, dtype=torch.long), torch.arange(10)[:, None], torch.zeros(10, dtype=torch.bool))]
        * 16
    )
    samples = {}
    for use_cache in (True, False):
        out = m.sample(template, Raster(), rng=torch.Generator().manual_seed(2), use_cache=use_cache)
        samples[use_cache] = out
        lengths = []
        for b in range(16):
            ends = (out.values[b] == 3) & ~out.pad[b]
            if ends.any():
                p = int(ends.nonzero()[0, 0])
                assert not out.pad[b, : p + 1].any()
                assert out.pad[b, p + 1 :].all() and (out.values[b, p + 1 :] == 0).all()
                lengths.append(p + 1)
            else:
                assert not out.pad[b].any()
                lengths.append(10)
        assert min(lengths) < 10 and len(set(lengths)) > 1
        assert [len(t) for t in out.unbatch()] == lengths
    assert torch.equal(samples[True].values, samples[False].values)
    assert torch.equal(samples[True].pad, samples[False].pad)


def test_causal_variable_length_scores_end_token_and_ignores_padding():
    m = model(CausalTransformer, VAR_SPEC)
    batch = var_batch(6)
    scores, _ = m.score(batch, orderer=Raster())
    assert torch.equal(scores.scored, ~batch.pad)
    last = (~batch.pad).sum(1) - 1
    assert torch.all(scores.logp[torch.arange(6), last] < 0)  # the END slot is predicted
