"""The four component protocols: Tokenizer, Orderer, Generator, Modality.

A plugin provides classes that satisfy these. Every member the runner calls is declared
here; members with a sensible default live on the base classes (:class:`BaseTokenizer`,
:class:`BaseModality`), so a plugin subclasses them and overrides what it needs. A
component is checked against its protocol when the registry first loads it
(:func:`check_component`): a class that lacks a member fails then, with its name, not
after training. ``seqify.testing`` has a conformance kit and a test double for each
protocol.

This module does not import torch, so importing it stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import torch

    from seqify.data import RowReport
    from seqify.types import OrderBatch, Scores, TokenBatch, TokenizerSpec, TokenSet

__all__ = [
    "API_VERSION",
    "GeneratorCaps",
    "NoOptions",
    "Splits",
    "Tokenizer",
    "BaseTokenizer",
    "Orderer",
    "StaticOrderer",
    "AdaptiveOrderer",
    "TrainableOrderer",
    "TrainableModel",
    "BaseOrderer",
    "BaseTrainableOrderer",
    "orderer_kind",
    "Generator",
    "HiddenStates",
    "BaseGenerator",
    "Modality",
    "BaseModality",
]


class NoOptions(BaseModel):
    """Settings of a component that has none (any field given is an error)."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class GeneratorCaps:
    """What a generator can do; orderers read it to say whether they apply.

    Args:
        any_order: trains and scores under any permutation of the slots.
        blocks: can predict several slots at once (blocks larger than one).
        adaptive: can let an adaptive orderer pick the next slot from its predictions.
        variable_length: can generate items whose length it decides (end token).
        hidden_states: implements :class:`HiddenStates` (``encode`` and
            ``hidden_size``): per-slot hidden states and log-probabilities for every
            slot at once, which a trainable orderer's policy reads.
    """

    any_order: bool = True
    blocks: bool = False
    adaptive: bool = False
    variable_length: bool = False
    hidden_states: bool = False


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

    Constructed as ``Tokenizer(**options)`` with keyword arguments that have defaults
    (validated against ``config_model``); a tokenizer that sets ``takes_dataset`` also
    receives ``dataset=<the dataset's name>``. Subclass :class:`BaseTokenizer` for the
    defaults of the optional members (stateless, per-item batch encoding, no blank).
    """

    #: registered name, e.g. "graph"
    name: str
    #: pydantic model of the tokenizer's settings
    config_model: ClassVar[type[BaseModel]]
    #: True when the constructor takes ``dataset=`` (the runner passes the dataset's name)
    takes_dataset: ClassVar[bool]
    #: width of :meth:`slot_inputs`' features; 0 when the tokenizer gives none (optional)
    slot_input_dim: int

    @property
    def spec(self) -> TokenizerSpec:
        """Vocabulary per kind, coordinate axes, maximum length (valid after ``fit``)."""
        ...

    def fit(self, items: list[Any], *, device: torch.device | None = None, seed: int = 0) -> None:
        """Learn what the tokenizer needs from training items (no-op when fixed).

        Args:
            items: the training split.
            device: where to train learned state (a VQ codebook); None: CPU.
            seed: seeds anything random in fitting.
        """
        ...

    def encode(self, item: Any) -> TokenSet:
        """One datum to slots. Raises ValueError naming the problem if it cannot."""
        ...

    def encode_batch(self, items: list[Any]) -> list[TokenSet]:
        """Several data at once (a learned tokenizer runs its encoder on a batch).

        Raises ValueError if any item fails; the runner then encodes that chunk item
        by item, so that one bad item is reported and skipped, never fatal.
        """
        ...

    def decode(self, tokens: TokenSet) -> Any:
        """Slots back to a datum; may return None when the slots describe no valid datum."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What ``fit`` learned, loadable with ``torch.load(weights_only=True)``: tensors,
        str, int, float, bool, and lists / dicts of those. ``{}`` when fixed."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``fit`` learned (``seqify sample`` restores, never refits).
        Raises ValueError naming the problem for a state of another tokenizer."""
        ...

    def blank(self) -> TokenSet | None:
        """An all-open item in the tokenizer's fixed layout, for unconditional
        generation (for a tokenizer whose ``spec.grows``: its first slots, which
        ``next_slots`` extends); None when the layout depends on the datum."""
        ...

    def order_prior(self, batch: TokenBatch) -> torch.Tensor | None:
        """A structural prior over generation orders: ``[B, L]`` float priorities, lower
        first (as :meth:`seqify.ordering.StaticOrderer.priority`), read from the batch's
        structure (kinds, coordinates, given flags), never its values; or None for no
        prior. A trainable orderer (``learned``) starts its order posterior from it, so
        the generator specializes to a family of orders near this one from step 0.
        Default (:class:`BaseTokenizer`): the slots' own order (raster over the layout)."""
        ...

    def slot_inputs(self, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Teacher-forced inputs of each slot from the slots decoded before it (VAR's
        ``f_hat`` canvas for next-scale tokens), or None (default: no inputs).

        Returns ``inputs_BLF`` (float, ``F = slot_input_dim``) and ``level_BL`` (long):
        the input of a slot may depend on the values of the slots of lower level only,
        never on its own level's or higher (next-scale: the level is the scale, the input
        the running reconstruction of the coarser scales, area-downsampled to the slot's
        scale). A generator that reads them (the causal one) refuses orders that do not
        decode every lower level first, and recomputes them as its samples grow, so
        training and sampling see the same inputs. ``slot_input_dim`` is the width
        ``F``, read when the generator is built (after ``fit``)."""
        ...

    def next_slots(self, tokens: TokenSet) -> TokenSet | None:
        """For a tokenizer whose ``spec.grows``: the open slots that follow ``tokens``.

        ``tokens`` is an item decoded so far: ``blank()``'s slots and those of earlier
        calls, in order, every value filled. The answer holds the next slots' structure
        (kinds and coordinates, values 0, not given), exactly the structure ``encode``
        gives those slots, or None when the item is complete (:mod:`seqify.grow` asks
        the generator to fill them, given everything before, and calls again). Raises
        ValueError naming the problem for slots that no item of the grammar starts with.
        Default (:class:`BaseTokenizer`): None (the template is the whole item)."""
        ...


class BaseTokenizer:
    """Defaults for a tokenizer's optional members; subclass it and implement
    ``spec``, ``encode`` and ``decode`` (and ``fit`` / ``state_dict`` /
    ``load_state_dict`` when the tokenizer learns something)."""

    name: str = "tokenizer"
    takes_dataset: ClassVar[bool] = False
    config_model: ClassVar[type[BaseModel]] = NoOptions

    def fit(self, items: list[Any], *, device: Any = None, seed: int = 0) -> None:
        """Nothing to learn."""
        return None

    def encode_batch(self, items: list[Any]) -> list[TokenSet]:
        """``encode`` on each item."""
        return [self.encode(item) for item in items]  # type: ignore[attr-defined]

    def state_dict(self) -> dict[str, Any]:
        """A fixed tokenizer has no state."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Accepts only the empty state of a fixed tokenizer."""
        if state:
            raise ValueError(
                f"{type(self).__name__} is fixed and has no state, but a state with "
                f"{sorted(state)} was given (a checkpoint of another tokenizer?)"
            )

    def blank(self) -> TokenSet | None:
        """No fixed layout."""
        return None

    def order_prior(self, batch: Any) -> Any:
        """The slots' own order: slot index (raster over the layout)."""
        import torch

        B, L = batch.values.shape
        return torch.arange(L, device=batch.values.device, dtype=torch.float32).expand(B, L)

    #: width of :meth:`slot_inputs`' features (0: the tokenizer gives none)
    slot_input_dim: int = 0

    def slot_inputs(self, batch: Any) -> Any:
        """No slot inputs."""
        return None

    def next_slots(self, tokens: Any) -> Any:
        """Nothing grows: the template is the whole item."""
        return None


@runtime_checkable
class Orderer(Protocol):
    """Chooses the order in which slots are generated: what every orderer has.

    There are three kinds, each its own protocol below, so that no orderer implements
    a member only to refuse it (:func:`orderer_kind` tells them apart):

    * :class:`StaticOrderer`: whole orders from the token structure alone (kinds,
      coordinates, given flags), for scoring and sampling (``infer_orders``);
    * :class:`AdaptiveOrderer` (``adaptive = True``): picks each next slot at inference
      from the generator's current predictions (``select``); it trains the generator on
      random orders (any-order training);
    * :class:`TrainableOrderer`: an order policy that trains together with the
      generator (LO-ARM); ``wrap`` returns the module the runner trains.

    The runner calls ``wrap``, ``modelability`` and ``diagnostics`` on every orderer;
    their defaults (:class:`BaseOrderer`) are the identity, the generic measurement
    (:func:`seqify.evaluate.modelability`) and no diagnostics.
    """

    #: registered name, e.g. "raster"
    name: str
    #: pydantic model of the orderer's settings (default: none)
    config_model: ClassVar[type[BaseModel]]
    #: True when the order is chosen from the generator's predictions at inference
    adaptive: ClassVar[bool]
    #: True when the orders differ between calls (a Monte Carlo estimate is then reported)
    stochastic: ClassVar[bool]
    #: True when its orders group several slots into one block (needs ``GeneratorCaps.blocks``)
    produces_blocks: ClassVar[bool]

    @property
    def train_signature(self) -> str:
        """Orderers with equal signatures train identical models (the matrix shares them)."""
        ...

    def check(self, spec: TokenizerSpec, caps: GeneratorCaps) -> str | None:
        """None when this orderer can serve that tokenizer and generator, else the reason.
        Called before any data loads, when the spec is known then (and again after the
        tokenizer is fitted)."""
        ...

    def train_orders(
        self, batch: TokenBatch, *, progress: float, rng: torch.Generator
    ) -> OrderBatch:
        """Orders to train on; ``progress`` in [0, 1] is the fraction of training done."""
        ...

    def wrap(self, generator: torch.nn.Module, spec: TokenizerSpec) -> torch.nn.Module:
        """The module the runner trains, scores, samples and checkpoints (default: the
        generator itself; a trainable orderer adds its policy)."""
        ...

    def modelability(
        self, model: torch.nn.Module, table: Any, *, n: int, batch_size: int, device: torch.device, seed: int,
        orders_per_item: int = 1, on_batch: Any = None,
    ) -> dict[str, Any]:
        """Modelability of the first ``n`` items of ``table`` (keys: nats_per_token,
        bits_per_item, top1_accuracy, kind, note, ...). Default: exact or Monte Carlo
        log-likelihood under this orderer's orders (:func:`seqify.evaluate.modelability`)."""
        ...

    def diagnostics(
        self, model: torch.nn.Module, table: Any, *, out: Path, train_log: dict[str, Any] | None,
        device: torch.device, seed: int,
    ) -> dict[str, Any]:
        """Extra results (results.json "order_diagnostics", left out when empty); a
        "files" entry maps names to files it wrote into ``out`` (pictures). Default: {}."""
        ...

    def generator_preference(self, caps: GeneratorCaps) -> int:
        """How much this orderer prefers a generator with ``caps`` when a cell names none
        (higher first; among the generators it accepts, before their
        ``default_priority``). Default: 0 for every generator."""
        ...


@runtime_checkable
class StaticOrderer(Orderer, Protocol):
    """Whole orders from structure alone. Subclass :class:`seqify.ordering.StaticOrderer`."""

    def infer_orders(self, batch: TokenBatch, *, rng: torch.Generator) -> OrderBatch:
        """Orders for scoring and sampling."""
        ...


@runtime_checkable
class AdaptiveOrderer(Orderer, Protocol):
    """Picks each next slot from the generator's predictions (``adaptive = True``).
    Subclass :class:`seqify.ordering.AdaptiveOrderer`."""

    def select(self, logp_BLV: torch.Tensor, candidates_BL: torch.Tensor) -> torch.Tensor:
        """``[B]`` index of the next slot to fill.

        Args:
            logp_BLV: the generator's log-probabilities for every slot, restricted to
                the slot's kind (other values are -inf).
            candidates_BL: bool, the slots still to fill (at least one per row that
                is not finished; finished rows may return any index).
        """
        ...


@runtime_checkable
class TrainableModel(Protocol):
    """What a :class:`TrainableOrderer`'s ``wrap`` returns: a generator (``loss``,
    ``score``, ``sample``) holding the order policy, plus training hooks."""

    def set_progress(self, fraction: float) -> None:
        """Called before each training step with the fraction of training done."""
        ...

    def loss_with_stats(self, batch: TokenBatch, order: OrderBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss and statistics of this step as tensors, left on the device:
        the training loop reads them back only at its logging steps (a series each in
        results.json). ``loss`` is its first element."""
        ...

    def loss(self, batch: TokenBatch, order: OrderBatch) -> torch.Tensor: ...

    def score(
        self, batch: TokenBatch, order: OrderBatch | None = None, orderer: Orderer | None = None
    ) -> tuple[Scores, OrderBatch]: ...

    def sample(
        self, template: TokenBatch, orderer: Orderer, *, rng: torch.Generator, temperature: float = 1.0
    ) -> TokenBatch: ...


@runtime_checkable
class HasParamGroups(Protocol):
    """A model that asks for its own optimizer groups (e.g. an order policy at another
    learning rate, without weight decay). :func:`seqify.training.train` builds AdamW
    from them; each group's ``lr_scale`` (default 1) multiplies the scheduled rate."""

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]: ...


@runtime_checkable
class TrainableOrderer(Orderer, Protocol):
    """An order policy that trains together with the generator, as LO-ARM's does. The
    runner trains, scores, samples and checkpoints the module ``wrap`` returns (a
    :class:`TrainableModel`) in place of the bare generator; inference orders come
    from that model. Subclass :class:`BaseTrainableOrderer`; ``check`` is where it
    says which generator capabilities it needs (e.g. ``caps.hidden_states``)."""

    def wrap(self, generator: torch.nn.Module, spec: TokenizerSpec) -> TrainableModel:
        """The generator with this orderer's policy (what the runner trains). The runner
        also passes ``tokenizer=`` (the cell's tokenizer, e.g. for its
        :meth:`Tokenizer.order_prior`) when ``wrap`` accepts that keyword."""
        ...


class _OrdererDefaults:
    """The optional members every kind of orderer shares."""

    name: str = "orderer"
    config_model: ClassVar[type[BaseModel]] = NoOptions
    adaptive: ClassVar[bool] = False
    stochastic: ClassVar[bool] = False
    produces_blocks: ClassVar[bool] = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @property
    def train_signature(self) -> str:
        """Orderers with equal signatures train identical models (the matrix shares them)."""
        return repr(self)

    def modelability(
        self, model: Any, table: Any, *, n: int, batch_size: int, device: Any, seed: int,
        orders_per_item: int = 1, on_batch: Any = None,
    ) -> dict[str, Any]:
        """Log-likelihood under this orderer's orders (:func:`seqify.evaluate.modelability`)."""
        from seqify.evaluate import modelability

        return modelability(model, table, self, n=n, batch_size=batch_size, device=device, seed=seed,
                            orders_per_item=orders_per_item, on_batch=on_batch)

    def diagnostics(
        self, model: Any, table: Any, *, out: Path, train_log: dict[str, Any] | None, device: Any, seed: int,
    ) -> dict[str, Any]:
        """No diagnostics."""
        return {}

    def generator_preference(self, caps: GeneratorCaps) -> int:
        """No preference: the default generator is the accepted one with the highest ``default_priority``."""
        return 0


class BaseOrderer(_OrdererDefaults):
    """Defaults for a static or adaptive orderer's optional members (``wrap`` is the
    identity). :class:`seqify.ordering.StaticOrderer` and
    :class:`seqify.ordering.AdaptiveOrderer` build on it."""

    def wrap(self, generator: Any, spec: Any) -> Any:
        """The generator itself."""
        return generator


class BaseTrainableOrderer(_OrdererDefaults):
    """Defaults for a trainable orderer's optional members; implement ``check``,
    ``train_orders`` (the orders that train the generator, e.g. during a warm start)
    and ``wrap``."""

    stochastic: ClassVar[bool] = True


def orderer_kind(orderer: Any) -> Literal["static", "adaptive", "trainable"]:
    """Which orderer protocol ``orderer`` (a class or an instance) implements.

    ``adaptive = True``: adaptive. An orderer with no ``infer_orders`` of its own (or,
    from API version 1, with ``learned = True``): trainable. Otherwise static.
    """
    if getattr(orderer, "adaptive", False):
        return "adaptive"
    if getattr(orderer, "learned", False) or not hasattr(orderer, "infer_orders"):
        return "trainable"
    return "static"


@runtime_checkable
class Generator(Protocol):
    """A sequence model over token sets, trained and evaluated under orders.

    Constructed as ``Generator(spec, config)`` where ``config`` is an instance of
    ``config_model``; when the constructor takes it, the runner also passes
    ``conditions=`` (the number of condition classes the modality declares for the
    dataset, :meth:`Modality.num_conditions`; 0 when none), which a class-conditional
    generator sizes its class embedding with, and ``tokenizer=`` (the cell's fitted
    tokenizer, e.g. for its :meth:`Tokenizer.slot_inputs`). Generators are
    ``torch.nn.Module`` subclasses so the runner can move, train and checkpoint them.
    """

    #: pydantic model of this generator's settings (defaults run on a laptop)
    config_model: ClassVar[type[BaseModel]]
    #: what this generator supports
    caps: ClassVar[GeneratorCaps]
    #: size presets: a budget names a size ("tiny", "small", ...) and the generator
    #: maps it to its own settings; ``{}`` for a generator without a size knob (any
    #: size name then means its defaults)
    sizes: ClassVar[dict[str, dict[str, Any]]]
    #: preference when a cell names no generator (default 0; see :class:`BaseGenerator`)
    default_priority: ClassVar[int]
    #: condition classes of a class-conditional model (0: unconditional, the default). When
    #: it is above 0 the runner gives every batch the items' classes (``TokenBatch.cond``,
    #: the true labels for training and scoring) and samples from classes drawn from the
    #: test split's label distribution
    conditions: int
    #: settings (fields of ``config_model``) under which a checkpoint written before
    #: checkpoints recorded the generator's resolved settings loads as it was trained,
    #: where a default has changed since (``seqify sample``); default ``{}``
    legacy_config: ClassVar[dict[str, Any]]

    def loss(self, batch: TokenBatch, order: OrderBatch) -> torch.Tensor:
        """Scalar training loss in nats per predicted slot for one training step."""
        ...

    def score(
        self, batch: TokenBatch, order: OrderBatch | None = None, orderer: Orderer | None = None
    ) -> tuple[Scores, OrderBatch]:
        """Exact log-likelihood of every predicted slot under an order, in float32.

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
        """Fill the non-given slots of ``template`` following ``orderer``.

        Optional keyword arguments, passed only when the user sets them (a generator
        without them keeps working, and setting them with it is an error naming it):
        ``top_k`` (int), ``top_p`` (float in (0, 1]), ``guidance`` (classifier-free
        guidance scale, float >= 0, for a conditional model) and ``guidance_schedule``
        ("constant" or "linear"); :class:`seqify.nn.SamplingControls` and
        :func:`seqify.nn.draw_values` implement them for the built-in generators.
        """
        ...


@runtime_checkable
class HiddenStates(Protocol):
    """A generator with ``caps.hidden_states``: what a trainable orderer's policy reads."""

    #: width D of the hidden states ``encode`` returns
    hidden_size: int

    def encode(self, batch: TokenBatch, known_BL: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(hidden_BLD, logp_BLV)`` for every slot at once, given the values of the
        slots ``known_BL`` (the others are hidden from the model)."""
        ...


class BaseGenerator:
    """Defaults for a generator's optional members (mix it in beside ``torch.nn.Module``)."""

    #: no size knob: every budget's size name means the defaults
    sizes: ClassVar[dict[str, dict[str, Any]]] = {}
    #: when a cell names no generator, the highest-priority generator whose ``caps`` the
    #: orderer accepts runs it (ties: by name)
    default_priority: ClassVar[int] = 0
    #: unconditional
    conditions: int = 0
    #: no default has changed
    legacy_config: ClassVar[dict[str, Any]] = {}


@runtime_checkable
class Modality(Protocol):
    """A kind of data: its datasets, how samples are judged and drawn.

    Constructed with no arguments, or with the fields of ``config_model`` when it has
    settings. Subclass :class:`BaseModality` for the defaults of the optional members.
    """

    #: registered name, e.g. "sudoku"
    name: str
    #: dataset names; the first is the default
    datasets: ClassVar[tuple[str, ...]]
    #: the datasets that read the file or folder given with ``--data`` (the others
    #: ignore it, so the runner refuses ``--data`` with them)
    file_datasets: ClassVar[tuple[str, ...]]
    #: "complete" (fill the test items' missing slots) or "generate" (from nothing)
    task: ClassVar[Literal["complete", "generate"]]
    #: pydantic model of the modality's settings (``modality.*`` in a config), or None
    config_model: ClassVar[type[BaseModel] | None]
    #: tokenizer used when none is asked for (None: the first registered for it)
    default_tokenizer: ClassVar[str | None]
    #: sample metrics shown in comparison tables, most important first
    headline_metrics: ClassVar[tuple[str, ...]]
    #: the key of ``reconstruction``'s result that comparisons plot (None: none)
    reconstruction_metric: ClassVar[str | None]

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
        """Configuration for a budget name ("smoke", "quick", "full"): ``train``,
        ``eval`` and ``data`` settings and a model ``size`` the generator interprets
        (optionally a ``per_dataset`` table merged for the dataset being run)."""
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

    def save_samples(self, samples: list[Any], out_dir: Path, *, splits: Splits | None = None) -> list[Path]:
        """Write the samples in the modality's own file format into ``out_dir``
        (e.g. ``samples.smi``); returns the files written."""
        ...

    def reconstruction(
        self, originals: list[Any], decoded: list[Any], *, out: Path, splits: Splits | None = None
    ) -> dict[str, Any]:
        """For a lossy tokenizer: how far ``decoded[i]`` (decode(encode(x)), or None)
        is from ``originals[i]`` (e.g. MSE and PSNR for images, Chamfer distance for
        point clouds). ``reconstruction_metric`` names the error that comparisons plot
        (lower is better); a "files" entry maps names to pictures written into ``out``.
        ``splits`` are the run's splits (API 2; an implementation without the parameter
        is called without it)."""
        ...

    def example_items(self, n: int, seed: int = 0) -> list[Any]:
        """A few items (up to ``n``), quickly: the conformance kit tries every tokenizer
        of the modality on them. Default: the first dataset that loads without a file."""
        ...

    def items_equal(self, decoded: Any, item: Any) -> bool:
        """Whether ``decoded`` (decode(encode(item))) is ``item`` again, for a lossless
        round trip (default ``==``; e.g. molecules compare canonical SMILES)."""
        ...

    def num_conditions(self, splits: Splits) -> int:
        """How many condition classes the items of ``splits`` carry (class ids ``0 ..
        n-1``, e.g. the 10 digits of MNIST), for a class-conditional generator
        (``generator.condition``); 0: this dataset declares no condition. Default: 0."""
        ...

    def condition(self, item: Any) -> int | None:
        """The condition class of one loaded item (``0 .. num_conditions - 1``), or None
        when it has none. The runner reads it for every item of every split when the
        generator is conditional. Default: None."""
        ...


class BaseModality:
    """Defaults for a modality's optional members."""

    name: str = "modality"
    file_datasets: ClassVar[tuple[str, ...]] = ()
    config_model: ClassVar[type[BaseModel] | None] = None
    default_tokenizer: ClassVar[str | None] = None
    headline_metrics: ClassVar[tuple[str, ...]] = ()
    reconstruction_metric: ClassVar[str | None] = None

    def save_samples(self, samples: list[Any], out_dir: Path, *, splits: Splits | None = None) -> list[Path]:
        """Nothing beyond the picture."""
        return []

    def reconstruction(
        self, originals: list[Any], decoded: list[Any], *, out: Path, splits: Splits | None = None
    ) -> dict[str, Any]:
        """Exact matches only (no modality-specific distance)."""
        same = sum(self.items_equal(d, o) for o, d in zip(originals, decoded))
        return {"exact_share": same / max(len(originals), 1), "n": len(originals)}

    def example_items(self, n: int, seed: int = 0) -> list[Any]:
        """The first ``n`` training items of the first dataset that loads without a file."""
        from seqify.data import RowReport

        errors = []
        for dataset in self.datasets:  # type: ignore[attr-defined]
            try:
                splits = self.load(dataset, None, seed=seed, limit=n, report=RowReport())  # type: ignore[attr-defined]
            except Exception as exc:  # this dataset needs a file: try the next
                errors.append(f"{dataset}: {exc}")
                continue
            return list(splits.train[:n])
        raise ValueError(f"modality {self.name!r}: no dataset loads without a file ({'; '.join(errors)})")

    def items_equal(self, decoded: Any, item: Any) -> bool:
        """``decoded == item``."""
        return bool(decoded == item)

    def num_conditions(self, splits: Splits) -> int:
        """No condition."""
        return 0

    def condition(self, item: Any) -> int | None:
        """No condition."""
        return None


#: the version of these protocols. A release within one version only adds optional
#: members (with defaults) and optional keyword arguments; see docs/plugins.md,
#: "Compatibility", for how a member is deprecated and how long it keeps working.
API_VERSION = 2


#: what moved to :mod:`seqify.compat` (the loading-time checks and the calling
#: convention), still importable from here
_IN_COMPAT = ("PluginCompatibilityWarning", "protocol_members", "component_protocol", "required_members",
              "optional_members", "check_component", "call_supported")


def __getattr__(name: str) -> Any:
    if name in _IN_COMPAT:
        from seqify import compat

        return getattr(compat, name)
    if name == "tokenizer_fingerprint":  # moved beside the other cache keys
        from seqify.dataset import tokenizer_fingerprint

        return tokenizer_fingerprint
    raise AttributeError(f"module 'seqify.protocols' has no attribute {name!r}")
