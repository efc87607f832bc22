"""The training loop every generator shares: AdamW, warm-up + cosine, clipping,
bf16 autocast on CUDA, orders from the orderer at each step."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from seqify.config import TrainConfig
from seqify.dataset import TokenTable
from seqify import seeding
from seqify.protocols import Orderer, TrainableModel


@dataclass
class TrainLog:
    """What happened during training (goes into results.json)."""

    steps: int = 0
    seconds: float = 0.0
    loss: list[tuple[int, float]] = field(default_factory=list)  # (step, train loss)
    val_loss: list[tuple[int, float]] = field(default_factory=list)  # (step, val loss)
    extra: dict[str, list] = field(default_factory=dict)  # per-step series a generator reports

    def as_dict(self) -> dict:
        return {
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "final_train_loss": self.loss[-1][1] if self.loss else None,
            "final_val_loss": self.val_loss[-1][1] if self.val_loss else None,
            "loss_curve": self.loss,
            "val_loss_curve": self.val_loss,
            **({"series": self.extra} if self.extra else {}),
        }


def autocast(device: torch.device):
    """bf16 autocast on CUDA, nothing on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
                with autocast(device):
                    loss = model.loss(batch, order)
                total += float(loss) * len(idx)
                count += len(idx)
    finally:
        model.train(was_training)
    return total / max(count, 1)


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
) -> TrainLog:
    """Train ``model`` in place for ``cfg.steps`` steps; returns the log.

    Batches, orders and the global stream (dropout, a model's own noise) each draw
    from their own named stream of ``seed`` (:mod:`seqify.seeding`); the model's
    initial weights are the caller's (seed the ``init`` stream before building it).
    """
    log = TrainLog()
    seeding.seed_global(seed, "dropout")
    order_rng = seeding.generator(seed, "orders")
    batch_rng = seeding.generator(seed, "batches")
    hooks = model if isinstance(model, TrainableModel) else None
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    n = len(train_table)
    perm = torch.randperm(n, generator=batch_rng)
    cursor = 0
    t0 = time.perf_counter()
    ema = None
    every = max(1, cfg.steps // 100)
    for step in range(cfg.steps):
        if cursor + cfg.batch_size > n:
            perm = torch.randperm(n, generator=batch_rng)
            cursor = 0
        idx = perm[cursor : cursor + cfg.batch_size]
        cursor += cfg.batch_size
        batch = train_table.batch(idx, device)
        order = orderer.train_orders(batch, progress=step / max(1, cfg.steps), rng=order_rng).to(device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        if hooks is not None:
            hooks.set_progress(step / max(1, cfg.steps))
        with autocast(device):
            loss = model.loss(batch, order)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {float(loss)} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        value = float(loss.detach())
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        if step % every == 0 or step == cfg.steps - 1:
            log.loss.append((step, round(value, 5)))
            for name, stat in (hooks.train_stats if hooks is not None else {}).items():
                log.extra.setdefault(name, []).append((step, round(float(stat), 5)))
        if val_table is not None and cfg.eval_every and step > 0 and step % cfg.eval_every == 0:
            v = validation_loss(model, val_table, orderer, n=cfg.val_items, batch_size=cfg.batch_size, device=device, seed=seed)
            log.val_loss.append((step, round(v, 5)))
        if on_step is not None:
            on_step(step, ema)
    log.steps = cfg.steps
    if val_table is not None and len(val_table):
        v = validation_loss(model, val_table, orderer, n=cfg.val_items, batch_size=cfg.batch_size, device=device, seed=seed)
        log.val_loss.append((cfg.steps, round(v, 5)))
    log.seconds = time.perf_counter() - t0
    model.eval()
    return log
