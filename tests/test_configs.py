"""Every configuration file we publish in benchmarks/configs validates for its command."""

from pathlib import Path

import pytest

from seqify.bench import BenchRequest, resolve_cell
from seqify.protocols import orderer_kind

CONFIGS = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"
CASES = {
    "qm9_full.toml": dict(modality="molecule", dataset="qm9", orderer="bfs", generator="causal"),
    "qm9_learned_full.toml": dict(modality="molecule", dataset="qm9", orderer="learned"),
    **{f"qm9_learned_causal_{name}quick.toml": dict(modality="molecule", dataset="qm9", orderer="learned",
                                                   generator="causal") for name in ("", "t0125_", "stream_", "stream_k1_")},
    "sudoku_full.toml": dict(modality="sudoku", orderer="margin", generator="masked", train_orderer="random"),
    "sudoku_learned_margin.toml": dict(modality="sudoku", orderer="learned"),
    "sudoku_quick_no_axis_heads.toml": dict(modality="sudoku", orderer="margin", generator="masked",
                                            train_orderer="random"),
    **{f"sudoku_quick_{name}.toml": dict(modality="sudoku", orderer="margin", generator="masked",
                                          train_orderer="random")
       for name in ("v1", "bf16_lr1e-3", "bf16_lr2e-3", "bf16_lr3e-3", "bf16_lr1e-3_3000", "bf16_lr2e-3_3000",
                    "bf16_lr2e-3_ema")},
    "zinc_masked_quick.toml": dict(modality="molecule", dataset="zinc250k", orderer="random", generator="masked"),
    **{f"pc_coords_{sort}.toml": dict(modality="pointcloud", tokenizer="coords", orderer="raster", generator="causal")
       for sort in ("zyx", "morton", "random")},
    **{f"image_crt_w{w}.toml": dict(modality="image", tokenizer="vq-crt", orderer="raster", generator="causal")
       for w in ("0", "0.003", "0.03", "3")},
}


def test_every_config_file_is_covered():
    assert {p.name for p in CONFIGS.glob("*.toml")} == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_resolves(name, tmp_path):
    budget = "quick" if "quick" in name or name.startswith(("pc_", "image_", "sudoku_learned")) else "full"
    cell = resolve_cell(BenchRequest(out=tmp_path, budget=budget, config_file=CONFIGS / name, **CASES[name]))
    if name.startswith("pc_coords_"):  # the point order of the coords tokenizer (benchmarks/run_pointclouds.sh)
        assert cell.tokenizer.sort == name.removeprefix("pc_coords_").removesuffix(".toml")
    elif name.startswith("image_crt_w"):  # the CRT weight sweep (benchmarks/run_aligned.sh)
        assert cell.tokenizer.options.crt_weight == float(name.removeprefix("image_crt_w").removesuffix(".toml"))
    elif name == "sudoku_quick_no_axis_heads.toml":  # the learner ablation: plain heads, the v1 schedule
        assert not cell.generator_config.axis_heads and cell.config.train.steps == 2000
        assert cell.config.train.precision == "fp32" and cell.config.train.ema == 0
    elif name == "sudoku_learned_margin.toml":  # the learned order started from margin (issue 18)
        o = cell.orderer.options
        assert cell.names["generator"] == "masked" and o.margin_init == 50.0 and o.margin_teacher == 1.0
        assert not o.p_from_elbo and o.orders_share_batch and o.greedy_order
        assert cell.config.train.steps == 3000  # the demo's quick budget
    elif name.startswith("qm9_learned_causal_"):  # the causal arm's prior temperature and layout (issue 18)
        o = cell.orderer.options
        assert cell.names["generator"] == "causal"
        assert (o.prior_temperature, o.orders_share_batch, o.orders_per_item, o.causal_layout, o.policy_trunk_grad,
                o.policy_lr_scale) == {
            "qm9_learned_causal_quick.toml": (0.25, False, 2, "block", 1.0, 1.0),
            "qm9_learned_causal_t0125_quick.toml": (0.125, True, 2, "block", 1.0, 1.0),
            "qm9_learned_causal_stream_quick.toml": (0.125, True, 2, "stream", 0.1, 3.0),
            "qm9_learned_causal_stream_k1_quick.toml": (0.125, False, 1, "stream", 0.1, 3.0)}[name]
        assert cell.config.eval.n_test == 100 and cell.config.eval.n_samples == 1000
        assert cell.config.train.steps == 1500  # the quick budget the RESULTS tables ran
    elif name.startswith("sudoku_quick_"):  # the learner ablation: one schedule each (its file name)
        t = cell.config.train
        assert cell.generator_config.axis_heads
        assert t.precision == ("fp32" if name == "sudoku_quick_v1.toml" else "bf16")
        assert t.steps == (3000 if name.endswith("_3000.toml") else 2000)
        assert t.ema == (0.99 if name.endswith("_ema.toml") else 0.0)
        assert f"lr{t.lr:.0e}".replace("e-0", "e-") in name or (name == "sudoku_quick_v1.toml" and t.lr == 1e-3)
    elif budget == "full":
        assert cell.config.train.steps >= 50_000
    else:
        assert cell.config.eval.n_test == 16 and cell.config.train.steps == 300
    if name.startswith("qm9") and budget == "full":
        assert cell.config.eval.n_samples == 10_000
    if name == "qm9_learned_full.toml":
        assert orderer_kind(cell.orderer) == "trainable" and cell.names["generator"] == "masked"
