"""The built-in generators: causal (sigma-GPT style, KV cache) and masked (any-order)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError

from seqify.errors import NotApplicableError
from seqify.nn import KVCache, TransformerConfig, TransformerStack, block_causal_mask
from seqify.ordering import StaticOrderer
from seqify.protocols import Generator
from seqify.types import KindSpec, OrderBatch, TokenBatch, TokenizerSpec, TokenSet, collate
from seqify_generators.causal import CausalTransformer
from seqify_generators.masked import MaskedTransformer
from seqify_orderers.orderers import Margin, Parallel, Random, Raster, TopProb

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


def model(cls, spec=SPEC, seed: int = 0, layout: str | None = None):
    torch.manual_seed(seed)
    return cls(spec, cls.config_model(**TINY, **({"block_layout": layout} if layout else {})))


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
    assert CausalTransformer.caps.variable_length and CausalTransformer.caps.blocks
    assert not CausalTransformer.caps.adaptive
    assert MaskedTransformer.caps.blocks and MaskedTransformer.caps.adaptive
    assert not MaskedTransformer.caps.variable_length


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("cls,block_size", [(CausalTransformer, 1), (CausalTransformer, 3), (MaskedTransformer, 1)])
def test_loss_decreases_when_overfitting(cls, block_size):
    m = model(cls)
    batch = grid_batch(8)
    order = with_blocks(random_order(batch), block_size)
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
        (CausalTransformer, BlocksOf3()),
        (CausalTransformer, Parallel(k=4, base="random")),
        (MaskedTransformer, Parallel(k=4, base="raster")),
    ],
    ids=["causal-raster", "causal-random", "masked-random", "masked-blocks", "masked-top-prob", "masked-margin",
         "causal-blocks", "causal-parallel", "masked-parallel"],
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


def test_causal_rejects_adaptive_orderers():
    m = model(CausalTransformer)
    batch = grid_batch(3)
    with pytest.raises(NotApplicableError, match="masked"):
        m.score(batch, orderer=TopProb())
    with pytest.raises(NotApplicableError, match="masked"):
        m.sample(batch, Margin(), rng=torch.Generator())


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


# --------------------------------------------------------------------------- blocks


def test_block_causal_mask_sees_earlier_blocks_and_known_positions_of_its_own():
    block = torch.tensor([[-1, 0, 0, 1, 1, 2]])
    pos = torch.arange(6)[None]
    plain = block_causal_mask(block, block)[0, 0]
    assert plain.shape == (6, 6)
    assert plain[3].tolist() == [True, True, True, False, False, False]  # blocks -1 and 0 only
    assert not plain[0].any()  # nothing is earlier than the first block
    within = block_causal_mask(block, block, q_pos_BT=pos, k_pos_BS=pos)[0, 0]
    assert torch.equal(within, torch.tril(torch.ones(6, 6, dtype=torch.bool)))  # non-decreasing blocks: causal
    keys = torch.tensor([[True, True, False, True, True, True]])
    masked = block_causal_mask(block, block, q_pos_BT=pos, k_pos_BS=pos, key_mask_BS=keys)[0, 0]
    assert not masked[:, 2].any() and masked[4, 3]
    # with a cache: the new queries (the last two) against all keys
    tail = block_causal_mask(block[:, 4:], block, q_pos_BT=pos[:, 4:], k_pos_BS=pos)[0, 0]
    assert torch.equal(tail, within[4:])
    with pytest.raises(ValueError, match="both"):
        block_causal_mask(block, block, q_pos_BT=pos)


@torch.no_grad()
def test_stack_with_block_mask_and_cache_matches_one_full_pass():
    torch.manual_seed(0)
    stack = TransformerStack(TransformerConfig(**TINY)).eval()
    x = torch.randn(2, 7, 32)
    block = torch.tensor([[-1, 0, 0, 1, 1, 1, 2], [-1, -1, 0, 0, 0, 1, 2]])
    pos = torch.arange(7).expand(2, 7)
    full = stack(x, attn_mask=block_causal_mask(block, block, q_pos_BT=pos, k_pos_BS=pos))
    causal = stack(x, causal=True)
    assert torch.allclose(full, causal, atol=1e-5)  # non-decreasing blocks + positions = causal
    cache = KVCache(len(stack.blocks), 7)
    parts = []
    for start, stop in ((0, 3), (3, 6), (6, 7)):
        mask = block_causal_mask(block[:, start:stop], block[:, :stop], q_pos_BT=pos[:, start:stop], k_pos_BS=pos[:, :stop])
        # a look ahead that is not stored changes nothing that follows
        peek = stack(x[:, start : start + 1], cache=cache, attn_mask=mask[:, :, :1, : start + 1], store=False)
        assert cache.length == start and torch.allclose(peek, full[:, start : start + 1], atol=1e-5)
        parts.append(stack(x[:, start:stop], cache=cache, attn_mask=mask))
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)
    with pytest.raises(ValueError, match="attn_mask replaces"):
        stack(x, causal=True, attn_mask=torch.ones(2, 1, 7, 7, dtype=torch.bool))


@torch.no_grad()
def test_kv_cache_keeps_the_first_n_new_positions_with_and_without_room_to_stage():
    stack = TransformerStack(TransformerConfig(**TINY)).eval()
    x = torch.randn(2, 6, 32)
    pos = torch.arange(6).expand(2, 6)
    full = stack(x, causal=True)
    for capacity in (6, 4):  # 6: the unkept positions are staged in the buffer; 4: concatenated
        cache = KVCache(len(stack.blocks), capacity)
        mask = block_causal_mask(pos[:, :3], pos[:, :3], q_pos_BT=pos[:, :3], k_pos_BS=pos[:, :3])
        h = stack(x[:, :3], cache=cache, attn_mask=mask, store=2)  # keep 0, 1; position 2 seen once
        assert cache.length == 2 and torch.allclose(h, full[:, :3], atol=1e-5)
        mask = block_causal_mask(pos[:, 2:4], pos[:, :4], q_pos_BT=pos[:, 2:4], k_pos_BS=pos[:, :4])
        h = stack(x[:, 2:4], cache=cache, attn_mask=mask, store=2)  # position 2 again, now kept
        assert cache.length == 4 and torch.allclose(h, full[:, 2:4], atol=1e-5)
    with pytest.raises(RuntimeError, match="overflow"):
        stack(x[:, 4:5], cache=cache, store=1)
    with pytest.raises(ValueError, match="keep=3 of 1"):
        stack(x[:, 4:5], cache=KVCache(len(stack.blocks), 6), store=3)


@pytest.mark.parametrize("layout", ["merged", "split"])
@pytest.mark.parametrize("block_size", [1, 2, 4])
@torch.no_grad()
def test_causal_block_sampling_takes_one_pass_per_block(block_size, layout):
    m = model(CausalTransformer, layout=layout)
    template = collate(grid_items(3, n_given=2))  # 10 slots to sample per item
    passes = []  # tokens fed in each pass
    handle = m.stack.register_forward_pre_hook(lambda _, args: passes.append(args[0].shape[1]))
    try:
        m.generate(template, with_blocks(random_order(template), block_size), rng=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    blocks = -(-10 // block_size)
    # blocks of one: the given prefix and the first query in one pass, then one pass per slot
    assert len(passes) == (10 if block_size == 1 else blocks)
    if block_size > 1 and layout == "merged":
        # about one token per slot: token i of pass k holds block k-1's i-th value and block k's i-th target
        sizes = [min(block_size, 10 - i) for i in range(0, 10, block_size)]
        assert sum(passes) == 1 + sum(max(a, b) for a, b in zip([2, *sizes[:-1]], sizes))
    elif block_size > 1:  # a value token and a query token per sampled slot (the last block's values unfed)
        assert sum(passes) == 1 + 2 + 2 * 10 - (10 - (blocks - 1) * block_size)


@pytest.mark.parametrize("layout", ["merged", "split"])
@torch.no_grad()
def test_causal_blocks_do_not_peek_at_their_own_or_later_blocks(layout):
    m = model(CausalTransformer, layout=layout)
    batch = grid_batch(5)
    order = with_blocks(random_order(batch), 3)
    slot_block = order.slot_block()
    logp = m(batch, order)  # position t predicts perm[t]
    assert order.num_blocks.tolist() == [3] * 5
    for k in range(3):
        changed = batch.with_values(torch.where(slot_block >= k, (batch.values + 1) % 3, batch.values))
        other = m(changed, order)
        same = (order.block >= 0) & (order.block <= k)
        later = order.block > k
        assert torch.equal(logp[same], other[same]), k  # depends only on the given slots and blocks < k
        if k < 2:
            assert not torch.allclose(logp[later].exp(), other[later].exp(), atol=1e-4), k


@pytest.mark.parametrize("layout", ["merged", "split"])
@torch.no_grad()
def test_causal_block_likelihood_is_a_normalized_distribution(layout):
    # 5 slots of 3 values, slot 2 given, 4 predicted in blocks of 2: sum p(x) over all 81 completions is 1
    spec = TokenizerSpec((KindSpec("v", 3),), ("pos",), (5,), 5)
    m = model(CausalTransformer, spec)
    for p in m.parameters():  # away from the near-uniform init, so a leak would show
        p.add_(0.3 * torch.randn_like(p))
    grid = torch.cartesian_prod(*[torch.arange(3)] * 4)
    values = torch.zeros(81, 5, dtype=torch.long)
    values[:, [0, 1, 3, 4]] = grid
    values[:, 2] = 1
    given = torch.zeros(5, dtype=torch.bool)
    given[2] = True
    items = [TokenSet(v, torch.zeros(5, dtype=torch.long), torch.arange(5)[:, None], given) for v in values]
    batch = collate(items)
    prio = torch.tensor([3.0, 0.0, 9.0, 1.0, 2.0]).expand(81, 5)
    order = OrderBatch.from_groups(batch, torch.tensor([1, 0, 0, 0, 1]).expand(81, 5), prio)
    assert order.perm[0].tolist() == [2, 1, 3, 4, 0] and order.block[0].tolist() == [-1, 0, 0, 1, 1]
    scores, _ = m.score(batch, order)
    total = scores.logp.double().sum(1).exp().sum()
    assert abs(float(total) - 1.0) < 1e-5
    # and each block's joint (factorised) distribution sums to one given the earlier block
    block1 = scores.logp[:, [0, 4]].double().sum(1).exp().view(3, 3, 3, 3)  # slots 0, 1, 3, 4
    block1 = block1.permute(1, 2, 0, 3).reshape(9, 9)  # rows: values of block 0 (slots 1, 3)
    assert torch.allclose(block1.sum(1), torch.ones(9, dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize("layout", ["merged", "split"])
@pytest.mark.parametrize("block_size", [2, 5])
@torch.no_grad()
def test_causal_block_sampling_kv_cache_and_teacher_forcing_agree(block_size, layout):
    m = model(CausalTransformer, layout=layout)
    items = grid_items(5, n_given=2)
    items[1] = TokenSet(items[1].values[:7], items[1].kinds[:7], items[1].coords[:7], items[1].given[:7])
    items[2].given[:] = False  # rows with different numbers of given slots and of blocks
    template = collate(items)
    order = with_blocks(random_order(template), block_size)
    a, logp_a = m.generate(template, order, rng=torch.Generator().manual_seed(7), use_cache=True, return_logp=True)
    b, logp_b = m.generate(template, order, rng=torch.Generator().manual_seed(7), use_cache=False, return_logp=True)
    assert torch.equal(a.values, b.values) and torch.equal(a.pad, template.pad)
    _check_sample(template, a)
    predicted = template.target
    finite = torch.isfinite(logp_a[predicted])
    assert torch.equal(finite, torch.isfinite(logp_b[predicted]))
    assert torch.allclose(logp_a[predicted][finite], logp_b[predicted][finite], atol=1e-5)
    # the step distributions are the teacher-forced ones of the finished samples, so the
    # exact score of a sample is the sum over blocks of its block-by-block log-probabilities
    scores, _ = m.score(a, order)
    truth = true_gid(SPEC, a)
    stepwise = logp_a.gather(2, truth[..., None]).squeeze(2)
    assert torch.allclose(scores.logp[predicted], stepwise[predicted], atol=1e-5)
    s1 = m.sample(template, Parallel(k=3), rng=torch.Generator().manual_seed(11), use_cache=True)
    s2 = m.sample(template, Parallel(k=3), rng=torch.Generator().manual_seed(11), use_cache=False)
    assert torch.equal(s1.values, s2.values)
    g1 = m.sample(template, Parallel(k=3), rng=torch.Generator().manual_seed(11), temperature=0)
    g2 = m.sample(template, Parallel(k=3), rng=torch.Generator().manual_seed(11), temperature=0, use_cache=False)
    assert torch.equal(g1.values, g2.values)


@pytest.mark.parametrize("layout", ["merged", "split"])
def test_causal_block_loss_is_mean_nll_of_score_and_blocks_change_the_scores(layout):
    m = model(CausalTransformer, layout=layout)
    batch = grid_batch(5)
    order = with_blocks(random_order(batch), 3)
    scores, _ = m.score(batch, order)
    assert torch.allclose(m.loss(batch, order), -scores.logp[scores.scored].mean(), atol=1e-5)
    one, _ = m.score(batch, random_order(batch))
    assert not torch.allclose(one.logp, scores.logp)


@torch.no_grad()
def test_causal_blocks_of_one_keep_the_single_stream_layout():
    """Blocks of one: position t holds BOS or the value of perm[t-1] plus the target of perm[t]."""
    m = model(CausalTransformer)
    batch = grid_batch(4)
    order = random_order(batch)
    gid = true_gid(SPEC, batch)
    source = m.source_embed(batch.kinds, batch.coords)
    target = m.target_embed(batch.kinds, batch.coords)
    B, L, D = source.shape
    x = torch.zeros(B, L, D)
    for b in range(B):
        for t in range(L):
            x[b, t] = target[b, order.perm[b, t]]
            if t == 0:
                x[b, t] += m.value_embed.weight[m.bos_id]
            else:
                prev = order.perm[b, t - 1]
                x[b, t] += m.value_embed.weight[gid[b, prev]] + source[b, prev]
    h = m.stack(x, causal=True)
    allowed = SPEC.kind_mask()[batch.kinds.gather(1, order.perm)]
    reference = m.head(h).masked_fill(~allowed, float("-inf")).log_softmax(-1)
    assert torch.allclose(m(batch, order), reference, atol=1e-5)


def test_causal_refuses_blocks_for_variable_length_generation():
    m = model(CausalTransformer, VAR_SPEC)
    template = var_batch(3)
    order = with_blocks(Raster().infer_orders(template, rng=torch.Generator()), 2)
    with pytest.raises(NotApplicableError, match="variable-length"):
        m.generate(template, order, rng=torch.Generator())
    with pytest.raises(NotApplicableError, match="variable-length"):
        m.sample(template, Parallel(k=2, base="raster"), rng=torch.Generator())
    scores, _ = m.score(template, order)  # scoring known items in blocks is fine
    assert torch.equal(scores.scored, ~template.pad)
    out = m.sample(template, Parallel(k=1, base="raster"), rng=torch.Generator().manual_seed(0))
    assert out.values.shape == template.values.shape


def test_masked_next_block_only_loss_counts_only_the_next_block():
    m = model(MaskedTransformer)
    batch = grid_batch(6)
    order = with_blocks(random_order(batch), 3)  # 3 blocks of 3 per item
    flagged = OrderBatch(order.perm, order.block, next_block_only=True)
    torch.manual_seed(5)
    loss = m.loss(batch, flagged)
    torch.manual_seed(5)
    cut = (torch.rand(6) * order.num_blocks).long()  # the cut the loss draws
    assert len(set(cut.tolist())) > 1
    slot_block = order.slot_block()
    gid = true_gid(SPEC, batch)
    with torch.no_grad():
        per_item = []
        for b in range(6):
            known = batch.given | ((slot_block >= 0) & (slot_block < cut[b]))
            nll = -m(batch, known)[b].gather(1, gid[b][:, None]).squeeze(1)
            per_item.append(nll[slot_block[b] == cut[b]].mean())
    assert torch.allclose(loss.detach(), torch.stack(per_item).mean(), atol=1e-5)
    torch.manual_seed(5)
    assert not torch.allclose(m.loss(batch, order).detach(), loss.detach())  # default: every later block


# --------------------------------------------------------------------------- slot inputs (issue 19)


class RowInputs:
    """Tokenizer double with slot inputs: a slot's level is its row; its input holds, per
    lower row, the sum of that row's values (VAR's f_hat in miniature)."""

    slot_input_dim = 3
    calls = 0

    def slot_inputs(self, batch):
        RowInputs.calls += 1
        row_BL = batch.coords[..., 0]
        per_row_B3 = torch.stack([(batch.values * (row_BL == r)).sum(1) for r in range(3)], 1).float() / 10
        lower_BL3 = torch.arange(3)[None, None, :] < row_BL[..., None]
        return per_row_B3[:, None, :] * lower_BL3, row_BL


def row_blocks(batch: TokenBatch) -> OrderBatch:
    """Given first, then one block per row (the next-scale order of the grid)."""
    return OrderBatch.from_groups(batch, batch.coords[..., 0])


def raster_order(batch: TokenBatch) -> OrderBatch:
    return Raster().infer_orders(batch, rng=torch.Generator())


def test_causal_reads_slot_inputs_only_when_the_tokenizer_gives_them():
    torch.manual_seed(0)
    with_inputs = CausalTransformer(SPEC, CausalTransformer.config_model(**TINY), tokenizer=RowInputs())
    assert with_inputs.uses_slot_inputs and with_inputs.input_proj.in_features == 3
    assert not model(CausalTransformer).uses_slot_inputs  # no tokenizer: today's model
    off = CausalTransformer(SPEC, CausalTransformer.config_model(**TINY, slot_inputs=False), tokenizer=RowInputs())
    assert not off.uses_slot_inputs
    # the inputs are added to the target embeddings only: a zero projection gives the model without them
    plain = model(CausalTransformer)
    plain.load_state_dict({k: v for k, v in with_inputs.state_dict().items() if not k.startswith("input_proj")})
    batch = grid_batch(4, n_given=0)
    order = row_blocks(batch)
    with torch.no_grad():
        assert not torch.allclose(with_inputs(batch, order), plain(batch, order))
        with_inputs.input_proj.weight.zero_()
        with_inputs.input_proj.bias.zero_()
        assert torch.allclose(with_inputs(batch, order), plain(batch, order), atol=1e-6)


def test_causal_slot_inputs_refuse_an_order_that_skips_a_level():
    m = CausalTransformer(SPEC, CausalTransformer.config_model(**TINY), tokenizer=RowInputs())
    batch = grid_batch(4, n_given=0)
    m.loss(batch, row_blocks(batch))
    m.loss(batch, raster_order(batch))  # row-major: every lower row first
    with pytest.raises(NotApplicableError, match="level-1 slot in block 0 .* use an order that decodes level by level"):
        m.loss(batch, OrderBatch.from_groups(batch, torch.zeros_like(batch.values)))  # one block: rows together
    with pytest.raises(NotApplicableError, match="slot_inputs = false"):
        m.sample(batch, Random(), rng=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("layout", ["merged", "split"])
@pytest.mark.parametrize("blocks", [True, False])
@torch.no_grad()
def test_causal_slot_inputs_sampling_and_teacher_forcing_agree(layout, blocks):
    torch.manual_seed(0)
    m = CausalTransformer(SPEC, CausalTransformer.config_model(**TINY, block_layout=layout), tokenizer=RowInputs())
    template = grid_batch(5, n_given=0)
    order = row_blocks(template) if blocks else raster_order(template)
    RowInputs.calls = 0
    a, logp_a = m.generate(template, order, rng=torch.Generator().manual_seed(7), use_cache=True, return_logp=True)
    calls = RowInputs.calls
    b, logp_b = m.generate(template, order, rng=torch.Generator().manual_seed(7), use_cache=False, return_logp=True)
    assert torch.equal(a.values, b.values)
    assert calls <= 1 + 1 + 3  # the level check, the start, one refresh per new level
    # each step's distribution is the teacher-forced one of the finished sample (inputs of its values)
    scores, _ = m.score(a, order)
    stepwise = logp_a.gather(2, true_gid(SPEC, a)[..., None]).squeeze(2)
    assert torch.allclose(scores.logp, stepwise, atol=1e-5)
    assert torch.allclose(logp_a, logp_b, atol=1e-5)


@torch.no_grad()
def test_causal_slot_inputs_do_not_peek_at_their_own_level():
    m = CausalTransformer(SPEC, CausalTransformer.config_model(**TINY), tokenizer=RowInputs())
    batch = grid_batch(4, n_given=0)
    order = row_blocks(batch)
    base, _ = m.score(batch, order)
    for row in range(3):
        changed = batch.with_values(torch.where(batch.coords[..., 0] >= row, (batch.values + 1) % 3, batch.values))
        other, _ = m.score(changed, order)
        earlier = batch.coords[..., 0] < row  # predicted before any changed value, inputs included
        later = batch.coords[..., 0] > row
        assert torch.allclose(other.logp[earlier], base.logp[earlier])
        if later.any():
            assert not torch.allclose(other.logp[later], base.logp[later])


def test_causal_block_layout_auto_is_merged_but_split_for_a_growing_spec():
    import dataclasses

    assert model(CausalTransformer).block_layout == "merged"
    grows = dataclasses.replace(SPEC, grows=True)
    assert CausalTransformer(grows, CausalTransformer.config_model(**TINY)).block_layout == "split"
    assert CausalTransformer(grows, CausalTransformer.config_model(**TINY, block_layout="split")).block_layout == "split"
    with pytest.raises(ValueError, match="cannot serve a tokenizer that grows"):
        CausalTransformer(grows, CausalTransformer.config_model(**TINY, block_layout="merged"))


@torch.no_grad()
def test_causal_slot_inputs_of_a_given_slot_never_read_the_slots_still_to_predict():
    # row 2 given, rows 0 and 1 predicted: row 2's input (the sums of rows 0 and 1) must not leak them
    m = CausalTransformer(SPEC, CausalTransformer.config_model(**TINY), tokenizer=RowInputs())
    items = grid_items(4, n_given=0)
    for item in items:
        item.given[8:] = True
    batch = collate(items)
    order = raster_order(batch)
    assert order.perm[0, 4].item() == 0  # given slots 8-11 first, then slot 0 (row 0, col 0)
    changed = batch.with_values(torch.where(batch.coords[..., 0] == 0, (batch.values + 1) % 3, batch.values))
    # slot 0's distribution is predicted from the given row 2 alone, whatever row 0 holds
    assert torch.allclose(m(changed, order)[:, 4], m(batch, order)[:, 4], atol=1e-6)
    sample, logp = m.generate(batch, order, rng=torch.Generator().manual_seed(3), return_logp=True)
    scores, _ = m.score(sample, order)
    stepwise = logp.gather(2, true_gid(SPEC, sample)[..., None]).squeeze(2)
    assert torch.allclose(scores.logp[batch.target], stepwise[batch.target], atol=1e-5)


def test_the_learned_order_refuses_a_causal_generator_with_slot_inputs():
    from seqify_learned.causal_model import CausalLearnedOrderModel

    m = CausalTransformer(SPEC, CausalTransformer.config_model(**TINY), tokenizer=RowInputs())
    with pytest.raises(NotApplicableError, match="slot_inputs = false"):
        CausalLearnedOrderModel(m, SPEC)
