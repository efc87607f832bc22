"""Settings of the learned orderer (no torch import: the CLI can read them cheaply)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["LearnedOptions"]


class LearnedOptions(BaseModel):
    """Settings of the learned (LO-ARM-style) orderer; the defaults train on a laptop."""

    model_config = ConfigDict(extra="forbid")

    estimator: Literal["exact-next", "one-step"] = Field(
        "exact-next",
        description="training estimator of the ELBO. exact-next (LO-ARM's Algorithm 1): at one uniformly drawn "
        "step, the exact q-weighted sum over every open next slot from one backbone pass, RLOO only on the "
        "prefix's log q; one-step (the issue-4 estimator): one sampled next slot per order, scaled by the number "
        "of slots, RLOO on the whole order's log q. The masked generator's choice: on the causal generator the learned "
        "order always trains on whole orders, each scored exactly in one pass, RLOO on the whole order's log q",
    )
    orders_per_item: int = Field(
        2, ge=1,
        description="orders (exact-next: prefixes) drawn from q per training item (K of the leave-one-out RLOO "
        "baseline; at least 2 on the masked generator). 1: causal generator only, one whole order per item, q's "
        "score-function gradient against a running mean of the per-slot reward instead of RLOO (a step then trains "
        "batch_size items, where K = 2 with orders_share_batch trains batch_size / 2 at the same cost)",
    )
    orders_share_batch: bool = Field(
        False,
        description="exact-next: the K prefixes of an item take K of the batch's rows, so a step trains on "
        "batch_size / K items and costs one backbone pass over batch_size rows, as random-order training does "
        "(False: every item of the batch gets K rows, K times the rows per pass)",
    )
    causal_layout: Literal["block", "stream"] = Field(
        "block",
        description="causal generator only: the sequence one pass scores an order in. 'block': BOS, the L value "
        "tokens, the L query tokens (1 + 2L tokens); p reads the prefix state of the value token before each "
        "choice, which has seen every earlier value. 'stream': the causal generator's own single stream (L tokens, "
        "each the value of the last slot and the structure of the next, as a fixed-order causal cell trains), "
        "about half the cost; p chooses slot t from the state of token t - 1, which has not seen the value of the "
        "slot before, plus a small MLP of that value and slot (see docs/learned-order.md)",
    )
    policy_trunk_grad: float = Field(
        1.0, ge=0.0, le=1.0,
        description="causal generator only: the share of p's gradient that passes into the generator's states p reads "
        "(1: all, as LO-ARM's policy head on the trunk; 0: none, the generator then learns from the values alone). In "
        "the stream layout p reads the states that also predict values, and p's full gradient there costs the values",
    )
    steps_per_order: int = Field(
        1, ge=1,
        description="one-step estimator only: backbone passes per order and training step, stratified "
        "(1: one uniform step, the cheapest; more: lower-variance rewards for RLOO)",
    )
    warm_start: float = Field(
        0.0, ge=0.0, le=1.0,
        description="fraction of training steps that train only the generator on random orders before the "
        "policy trains (exact-next with q and p uniform is already the any-order loss, so 0 loses nothing)",
    )
    entropy_bonus: float = Field(
        0.0, ge=0.0,
        description="weight of a constant entropy bonus on the order policy p and posterior q (the issue-4 "
        "regulariser; part of no bound; 0: off)",
    )
    q_entropy_bonus: float = Field(
        0.0, ge=-1.0,
        description="weight of an extra entropy term on q's next-slot distribution, annealed linearly to 0 at "
        "entropy_anneal: > 0 is LO-ARMs++'s max-entropy term (against early collapse); < 0 discounts the "
        "ELBO's own entropy of q (-1: none), sharpening q early (against a policy stuck at uniform); 0: off",
    )
    p_entropy_bonus: float = Field(
        0.0, ge=-1.0,
        description="weight of an entropy term on the order policy p's next-slot distribution (part of no bound), "
        "annealed like q_entropy_bonus: < 0 sharpens p early, so that p commits to an order it can predict from "
        "the known slots and q, which pays KL(q || p), follows; 0: off",
    )
    entropy_anneal: float = Field(
        0.5, ge=0.0, le=1.0, description="fraction of training at which the q_entropy_bonus reaches 0"
    )
    policy_lr_scale: float = Field(
        1.0, gt=0.0,
        description="learning rate of the order head and posterior relative to the generator's (used through "
        "LearnedOrderModel.param_groups)",
    )
    policy_weight_decay: float | None = Field(
        None, ge=0.0,
        description="weight decay of the order head and posterior (None: the generator's, train.weight_decay; "
        "0 keeps decay from pulling the order scores back to uniform)",
    )
    score_clip: float = Field(
        10.0, gt=0.0, description="order logits and q scores are bounded to +-score_clip by a scaled tanh (against score explosion)"
    )
    prior: Literal["tokenizer", "none"] = Field(
        "tokenizer",
        description="structural start of q: 'tokenizer' adds the tokenizer's order_prior (e.g. breadth-first over a "
        "graph, atoms each followed by their bonds) as Plackett-Luce scores -rank / prior_temperature, so q is a "
        "family of orders near it from step 0 and the generator specializes to them; 'none' (or a tokenizer whose "
        "order_prior is None): q and p start exactly uniform, where the policy's gradient is zero",
    )
    prior_temperature: float = Field(
        1.0, gt=0.0,
        description="temperature of the prior's scores (-rank / T): 1 keeps orders near the prior with local swaps "
        "(about 1 nat per step), larger spreads the family",
    )
    prior_final: float = Field(
        1.0, ge=0.0, le=1.0,
        description="weight of the prior at the end of training, reached linearly from 1 at prior_anneal_start (1: "
        "no anneal; 0: q ends on its learned scores alone)",
    )
    prior_anneal_start: float = Field(0.0, ge=0.0, le=1.0, description="fraction of training at which the prior's weight starts to fall")
    value_spread: float = Field(
        0.0, ge=0.0,
        description="weight of an extra value loss over every open slot at the drawn step, weighted by q's next-slot "
        "distribution tempered by value_spread_temperature (part of no bound): keeps every slot's values learning "
        "when q is sharp (the exact-next term then trains about one slot per pass); its weights are not detached, "
        "so it also moves q toward slots whose values are easy; exact-next estimator only; 0: off",
    )
    value_spread_temperature: float = Field(
        4.0, ge=1.0, description="temperature applied to q's scores for the value_spread weights (large: uniform over the open slots)"
    )
    policy_features: bool = Field(
        True,
        description="p's order logits add a small MLP (zero-initialized output) over each open slot's confidence "
        "(max log-probability, margin, entropy of its value distribution, detached) and kind, beside the linear "
        "head on hidden states (which cannot compute a margin); masked generator only (unused on the causal one)",
    )
    margin_init: float = Field(
        0.0, ge=0.0,
        description="p's order logits start as margin_init x the slot's margin (top-two probability gap; a trainable "
        "scale): large values make p play like margin inference from step 0 (Sudoku); 0: off",
    )
    margin_teacher: float = Field(
        0.0, ge=0.0,
        description="weight of a distillation term KL(teacher || p) toward the model's own margin order (softmax of "
        "margin / margin_teacher_temperature over the open slots, detached), an adaptive teacher q cannot be; "
        "part of no bound; 0: off",
    )
    p_from_elbo: bool = Field(
        True,
        description="the ELBO's order term trains p toward q (LO-ARM). False: p's logits are detached there, so "
        "the bound trains q toward p (and the values) but p learns only from margin_teacher (and an entropy term "
        "on p, if one is set): an adaptive policy that a non-adaptive q would otherwise pull back to q's own "
        "orders (Sudoku); exact-next estimator only",
    )
    margin_teacher_temperature: float = Field(0.02, gt=0.0, description="temperature of the margin teacher's softmax")
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
