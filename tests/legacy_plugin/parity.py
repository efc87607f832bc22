"""The components of the API-1 plugin: no seqify base class, only the members documented then."""

import random
from pathlib import Path

import torch

from seqify.protocols import Splits
from seqify.types import KindSpec, OrderBatch, TokenizerSpec, TokenSet

N_BITS = 6  # five free bits and their parity


def _item(rng: random.Random) -> str:
    bits = [rng.randint(0, 1) for _ in range(N_BITS - 1)]
    return "".join(map(str, bits)) + str(sum(bits) % 2)


class ParityModality:
    name = "parity"
    datasets = ("generated",)
    task = "complete"

    def load(self, dataset, path, *, seed, limit, report):
        rng = random.Random(seed)
        n = limit or 200
        return Splits(train=[_item(rng) for _ in range(n)], val=[_item(rng) for _ in range(16)],
                      test=[_item(rng) for _ in range(32)], info={"dataset": dataset})

    def budget(self, budget):
        return {"train": {"steps": 30, "batch_size": 16, "warmup_steps": 2, "val_items": 16},
                "eval": {"n_test": 16, "n_samples": 16, "temperature": 0.0}, "data": {"limit": 64}, "size": "micro"}

    def templates(self, tokenizer, test_tokens, n, rng):
        return [ts.with_values(torch.where(ts.given, ts.values, torch.zeros_like(ts.values))) for ts in test_tokens[:n]]

    def evaluate(self, samples, splits):  # API 1: no templates= keyword
        right = [s is not None and s[-1] == str(sum(map(int, s[:-1])) % 2) for s in samples]
        return {"parity_correct": sum(right) / max(len(right), 1), "n": len(samples)}

    def render(self, samples, path):  # API 1: no splits= keyword
        from PIL import Image

        Image.new("L", (8, 8)).save(path)
        return Path(path)


class BitTokenizer:
    name = "bits"

    def __init__(self, **options):
        self.fitted = False

    @property
    def spec(self):
        return TokenizerSpec(kinds=(KindSpec("bit", 2),), coord_names=("pos",), coord_sizes=(N_BITS,),
                             max_len=N_BITS)

    def fit(self, items):  # API 1: fit(items) only
        self.fitted = True

    def encode(self, item):
        if len(item) != N_BITS or set(item) - {"0", "1"}:
            raise ValueError(f"not a {N_BITS}-bit string: {item!r}")
        values = torch.tensor([int(b) for b in item])
        given = torch.arange(N_BITS) < N_BITS - 1
        return TokenSet(values, torch.zeros(N_BITS, dtype=torch.long), torch.arange(N_BITS)[:, None], given)

    def decode(self, tokens):
        return "".join(str(int(v)) for v in tokens.values)


class ParityFirst:
    name = "parity-first"
    adaptive = False
    stochastic = False

    def check(self, spec, caps):
        if len(spec.kinds) != 1:
            return f"orderer 'parity-first' orders sequences of one kind; this tokenizer has {len(spec.kinds)} kinds"
        if not caps.any_order:
            return "orderer 'parity-first' needs a generator that trains in any order"
        return None

    def _priority(self, batch):
        B, L = batch.values.shape
        prio = torch.arange(L, dtype=torch.float32).expand(B, L).clone()
        last = (~batch.pad).sum(1) - 1
        prio[torch.arange(B), last] = -1.0
        return prio.to(batch.values.device)

    def train_orders(self, batch, *, progress, rng):
        return OrderBatch.from_priorities(batch, self._priority(batch))

    def infer_orders(self, batch, *, rng):
        return OrderBatch.from_priorities(batch, self._priority(batch))
