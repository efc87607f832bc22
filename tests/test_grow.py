"""Growing items as they are decoded (seqify.grow): the loop, the optional Tokenizer.next_slots
member, the orderers' check, and the octree tokenizer grown by real (random-weight) generators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqify.evaluate import sample_items
from seqify.grow import extend, grow_items
from seqify.protocols import BaseTokenizer, GeneratorCaps
from seqify.testing.doubles import ToyTokenizer, UnigramGenerator
from seqify.types import KindSpec, TokenizerSpec, TokenSet

from seqify_orderers.orderers import Random, Raster, Reverse

CPU = torch.device("cpu")


class CountTokenizer(BaseTokenizer):
    """A grammar in a few lines: each step's last value v announces v + 1 slots in the next
    step, for ``steps`` steps. Coordinates: (step, index in the step)."""

    name = "count"

    def __init__(self, steps: int = 3, max_len: int = 64):
        self.steps, self.length = steps, max_len

    @property
    def spec(self) -> TokenizerSpec:
        return TokenizerSpec(kinds=(KindSpec("n", 3),), coord_names=("step", "index"), coord_sizes=(self.steps, 8),
                             max_len=self.length, grows=True)

    def _slots(self, step: int, n: int) -> TokenSet:
        coords = torch.stack([torch.full((n,), step), torch.arange(n)], dim=1)
        return TokenSet(torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long), coords,
                        torch.zeros(n, dtype=torch.bool))

    def blank(self) -> TokenSet:
        return self._slots(0, 1)

    def next_slots(self, tokens: TokenSet) -> TokenSet | None:
        step = int(tokens.coords[-1, 0])
        if step + 1 >= self.steps:
            return None
        return self._slots(step + 1, int(tokens.values[-1]) + 1)

    def encode(self, item):  # not needed by the loop
        raise ValueError("count: nothing to encode")

    def decode(self, tokens: TokenSet):
        return tokens.values.tolist()


def _grammar_holds(item: TokenSet, steps: int) -> bool:
    step_L = item.coords[:, 0]
    if int(step_L.max()) != steps - 1:
        return False
    for s in range(1, steps):
        before = item.values[step_L == s - 1]
        if int((step_L == s).sum()) != int(before[-1]) + 1:
            return False
    return True


def test_grow_loop_follows_the_grammar_for_a_random_model():
    tok = CountTokenizer(steps=4)
    model = UnigramGenerator(tok.spec)
    with torch.no_grad():
        model.logits_LV.normal_(0, 2.0, generator=torch.Generator().manual_seed(0))
    out = sample_items(model, [tok.blank() for _ in range(20)], Raster(), batch_size=6, device=CPU, seed=0,
                       temperature=1.0, tokenizer=tok, coord_names=tok.spec.coord_names)
    assert len(out) == 20 and all(_grammar_holds(item, 4) for item in out)
    assert len({len(item) for item in out}) > 1  # the items grew to different lengths
    assert not any(bool(item.given.any()) for item in out)  # the templates' own given flags come back
    again = sample_items(model, [tok.blank() for _ in range(20)], Raster(), batch_size=6, device=CPU, seed=0,
                         temperature=1.0, tokenizer=tok, coord_names=tok.spec.coord_names)
    assert all(torch.equal(a.values, b.values) for a, b in zip(out, again))  # reproducible from the seed


def test_a_tokenizer_without_the_member_samples_as_before():
    class OldTokenizer:  # a third-party tokenizer written before next_slots (no BaseTokenizer)
        name = "old"
        spec = ToyTokenizer().spec

    tok = ToyTokenizer()
    assert tok.next_slots(tok.encode("1234")) is None  # the default: nothing grows
    model = UnigramGenerator(tok.spec)
    with torch.no_grad():
        model.logits_LV.normal_(0, 2.0, generator=torch.Generator().manual_seed(1))
    templates = [tok.encode("1234"), tok.encode("5678")] * 4
    plain = sample_items(model, templates, Raster(), batch_size=3, device=CPU, seed=3, temperature=1.0)
    for given_tok in (tok, OldTokenizer()):
        same = sample_items(model, templates, Raster(), batch_size=3, device=CPU, seed=3, temperature=1.0,
                            tokenizer=given_tok)
        assert [t.values.tolist() for t in same] == [t.values.tolist() for t in plain]
        assert all(len(t) == 4 for t in same)


class _Bad(CountTokenizer):
    def __init__(self, answer, max_len: int = 64):
        super().__init__(steps=3, max_len=max_len)
        self.answer = answer

    def next_slots(self, tokens):
        return self.answer(self, tokens)


@pytest.mark.parametrize("answer, message", [
    (lambda self, t: [1, 2], "must return a TokenSet or None, got list"),
    (lambda self, t: self._slots(1, 0), "returned no slots"),
    (lambda self, t: TokenSet(torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long),
                              torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, dtype=torch.bool)),
     "3 coordinate axes, the item has 2"),
    (lambda self, t: TokenSet(torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long),
                              torch.zeros(2, 2, dtype=torch.long), torch.ones(2, dtype=torch.bool)),
     "returned given slots"),
    (lambda self, t: self._slots(1, 5), "more than its spec's max_len 4"),
])
def test_bad_next_slots_fail_naming_the_tokenizer_and_the_problem(answer, message):
    tok = _Bad(answer, max_len=4)
    model = UnigramGenerator(tok.spec)
    with pytest.raises(ValueError, match="tokenizer 'count'") as info:
        grow_items(model, tok, [tok.blank()], Raster(), batch_size=1, device=CPU,
                   rng=torch.Generator().manual_seed(0), temperature=1.0)
    assert message in str(info.value)


def test_spec_that_grows_has_no_end_token_and_orderers_check_it():
    with pytest.raises(ValueError, match="no end token"):
        TokenizerSpec(kinds=(KindSpec("n", 3),), coord_names=("p",), coord_sizes=(4,), max_len=4,
                      variable_length=True, end_kind=0, end_value=2, grows=True)
    spec = CountTokenizer().spec
    caps = GeneratorCaps(any_order=True, blocks=True)
    assert Raster().check(spec, caps) is None and Random().check(spec, caps) is None
    assert "does not generate step by step" in Reverse().check(spec, caps)
    from seqify_learned.orderer import LearnedOrder

    assert "grows its items" in LearnedOrder().check(spec, GeneratorCaps(any_order=True, blocks=True,
                                                                          hidden_states=True))


def test_extend_marks_the_item_so_far_given():
    item = TokenSet(torch.tensor([2, 1]), torch.zeros(2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long),
                    torch.tensor([False, False]))
    nxt = CountTokenizer()._slots(1, 3)
    out = extend(item, nxt)
    assert out.values.tolist() == [2, 1, 0, 0, 0] and out.given.tolist() == [True, True, False, False, False]
    assert out.coords[2:].tolist() == nxt.coords.tolist()


def test_old_checkpoint_spec_without_grows_still_matches():
    import dataclasses
    import json

    from seqify.bench.sample import _same_spec

    spec = ToyTokenizer().spec
    saved = json.loads(json.dumps(dataclasses.asdict(spec)))
    saved.pop("grows")  # written before the field existed
    assert _same_spec(spec, saved)
    assert not _same_spec(spec, {**saved, "max_len": 5})
    assert not _same_spec(dataclasses.replace(spec, grows=True), saved)


# ------------------------------------------------------------------- the octree, grown


def _clouds(n: int, seed: int = 0):
    from seqify_pointcloud.items import PointCloudItem, normalize_box

    rng = np.random.default_rng(seed)
    return [PointCloudItem(normalize_box(rng.normal(size=(64, 3)) * [1.0, 0.6, 0.4])) for _ in range(n)]


@pytest.mark.parametrize("generator, orderer", [("causal", Raster()), ("masked", Random()), ("causal", "next-scale"),
                                               ("masked", "next-scale")])
def test_random_weight_models_grow_complete_octrees(generator, orderer):
    """Valid by construction: every sample of an untrained model decodes to a complete tree,
    also when the model announces far more children than fit (they are thinned)."""
    from seqify_generators.causal import CausalTransformer
    from seqify_generators.masked import MaskedTransformer
    from seqify_pointcloud.octree import THINNED, OctreeTokenizer, octree_walk

    tok = OctreeTokenizer(depth=4)
    tok.fit(_clouds(4))
    if orderer == "next-scale":  # one block per level
        from seqify_orderers.spatial import NextScale

        orderer = NextScale()
    cls = {"causal": CausalTransformer, "masked": MaskedTransformer}[generator]
    assert orderer.check(tok.spec, cls.caps) is None
    torch.manual_seed(0)
    model = cls(tok.spec, {"d_model": 32, "n_layers": 1, "n_heads": 2})
    out = sample_items(model, [tok.blank() for _ in range(12)], orderer, batch_size=6, device=CPU, seed=0,
                       temperature=1.0, tokenizer=tok, coord_names=tok.spec.coord_names)
    decoded = [tok.decode(item) for item in out]
    assert all(d is not None for d in decoded)
    assert all(octree_walk(item.values.numpy() + 1, 4, tok.spec.max_len).complete for item in out)
    assert all(len(item) <= tok.spec.max_len for item in out)
    # a model that announces every child (code 255) overflows max_len: thinned, still complete
    with torch.no_grad():
        model.head.bias[254] = 50.0
    out = sample_items(model, [tok.blank() for _ in range(4)], orderer, batch_size=4, device=CPU, seed=0,
                       temperature=1.0, tokenizer=tok, coord_names=tok.spec.coord_names)
    assert all(bool((item.values == 254).all()) and len(item) <= tok.spec.max_len for item in out)
    assert all(tok.decode(item).source == THINNED for item in out)


@pytest.mark.parametrize("orderer_name", ["raster", "next-scale"])
def test_each_growth_step_is_predicted_as_in_training(orderer_name):
    """encode and grow agree inside the model: at every step of growing the true tree,
    the causal generator's distribution for the open slots (given the levels before, as
    the grow loop asks) equals the one scoring the whole encoded tree gives them (raster:
    the step's first slot, whose context is all true values; next-scale: the whole level,
    one block). With next-scale the root alone is a one-slot block, sampled in the block
    layout it trained in."""
    from seqify_generators.causal import CausalTransformer
    from seqify_orderers.spatial import NextScale
    from seqify_pointcloud.octree import OctreeTokenizer
    from seqify.types import collate

    orderer = Raster() if orderer_name == "raster" else NextScale()
    tok = OctreeTokenizer(depth=4)
    clouds = _clouds(3, seed=1)
    tok.fit(clouds)
    assert orderer.check(tok.spec, CausalTransformer.caps) is None
    torch.manual_seed(0)
    model = CausalTransformer(tok.spec, {"d_model": 32, "n_layers": 2, "n_heads": 2}).eval()
    names = tok.spec.coord_names
    truth = tok.encode(clouds[0])
    batch = collate([truth], coord_names=names)
    scores, _ = model.score(batch, orderer.infer_orders(batch, rng=torch.Generator().manual_seed(0)))
    grown, steps = tok.blank(), 0
    while True:
        template = collate([grown], coord_names=names)
        order = orderer.infer_orders(template, rng=torch.Generator().manual_seed(0))
        _, logp_BLV = model.generate(template, order, rng=torch.Generator().manual_seed(0), return_logp=True)
        open_L = ~grown.given
        n = len(grown)
        if orderer_name == "raster":  # later slots of the step follow the sampled values: the first one
            open_L = open_L & (torch.arange(n) == int(open_L.nonzero()[0]))
        true_gid = truth.values[:n][open_L]  # one kind: global id = value
        step_logp = logp_BLV[0, :n][open_L].gather(1, true_gid[:, None])[:, 0]
        assert torch.allclose(step_logp, scores.logp[0, :n][open_L], atol=1e-4), steps
        done = TokenSet(truth.values[:n].clone(), grown.kinds, grown.coords, torch.zeros(n, dtype=torch.bool))
        nxt = tok.next_slots(done)
        if nxt is None:
            break
        grown, steps = extend(done, nxt), steps + 1
    assert len(grown) == len(truth) and steps == 3
