import pytest
import torch

from seqify.protocols import GeneratorCaps
from seqify.testing import check_orderer, toy_batch
from seqify.types import KindSpec, TokenizerSpec, TokenSet, collate
from seqify_orderers.orderers import (
    RAR,
    Entropy,
    FixedRandom,
    Margin,
    Parallel,
    ParallelOptions,
    Random,
    Raster,
    Reverse,
    TopProb,
)

STATIC = [Raster(), Reverse(), Random(), FixedRandom(seed=3), RAR(), Parallel(), Parallel(k=3, base="raster")]
ADAPTIVE = [TopProb(), Margin(), Entropy()]
SPEC = TokenizerSpec((KindSpec("d", 10),), ("position",), (4,), 4)
VAR_SPEC = TokenizerSpec((KindSpec("t", 5),), ("position",), (8,), 8, variable_length=True, end_kind=0, end_value=4)


@pytest.mark.parametrize("orderer", STATIC + ADAPTIVE, ids=lambda o: o.name)
def test_every_orderer_gives_valid_orders_with_given_first(orderer):
    batch = toy_batch(16)
    check_orderer(orderer, batch)
    order = orderer.train_orders(batch, progress=0.0, rng=torch.Generator().manual_seed(0))
    assert bool((order.perm[:, 0] == 0).all())  # the given first digit leads


def test_raster_reverse_and_fixed_random():
    batch = toy_batch(3)
    rng = torch.Generator().manual_seed(0)
    assert Raster().infer_orders(batch, rng=rng).perm.tolist() == [[0, 1, 2, 3]] * 3
    assert Reverse().infer_orders(batch, rng=rng).perm.tolist() == [[0, 3, 2, 1]] * 3
    fixed = FixedRandom(seed=5).infer_orders(batch, rng=rng).perm
    assert all(row == fixed[0].tolist() for row in fixed.tolist())
    assert torch.equal(fixed, FixedRandom(seed=5).infer_orders(batch, rng=torch.Generator().manual_seed(9)).perm)


def test_random_differs_per_example_and_is_seeded():
    batch = toy_batch(64)
    a = Random().infer_orders(batch, rng=torch.Generator().manual_seed(1)).perm
    b = Random().infer_orders(batch, rng=torch.Generator().manual_seed(1)).perm
    assert torch.equal(a, b)
    assert len({tuple(r) for r in a.tolist()}) > 3


def test_rar_anneals_from_random_to_raster():
    rar = RAR(anneal_start=0.4, anneal_end=0.6)
    assert rar.r(0.0) == 1.0 and rar.r(0.4) == 1.0 and rar.r(0.5) == pytest.approx(0.5) and rar.r(0.6) == 0.0
    batch = toy_batch(200)
    rng = torch.Generator().manual_seed(0)
    raster = torch.arange(4).expand(200, 4)
    early = rar.train_orders(batch, progress=0.1, rng=rng).perm
    late = rar.train_orders(batch, progress=0.9, rng=rng).perm
    assert torch.equal(late, raster)
    assert (early != raster).any(1).float().mean() > 0.6  # 5 of 6 random perms of 3 slots differ
    assert torch.equal(rar.infer_orders(batch, rng=rng).perm, raster)
    with pytest.raises(ValueError, match="anneal_end"):
        RAR(anneal_start=0.7, anneal_end=0.2)


def test_adaptive_select_picks_the_most_confident_open_slot():
    # slot 1: peaked (p=.9/.1); slot 2: flat; slot 3: nearly tied top-2 but high top-1
    probs = torch.tensor([[[0.25, 0.25, 0.25, 0.25], [0.9, 0.1, 0, 0], [0.25, 0.25, 0.25, 0.25], [0.48, 0.47, 0.05, 0]]])
    logp = probs.log()
    cand = torch.tensor([[False, True, True, True]])
    assert TopProb().select(logp, cand).tolist() == [1]
    assert Margin().select(logp, cand).tolist() == [1]
    assert Entropy().select(logp, cand).tolist() == [1]
    cand2 = torch.tensor([[False, False, True, True]])
    assert TopProb().select(logp, cand2).tolist() == [3]
    assert Margin().select(logp, cand2).tolist() == [3]  # .01 margin beats 0 margin
    assert Entropy().select(logp, cand2).tolist() == [3]


def test_check_says_why_an_orderer_does_not_apply():
    any_order = GeneratorCaps(any_order=True, adaptive=False, variable_length=True)
    assert Raster().check(VAR_SPEC, any_order) is None
    assert RAR().check(VAR_SPEC, any_order) is None
    assert "variable-length" in Random().check(VAR_SPEC, any_order)
    assert "variable-length" in Margin().check(VAR_SPEC, GeneratorCaps(adaptive=True))
    assert "masked" in Margin().check(SPEC, any_order)
    assert Margin().check(SPEC, GeneratorCaps(adaptive=True)) is None
    assert "any order" in Reverse().check(SPEC, GeneratorCaps(any_order=False))


def test_every_registered_orderer_is_valid_or_says_why():
    """Conformance over the registry: an orderer either serves the toy tokens validly or
    explains why it cannot (e.g. graph orderers on a sequence)."""
    from seqify.plugins import build_registry
    from seqify.testing import ToyTokenizer

    reg = build_registry()
    spec = ToyTokenizer().spec
    caps = GeneratorCaps(any_order=True, blocks=True, adaptive=True)
    names = reg.names("orderer")
    assert {"bfs", "nodes-first", "learned"} <= set(names)
    for name in names:
        orderer = reg.get("orderer", name)()
        reason = orderer.check(spec, caps)
        if reason is None:
            check_orderer(orderer, toy_batch(8))
        else:
            assert isinstance(reason, str) and name in reason


def eight_slot_batch(n: int = 3):
    """Items of 8 slots (slot 0 given) plus one of 5 slots (padding)."""
    def item(length):
        given = torch.zeros(length, dtype=torch.bool)
        given[0] = True
        return TokenSet(torch.arange(length) % 10, torch.zeros(length, dtype=torch.long), torch.arange(length)[:, None], given)

    return collate([item(8) for _ in range(n)] + [item(5)])


@pytest.mark.parametrize("base", ["raster", "reverse", "random", "fixed-random", "rar"])
def test_parallel_with_k1_is_the_base_order(base):
    batch = eight_slot_batch()
    par, ref = Parallel(k=1, base=base), type(Parallel(base=base).base_orderer)()
    for progress in (0.0, 0.9):
        a = par.train_orders(batch, progress=progress, rng=torch.Generator().manual_seed(4))
        b = ref.train_orders(batch, progress=progress, rng=torch.Generator().manual_seed(4))
        assert torch.equal(a.perm, b.perm) and torch.equal(a.block, b.block)
    a = par.infer_orders(batch, rng=torch.Generator().manual_seed(5))
    b = ref.infer_orders(batch, rng=torch.Generator().manual_seed(5))
    assert torch.equal(a.perm, b.perm) and torch.equal(a.block, b.block)
    assert par.stochastic == ref.stochastic
    assert par.check(SPEC, GeneratorCaps(blocks=False)) is None  # blocks of one run anywhere


def test_parallel_cuts_the_base_order_into_blocks_of_k():
    batch = eight_slot_batch()
    par = Parallel(k=3, base="random")
    train = par.train_orders(batch, progress=0.0, rng=torch.Generator().manual_seed(1))
    infer = par.infer_orders(batch, rng=torch.Generator().manual_seed(1))
    base = Random().infer_orders(batch, rng=torch.Generator().manual_seed(1))
    for order in (train, infer):
        order.validate(batch)
        assert order.block_sizes().tolist() == [[3, 3, 1]] * 3 + [[3, 1, 0]]  # 7 or 4 predicted slots
    assert torch.equal(infer.perm, base.perm)  # the same permutation as the base order
    assert train.next_block_only and not infer.next_block_only
    raster = Parallel(k=2, base="raster").infer_orders(batch, rng=torch.Generator())
    assert raster.perm[0].tolist() == list(range(8)) and raster.block[0].tolist() == [-1, 0, 0, 1, 1, 2, 2, 3]
    assert raster.block[3].tolist() == [-1, 0, 0, 1, 1, -2, -2, -2]


def test_parallel_settings_signature_and_stochasticity():
    assert ParallelOptions().k == 2 and ParallelOptions().base == "random"
    with pytest.raises(ValueError):
        ParallelOptions(k=0)
    with pytest.raises(ValueError):
        ParallelOptions(kk=2)
    with pytest.raises(ValueError, match="unknown base order 'bfs'"):
        Parallel(k=2, base="bfs")
    assert repr(Parallel(k=4, base="raster")) == "Parallel(k=4, base='raster')"
    assert Parallel(k=4, base="raster").train_signature != Parallel(k=2, base="raster").train_signature
    assert Parallel(k=4, base="raster").train_signature != Parallel(k=4, base="random").train_signature
    assert Parallel(base="random").stochastic and not Parallel(base="raster").stochastic
    assert Parallel.produces_blocks and not Random.produces_blocks and not TopProb.produces_blocks


def test_parallel_says_why_it_does_not_apply():
    no_blocks = GeneratorCaps(any_order=True, blocks=False, variable_length=True)
    blocks = GeneratorCaps(any_order=True, blocks=True, variable_length=True)
    reason = Parallel(k=2).check(SPEC, no_blocks)
    assert "parallel" in reason and "blocks" in reason
    assert Parallel(k=2).check(SPEC, blocks) is None
    assert "variable-length" in Parallel(k=2, base="raster").check(VAR_SPEC, blocks)
    assert Parallel(k=1, base="raster").check(VAR_SPEC, no_blocks) is None
    reason = Parallel(k=1, base="random").check(VAR_SPEC, blocks)
    assert "parallel" in reason and "variable-length" in reason
    assert "any order" in Parallel(k=2).check(SPEC, GeneratorCaps(any_order=False, blocks=True))
