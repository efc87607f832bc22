"""KV cache speed-up of the causal generator's sampler, and proof that it changes nothing.

Builds a causal model on a synthetic spec (``--length`` slots on a square-ish grid,
two kinds), samples the same model with and without the KV cache from the same seed,
asserts the samples are identical and prints both wall times and the speed-up.

    python benchmarks/kv_cache.py --length 256 --batch 8 --d-model 256 --layers 4 --seed 0
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch

from seqify.types import KindSpec, TokenizerSpec, TokenSet, collate
from seqify_generators.causal import CausalTransformer
from seqify_orderers.orderers import Random, Raster


def synthetic(length: int, batch: int) -> tuple[TokenizerSpec, object]:
    """A spec of ``length`` slots (two kinds on a grid) and an empty template batch."""
    cols = math.ceil(math.sqrt(length))
    rows = math.ceil(length / cols)
    spec = TokenizerSpec(
        kinds=(KindSpec("even", 16), KindSpec("odd", 24)),
        coord_names=("row", "col"),
        coord_sizes=(rows, cols),
        max_len=length,
    )
    idx = torch.arange(length)
    item = TokenSet(
        values=torch.zeros(length, dtype=torch.long),
        kinds=idx % 2,
        coords=torch.stack([idx // cols, idx % cols], dim=1),
        given=torch.zeros(length, dtype=torch.bool),
    )
    return spec, collate([item] * batch)


def timed_sample(model, template, orderer, seed: int, use_cache: bool):
    if template.values.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.sample(template, orderer, rng=torch.Generator().manual_seed(seed), use_cache=use_cache)
    if template.values.is_cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=256, help="slots per item")
    parser.add_argument("--batch", type=int, default=8, help="items sampled together")
    parser.add_argument("--d-model", type=int, default=256, help="model width")
    parser.add_argument("--layers", type=int, default=4, help="transformer blocks")
    parser.add_argument("--heads", type=int, default=4, help="attention heads")
    parser.add_argument("--order", choices=("raster", "random"), default="random", help="generation order")
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights and the sampling")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    spec, template = synthetic(args.length, args.batch)
    config = CausalTransformer.config_model(d_model=args.d_model, n_layers=args.layers, n_heads=args.heads)
    model = CausalTransformer(spec, config).to(args.device).eval()
    template = template.to(args.device)
    orderer = Raster() if args.order == "raster" else Random()

    # one warm-up call keeps first-call overhead (allocator, kernel selection) out of the timings
    model.sample(template, orderer, rng=torch.Generator().manual_seed(args.seed), use_cache=True)

    cached, t_cached = timed_sample(model, template, orderer, args.seed, use_cache=True)
    full, t_full = timed_sample(model, template, orderer, args.seed, use_cache=False)
    assert torch.equal(cached.values, full.values), "KV cache changed the samples"
    assert torch.equal(cached.pad, full.pad), "KV cache changed the padding"

    print(f"model     {model!r}")
    print(f"machine   {platform.machine()} {platform.processor() or ''} torch {torch.__version__} "
          f"threads {torch.get_num_threads()} device {args.device}")
    print(f"task      {args.batch} items x {args.length} slots, {args.order} order, seed {args.seed}")
    print("samples   identical with and without the KV cache")
    print(f"no cache  {t_full:8.2f} s  ({args.batch * args.length / t_full:8.1f} slots/s)")
    print(f"KV cache  {t_cached:8.2f} s  ({args.batch * args.length / t_cached:8.1f} slots/s)")
    print(f"speed-up  {t_full / t_cached:8.1f}x")


if __name__ == "__main__":
    main()
