"""Resumable training (a killed run resumes and ends where an uninterrupted one does),
and data-parallel training under torchrun (2 gloo processes = 1 process, same global batch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import importlib.util
from pathlib import Path

import pytest
import torch

from seqify.bench import TRAIN_STATE, BenchRequest, build_model, prepare_data, resolve_cell, Reporter
from seqify.config import TrainConfig
from seqify.io import load_checkpoint, save_checkpoint
from seqify.training import Checkpointing, train

ROOT = Path(__file__).resolve().parents[1]
SEQIFY = str(Path(sys.executable).parent / "seqify")
CELL = ["--modality", "sudoku", "--orderer", "raster", "--generator", "causal", "--budget", "smoke", "--seed", "3"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


@pytest.fixture(scope="module")
def cell_data():
    req = BenchRequest(modality="sudoku", orderer="random", generator="masked", out=Path("unused"), budget="smoke",
                       seed=0)
    cell = resolve_cell(req)
    return cell, prepare_data(cell, req, Reporter(), {})


def _train(cell, data, cfg, checkpoint=None, on_step=None):
    model = build_model(cell, data.spec, 0)
    log = train(model, data.train, data.val, cell.train_orderer, cfg, device=torch.device("cpu"), seed=0,
                checkpoint=checkpoint, on_step=on_step)
    return model, log


class Crash(Exception):
    pass


def test_resume_after_a_crash_ends_where_an_uninterrupted_run_ends(cell_data, tmp_path):
    cell, data = cell_data
    cfg = TrainConfig(steps=24, batch_size=16, lr=1e-3, warmup_steps=3, eval_every=10, val_items=32)
    whole, whole_log = _train(cell, data, cfg)

    messages: list[str] = []
    ck = Checkpointing(tmp_path / "state.pt", every=5, signature="run-a", log=messages.append)

    def crash_at_13(step, loss):
        if step == 13:
            raise Crash

    with pytest.raises(Crash):
        _train(cell, data, cfg, ck, on_step=crash_at_13)
    assert load_checkpoint(ck.path)["step"] == 10
    resumed, resumed_log = _train(cell, data, cfg, ck)
    assert messages == [f"resuming from step 10 of 24 ({ck.path})"]
    for name, tensor in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor, rtol=0, atol=1e-6, msg=name)
    assert resumed_log.loss == whole_log.loss  # the log before the crash is kept, and the steps after match
    assert resumed_log.val_loss == whole_log.val_loss
    assert load_checkpoint(ck.path)["step"] == 24  # the end is saved too: a rerun trains nothing


def test_state_of_another_run_or_a_damaged_file_is_not_resumed(cell_data, tmp_path):
    cell, data = cell_data
    cfg = TrainConfig(steps=6, batch_size=8, warmup_steps=1)
    messages: list[str] = []
    path = tmp_path / "state.pt"
    _train(cell, data, cfg, Checkpointing(path, every=3, signature="run-a", log=messages.append))
    _train(cell, data, cfg, Checkpointing(path, every=3, signature="run-b", log=messages.append))
    assert "belongs to another run" in messages[-1] and "training from the start" in messages[-1]
    path.write_bytes(b"not a checkpoint")
    _train(cell, data, cfg, Checkpointing(path, every=3, signature="run-b", log=messages.append))
    assert "cannot read the training state" in messages[-1] and str(path) in messages[-1]
    assert load_checkpoint(path)["signature"] == "run-b"
    messages.clear()
    _train(cell, data, cfg, Checkpointing(path, every=3, signature="run-b", log=messages.append, resume=False))
    assert messages == []  # --no-resume: trained from the start without looking


def test_nonfinite_loss_stops_before_a_state_is_saved(cell_data, tmp_path):
    cell, data = cell_data
    cfg = TrainConfig(steps=6, batch_size=8, warmup_steps=1, lr=1e30, grad_clip=1e30)
    model = build_model(cell, data.spec, 0)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    path = tmp_path / "state.pt"
    with pytest.raises(FloatingPointError, match="non-finite at or before step 0"):
        train(model, data.train, None, cell.train_orderer, cfg, device=torch.device("cpu"), seed=0,
              checkpoint=Checkpointing(path, every=1, signature="x"))
    assert not path.exists()


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_killed_bench_resumes_from_its_checkpoint_when_the_command_is_rerun(tmp_path, monkeypatch):
    """benchmarks/resume.py: SIGKILL at step 25, the same command again, an uninterrupted run."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code = _benchmark("resume").main([*CELL[:-2], "--seed", "3", "--steps", "30", "--checkpoint-every", "10",
                                      "--kill-at", "25", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "resume.json").read_text())
    assert code == 0, summary
    assert (summary["state_saved_at_step"], summary["resumed_from_step"]) == (20, 20)
    assert summary["max_weight_difference"] <= 1e-6
    assert summary["final_train_loss"]["resumed"] == summary["final_train_loss"]["whole"]
    assert summary["nats_per_token"]["resumed"] == pytest.approx(summary["nats_per_token"]["whole"], abs=1e-6)
    assert not summary["state_left_behind"]  # complete: nothing left to resume
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert [s for s, _ in whole["training"]["loss_curve"]][-1] == 29


def test_two_gloo_processes_train_the_model_one_process_trains_on_the_same_global_batch(tmp_path, monkeypatch):
    """benchmarks/distributed.py: torchrun with 2 CPU processes (gloo), each on half of
    every global batch; the averaged gradients make the steps one process makes."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code = _benchmark("distributed").main(["--nproc", "2", "--steps", "12", "--batch-size", "16", "--seed", "3",
                                           "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "distributed.json").read_text())
    assert code == 0, summary
    assert (summary["processes"], summary["items_per_process"], summary["single_items_per_step"]) == (2, 8, 16)
    assert summary["reports_printed"] == 1  # rank 0 alone reports (and writes)
    assert summary["max_weight_difference"] <= 1e-5
    for (s2, l2), (s1, l1) in zip(*summary["loss_curve"].values(), strict=True):
        assert s2 == s1 and l2 == pytest.approx(l1, abs=1e-4)
    # it trained: the comparison is not between two copies of the initial weights
    req = BenchRequest(modality="sudoku", orderer="raster", generator="causal", out=tmp_path, budget="smoke", seed=3)
    cell = resolve_cell(req)
    initial = build_model(cell, prepare_data(cell, req, Reporter(), {}).spec, 3).state_dict()
    trained = load_checkpoint(tmp_path / "nproc1" / "checkpoint.pt")["model"]
    assert max(float((initial[k] - trained[k]).abs().max()) for k in trained) > 1e-3


def test_odd_global_batch_is_refused_with_the_reason(cell_data, monkeypatch):
    from seqify import distributed

    cell, data = cell_data
    monkeypatch.setattr(distributed, "current", lambda: distributed.Ctx(rank=0, world_size=3))
    with pytest.raises(ValueError, match="batch_size 16 is not divisible by the 3 processes"):
        _train(cell, data, TrainConfig(steps=1, batch_size=16))


def test_matrix_refuses_torchrun(tmp_path):
    proc = subprocess.run([SEQIFY, "matrix", "--modalities", "sudoku", "--orderers", "raster", "--out", str(tmp_path)],
                          env={**_env(), "WORLD_SIZE": "2"}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "seqify bench" in proc.stderr and "torchrun" in proc.stderr


def test_a_model_with_param_groups_gets_them_with_their_lr_scale(cell_data):
    cell, data = cell_data
    model = build_model(cell, data.spec, 0)
    frozen = list(model.head.parameters())
    rest = [p for p in model.parameters() if all(p is not f for f in frozen)]
    seen = {}

    def param_groups(lr, weight_decay):
        seen["args"] = (lr, weight_decay)
        return [{"params": rest, "weight_decay": weight_decay, "lr_scale": 1.0},
                {"params": frozen, "weight_decay": 0.0, "lr_scale": 0.0}]

    model.param_groups = param_groups  # the HasParamGroups protocol, on an instance
    before = [p.detach().clone() for p in frozen]
    other = rest[0].detach().clone()
    train(model, data.train, None, cell.train_orderer, TrainConfig(steps=3, batch_size=8, lr=1e-2, warmup_steps=1),
          device=torch.device("cpu"), seed=0)
    assert seen["args"] == (1e-2, 0.01)
    assert all(torch.equal(b, p) for b, p in zip(before, frozen))  # lr_scale 0: never moved
    assert not torch.equal(other, rest[0])


def test_precision_bf16_trains_in_bf16_on_the_cpu_and_fp32_does_not(cell_data):
    """train.precision: bf16 runs the step under CPU autocast (the linear layers in bf16,
    the attention in float32), fp32 and the CPU's auto in float32; the bf16 run follows
    the float32 run's loss curve to bf16 accuracy."""
    from seqify.training import autocast

    cell, data = cell_data
    seen: dict[str, set] = {}
    curves: dict[str, list[float]] = {}
    for precision in ("bf16", "fp32", "auto"):
        model = build_model(cell, data.spec, 0)
        dtypes: set = set()
        attn = model.stack.blocks[0].attn
        hooks = [model.head.register_forward_hook(lambda m, i, o: dtypes.add(("head", o.dtype))),
                 attn.proj.register_forward_pre_hook(lambda m, i: dtypes.add(("attention", i[0].dtype)))]
        cfg = TrainConfig(steps=20, batch_size=16, lr=3e-3, warmup_steps=2, precision=precision)
        log = train(model, data.train, None, cell.train_orderer, cfg, device=torch.device("cpu"), seed=0)
        for h in hooks:
            h.remove()
        seen[precision] = dtypes
        curves[precision] = [loss for _, loss in log.loss]
    assert seen["bf16"] == {("head", torch.bfloat16), ("attention", torch.bfloat16)}
    assert seen["fp32"] == seen["auto"] == {("head", torch.float32), ("attention", torch.float32)}
    assert curves["fp32"] == curves["auto"]
    assert curves["bf16"] != curves["fp32"]
    assert max(abs(a - b) for a, b in zip(curves["bf16"], curves["fp32"])) < 0.01
    with pytest.raises(ValueError, match="precision 'fp16'"):
        autocast(torch.device("cpu"), "fp16")


def test_cpu_bf16_attention_is_computed_in_float32(monkeypatch):
    """Under CPU bf16 autocast the attention kernel gets float32 q, k, v (its bf16 backward
    is several times slower), and the block's output matches float32 to bf16 accuracy."""
    import torch.nn.functional as F

    from seqify.nn import SelfAttention

    torch.manual_seed(0)
    attn = SelfAttention(32, 4)
    x = torch.randn(2, 9, 32)
    got: list[torch.dtype] = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        got.append(q.dtype)
        return real(q, k, v, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = attn(x)
    y32 = attn(x)
    assert got == [torch.float32, torch.float32]
    assert y16.dtype == torch.bfloat16
    assert torch.allclose(y16.float(), y32, atol=5e-2, rtol=5e-2)


def test_ema_model_is_the_moving_average_of_the_weights_and_survives_a_resume(cell_data, tmp_path):
    """train.ema: the trained model is the average of the weights after each step, with
    the decay ramped up as min(decay, (1 + n) / (10 + n)); a crash and a resume give the
    same average as an uninterrupted run (here under bf16, the Sudoku quick budget's)."""
    cell, data = cell_data
    cfg = TrainConfig(steps=12, batch_size=16, lr=3e-3, warmup_steps=2, ema=0.8, precision="bf16")
    raw: list[dict[str, torch.Tensor]] = []
    model = build_model(cell, data.spec, 0)
    expected = {k: v.detach().clone() for k, v in model.named_parameters()}
    train(model, data.train, None, cell.train_orderer, cfg, device=torch.device("cpu"), seed=0,
          on_step=lambda step, loss: raw.append({k: v.detach().clone() for k, v in model.named_parameters()}))
    for n, weights in enumerate(raw):
        d = min(0.8, (1 + n) / (10 + n))
        expected = {k: d * expected[k] + (1 - d) * weights[k] for k in expected}
    for name, tensor in model.named_parameters():
        torch.testing.assert_close(tensor.detach(), expected[name], rtol=0, atol=1e-6, msg=name)
    assert not torch.equal(model.head.weight.detach(), raw[-1]["head.weight"])  # not the last raw weights

    ck = Checkpointing(tmp_path / "state.pt", every=5, signature="ema", log=lambda m: None)

    def crash_at_7(step, loss):
        if step == 7:
            raise Crash

    with pytest.raises(Crash):
        _train(cell, data, cfg, ck, on_step=crash_at_7)
    resumed, _ = _train(cell, data, cfg, ck)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor, rtol=0, atol=1e-6, msg=name)
