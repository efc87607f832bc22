"""Typed configuration: one pydantic model per part, budgets, config files.

Precedence, lowest first: the defaults below (they run on a laptop), the modality's
budget preset (``Modality.budget``), the ``--config`` file (TOML or YAML), then
explicit CLI flags such as ``--steps``. Component settings (``generator``,
``orderer``, ``tokenizer``) are validated against that component's own model. A budget
sets data, training and evaluation, and names a model ``size``; the generator maps
the size to its own settings (``Generator.sizes``), so a generator with another
settings schema runs under every budget.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seqify.errors import ConfigError

BUDGETS = ("smoke", "quick", "full")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainConfig(_Strict):
    steps: int = Field(200, ge=0, description="optimizer steps")
    batch_size: int = Field(64, ge=1, description="items per step")
    lr: float = Field(3e-4, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    warmup_steps: int = Field(20, ge=0, description="linear warm-up, then cosine decay")
    grad_clip: float = Field(1.0, gt=0, description="gradient norm clip")
    eval_every: int = Field(0, ge=0, description="validation loss every N steps (0: at the end only)")
    val_items: int = Field(256, ge=1, description="validation items used for that loss")
    probe_items: int = Field(0, ge=0, description="at every eval_every step, complete this many validation items "
                                                   "with the cell's inference orderer and log the modality's metrics "
                                                   "(complete-task modalities, e.g. Sudoku: the solve rate through "
                                                   "training; 0: off)")
    ema: float = Field(0.0, ge=0.0, lt=1.0,
                       description="decay of an exponential moving average of the weights (e.g. 0.99; 0: off); "
                                   "validation, probes and the trained model use the average")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="arithmetic of training and sampling (scoring is always float32): auto = bf16 "
                            "autocast on CUDA, float32 on CPU; bf16 = bf16 autocast on either (on a CPU with "
                            "native bf16, e.g. AVX512-BF16 or AMX, about twice as fast); fp32 = float32")
    checkpoint_every: int = Field(500, ge=0, description="save the resumable training state (OUT/train_state.pt) "
                                                          "every N steps and at the end (0: never); a rerun of the "
                                                          "same command resumes from it")


class EvalConfig(_Strict):
    n_test: int = Field(512, ge=1, description="test items scored for modelability")
    n_samples: int = Field(512, ge=1, description="items generated or completed")
    batch_size: int = Field(256, ge=1, description="items per forward pass at evaluation")
    temperature: float = Field(1.0, ge=0, description="sampling temperature (0: greedy, the most likely value)")
    top_k: int | None = Field(None, ge=1, description="draw each value among the k most likely only (None: off)")
    top_p: float | None = Field(None, gt=0, le=1, description="draw each value among the smallest set of most likely "
                                                             "values holding this probability (nucleus; None: off)")
    guidance: float | None = Field(None, ge=0, description="classifier-free guidance scale s of a class-conditional "
                                                          "model (generator.condition): logits (1 + s) cond - s "
                                                          "uncond, as VAR (None or 0: plain conditional sampling)")
    guidance_schedule: Literal["constant", "linear"] = Field(
        "constant", description="guidance scale over the sampling steps: constant, or linear from 0 at the first "
                                "step (block) to `guidance` at the last (VAR's ramp)")
    orders_per_item: int = Field(1, ge=1, description="orders sampled per test item for stochastic orderers")

    def sampling_keywords(self) -> dict[str, Any]:
        """The optional ``Generator.sample`` keywords the user set (top_k, top_p, guidance
        and its schedule); empty by default, so a generator without them keeps working."""
        found: dict[str, Any] = {}
        if self.top_k is not None:
            found["top_k"] = self.top_k
        if self.top_p is not None:
            found["top_p"] = self.top_p
        if self.guidance is not None:
            found["guidance"] = self.guidance
            found["guidance_schedule"] = self.guidance_schedule
        return found


class DataConfig(_Strict):
    limit: int | None = Field(None, ge=1, description="at most this many training items")


class BenchConfig(_Strict):
    """Everything one benchmark cell needs besides the component names."""

    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    data: DataConfig = DataConfig()
    size: str = Field("small", description="model size preset, interpreted by the generator (its `sizes`)")
    modality: dict[str, Any] = Field(default_factory=dict, description="modality settings (its config_model)")
    generator: dict[str, Any] = Field(default_factory=dict, description="generator settings")
    orderer: dict[str, Any] = Field(default_factory=dict, description="orderer settings")
    train_orderer: dict[str, Any] = Field(default_factory=dict,
                                          description="settings of the training orderer (--train-orderer)")
    tokenizer: dict[str, Any] = Field(default_factory=dict, description="tokenizer settings")


#: settings added after cache and index keys were defined (sampling controls, class
#: conditioning): :func:`key_dump` leaves them out while they hold these defaults, so
#: the keys of earlier matrix indexes and shared models stay valid
LATER_DEFAULTS: dict[str, Any] = {"top_k": None, "top_p": None, "guidance": None, "guidance_schedule": "constant",
                                  "condition": False, "cond_drop": 0.1}


def key_dump(model: BaseModel) -> dict[str, Any]:
    """``model.model_dump()`` for hashing into a key, without the :data:`LATER_DEFAULTS`
    fields that still hold their default (at any depth)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()
                    if not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}
        return value

    return strip(model.model_dump())


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``, recursing into nested dicts; inputs are not mutated."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def for_dataset(preset: dict[str, Any], dataset: str, tokenizer: str | None = None,
                generator: str | None = None) -> dict[str, Any]:
    """A budget preset with its ``per_dataset[dataset]`` entry, then its
    ``per_tokenizer[tokenizer]`` entry, then its ``per_generator[generator]`` entry
    merged in and the three tables dropped (the shape ``Modality.budget`` may return; a
    tokenizer entry holds, e.g., the steps a learned tokenizer fits for under this
    budget; a generator entry, settings only that generator takes)."""
    tables = ("per_dataset", "per_tokenizer", "per_generator")
    base = {k: v for k, v in preset.items() if k not in tables}
    for table, name in zip(tables, (dataset, tokenizer, generator)):
        if name:
            base = deep_merge(base, preset.get(table, {}).get(name, {}))
    return base


def budget_preset(presets: dict[str, dict[str, Any]], budget: str, dataset: str | None = None) -> dict[str, Any]:
    """A copy of ``presets[budget]`` (what ``Modality.budget`` returns), with its
    ``per_dataset`` entry for ``dataset`` merged in when one is given; a ConfigError
    for an unknown budget name."""
    import copy

    if budget not in presets:
        raise ConfigError(f"unknown budget {budget!r} (one of {', '.join(BUDGETS)})")
    preset = copy.deepcopy(presets[budget])
    return preset if dataset is None else for_dataset(preset, dataset)


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        if prefix:
            field = f"{prefix}.{field}" if field else prefix
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{field or '<config>'}: {err['msg']}{shown}")
    return "invalid configuration: " + "; ".join(lines)


def validate_model(model: type[BaseModel], data: dict[str, Any], prefix: str = "") -> BaseModel:
    """``model(**data)`` or a ConfigError that names each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix)) from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON file into a dict (clear errors, no exec)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file {str(path)!r}: use .toml, .yaml/.yml or .json")
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"config file {str(path)!r} could not be parsed: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return data


def resolve_config(
    budget_overrides: dict[str, Any] | None = None,
    file_data: dict[str, Any] | None = None,
    cli_overrides: dict[str, Any] | None = None,
) -> BenchConfig:
    merged: dict[str, Any] = {}
    for layer in (budget_overrides, file_data, cli_overrides):
        if layer:
            merged = deep_merge(merged, layer)
    return validate_model(BenchConfig, merged)  # type: ignore[return-value]
