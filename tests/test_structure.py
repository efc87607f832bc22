"""Structure-aware attention heads, the looped transformer, and the validation probe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seqify.bench import BenchRequest, run_bench
from seqify.nn import axis_head_mask
from seqify.types import KindSpec, TokenizerSpec, TokenSet, collate
from seqify_generators.causal import CausalConfig, CausalTransformer
from seqify_generators.masked import MaskedTransformer
from seqify_orderers.orderers import Raster

ROW = torch.arange(81) // 9
COL = torch.arange(81) % 9
BOX = (ROW // 3) * 3 + COL // 3
COORDS = torch.stack([ROW, COL, BOX], dim=1)
SPEC = TokenizerSpec(kinds=(KindSpec("digit", 9),), coord_names=("row", "col", "box"), coord_sizes=(9, 9, 9),
                     max_len=81)


def _grid(values: torch.Tensor) -> TokenSet:
    return TokenSet(values=values, kinds=torch.zeros(81, dtype=torch.long), coords=COORDS.clone(),
                    given=torch.ones(81, dtype=torch.bool))


def test_axis_heads_see_their_row_column_box_and_the_last_head_everything():
    mask = axis_head_mask(COORDS[None], n_heads=4)[0]
    assert mask.shape == (4, 81, 81)
    assert mask[0, 0, 8] and not mask[0, 0, 9]  # row head: (0,0) sees (0,8), not (1,0)
    assert mask[1, 0, 72] and not mask[1, 0, 1]  # column head: (0,0) sees (8,0), not (0,1)
    assert mask[2, 0, 20] and not mask[2, 0, 3]  # box head: (0,0) sees (2,2), not (0,3)
    assert mask[3].all()
    assert (mask[:3].sum(-1) == 9).all()  # 9 cells share each row, column and box
    pad = torch.ones(1, 81, dtype=torch.bool)
    pad[0, 80] = False
    padded = axis_head_mask(COORDS[None], 4, key_mask_BL=pad)[0]
    assert not padded[:, :80, 80].any() and padded[:, 80, 80].all()  # padding hidden, never an empty row
    with pytest.raises(ValueError, match="3 coordinate axes need more than 3 heads"):
        axis_head_mask(COORDS[None], n_heads=3)


def test_masked_generator_with_axis_heads_reads_only_peers_when_the_global_head_is_silenced():
    torch.manual_seed(0)
    model = MaskedTransformer(SPEC, {"d_model": 32, "n_layers": 1, "n_heads": 4, "axis_heads": True}).eval()
    d, dh = 32, 8
    with torch.no_grad():  # the global head (head 3) adds nothing: only row / column / box heads carry values
        model.stack.blocks[0].attn.qkv.weight[2 * d + 3 * dh: 2 * d + 4 * dh] = 0
        model.stack.blocks[0].attn.qkv.bias[2 * d + 3 * dh: 2 * d + 4 * dh] = 0
    base = torch.randint(0, 9, (81,))
    far, peer = base.clone(), base.clone()
    far[80] = (far[80] + 1) % 9  # (8,8): shares no row, column or box with (0,0)
    peer[8] = (peer[8] + 1) % 9  # (0,8): same row as (0,0)
    out = [model(collate([_grid(v)]))[0, 0] for v in (base, far, peer)]
    torch.testing.assert_close(out[0], out[1])
    assert not torch.allclose(out[0], out[2])
    plain = MaskedTransformer(SPEC, {"d_model": 32, "n_layers": 1, "n_heads": 4}).eval()
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(plain(collate([_grid(base)]))[0, 0], plain(collate([_grid(far)]))[0, 0])


def test_causal_generator_refuses_axis_heads_with_the_reason():
    with pytest.raises(ValueError, match="axis_heads is not available in the causal generator"):
        CausalConfig(axis_heads=True)


def test_looped_transformer_shares_weights_and_its_kv_cache_sampling_matches():
    torch.manual_seed(0)
    once = CausalTransformer(SPEC, {"d_model": 32, "n_layers": 1, "n_heads": 2})
    twice = CausalTransformer(SPEC, {"d_model": 32, "n_layers": 1, "n_heads": 2, "loops": 2})
    twice.load_state_dict(once.state_dict())  # same parameters: a loop adds depth, not weights
    batch = collate([_grid(torch.randint(0, 9, (81,))) for _ in range(2)])
    order = Raster().infer_orders(batch, rng=torch.Generator().manual_seed(0))
    assert not torch.allclose(once(batch, order), twice(batch, order))
    template = batch.with_values(torch.zeros_like(batch.values))
    template.given[:] = False
    cached = twice.sample(template, Raster(), rng=torch.Generator().manual_seed(1), use_cache=True)
    uncached = twice.sample(template, Raster(), rng=torch.Generator().manual_seed(1), use_cache=False)
    assert torch.equal(cached.values, uncached.values)


def test_probe_logs_the_validation_solve_rate_without_changing_training(tmp_path: Path):
    def run(out: str, probe_items: int) -> dict:
        req = BenchRequest(modality="sudoku", orderer="margin", generator="masked", train_orderer="random",
                           budget="smoke", seed=1, out=tmp_path / out,
                           overrides={"train": {"eval_every": 10, "probe_items": probe_items}})
        run_bench(req)
        return json.loads((tmp_path / out / "results.json").read_text())

    probed, plain = run("probed", 8), run("plain", 0)
    series = probed["training"]["series"]
    assert [s for s, _ in series["val_puzzle_accuracy"]] == [10, 20]
    assert all(0 <= v <= 1 for _, v in series["val_cell_accuracy"])
    assert "series" not in plain["training"] or "val_puzzle_accuracy" not in plain["training"]["series"]
    assert probed["training"]["loss_curve"] == plain["training"]["loss_curve"]  # forked streams
    assert probed["modelability"]["nats_per_token"] == plain["modelability"]["nats_per_token"]
    assert probed["model"]["train_signature"] == plain["model"]["train_signature"]
