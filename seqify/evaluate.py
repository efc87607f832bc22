"""Modelability on a test split, and sampling in batches.

Modelability = the test cross-entropy of the trained model under the orderer's
orders, reported per predicted token and per item (nats and bits), with top-1
next-token accuracy. Given slots are conditioning and not counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from seqify.dataset import TokenTable
from seqify.ordermap import OrderMap
from seqify.protocols import Orderer, Tokenizer
from seqify.training import autocast
from seqify.types import TokenBatch, TokenSet, collate


@torch.no_grad()
def modelability(
    model: torch.nn.Module,
    table: TokenTable,
    orderer: Orderer,
    *,
    n: int,
    batch_size: int,
    device: torch.device,
    seed: int,
    orders_per_item: int = 1,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Score the first ``n`` items of ``table`` under ``orderer``'s orders, in float32.

    For a stochastic orderer each item is scored under ``orders_per_item`` sampled
    orders and the mean is reported (a Monte Carlo estimate of the expectation over
    orders). For an adaptive orderer the order is the one it picks, step by step,
    from the model's predictions given the true values so far.
    """
    model.eval()
    rng = torch.Generator().manual_seed(seed)
    n = min(n, len(table))
    repeats = orders_per_item if getattr(orderer, "stochastic", False) else 1
    nll_total, tokens, correct, items = 0.0, 0, 0, 0
    per_item: list[float] = []
    order_map = OrderMap(table.max_len)
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size))
        batch = table.batch(idx, device)
        item_nll = torch.zeros(len(idx), dtype=torch.float64, device=device)
        for rep in range(repeats):
            # scored in float32, never under autocast: the differences between orders
            # that seqify reports are a few hundredths of a nat per token
            if orderer.adaptive:
                scores, order = model.score(batch, orderer=orderer)
            else:
                order = orderer.infer_orders(batch, rng=rng).to(device)
                scores, order = model.score(batch, order)
            order_map.add(order.slot_block())
            logp = scores.logp.double().masked_fill(~scores.scored, 0.0)
            item_nll += -logp.sum(1) / repeats
            if rep == 0:
                tokens += int(scores.scored.sum())
            correct += int((scores.correct & scores.scored).sum())
        nll_total += float(item_nll.sum())
        per_item.extend(item_nll.tolist())
        items += len(idx)
        if on_batch is not None:
            on_batch(len(idx))
    nats_per_item = nll_total / max(items, 1)
    mean = nats_per_item
    std = math.sqrt(sum((x - mean) ** 2 for x in per_item) / max(len(per_item) - 1, 1))
    if orderer.adaptive:
        kind = "estimate"
        note = (
            f"teacher-forced along the order {orderer.name!r} picks from the model's predictions; "
            "that order depends on the item, so this is not the likelihood of one fixed-order model"
        )
    elif getattr(orderer, "stochastic", False):
        kind = "estimate"
        note = (
            f"expected NLL over random orders, Monte Carlo with {repeats} order(s) per item; "
            "each term is an exact log-likelihood under its order"
        )
    else:
        kind = "exact"
        note = f"exact log-likelihood under the fixed order {orderer.name!r}"
    return {
        "nats_per_token": nll_total / max(tokens, 1),
        "nats_per_item": nats_per_item,
        "bits_per_item": nats_per_item / math.log(2),
        "top1_accuracy": correct / max(tokens * repeats, 1),
        "sem_nats_per_item": std / math.sqrt(max(items, 1)),
        "tokens_per_item": tokens / max(items, 1),
        "n_items": items,
        "kind": kind,
        "note": note,
        "mean_step_by_slot": order_map.mean_step(),
    }


@torch.no_grad()
def sample_items(
    model: torch.nn.Module,
    templates: list[TokenSet],
    orderer: Orderer,
    *,
    batch_size: int,
    device: torch.device,
    seed: int,
    temperature: float,
    on_batch: Callable[[int], None] | None = None,
    precision: str = "auto",
    coord_names: tuple[str, ...] = (),
    controls: dict | None = None,
    tokenizer: Tokenizer | None = None,
) -> list[TokenSet]:
    """Fill every template with ``model.sample``, in batches, reproducibly from ``seed``,
    in the arithmetic of ``precision`` (``TrainConfig.precision``); the batches carry
    ``coord_names`` (the tokenizer's ``spec.coord_names``) for the orderer, and each
    template's condition class (``TokenSet.cond``) when it has one. ``controls``: more
    keywords of ``sample`` (top_k, top_p, guidance, guidance_schedule), passed only when
    given (:meth:`seqify.config.EvalConfig.sampling_keywords`). When ``tokenizer``'s spec
    grows, each item grows step by step with its ``next_slots``
    (:func:`seqify.grow.grow_items`) until it is complete."""
    model.eval()
    rng = torch.Generator().manual_seed(seed)
    if tokenizer is not None and getattr(tokenizer.spec, "grows", False):
        from seqify.grow import grow_items

        return grow_items(model, tokenizer, templates, orderer, batch_size=batch_size, device=device, rng=rng,
                          temperature=temperature, on_batch=on_batch, precision=precision, coord_names=coord_names,
                          controls=controls)
    out: list[TokenSet] = []
    for start in range(0, len(templates), batch_size):
        chunk = templates[start : start + batch_size]
        batch: TokenBatch = collate(chunk, coord_names=coord_names).to(device)
        with autocast(device, precision):
            filled = model.sample(batch, orderer, rng=rng, temperature=temperature, **(controls or {}))
        out.extend(filled.unbatch())
        if on_batch is not None:
            on_batch(len(chunk))
    return out
