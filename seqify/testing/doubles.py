"""Test doubles: a toy modality of short digit strings, its tokenizer, generators.

``UnigramGenerator`` (independent per slot) lets core logic run end to end without
training a real model; ``PeekingGenerator`` and ``UnnormalizedGenerator`` are
deliberately broken generators that :func:`seqify.testing.check_no_peeking` and
:func:`seqify.testing.check_normalized` must catch. ``ToyPlugin`` registers the toy
modality, tokenizer and unigram generator exactly as a third-party plugin would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from seqify.data import RowReport
from seqify.hookspecs import hookimpl
from seqify.protocols import BaseGenerator, BaseModality, BaseTokenizer, GeneratorCaps, Splits
from seqify.types import KindSpec, OrderBatch, Scores, TokenBatch, TokenizerSpec, TokenSet, collate


class ToyTokenizer(BaseTokenizer):
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


class ToyModality(BaseModality):
    """Digit strings whose digits increase by a fixed step mod 10 ("1357", "2468")."""

    name = "toy"
    datasets: ClassVar[tuple[str, ...]] = ("steps",)
    task: ClassVar[str] = "complete"
    headline_metrics: ClassVar[tuple[str, ...]] = ("exact",)

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

    def example_items(self, n: int, seed: int = 0) -> list[str]:
        """``n`` digit strings (:meth:`make`), for the conformance kit."""
        return self.make(n, seed)


class UnigramConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    smoothing: float = Field(0.0, ge=0, description="unused; shows how a generator declares settings")


class UnigramGenerator(BaseGenerator, torch.nn.Module):
    """Independent categorical per slot: the order does not change its likelihood,
    which makes it a handy double for checking the runner's bookkeeping."""

    config_model: ClassVar[type[BaseModel]] = UnigramConfig
    caps: ClassVar[GeneratorCaps] = GeneratorCaps(any_order=True, blocks=True, adaptive=True)
    #: no size knob: every budget's size means the defaults
    sizes: ClassVar[dict[str, dict[str, Any]]] = {}

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


class PeekingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    d_model: int = Field(16, ge=1, description="width of the embeddings")
    peek: int = Field(1, ge=0, description="reads the true value of the slot this many places later in the order (0: honest)")


class PeekingGenerator(BaseGenerator, torch.nn.Module):
    """A deliberately broken causal generator: a test double that ``check_no_peeking`` must catch.

    Position ``t`` of the order predicts slot ``perm[t]`` from the mean embedding of the
    values before it (honest) plus the embedding of the *true value* of slot
    ``perm[t + peek]``, later in the order (the leak). Its probabilities still sum to
    one for each slot, so its scores look fine to every other check. ``peek=0``
    turns the leak off (a small honest causal model).
    """

    config_model: ClassVar[type[BaseModel]] = PeekingConfig
    caps: ClassVar[GeneratorCaps] = GeneratorCaps(any_order=True, blocks=False, adaptive=False)
    sizes: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, spec: TokenizerSpec, config: PeekingConfig | None = None):
        super().__init__()
        self.spec = spec
        self.config = config if isinstance(config, PeekingConfig) else PeekingConfig(**(config or {}))
        d = self.config.d_model
        self.value_embed = torch.nn.Embedding(spec.total_vocab, d)
        self.peek_embed = torch.nn.Embedding(spec.total_vocab, d)
        self.slot_embed = torch.nn.Embedding(spec.max_len, d)
        self.head = torch.nn.Linear(d, spec.total_vocab)
        self.register_buffer("kind_mask_KV", spec.kind_mask(), persistent=False)
        self.register_buffer("offsets_K", torch.tensor(spec.vocab_offsets), persistent=False)

    def _logp_BTV(self, batch: TokenBatch, order: OrderBatch) -> torch.Tensor:
        """Log-probabilities of the slot at each order position ``[B, L, V]``."""
        B, L = batch.values.shape
        perm = order.perm
        gid = (batch.values + self.offsets_K[batch.kinds]).masked_fill(batch.pad, 0)
        gid_T = gid.gather(1, perm)
        seen = self.value_embed(gid_T) + self.slot_embed(perm)
        before = torch.cumsum(seen, 1) - seen  # strictly earlier positions
        x = before / torch.arange(L, device=perm.device).clamp_min(1)[None, :, None] + self.slot_embed(perm)
        k = self.config.peek
        if k:
            ahead = torch.cat([gid_T[:, k:], gid_T[:, :k]], dim=1)  # the value k places later (wraps at the end)
            x = x + self.peek_embed(ahead)
        allowed = self.kind_mask_KV[batch.kinds.gather(1, perm)]
        return self.head(torch.tanh(x)).float().masked_fill(~allowed, float("-inf")).log_softmax(-1)

    def _true_logp(self, batch: TokenBatch, order: OrderBatch) -> torch.Tensor:
        gid = batch.values + self.offsets_K[batch.kinds]
        logp_T = self._logp_BTV(batch, order).gather(-1, gid.gather(1, order.perm)[..., None])[..., 0]
        return torch.zeros_like(logp_T).scatter(1, order.perm, logp_T)

    def loss(self, batch: TokenBatch, order: OrderBatch) -> torch.Tensor:
        return -self._true_logp(batch, order)[batch.target].mean()

    def score(self, batch, order=None, orderer=None):
        if order is None:
            order = orderer.infer_orders(batch, rng=torch.Generator().manual_seed(0))
        logp = self._true_logp(batch, order)
        gid = batch.values + self.offsets_K[batch.kinds]
        best_T = self._logp_BTV(batch, order).argmax(-1)
        correct = torch.zeros_like(batch.target).scatter(1, order.perm, best_T == gid.gather(1, order.perm))
        scored = batch.target
        return Scores(logp.masked_fill(~scored, 0.0), correct & scored, scored.clone()), order

    def sample(self, template, orderer, *, rng, temperature=1.0):
        order = orderer.infer_orders(template, rng=rng)
        values = template.values.clone()
        B = values.shape[0]
        for t in range(template.length):
            batch = template.with_values(values)
            slot = order.perm[:, t]
            logp = self._logp_BTV(batch, order)[:, t]
            pick = logp.argmax(-1) if temperature == 0 else torch.multinomial((logp / temperature).exp(), 1, generator=rng)[:, 0]
            new = pick - self.offsets_K[template.kinds[torch.arange(B), slot]]
            keep = template.given[torch.arange(B), slot] | template.pad[torch.arange(B), slot]
            values[torch.arange(B), slot] = torch.where(keep, values[torch.arange(B), slot], new)
        return template.with_values(values)


class UnnormalizedGenerator(UnigramGenerator):
    """A deliberately broken generator: the unigram double with ``offset`` nats (0.1)
    added to every scored log-probability, so its probabilities sum to more than one.
    A test double that ``check_normalized`` must catch."""

    offset: ClassVar[float] = 0.1

    def score(self, batch, order=None, orderer=None):
        scores, order = super().score(batch, order, orderer)
        logp = torch.where(scores.scored, scores.logp + self.offset, scores.logp)
        return Scores(logp, scores.correct, scores.scored), order


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
