"""Settings of the learned orderer (no torch import: the CLI can read them cheaply)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["LearnedOptions"]


class LearnedOptions(BaseModel):
    """Settings of the learned (LO-ARM-style) orderer; the defaults train on a laptop."""

    model_config = ConfigDict(extra="forbid")

    orders_per_item: int = Field(
        4, ge=2, description="orders drawn from q per training item (K of the leave-one-out RLOO baseline)"
    )
    steps_per_order: int = Field(
        1, ge=1,
        description="backbone passes per order and training step: log p(x, z) is estimated from this many "
        "stratified steps (1: one uniform step, the cheapest; more: lower-variance rewards for RLOO)",
    )
    warm_start: float = Field(
        0.3, ge=0.0, le=1.0,
        description="fraction of training steps that train only the generator on random orders before the "
        "policy trains (guards against the chicken-and-egg collapse of joint training from scratch)",
    )
    entropy_bonus: float = Field(
        0.01, ge=0.0, description="weight of the entropy regulariser on the order policy p and posterior q (0: off)"
    )
    score_clip: float = Field(
        10.0, gt=0.0, description="order logits and q scores are bounded to +-score_clip by a scaled tanh (against score explosion)"
    )
    eval_orders: int = Field(
        8, ge=1, description="orders drawn from q per test item for the bound and the importance-weighted estimate"
    )
    backbone: Literal["transformer", "graph"] = Field(
        "transformer",
        description="network of the posterior q: a bidirectional transformer over the slots, or TransformerConv "
        "layers over the slot graph of an (i, j) graph tokenization (torch-geometric)",
    )
    policy_d_model: int = Field(64, ge=8, description="width of the posterior network q")
    policy_layers: int = Field(2, ge=1, description="layers of the posterior network q")
    policy_heads: int = Field(4, ge=1, description="attention heads of the posterior network q (must divide policy_d_model)")
    greedy_order: bool = Field(
        False, description="at generation, take the policy's most likely next slot instead of sampling it"
    )
    diagnostic_items: int = Field(
        256, ge=1, description="test templates whose generation orders the diagnostics sample and plot"
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "LearnedOptions":
        if self.policy_d_model % self.policy_heads:
            raise ValueError(
                f"policy_d_model ({self.policy_d_model}) must be a multiple of policy_heads ({self.policy_heads})"
            )
        return self
