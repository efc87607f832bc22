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
    "GeneratorCaps",
    "NoOptions",
    "Splits",
    "Tokenizer",
    "BaseTokenizer",
    "Orderer",
    "TrainableOrderer",
    "TrainableModel",
    "Generator",
    "Modality",
    "BaseModality",
    "check_component",
    "tokenizer_fingerprint",
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
        generation; None when the layout depends on the datum."""
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


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """A short hash of a tokenizer's settings and learned state (tensor bytes
    included), so caches and trained models keyed on it never mix two fits."""
    import hashlib

    h = hashlib.sha1(repr(tokenizer).encode())
    _hash_state(h, tokenizer.state_dict())
    return h.hexdigest()[:16]


def _hash_state(h: Any, value: Any) -> None:
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            h.update(f"<{key}>".encode())
            _hash_state(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"[{len(value)}".encode())
        for v in value:
            _hash_state(h, v)
    elif hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        arr = value.detach().cpu().contiguous()
        h.update(f"T{arr.dtype}{tuple(arr.shape)}".encode())
        h.update(arr.numpy().tobytes() if arr.dtype != _bf16() else arr.float().numpy().tobytes())
    else:
        h.update(repr(value).encode())


def _bf16() -> Any:
    import torch

    return torch.bfloat16


@runtime_checkable
class Orderer(Protocol):
    """Chooses the order in which slots are generated.

    A static or stochastic orderer returns whole orders from the token structure alone
    (kinds, coordinates, given flags), so it runs on any modality. An adaptive orderer
    (``adaptive = True``) picks the next slot at inference time from the generator's
    current predictions, through :meth:`select`; it trains the generator on random
    orders (any-order training). A learned orderer (``learned = True``) trains with the
    generator and is also a :class:`TrainableOrderer`. Subclass
    :class:`seqify.ordering.StaticOrderer` or :class:`seqify.ordering.AdaptiveOrderer`.
    """

    #: registered name, e.g. "raster"
    name: str
    #: pydantic model of the orderer's settings
    config_model: ClassVar[type[BaseModel]]
    #: True when the order is chosen from the generator's predictions at inference
    adaptive: ClassVar[bool]
    #: True when the orders differ between calls (a Monte Carlo estimate is then reported)
    stochastic: ClassVar[bool]
    #: True when the orderer trains with the generator (see :class:`TrainableOrderer`)
    learned: ClassVar[bool]
    #: True when its orders group several slots into one block (needs ``GeneratorCaps.blocks``)
    produces_blocks: ClassVar[bool]

    @property
    def train_signature(self) -> str:
        """Orderers with equal signatures train identical models (the matrix shares them)."""
        ...

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


@runtime_checkable
class TrainableModel(Protocol):
    """What a :class:`TrainableOrderer`'s ``wrap`` returns: a generator (``loss``,
    ``score``, ``sample``) holding the order policy, plus training hooks."""

    #: statistics of the last training step (logged as series in results.json)
    train_stats: dict[str, float]

    def set_progress(self, fraction: float) -> None:
        """Called before each training step with the fraction of training done."""
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
    """An orderer that trains together with the generator (``learned = True``), as
    LO-ARM's order policy does. The runner trains, scores, samples and checkpoints
    the module ``wrap`` returns in place of the bare generator."""

    def wrap(self, generator: torch.nn.Module, spec: TokenizerSpec) -> TrainableModel:
        """The generator with this orderer's policy (what the runner trains)."""
        ...

    def modelability(
        self, model: TrainableModel, table: Any, *, n: int, batch_size: int, device: torch.device, seed: int
    ) -> dict[str, Any]:
        """Replaces the default modelability (same keys: nats_per_token, bits_per_item,
        top1_accuracy, kind, note, ...), e.g. a bound and an importance-weighted estimate."""
        ...

    def diagnostics(
        self, model: TrainableModel, table: Any, *, out: Path, train_log: dict[str, Any] | None,
        device: torch.device, seed: int,
    ) -> dict[str, Any]:
        """Extra results (results.json "order_diagnostics"); a "files" entry maps names
        to files it wrote into ``out`` (pictures)."""
        ...


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
    #: size presets: a budget names a size ("tiny", "small", ...) and the generator
    #: maps it to its own settings; ``{}`` for a generator without a size knob (any
    #: size name then means its defaults)
    sizes: ClassVar[dict[str, dict[str, Any]]]

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
        """Fill the non-given slots of ``template`` following ``orderer``."""
        ...


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

    def reconstruction(self, originals: list[Any], decoded: list[Any], *, out: Path) -> dict[str, Any]:
        """For a lossy tokenizer: how far ``decoded[i]`` (decode(encode(x)), or None)
        is from ``originals[i]`` (e.g. MSE and PSNR for images, Chamfer distance for
        point clouds). ``reconstruction_metric`` names the error that comparisons plot
        (lower is better); a "files" entry maps names to pictures written into ``out``."""
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

    def reconstruction(self, originals: list[Any], decoded: list[Any], *, out: Path) -> dict[str, Any]:
        """Exact matches only (no modality-specific distance)."""
        same = sum(o == d for o, d in zip(originals, decoded))
        return {"exact_share": same / max(len(originals), 1), "n": len(originals)}


#: the members each kind of component must have (those with defaults come from the base classes)
_REQUIRED: dict[str, tuple[str, ...]] = {
    "tokenizer": ("name", "config_model", "takes_dataset", "spec", "fit", "encode", "encode_batch", "decode",
                  "state_dict", "load_state_dict", "blank"),
    "orderer": ("name", "config_model", "adaptive", "stochastic", "learned", "produces_blocks", "train_signature",
                "check", "train_orders", "infer_orders", "select"),
    "trainable_orderer": ("wrap", "modelability", "diagnostics"),
    "generator": ("config_model", "caps", "sizes", "loss", "score", "sample"),
    "modality": ("name", "datasets", "file_datasets", "task", "config_model", "default_tokenizer",
                 "headline_metrics", "reconstruction_metric", "load", "budget", "templates", "evaluate", "render",
                 "save_samples", "reconstruction"),
}
_BASES = {
    "tokenizer": "seqify.protocols.BaseTokenizer",
    "orderer": "seqify.ordering.StaticOrderer or AdaptiveOrderer",
    "trainable_orderer": "seqify.protocols.TrainableOrderer",
    "generator": "seqify.protocols.Generator",
    "modality": "seqify.protocols.BaseModality",
}


def check_component(kind: str, name: str, cls: Any, *, plugin: str = "") -> None:
    """Raise TypeError naming the component and each member its protocol needs that
    ``cls`` lacks (called by the registry when it loads a component)."""
    if kind not in _REQUIRED:
        return
    kinds = [kind]
    if kind == "orderer" and getattr(cls, "learned", False):
        kinds.append("trainable_orderer")
    missing = [m for k in kinds for m in _REQUIRED[k] if not hasattr(cls, m)]
    if kind == "generator" and not missing and not isinstance(getattr(cls, "caps"), GeneratorCaps):
        raise TypeError(f"generator {name!r}{_from(plugin)}: caps must be a seqify.protocols.GeneratorCaps")
    if missing:
        raise TypeError(
            f"{kind} {name!r}{_from(plugin)} does not implement the {kind} protocol: missing "
            f"{', '.join(missing)} (see {_BASES[kinds[-1] if missing[-1] in _REQUIRED[kinds[-1]] else kind]}; "
            "the base classes give defaults for the optional members)"
        )


def _from(plugin: str) -> str:
    return f" (plugin {plugin!r})" if plugin else ""


