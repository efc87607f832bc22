"""The training loop every generator shares: AdamW, warm-up + cosine, clipping, bf16
autocast per ``train.precision`` (by default on CUDA only), a moving average of the
weights (``train.ema``), orders from the orderer at each step; resumable from an atomic
checkpoint, and data-parallel under ``torchrun`` (:mod:`seqify.distributed`)."""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from seqify import distributed, seeding
from seqify.config import TrainConfig
from seqify.dataset import TokenTable
from seqify.io import load_checkpoint, save_checkpoint
from seqify.protocols import HasParamGroups, Orderer, TrainableModel

#: version of the resumable training state; a state of another version is not resumed
STATE_FORMAT = 1


@dataclass
class TrainLog:
    """What happened during training (goes into results.json)."""

    steps: int = 0
    seconds: float = 0.0
    loss: list[tuple[int, float]] = field(default_factory=list)  # (step, train loss)
    val_loss: list[tuple[int, float]] = field(default_factory=list)  # (step, val loss)
    extra: dict[str, list] = field(default_factory=dict)  # per-step series a generator reports
    processes: int = 1  # data-parallel processes (torchrun)
    items_per_process: int = 0  # rows of each global batch one process trained on

    def as_dict(self) -> dict:
        return {
            "steps": self.steps,
            "processes": self.processes,
            "items_per_process": self.items_per_process,
            "seconds": round(self.seconds, 3),
            "final_train_loss": self.loss[-1][1] if self.loss else None,
            "final_val_loss": self.val_loss[-1][1] if self.val_loss else None,
            "loss_curve": self.loss,
            "val_loss_curve": self.val_loss,
            **({"series": self.extra} if self.extra else {}),
        }


def autocast(device: torch.device, precision: str = "auto"):
    """The arithmetic of ``TrainConfig.precision``: bf16 autocast or nothing.

    ``auto``: bf16 on CUDA, float32 on CPU; ``bf16``: bf16 on either device (the
    attention itself stays float32 on CPU, see :class:`seqify.nn.SelfAttention`);
    ``fp32``: nothing.
    """
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        if device.type == "cpu":
            _check_cpu_bf16()
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision {precision!r}: expected auto, fp32 or bf16")
    return contextlib.nullcontext()


_CPU_BF16_CHECKED: list[bool] = []


def _check_cpu_bf16() -> None:
    """Say once when this CPU has no native bf16: autocast then runs slower, not faster."""
    if _CPU_BF16_CHECKED:
        return
    _CPU_BF16_CHECKED.append(True)
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        warnings.warn("precision = bf16 on a CPU without native bf16 (AVX512-BF16 or AMX): it is emulated and "
                      "slower than float32; set train.precision = \"fp32\" (the results differ slightly)",
                      stacklevel=3)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    frac = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module,
    table: TokenTable,
    orderer: Orderer,
    *,
    n: int,
    batch_size: int,
    device: torch.device,
    seed: int,
    precision: str = "auto",
) -> float:
    """The training objective on the first ``n`` validation items, with fixed seeds."""
    was_training = model.training
    model.eval()
    rng = seeding.generator(seed, "validation")
    total, count = 0.0, 0
    n = min(n, len(table))
    try:
        with seeding.forked(seed, "validation", device):  # the training streams are left as they were
            for start in range(0, n, batch_size):
                idx = torch.arange(start, min(n, start + batch_size))
                batch = table.batch(idx, device)
                order = orderer.train_orders(batch, progress=1.0, rng=rng).to(device)
                with autocast(device, precision):
                    loss = model.loss(batch, order)
                total += float(loss) * len(idx)
                count += len(idx)
    finally:
        model.train(was_training)
    return total / max(count, 1)


@dataclass
class Checkpointing:
    """Where and how often :func:`train` saves its resumable state.

    The state (model, optimizer, step, the batch and order streams, every rank's
    global RNG, the data cursor, the log so far) goes to ``path`` atomically after
    every ``every`` steps and at the end. A later :func:`train` with the same
    ``signature`` resumes from it (``resume``); one with another signature (other
    settings, data or seed) starts over and says why through ``log``.
    """

    path: Path
    every: int
    signature: str
    log: Callable[[str], None] = print
    resume: bool = True

    def load(self) -> dict | None:
        """The saved state to resume from, or None (no file, resume off, or another run's)."""
        if not self.resume or not self.path.is_file():
            return None
        try:
            state = load_checkpoint(self.path)
        except Exception as exc:  # a damaged file is reported and trained over, never trusted
            self.log(f"cannot read the training state {self.path} ({type(exc).__name__}: {exc}); "
                     "training from the start")
            return None
        if state.get("format") != STATE_FORMAT or state.get("signature") != self.signature:
            self.log(f"the training state {self.path} belongs to another run (other settings, data or seed); "
                     "training from the start")
            return None
        return state


class _EMA:
    """An exponential moving average of a model's parameters (``TrainConfig.ema``).

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the
    first steps' weights (the random start) wash out early in a short run.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]

    def update(self, n: int) -> None:
        d = min(self.decay, (1 + n) / (10 + n))
        with torch.no_grad():
            torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - d)

    @contextlib.contextmanager
    def applied(self):
        """The model holds the averaged weights inside the block, its own after."""
        self._swap()
        try:
            yield
        finally:
            self._swap()

    def keep(self) -> None:
        """Put the averaged weights in the model for good."""
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.shadow)

    def _swap(self) -> None:
        for p, s in zip(self.params, self.shadow):
            p.data, s.data = s.data, p.data

    def state(self) -> list[torch.Tensor]:
        return [s.detach().clone() for s in self.shadow]

    def load(self, tensors: list[torch.Tensor]) -> None:
        if len(tensors) != len(self.shadow):
            raise ValueError(f"the saved weight average has {len(tensors)} tensors, the model {len(self.shadow)}")
        for s, t in zip(self.shadow, tensors):
            s.copy_(t)


class _Loss(torch.nn.Module):
    """``model.loss`` as ``forward``, so DistributedDataParallel averages its gradients:
    ``(loss, stats)``, with the statistics of ``model.loss_with_stats`` for a
    :class:`~seqify.protocols.TrainableModel` and ``{}`` otherwise."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch, order) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if isinstance(self.model, TrainableModel):
            return self.model.loss_with_stats(batch, order)
        return self.model.loss(batch, order), {}


def _run_probe(probe, model: torch.nn.Module, step: int, log: TrainLog) -> None:
    if probe is None:
        return
    was_training = model.training
    try:
        for name, value in probe(model).items():
            log.extra.setdefault(f"val_{name}", []).append((step, round(float(value), 5)))
    finally:
        model.train(was_training)


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def train(
    model: torch.nn.Module,
    train_table: TokenTable,
    val_table: TokenTable | None,
    orderer: Orderer,
    cfg: TrainConfig,
    *,
    device: torch.device,
    seed: int,
    on_step: Callable[[int, float], None] | None = None,
    checkpoint: Checkpointing | None = None,
    probe: Callable[[torch.nn.Module], dict[str, float]] | None = None,
) -> TrainLog:
    """Train ``model`` in place for ``cfg.steps`` steps; returns the log.

    Batches, orders and the global stream (dropout, a model's own noise) each draw
    from their own named stream of ``seed`` (:mod:`seqify.seeding`); the model's
    initial weights are the caller's (seed the ``init`` stream before building it).

    With ``checkpoint``, the state is saved every ``checkpoint.every`` steps and a
    saved state of the same run is resumed ("resuming from step N"): the final model
    equals an uninterrupted run's.

    In a process group (``torchrun``), every rank draws the same global batch indices
    and orders from the shared streams and trains on its own ``batch_size / world``
    rows of them, with gradients averaged by DistributedDataParallel: together the
    ranks take the single-process step. The dropout stream is drawn per rank. Rank 0
    alone validates and writes the state.

    ``probe`` (rank 0, at every ``eval_every`` step and at the end) measures the model
    some other way, e.g. the solve rate of validation puzzles; each of its values is
    logged as a series ``val_<name>``. It must leave the training streams alone.

    With ``cfg.ema``, validation and probes see the moving average of the weights, and
    the model ends holding it (the raw weights and the average are both in the state).

    The loss is read back to the host only when it is logged (every ``steps / 100``
    steps), so a GPU never waits on the loop; ``on_step`` gets the last logged loss. A
    :class:`~seqify.protocols.TrainableModel` trains through ``loss_with_stats``: its
    statistics stay tensors on the device and are read back at the same steps, each a
    series in the log.
    """
    ctx = distributed.current()
    if cfg.batch_size % ctx.world_size:
        raise ValueError(f"train.batch_size {cfg.batch_size} is not divisible by the {ctx.world_size} processes: "
                         "each process takes an equal share of the global batch")
    share = slice(ctx.rank * cfg.batch_size // ctx.world_size, (ctx.rank + 1) * cfg.batch_size // ctx.world_size)
    log = TrainLog(processes=ctx.world_size)
    seeding.seed_global(seed, "dropout", ctx.rank)
    order_rng = seeding.generator(seed, "orders")
    batch_rng = seeding.generator(seed, "batches")
    hooks = model if isinstance(model, TrainableModel) else None
    model.to(device).train()
    groups = model.param_groups(cfg.lr, cfg.weight_decay) if isinstance(model, HasParamGroups) else None
    opt = torch.optim.AdamW(groups or model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    n = len(train_table)
    perm = torch.randperm(n, generator=batch_rng)
    cursor, start, seconds_before = 0, 0, 0.0
    ema = _EMA(model, cfg.ema) if cfg.ema else None
    averaged = ema.applied if ema is not None else contextlib.nullcontext
    state = checkpoint.load() if checkpoint is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load(state["ema"])
        batch_rng.set_state(state["rng_batches"])
        order_rng.set_state(state["rng_orders"])
        perm, cursor, start = state["perm"], int(state["cursor"]), int(state["step"])
        ranks = state["rng_ranks"]
        if ctx.rank < len(ranks):
            _set_rng_state(ranks[ctx.rank], device)
        saved = json.loads(state["log_json"])
        log.loss, log.val_loss = [tuple(x) for x in saved["loss"]], [tuple(x) for x in saved["val_loss"]]
        log.extra = {k: [tuple(x) for x in v] for k, v in saved["extra"].items()}
        seconds_before = float(saved["seconds"])
        if ctx.is_main:
            checkpoint.log(f"resuming from step {start} of {cfg.steps} ({checkpoint.path})")
    engine: torch.nn.Module = _Loss(model)  # (loss, stats) of a step, the same with or without DDP
    if ctx.active:
        from torch.nn.parallel import DistributedDataParallel

        engine = DistributedDataParallel(
            _Loss(model), device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,  # a generator may leave some parameters out of a step's graph
        )

    def save(done: int) -> None:
        rng_ranks = distributed.all_gather_object(_rng_state(device), ctx)  # every rank takes part
        if not ctx.is_main:
            return
        save_checkpoint(checkpoint.path, {
            "format": STATE_FORMAT,
            "signature": checkpoint.signature,
            "step": done,
            "world_size": ctx.world_size,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "rng_batches": batch_rng.get_state(),
            "rng_orders": order_rng.get_state(),
            "rng_ranks": rng_ranks,
            "perm": perm,
            "cursor": cursor,
            **({"ema": ema.state()} if ema is not None else {}),
            "log_json": json.dumps({"loss": log.loss, "val_loss": log.val_loss, "extra": log.extra,
                                    "seconds": seconds_before + time.perf_counter() - t0}),
        })

    t0 = time.perf_counter()
    every = max(1, cfg.steps // 100)
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    last = float("nan")
    for step in range(start, cfg.steps):
        if cursor + cfg.batch_size > n:
            perm = torch.randperm(n, generator=batch_rng)
            cursor = 0
        idx = perm[cursor : cursor + cfg.batch_size]
        cursor += cfg.batch_size
        progress = step / max(1, cfg.steps)
        if ctx.active:  # the global batch's orders, then this rank's rows of both
            whole = train_table.batch(idx, device)
            order = orderer.train_orders(whole, progress=progress, rng=order_rng).to(device).rows(share)
            batch = whole.rows(share)
        else:
            batch = train_table.batch(idx, device)
            order = orderer.train_orders(batch, progress=progress, rng=order_rng).to(device)
        log.items_per_process = batch.batch_size
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg) * group.get("lr_scale", 1.0)
        if hooks is not None:
            hooks.set_progress(progress)
        with autocast(device, cfg.precision):  # stats: a TrainableModel's, tensors read back only when logged
            loss, stats = engine(batch, order)
        nonfinite |= ~torch.isfinite(loss.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if ema is not None:
            ema.update(step)
        done = step + 1
        logging = step % every == 0 or done == cfg.steps
        saving = checkpoint is not None and checkpoint.every and (done % checkpoint.every == 0 or done == cfg.steps)
        if (logging or saving) and bool(distributed.mean_across(nonfinite.float(), ctx) > 0):
            # the loss is read back only here; never log or save poisoned weights
            raise FloatingPointError(f"training loss became non-finite at or before step {step} "
                                     f"(last finite loss logged: {last:.5g})")
        if logging:
            last = float(distributed.mean_across(loss.detach().float(), ctx))
            log.loss.append((step, round(last, 5)))
            for name, stat in stats.items():
                log.extra.setdefault(name, []).append((step, round(float(stat), 5)))
        if ctx.is_main and cfg.eval_every and step > 0 and step % cfg.eval_every == 0:
            with averaged():
                if val_table is not None:
                    v = validation_loss(model, val_table, orderer, n=cfg.val_items, batch_size=cfg.batch_size,
                                        device=device, seed=seed, precision=cfg.precision)
                    log.val_loss.append((step, round(v, 5)))
                _run_probe(probe, model, step, log)
        if saving:
            save(done)
        if on_step is not None:
            on_step(step, last)
    log.steps = cfg.steps
    if ema is not None:  # the trained model is the average
        ema.keep()
    if ctx.is_main and val_table is not None and len(val_table):
        v = validation_loss(model, val_table, orderer, n=cfg.val_items, batch_size=cfg.batch_size, device=device, seed=seed,
                             precision=cfg.precision)
        log.val_loss.append((cfg.steps, round(v, 5)))
    if ctx.is_main:
        _run_probe(probe, model, cfg.steps, log)
    log.seconds = seconds_before + time.perf_counter() - t0
    model.eval()
    return log
