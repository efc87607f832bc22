"""The cost of seqify's training loop against a plain PyTorch loop, in one process.

Both loops train the same transformer (:class:`seqify.nn.TransformerStack` at the
Sudoku quick budget's size, 4 layers of width 128 by default) on the same Sudoku tokens
for the same number of steps, with the same optimizer (AdamW), schedule (warm-up +
cosine), gradient clipping and batch size:

- **seqify**: :func:`seqify.training.train` on the causal generator in raster order,
  as ``seqify bench --modality sudoku --orderer raster --generator causal`` runs it
  (batches from the token table, orders from the orderer, the generator's loss over
  the blank cells, loss logging, the finite-loss check);
- **plain**: the textbook loop: random indices into a preloaded ``[N, 81]`` tensor,
  token + position embeddings, the same stack with a causal mask, a linear head and
  ``F.cross_entropy`` over every cell.

It prints the step throughput of each and their ratio ``seqify / plain`` as ``N.NNx``
(target >= 0.90x). Each loop runs ``--repeats`` times, alternating, after a warm-up;
the best time of each is compared. Take it on an idle machine.

    python benchmarks/overhead.py --steps 200 --repeats 3 --seed 0
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from seqify.bench import BenchRequest, Reporter, build_model, prepare_data, resolve_cell
from seqify.config import TrainConfig
from seqify.nn import TransformerStack, init_weights
from seqify.training import lr_at, train


class PlainGPT(torch.nn.Module):
    """Token + position embeddings, the shared stack, a linear head."""

    def __init__(self, vocab: int, length: int, config) -> None:
        super().__init__()
        self.tok = torch.nn.Embedding(vocab + 1, config.d_model)  # + BOS
        self.pos = torch.nn.Embedding(length, config.d_model)
        self.stack = TransformerStack(config)
        self.head = torch.nn.Linear(config.d_model, vocab)
        init_weights(self, config.n_layers)
        self.bos = vocab

    def loss(self, x_BL: torch.Tensor) -> torch.Tensor:
        B, L = x_BL.shape
        inp = torch.cat([torch.full((B, 1), self.bos, dtype=x_BL.dtype, device=x_BL.device), x_BL[:, :-1]], dim=1)
        h = self.stack(self.tok(inp) + self.pos.weight[:L], causal=True)
        return F.cross_entropy(self.head(h).flatten(0, 1), x_BL.flatten())


def plain_loop(model: PlainGPT, data_NL: torch.Tensor, cfg: TrainConfig, *, seed: int, device) -> float:
    """The textbook loop; returns its wall time in seconds."""
    gen = torch.Generator().manual_seed(seed)
    data_NL = data_NL.to(device)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    sync(device)
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        idx = torch.randint(0, data_NL.shape[0], (cfg.batch_size,), generator=gen).to(device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = model.loss(data_NL[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
    sync(device)
    return time.perf_counter() - t0


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each loop (best counts)")
    parser.add_argument("--size", default="small", help="model size preset of the generator")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = torch.device(args.device)

    req = BenchRequest(modality="sudoku", orderer="raster", generator="causal", out=Path("runs/overhead"),
                       budget="quick", seed=args.seed, device=args.device,
                       overrides={"size": args.size, "train": {"batch_size": args.batch_size, "steps": args.steps,
                                                               "eval_every": 0, "probe_items": 0,
                                                               # the plain loop runs float32, unaveraged
                                                               "precision": "fp32", "ema": 0.0}})
    cell = resolve_cell(req)
    data = prepare_data(cell, req, Reporter(), {})
    cfg = cell.config.train
    values_NL = data.train.values.long()
    vocab = int(values_NL.max()) + 1

    def run_seqify() -> float:
        model = build_model(cell, data.spec, args.seed)
        sync(device)
        t0 = time.perf_counter()
        train(model, data.train, None, cell.train_orderer, cfg, device=device, seed=args.seed)
        sync(device)
        return time.perf_counter() - t0

    def run_plain() -> float:
        torch.manual_seed(args.seed)
        model = PlainGPT(vocab, values_NL.shape[1], cell.generator_config)
        return plain_loop(model, values_NL, cfg, seed=args.seed, device=device)

    n_seqify = sum(p.numel() for p in build_model(cell, data.spec, args.seed).parameters())
    torch.manual_seed(args.seed)
    n_plain = sum(p.numel() for p in PlainGPT(vocab, values_NL.shape[1], cell.generator_config).parameters())
    warm = TrainConfig(**{**cfg.model_dump(), "steps": 10})
    train(build_model(cell, data.spec, args.seed), data.train, None, cell.train_orderer, warm, device=device, seed=0)
    plain_loop(PlainGPT(vocab, values_NL.shape[1], cell.generator_config), values_NL, warm, seed=0, device=device)
    times: dict[str, list[float]] = {"seqify": [], "plain": []}
    for _ in range(args.repeats):
        times["seqify"].append(run_seqify())
        times["plain"].append(run_plain())
    best = {k: min(v) for k, v in times.items()}
    rate = {k: args.steps / v for k, v in best.items()}
    g = cell.generator_config
    print(f"model: d_model {g.d_model}, {g.n_layers} layers, {g.n_heads} heads; parameters seqify {n_seqify:,}, "
          f"plain {n_plain:,}; batch {cfg.batch_size}, {args.steps} steps, device {device}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, python {platform.python_version()}")
    for k in ("seqify", "plain"):
        print(f"{k:>7}: {rate[k]:7.2f} steps/s (best of {args.repeats}: "
              + ", ".join(f"{t:.2f}" for t in times[k]) + " s)")
    ratio = rate["seqify"] / rate["plain"]
    print(f"seqify / plain step throughput: {ratio:.2f}x (target >= 0.90x)")
    if not math.isfinite(ratio):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
