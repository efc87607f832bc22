import pytest
import torch

from seqify.protocols import GeneratorCaps
from seqify.testing import check_orderer, toy_batch
from seqify.types import KindSpec, TokenizerSpec
from seqify_orderers.orderers import RAR, Entropy, FixedRandom, Margin, Random, Raster, Reverse, TopProb

STATIC = [Raster(), Reverse(), Random(), FixedRandom(seed=3), RAR()]
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
