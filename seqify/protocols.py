"""The four component protocols: Tokenizer, Orderer, Generator, Modality.

A plugin provides classes that satisfy these; seqify checks them with ``isinstance``
once, when a component is first built (see :mod:`seqify.registry`), and otherwise
relies on duck typing. Every member is documented here; ``seqify.testing`` has a
conformance kit and a tiny test double for each protocol.

This module does not import torch, so importing it stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from pydantic import BaseModel

    from seqify.data import RowReport
    from seqify.types import OrderBatch, Scores, TokenBatch, TokenizerSpec, TokenSet

__all__ = [
    "GeneratorCaps",
    "Splits",
    "Tokenizer",
    "Orderer",
    "Generator",
    "Modality",
]


@dataclass(frozen=True)
class GeneratorCaps:
    """What a generator can do; orderers read it to say whether they apply.

    Args:
        any_order: trains and scores under any permutation of the slots.
        blocks: can predict several slots at once (blocks larger than one).
        adaptive: can let an adaptive orderer pick the next slot from its predictions.
        variable_length: can generate items whose length it decides (end token).
    """

    any_order: bool = True
    blocks: bool = False
    adaptive: bool = False
    variable_length: bool = False


@dataclass
class Splits:
    """A dataset's fixed train / validation / test items, and how they were made."""

    train: list[Any]
    val: list[Any]
    test: list[Any]
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Tokenizer(Protocol):
    """Turns a datum into a :class:`~seqify.types.TokenSet` and back.

    Constructed as ``Tokenizer(**options)`` with keyword arguments that have defaults.
    """

    #: registered name, e.g. "graph"
    name: str

    @property
    def spec(self) -> TokenizerSpec:
        """Vocabulary per kind, coordinate axes, maximum length (valid after ``fit``)."""
        ...

    def fit(self, items: list[Any]) -> None:
        """Learn what the tokenizer needs from training items (no-op when fixed)."""
        ...

    def encode(self, item: Any) -> TokenSet:
        """One datum to slots. Raises ValueError naming the problem if it cannot."""
        ...

    def decode(self, tokens: TokenSet) -> Any:
        """Slots back to a datum; may return None when the slots describe no valid datum."""
        ...


@runtime_checkable
class Orderer(Protocol):
    """Chooses the order in which slots are generated.

    A static or stochastic orderer returns whole orders from the token structure alone
    (kinds, coordinates, given flags), so it runs on any modality. An adaptive orderer
    (``adaptive = True``) picks the next slot at inference time from the generator's
    current predictions, through :meth:`select`; it trains the generator on random
    orders (any-order training).
    """

    #: registered name, e.g. "raster"
    name: str
    #: True when the order is chosen from the generator's predictions at inference
    adaptive: ClassVar[bool]
    #: True when the orders differ between calls (a Monte Carlo estimate is then reported)
    stochastic: ClassVar[bool]

    def check(self, spec: TokenizerSpec, caps: GeneratorCaps) -> str | None:
        """None when this orderer can serve that tokenizer and generator, else the reason."""
        ...

    def train_orders(
        self, batch: TokenBatch, *, progress: float, rng: torch.Generator
    ) -> OrderBatch:
        """Orders to train on; ``progress`` in [0, 1] is the fraction of training done."""
        ...

    def infer_orders(self, batch: TokenBatch, *, rng: torch.Generator) -> OrderBatch:
        """Orders for scoring and sampling. Adaptive orderers raise NotApplicableError."""
        ...

    def select(self, logp_BLV: torch.Tensor, candidates_BL: torch.Tensor) -> torch.Tensor:
        """Adaptive only: ``[B]`` index of the next slot to fill.

        Args:
            logp_BLV: the generator's log-probabilities for every slot, restricted to
                the slot's kind (other values are -inf).
            candidates_BL: bool, the slots still to fill (at least one per row that
                is not finished; finished rows may return any index).
        """
        ...

    # Optional members of a *learned* orderer (``learned = True``), one that trains
    # together with the generator. The runner uses each one when it is present:
    #
    # wrap(generator, spec) -> nn.Module
    #     a module with the Generator methods (loss, score, sample) that holds the
    #     generator and the order policy; the runner trains, scores, samples and
    #     checkpoints it in place of the bare generator.
    # modelability(model, table, *, n, batch_size, device, seed) -> dict
    #     replaces the default modelability (e.g. a variational bound and an
    #     importance-weighted estimate), with the same keys as the default.
    # diagnostics(model, table, *, out, train_log, device, seed) -> dict
    #     extra results (goes into results.json under "order_diagnostics"); a "files"
    #     entry maps names to files it wrote into ``out`` (pictures).
    #
    # The wrapped module may define set_progress(fraction) (called before each
    # training step) and a train_stats dict (read after each step and logged as
    # series in results.json, e.g. the policy's entropy).


@runtime_checkable
class Generator(Protocol):
    """A sequence model over token sets, trained and evaluated under orders.

    Constructed as ``Generator(spec, config)`` where ``config`` is an instance of
    ``config_model``. Generators are ``torch.nn.Module`` subclasses so the runner
    can move, train and checkpoint them.
    """

    #: pydantic model of this generator's settings (defaults run on a laptop)
    config_model: ClassVar[type[BaseModel]]
    #: what this generator supports
    caps: ClassVar[GeneratorCaps]

    def loss(self, batch: TokenBatch, order: OrderBatch) -> torch.Tensor:
        """Scalar training loss in nats per predicted slot for one training step."""
        ...

    def score(
        self, batch: TokenBatch, order: OrderBatch | None = None, orderer: Orderer | None = None
    ) -> tuple[Scores, OrderBatch]:
        """Exact log-likelihood of every predicted slot under an order.

        Pass ``order`` for a fixed order, or an adaptive ``orderer`` to let it choose
        each next slot from the predictions given the true values so far (teacher
        forcing). Returns the per-slot scores and the order that was used.
        """
        ...

    def sample(
        self,
        template: TokenBatch,
        orderer: Orderer,
        *,
        rng: torch.Generator,
        temperature: float = 1.0,
    ) -> TokenBatch:
        """Fill the non-given slots of ``template`` following ``orderer``."""
        ...


@runtime_checkable
class Modality(Protocol):
    """A kind of data: its datasets, how samples are judged and drawn.

    Constructed with no arguments.
    """

    #: registered name, e.g. "sudoku"
    name: str
    #: dataset names; the first is the default
    datasets: ClassVar[tuple[str, ...]]
    #: "complete" (fill the test items' missing slots) or "generate" (from nothing)
    task: ClassVar[Literal["complete", "generate"]]

    def load(
        self, dataset: str, path: Path | None, *, seed: int, limit: int | None, report: RowReport
    ) -> Splits:
        """Load a dataset into fixed splits.

        Args:
            dataset: one of ``datasets``.
            path: a file the user gave (required by datasets no package ships).
            seed: seeds any split or generation the dataset makes.
            limit: at most this many training items (None: all); validation and
                test sizes are the modality's to choose and state in ``info``.
            report: bad rows are added here (row, reason) and skipped, never fatal.
        """
        ...

    def budget(self, budget: str) -> dict[str, Any]:
        """Configuration overrides for a budget name ("smoke", "quick", "full")."""
        ...

    def templates(
        self, tokenizer: Tokenizer, test_tokens: list[TokenSet], n: int, rng: torch.Generator
    ) -> list[TokenSet]:
        """Token sets to fill at sampling time (given slots set, other values ignored)."""
        ...

    def evaluate(
        self, samples: list[Any], splits: Splits, *, templates: list[TokenSet] | None = None
    ) -> dict[str, Any]:
        """Metrics for decoded samples (None entries are undecodable samples).

        For ``task == "complete"``, ``samples[i]`` completes ``splits.test[i]``.
        """
        ...

    def render(self, samples: list[Any], path: Path, *, splits: Splits | None = None) -> Path:
        """Draw a few samples to a PNG at ``path`` and return the path."""
        ...
