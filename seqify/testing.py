"""Conformance kit and test doubles for plugin authors.

Run the ``check_*`` functions on your component in your own tests::

    from seqify.testing import check_tokenizer, check_orderer, check_generator
    check_tokenizer(MyTokenizer(), my_items)

The doubles (a toy modality of short digit strings, its tokenizer, and a per-slot
``UnigramGenerator``) let core logic run end to end without training a real model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from seqify.data import RowReport
from seqify.hookspecs import hookimpl
from seqify.protocols import GeneratorCaps, Splits
from seqify.types import KindSpec, OrderBatch, Scores, TokenBatch, TokenizerSpec, TokenSet, collate

# --------------------------------------------------------------------------- kit


def check_tokenizer(tokenizer: Any, items: list[Any], *, equal=lambda a, b: a == b) -> None:
    """Fit, then encode -> decode every item; values inside their kinds; shapes agree."""
    tokenizer.fit(items)
    spec: TokenizerSpec = tokenizer.spec
    for n, item in enumerate(items):
        ts = tokenizer.encode(item)
        assert len(ts) <= spec.max_len, f"item {n}: {len(ts)} slots > max_len {spec.max_len}"
        assert ts.coords.shape[1] == len(spec.coord_sizes), f"item {n}: wrong number of coordinate axes"
        sizes = torch.tensor([k.size for k in spec.kinds])
        assert bool((ts.values >= 0).all() and (ts.values < sizes[ts.kinds]).all()), f"item {n}: value outside its kind"
        assert bool((ts.coords < torch.tensor(spec.coord_sizes)).all()), f"item {n}: coordinate outside coord_sizes"
        if spec.lossless:
            back = tokenizer.decode(ts)
            assert equal(back, item), f"item {n}: round trip gave {back!r}, expected {item!r}"


def check_orderer(orderer: Any, batch: TokenBatch, *, seed: int = 0) -> None:
    """Training and (for static orderers) inference orders are valid for ``batch``.

    Adaptive and learned orderers choose inference orders step by step with a model,
    so only their training orders are checked here.
    """
    rng = torch.Generator().manual_seed(seed)
    for progress in (0.0, 0.5, 1.0):
        orderer.train_orders(batch, progress=progress, rng=rng).validate(batch)
    if not orderer.adaptive and not getattr(orderer, "learned", False):
        orderer.infer_orders(batch, rng=rng).validate(batch)


def check_generator(model: Any, batch: TokenBatch, order: OrderBatch, *, atol: float = 1e-4) -> None:
    """Finite loss; per-slot log-probs finite, <= 0 and only on predicted slots."""
    loss = model.loss(batch, order)
    assert torch.isfinite(loss), "loss is not finite"
    scores, _ = model.score(batch, order)
    assert torch.equal(scores.scored, batch.target), "scored slots must be exactly the predicted ones"
    logp = scores.logp[scores.scored]
    assert bool(torch.isfinite(logp).all()), "non-finite log-probability"
    assert bool((logp <= atol).all()), "log-probability above 0"


# ----------------------------------------------------------------------- doubles


class ToyTokenizer:
    """Digit strings such as "3141" -> one slot per digit; the first digit is given.

    Args:
        length: digits per item (default 4).
    """

    name = "digits"

    def __init__(self, length: int = 4):
        self.length = length

    def __repr__(self) -> str:
        return f"ToyTokenizer(length={self.length})"

    @property
    def spec(self) -> TokenizerSpec:
        return TokenizerSpec(
            kinds=(KindSpec("digit", 10, tuple("0123456789")),),
            coord_names=("position",),
            coord_sizes=(self.length,),
            max_len=self.length,
        )

    def fit(self, items: list[Any]) -> None:
        return None

    def encode(self, item: str) -> TokenSet:
        if len(item) != self.length or not item.isdigit():
            raise ValueError(f"expected {self.length} digits, got {item!r}")
        values = torch.tensor([int(c) for c in item])
        L = self.length
        given = torch.zeros(L, dtype=torch.bool)
        given[0] = True
        return TokenSet(values, torch.zeros(L, dtype=torch.long), torch.arange(L)[:, None], given)

    def decode(self, tokens: TokenSet) -> str:
        return "".join(str(int(v)) for v in tokens.values)


class ToyModality:
    """Digit strings whose digits increase by a fixed step mod 10 ("1357", "2468")."""

    name = "toy"
    datasets: ClassVar[tuple[str, ...]] = ("steps",)
    task: ClassVar[str] = "complete"

    def __repr__(self) -> str:
        return "ToyModality()"

    @staticmethod
    def make(n: int, seed: int, length: int = 4) -> list[str]:
        g = torch.Generator().manual_seed(seed)
        starts = torch.randint(0, 10, (n,), generator=g)
        steps = torch.randint(1, 3, (n,), generator=g)
        return ["".join(str(int((s + k * d) % 10)) for k in range(length)) for s, d in zip(starts, steps)]

    def load(self, dataset, path, *, seed, limit, report: RowReport) -> Splits:
        n = limit or 200
        return Splits(self.make(n, seed), self.make(32, seed + 1), self.make(32, seed + 2), {"generated": True})

    def budget(self, budget: str) -> dict:
        return {"train": {"steps": 30, "batch_size": 16, "warmup_steps": 2},
                "eval": {"n_test": 16, "n_samples": 16, "batch_size": 8},
                "generator": {}}

    def templates(self, tokenizer, test_tokens, n, rng):
        out = []
        for ts in test_tokens[:n]:
            out.append(ts.with_values(torch.where(ts.given, ts.values, torch.zeros_like(ts.values))))
        return out

    def evaluate(self, samples, splits, *, templates=None) -> dict:
        right = sum(s == t for s, t in zip(samples, splits.test))
        return {"exact": right / max(len(samples), 1), "n": len(samples)}

    def render(self, samples, path: Path, *, splits=None) -> Path:
        from seqify.io import atomic_write_bytes

        # a tiny valid PNG is enough for a double: 1x1 white pixel
        atomic_write_bytes(path, bytes.fromhex(
            "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
            "1f15c4890000000d49444154789c6360f8ffff3f0005fe02fea73581e40000000049454e44ae426082"))
        return Path(path)


class UnigramConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    smoothing: float = Field(0.0, ge=0, description="unused; shows how a generator declares settings")


class UnigramGenerator(torch.nn.Module):
    """Independent categorical per slot: the order does not change its likelihood,
    which makes it a handy double for checking the runner's bookkeeping."""

    config_model: ClassVar[type[BaseModel]] = UnigramConfig
    caps: ClassVar[GeneratorCaps] = GeneratorCaps(any_order=True, blocks=True, adaptive=True)

    def __init__(self, spec: TokenizerSpec, config: UnigramConfig | None = None):
        super().__init__()
        self.spec = spec
        self.logits_LV = torch.nn.Parameter(torch.zeros(spec.max_len, spec.total_vocab))
        self.register_buffer("kind_mask_KV", spec.kind_mask(), persistent=False)
        self.register_buffer("offsets_K", torch.tensor(spec.vocab_offsets), persistent=False)

    def _logp_BLV(self, batch: TokenBatch) -> torch.Tensor:
        B, L = batch.values.shape
        logits = self.logits_LV[:L].expand(B, L, -1)
        logits = logits.masked_fill(~self.kind_mask_KV[batch.kinds], float("-inf"))
        return torch.log_softmax(logits.float(), dim=-1)

    def _true(self, batch):
        return batch.values + self.offsets_K[batch.kinds]

    def loss(self, batch: TokenBatch, order: OrderBatch) -> torch.Tensor:
        logp = self._logp_BLV(batch).gather(-1, self._true(batch)[..., None])[..., 0]
        return -(logp[batch.target]).mean()

    def score(self, batch, order=None, orderer=None):
        logp_BLV = self._logp_BLV(batch)
        true = self._true(batch)
        logp = logp_BLV.gather(-1, true[..., None])[..., 0]
        correct = logp_BLV.argmax(-1) == true
        scored = batch.target
        if order is None:
            rng = torch.Generator().manual_seed(0)
            if orderer is not None and orderer.adaptive:
                prio = torch.zeros(batch.values.shape)
                cand = batch.target.clone()
                for step in range(int(batch.target.sum(1).max())):
                    pick = orderer.select(logp_BLV, cand)
                    active = cand.any(1)
                    prio[active, pick[active]] = step
                    cand[active, pick[active]] = False
                order = OrderBatch.from_priorities(batch, prio)
            else:
                order = orderer.infer_orders(batch, rng=rng)
        return Scores(logp.masked_fill(~scored, 0.0), correct & scored, scored), order

    def sample(self, template, orderer, *, rng, temperature=1.0):
        logp_BLV = self._logp_BLV(template)
        if temperature == 0:
            pick = logp_BLV.argmax(-1)
        else:
            gumbel = -torch.log(-torch.log(torch.rand(logp_BLV.shape, generator=rng).clamp_min(1e-20)))
            pick = (logp_BLV / temperature + gumbel.to(logp_BLV.device)).argmax(-1)
        values = pick - self.offsets_K[template.kinds]
        values = torch.where(template.given | template.pad, template.values, values)
        return template.with_values(values)


class ToyPlugin:
    """Registers the doubles, exactly like a third-party plugin would."""

    @hookimpl
    def register_modalities(self, register):
        register("toy", "seqify.testing:ToyModality", "Digit strings with a constant step (test double).")

    @hookimpl
    def register_tokenizers(self, register):
        register("digits", "seqify.testing:ToyTokenizer", "One slot per digit (test double).", modality="toy")

    @hookimpl
    def register_generators(self, register):
        register("unigram", "seqify.testing:UnigramGenerator", "Independent categorical per slot (test double).")


def toy_batch(n: int = 4, seed: int = 0) -> TokenBatch:
    tok = ToyTokenizer()
    return collate([tok.encode(s) for s in ToyModality.make(n, seed)])


def nats_to_bits(nats: float) -> float:
    return nats / math.log(2)
