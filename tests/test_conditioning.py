"""Sampling controls (temperature, top-k, top-p, classifier-free guidance) and class
conditioning: the shared draw, the generators, the image modality's labels, the runner and the CLI."""

import math

import pytest
import torch
from typer.testing import CliRunner

from seqify.bench import BenchRequest, Reporter, prepare_data, resolve_cell, run_bench, run_sample
from seqify.bench.stages import build_model, use_conditions
from seqify.errors import ConfigError
from seqify.hookspecs import hookimpl
from seqify.nn import (ClassEmbedding, SamplingControls, guided_logits, pick_values, restricted_log_softmax,
                       truncate_logits)
from seqify.plugins import build_registry, get_registry
from seqify.testing import ToyModality, ToyPlugin
from seqify.types import KindSpec, TokenBatch, TokenizerSpec, TokenSet, collate


# ------------------------------------------------------------------ the shared draw


def test_top_k_one_is_greedy_and_top_k_keeps_the_k_largest_with_ties():
    g = torch.Generator().manual_seed(0)
    logp_NV = torch.randn(64, 9, generator=g).log_softmax(-1)
    noise_NV = -torch.log(-torch.log(torch.rand(64, 9, generator=g)))
    assert torch.equal(pick_values(logp_NV, 1.0, noise_NV, top_k=1), logp_NV.argmax(-1))
    assert torch.equal(pick_values(logp_NV, 3.0, noise_NV, top_k=1), logp_NV.argmax(-1))
    kept = truncate_logits(torch.tensor([[0.0, 3.0, 1.0, 3.0, 2.0]]), top_k=2)
    assert torch.isfinite(kept).tolist() == [[False, True, False, True, False]]  # the tie with the 2nd is kept
    kept = truncate_logits(torch.tensor([[0.0, 3.0, 1.0, 2.5, 2.0]]), top_k=3)
    assert torch.isfinite(kept).tolist() == [[False, True, False, True, True]]
    # draws with top-k 2 only ever take one of the two largest
    picks = pick_values(logp_NV[:1].expand(2000, -1), 1.0, -torch.log(-torch.log(torch.rand(2000, 9, generator=g))),
                        top_k=2)
    assert set(picks.tolist()) == set(logp_NV[0].topk(2).indices.tolist())


def test_top_p_keeps_the_smallest_set_whose_mass_reaches_p():
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])  # sorted: 0.5, 0.3, 0.15, 0.05
    logp = probs.log()[None]
    def kept(p):
        return set(torch.isfinite(truncate_logits(logp, top_p=p))[0].nonzero()[:, 0].tolist())
    assert kept(0.4) == {1}  # 0.5 alone reaches 0.4
    assert kept(0.5) == {1}  # exactly 0.5: the smallest set is still {0.5}
    assert kept(0.51) == {1, 3}
    assert kept(0.75) == {1, 3}
    assert kept(0.9) == {1, 3, 0}
    assert kept(0.97) == {0, 1, 2, 3}
    assert kept(1.0) == {0, 1, 2, 3}
    # values that were not allowed stay -inf; the most likely value is always kept
    masked = torch.tensor([[float("-inf"), 0.0, -1.0]])
    assert torch.isfinite(truncate_logits(masked, top_p=1e-6)).tolist() == [[False, True, False]]
    assert torch.isfinite(truncate_logits(masked, top_p=0.99)).tolist() == [[False, True, True]]
    with pytest.raises(ValueError, match="top_p"):
        truncate_logits(logp, top_p=1.5)


def test_the_default_draw_is_the_plain_gumbel_max_bit_for_bit():
    g = torch.Generator().manual_seed(1)
    logp_NV = torch.randn(300, 17, generator=g).log_softmax(-1)
    noise_NV = -torch.log(-torch.log(torch.rand(300, 17, generator=g)))
    for t in (1.0, 0.7, 2.0):
        assert torch.equal(pick_values(logp_NV, t, noise_NV), (logp_NV / t + noise_NV).argmax(-1))
    assert torch.equal(pick_values(logp_NV, 0.0, noise_NV), logp_NV.argmax(-1))


def test_the_guided_logits_are_one_plus_s_cond_minus_s_uncond_and_the_linear_ramp_is_vars():
    c, u = torch.randn(3, 5), torch.randn(3, 5)
    assert torch.allclose(guided_logits(torch.cat([c, u]), 1.5), 2.5 * c - 1.5 * u)
    assert torch.equal(guided_logits(torch.cat([c, u]), 0.0), c)
    ramp = SamplingControls(guidance=3.0, guidance_schedule="linear")
    assert [ramp.scale(i, 4) for i in range(4)] == [0.0, 1.0, 2.0, 3.0]  # VAR: cfg * si / (n - 1)
    assert ramp.scale(0, 1) == 3.0
    assert SamplingControls(guidance=3.0).scale(0, 4) == 3.0
    with pytest.raises(ValueError, match="guidance_schedule"):
        SamplingControls(guidance=1.0, guidance_schedule="cosine")


def test_label_dropout_gives_the_null_class_at_its_rate():
    emb = ClassEmbedding(10, 8, drop=0.1)
    n = 40_000
    zeros = torch.zeros(n, 1, dtype=torch.long)
    batch = TokenBatch(zeros, zeros, zeros[..., None], zeros.bool(), zeros.bool(), [], (), torch.arange(n) % 10)
    assert torch.equal(emb.labels(batch), torch.arange(n) % 10)  # no dropout: the true labels
    torch.manual_seed(0)
    dropped = emb.labels(batch, drop=True) == 10
    share = float(dropped.float().mean())
    assert abs(share - 0.1) < 4 * math.sqrt(0.1 * 0.9 / n), share
    batch.cond[:5] = -1  # no condition: the null class
    assert emb.labels(batch)[:6].tolist() == [10] * 5 + [5]
    batch.cond[7] = 10
    with pytest.raises(ValueError, match="item 7 has condition 10"):
        emb.labels(batch)
    no_cond = collate([TokenSet(torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long),
                                torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, dtype=torch.bool))])
    assert no_cond.cond is None
    with pytest.raises(ValueError, match="carries no condition"):
        emb.labels(no_cond)
    assert emb.labels(no_cond, required=False).tolist() == [10]


# ------------------------------------------------------------------ the generators

SPEC = TokenizerSpec(kinds=(KindSpec("v", 4),), coord_names=("pos",), coord_sizes=(6,), max_len=6)


def _class_data(n: int, seed: int = 0):
    """Items of 6 slots all holding their class c (0..3), with a little noise."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randint(0, 4, (n,), generator=g)
    values = cls[:, None].expand(n, 6).clone()
    flip = torch.rand(n, 6, generator=g) < 0.05
    values[flip] = torch.randint(0, 4, (int(flip.sum()),), generator=g)
    return [TokenSet(values[i], torch.zeros(6, dtype=torch.long), torch.arange(6)[:, None],
                     torch.zeros(6, dtype=torch.bool), cond=int(cls[i])) for i in range(n)]


def _template(classes):
    return collate([TokenSet(torch.zeros(6, dtype=torch.long), torch.zeros(6, dtype=torch.long),
                             torch.arange(6)[:, None], torch.zeros(6, dtype=torch.bool), cond=c) for c in classes])


@pytest.fixture(scope="module", params=["causal", "masked"])
def trained(request):
    """A tiny conditional model trained for a few hundred steps on class-valued items."""
    reg = get_registry()
    torch.manual_seed(0)
    model = reg.get("generator", request.param)(SPEC, {"d_model": 32, "n_layers": 2, "n_heads": 2, "condition": True},
                                                conditions=4)
    random = reg.get("orderer", "random")()
    data = collate(_class_data(512))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for step in range(250):
        idx = torch.randint(0, 512, (64,), generator=g)
        batch = TokenBatch(data.values[idx], data.kinds[idx], data.coords[idx], data.given[idx], data.pad[idx],
                           [{}] * 64, (), data.cond[idx])
        loss = model.loss(batch, random.train_orders(batch, progress=step / 250, rng=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return request.param, model


def _orderers(name):
    reg = get_registry()
    out = [reg.get("orderer", "raster")()]
    if name == "masked":  # trained on random orders of one slot; the causal model's block layout was not trained
        out += [reg.get("orderer", "parallel")(k=3), reg.get("orderer", "margin")()]
    return out


def test_a_conditional_model_trains_and_samples_its_class(trained):
    name, model = trained
    classes = [0, 1, 2, 3] * 8
    for orderer in _orderers(name):
        samples = model.sample(_template(classes), orderer, rng=torch.Generator().manual_seed(0), temperature=0.0)
        match = (samples.values == torch.tensor(classes)[:, None]).float().mean()
        assert match > 0.9, (name, orderer, float(match))
        guided = model.sample(_template(classes), orderer, rng=torch.Generator().manual_seed(0), temperature=1.0,
                              guidance=2.0, guidance_schedule="linear", top_p=0.9)
        assert guided.values.shape == (32, 6) and guided.cond.tolist() == classes
        assert (guided.values == torch.tensor(classes)[:, None]).float().mean() > 0.9
    # scoring is conditional on the true label: the right class is far more likely than a wrong one
    batch = collate(_class_data(16, seed=5))
    right = model.score(batch, orderer=_orderers(name)[0])[0].logp.sum()
    batch.cond = (batch.cond + 1) % 4
    wrong = model.score(batch, orderer=_orderers(name)[0])[0].logp.sum()
    assert right > wrong + 16
    batch.cond = None
    with pytest.raises(ValueError, match="carries no condition"):
        model.score(batch, orderer=_orderers(name)[0])


def test_guidance_zero_is_conditional_sampling_and_the_defaults_change_nothing(trained):
    name, model = trained
    for orderer in _orderers(name):
        def draw(**kw):
            return model.sample(_template([0, 1, 2, 3]), orderer, rng=torch.Generator().manual_seed(7), **kw).values
        plain = draw()
        assert torch.equal(draw(guidance=0.0), plain)
        assert torch.equal(draw(guidance=0.0, guidance_schedule="linear"), plain)
        assert torch.equal(draw(top_k=None, top_p=None), plain)
        assert torch.equal(draw(top_p=1.0), plain)  # keeps every value: the same draw
        assert torch.equal(draw(temperature=1.0, top_k=1), draw(temperature=0.0))


def test_guided_causal_sampling_applies_the_formula_to_the_null_class_rows():
    """At temperature 0, the first slot is the argmax of (1+s) log p(.|c) - s log p(.|null)."""
    reg = get_registry()
    torch.manual_seed(3)
    model = reg.get("generator", "causal")(SPEC, {"d_model": 16, "n_layers": 1, "n_heads": 2, "condition": True},
                                          conditions=4)
    raster = reg.get("orderer", "raster")()
    template = _template([0, 1, 2, 3, 0, 1])
    order = raster.infer_orders(template, rng=torch.Generator())
    logp_c = model.forward(template, order)[:, 0]
    template_null = _template([0] * 6)
    template_null.cond = torch.full((6,), -1)  # no condition: the null class
    logp_u = model.forward(template_null, order)[:, 0]
    for s in (0.0, 1.5, 8.0):
        want = ((1 + s) * logp_c - s * logp_u).argmax(-1)
        got = model.sample(template, raster, rng=torch.Generator(), temperature=0.0, guidance=s).values[:, 0]
        assert torch.equal(got, want), s
    with pytest.raises(ValueError, match="class-conditional"):
        reg.get("generator", "causal")(SPEC, {"d_model": 16, "n_layers": 1, "n_heads": 2}).sample(
            template, raster, rng=torch.Generator(), guidance=1.0)


def test_condition_on_needs_classes_and_off_keeps_the_model_unchanged():
    reg = get_registry()
    for name in ("causal", "masked"):
        cls = reg.get("generator", name)
        with pytest.raises(ValueError, match="declares none"):
            cls(SPEC, {"condition": True})
        torch.manual_seed(0)
        plain = cls(SPEC, {"d_model": 16, "n_layers": 1, "n_heads": 2}).state_dict()
        torch.manual_seed(0)
        ignored = cls(SPEC, {"d_model": 16, "n_layers": 1, "n_heads": 2}, conditions=10)  # condition off
        assert ignored.conditions == 0 and ignored.state_dict().keys() == plain.keys()
        assert all(torch.equal(plain[k], v) for k, v in ignored.state_dict().items())


# ------------------------------------------------------------------ the image modality


def test_the_image_labels_line_up_with_the_tokenized_items():
    req = BenchRequest(modality="image", dataset="digits", tokenizer="pixels", orderer="raster", generator="causal",
                       out="x", budget="smoke", overrides={"generator": {"condition": True}})
    cell = resolve_cell(req)
    data = prepare_data(cell, req, Reporter(), {})
    assert data.n_conditions == 10
    model = build_model(cell, data.spec, 0, conditions=data.n_conditions)
    info = use_conditions(cell, data, model)
    assert info["conditional"] and info["n_conditions"] == 10 and sum(info["test_class_counts"].values()) == len(data.test)
    for table, items, kept in ((data.train, data.splits.train, range(len(data.train))),
                               (data.test, data.splits.test, data.test_kept)):
        labels = [items[i].label for i in kept]
        assert table.cond.tolist() == labels
        for row in (0, 3, len(table) - 1):  # each row's tokens are those of the item whose label it carries
            assert table.batch([row]).cond.tolist() == [labels[row]]
            assert torch.equal(table.batch([row]).values[0], cell.tokenizer.encode(items[list(kept)[row]]).values)


# ------------------------------------------------------------------ the runner


class StepModality(ToyModality):
    """The toy digit strings, conditioned on their step (1 or 2: classes 0 and 1)."""

    name = "toy-steps"

    def num_conditions(self, splits):
        return 2

    def condition(self, item):
        return (int(item[1]) - int(item[0])) % 10 - 1


class _StepPlugin:
    @hookimpl
    def register_modalities(self, register):
        register("toy-steps", "tests.test_conditioning:StepModality", "Toy strings with their step as class.")

    @hookimpl
    def register_tokenizers(self, register):
        register("digits", "seqify.testing:ToyTokenizer", "One slot per digit.", modality="toy-steps")


@pytest.fixture(scope="module")
def registry():
    return build_registry([ToyPlugin(), _StepPlugin()])


def test_a_conditional_cell_runs_scores_with_the_true_class_and_samples_guided(registry, tmp_path):
    over = {"generator": {"condition": True, "d_model": 32, "n_layers": 2, "n_heads": 2},
            "eval": {"guidance": 1.0, "guidance_schedule": "linear", "top_k": 5}, "train": {"steps": 60}}
    res = run_bench(BenchRequest(modality="toy-steps", orderer="raster", generator="causal", out=tmp_path / "run",
                                 overrides=over), registry=registry).results
    cond = res["conditioning"]
    assert cond["conditional"] and cond["n_conditions"] == 2 and "true class" in cond["scoring"]
    assert sum(cond["test_class_counts"].values()) == 32
    assert res["sampling"] == {"temperature": 1.0, "top_k": 5, "guidance": 1.0, "guidance_schedule": "linear"}
    assert 0 <= res["metrics"]["exact"] <= 1
    again = run_sample(tmp_path / "run", tmp_path / "more", sampling={"guidance": 3.0}, registry=registry).results
    assert again["sampling"]["guidance"] == 3.0 and again["conditioning"]["conditional"]
    # unconditional cells say so, and guidance is refused for them
    plain = run_bench(BenchRequest(modality="toy-steps", orderer="raster", generator="causal", out=tmp_path / "plain",
                                   steps=2), registry=registry).results
    assert plain["conditioning"] == {"conditional": False, "n_conditions_declared": 2}
    with pytest.raises(ConfigError, match="needs a class-conditional model"):
        run_bench(BenchRequest(modality="toy-steps", orderer="raster", generator="causal", out=tmp_path / "g",
                               steps=2, overrides={"eval": {"guidance": 1.5}}), registry=registry)


def test_condition_without_declared_classes_or_through_a_wrapper_is_refused(registry, tmp_path):
    with pytest.raises(ConfigError, match="declares none"):
        run_bench(BenchRequest(modality="toy", orderer="raster", generator="causal", out=tmp_path / "a", steps=2,
                               overrides={"generator": {"condition": True}}), registry=registry)
    with pytest.raises(ConfigError, match="reads no condition"):
        run_bench(BenchRequest(modality="toy-steps", orderer="learned", generator="masked", out=tmp_path / "b",
                               steps=2, overrides={"generator": {"condition": True}}), registry=registry)


def test_a_generator_without_the_new_keywords_runs_unless_they_are_set(registry, tmp_path):
    res = run_bench(BenchRequest(modality="toy", orderer="raster", generator="unigram", out=tmp_path / "a", steps=2),
                    registry=registry).results
    assert res["sampling"] == {"temperature": 1.0}
    with pytest.raises(ConfigError, match=r"generator 'unigram'.*does not take top_k, top_p"):
        run_bench(BenchRequest(modality="toy", orderer="raster", generator="unigram", out=tmp_path / "b", steps=2,
                               overrides={"eval": {"top_k": 3, "top_p": 0.9}}), registry=registry)
    with pytest.raises(ConfigError, match="eval.top_p"):
        resolve_cell(BenchRequest(modality="toy", orderer="raster", out="x", overrides={"eval": {"top_p": 1.5}}),
                     registry)


# ------------------------------------------------------------------ the CLI


def test_the_cli_passes_the_sampling_options_and_condition(monkeypatch):
    import seqify.bench
    import seqify.matrix
    from seqify.cli import app

    seen = {}

    def fake_bench(req, rep=None, registry=None):
        seen["bench"] = req
        raise ConfigError("stop")

    def fake_matrix(req, rep=None):
        seen["matrix"] = req
        raise ConfigError("stop")

    def fake_sample(run, out, **kw):
        seen["sample"] = kw
        raise ConfigError("stop")

    monkeypatch.setattr(seqify.bench, "run_bench", fake_bench)
    monkeypatch.setattr(seqify.matrix, "run_matrix", fake_matrix)
    monkeypatch.setattr(seqify.bench, "run_sample", fake_sample)
    runner = CliRunner()
    opts = ["--temperature", "0.8", "--top-k", "5", "--top-p", "0.9", "--guidance", "1.5",
            "--guidance-schedule", "linear"]
    r = runner.invoke(app, ["bench", "-m", "image", "-o", "raster", "--out", "x", "--condition", *opts])
    assert r.exit_code == 2 and "stop" in r.output
    want = {"temperature": 0.8, "top_k": 5, "top_p": 0.9, "guidance": 1.5, "guidance_schedule": "linear"}
    assert seen["bench"].overrides == {"eval": want, "generator": {"condition": True}}
    runner.invoke(app, ["matrix", "--modalities", "image", "--orderers", "raster", "--out", "x", "--top-k", "2"])
    assert seen["matrix"].overrides == {"eval": {"top_k": 2}}
    runner.invoke(app, ["matrix", "--modalities", "image", "--orderers", "raster", "--out", "x", "--n-samples", "2000"])
    assert seen["matrix"].overrides == {"eval": {"n_samples": 2000}}
    runner.invoke(app, ["bench", "-m", "image", "-o", "raster", "--out", "x", "--n-samples", "1500"])
    assert seen["bench"].overrides == {"eval": {"n_samples": 1500}}
    import seqify.modelability

    def fake_modelability(req, rep=None):
        seen["modelability"] = req
        raise ConfigError("stop")

    monkeypatch.setattr(seqify.modelability, "run_modelability", fake_modelability)
    runner.invoke(app, ["modelability", "-m", "image", "--tokenizers", "vq", "--out", "x", "--n-samples", "800"])
    assert seen["modelability"].overrides == {"eval": {"n_samples": 800}}
    runner.invoke(app, ["sample", "--run", "r", "--out", "x", "--guidance", "3"])
    assert seen["sample"]["sampling"] == {"guidance": 3.0}
    runner.invoke(app, ["bench", "-m", "image", "-o", "raster", "--out", "x"])
    assert seen["bench"].overrides == {}  # nothing given: the budget's defaults
    help_text = runner.invoke(app, ["bench", "--help"]).output
    assert all(flag in help_text for flag in ("--top-k", "--top-p", "--guidance", "--condition"))


def test_guided_causal_sampling_is_the_same_with_and_without_the_kv_cache(trained):
    name, model = trained
    if name != "causal":
        pytest.skip("the KV cache is the causal generator's")
    for orderer in _orderers(name):  # blocks of one and blocks of three
        def draw(cache):
            return model.sample(_template([0, 1, 2, 3, 1]), orderer, rng=torch.Generator().manual_seed(5),
                                guidance=1.5, guidance_schedule="linear", top_k=3, use_cache=cache).values
        assert torch.equal(draw(True), draw(False))
