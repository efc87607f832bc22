"""Generation for a tokenizer that grows its items as they are decoded (``spec.grows``).

Some tokenizations have a grammar: what comes next depends on what was decoded so far
(an octree's next level holds one slot per child that the codes of the level above
announced). Such a tokenizer declares ``spec.grows`` and implements
:meth:`seqify.protocols.Tokenizer.next_slots`; its ``blank()`` holds the first slots.
:func:`grow_items` then generates step by step:

1. the generator fills the open slots of the template (``model.sample``, following the
   orderer: its order over the open slots, the slots decoded before as given);
2. the tokenizer reads the item so far and returns the next slots' structure (their
   kinds and coordinates, the same that ``encode`` gives those slots), or None when the
   item is complete;
3. the next template is the item so far (now given) followed by those open slots.

The generator is not changed: it sees given slots and open slots, as when it completes
an item. Every sample is an item of the grammar by construction (no end token can come
early or late), and training sees the coordinates generation gives, since ``encode``
writes the same structure. The slots decoded in earlier steps are given only while
generating; the samples returned carry the templates' own given flags.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from seqify.types import TokenSet, collate

__all__ = ["grow_items", "extend"]


def _check_next(tokenizer: Any, item: TokenSet, nxt: Any, max_len: int) -> TokenSet:
    """``nxt`` (what ``next_slots`` returned for ``item``), checked; raises ValueError."""
    who = f"tokenizer {getattr(tokenizer, 'name', type(tokenizer).__name__)!r}"
    if not isinstance(nxt, TokenSet):
        raise ValueError(f"{who}: next_slots must return a TokenSet or None, got {type(nxt).__name__}")
    if len(nxt) == 0:
        raise ValueError(f"{who}: next_slots returned no slots (return None when the item is complete)")
    if nxt.coords.shape[1] != item.coords.shape[1]:
        raise ValueError(f"{who}: next_slots returned slots with {nxt.coords.shape[1]} coordinate axes, "
                         f"the item has {item.coords.shape[1]}")
    if bool(nxt.given.any()):
        raise ValueError(f"{who}: next_slots returned given slots; the slots it returns are open (given False)")
    if len(item) + len(nxt) > max_len:
        raise ValueError(f"{who}: next_slots grew an item to {len(item) + len(nxt)} slots, more than its spec's "
                         f"max_len {max_len}")
    return nxt


def extend(item: TokenSet, nxt: TokenSet) -> TokenSet:
    """The next step's template: ``item``'s slots, given, then the open slots ``nxt``."""
    return TokenSet(
        torch.cat([item.values.cpu(), torch.zeros(len(nxt), dtype=torch.long)]),
        torch.cat([item.kinds.cpu(), nxt.kinds.cpu().long()]),
        torch.cat([item.coords.cpu(), nxt.coords.cpu().long()]),
        torch.cat([torch.ones(len(item), dtype=torch.bool), torch.zeros(len(nxt), dtype=torch.bool)]),
        dict(item.meta),
        cond=item.cond,
    )


@torch.no_grad()
def grow_items(
    model: torch.nn.Module,
    tokenizer: Any,
    templates: list[TokenSet],
    orderer: Any,
    *,
    batch_size: int,
    device: torch.device,
    rng: torch.Generator,
    temperature: float,
    on_batch: Callable[[int], None] | None = None,
    precision: str = "auto",
    coord_names: tuple[str, ...] = (),
    controls: dict | None = None,
) -> list[TokenSet]:
    """Fill every template and grow it with ``tokenizer.next_slots`` until it is complete.

    The templates are taken ``batch_size`` at a time; inside a batch, every step
    samples the items still growing together (``model.sample``, noise from ``rng``).

    Args:
        model: the trained generator (or the module the orderer wrapped).
        tokenizer: a tokenizer whose ``spec.grows`` (``next_slots`` gives the next slots).
        templates: the first slots of each item (``tokenizer.blank()``), given slots set.
        orderer: orders the open slots of each step (the earlier steps' slots are given).
        batch_size: templates per batch.
        device: where the model runs.
        rng: CPU generator for the orders and the sampling noise.
        temperature: softmax temperature; 0 picks the most likely value.
        on_batch: called with the number of items after each batch.
        precision: ``TrainConfig.precision`` (autocast).
        coord_names: the tokenizer's ``spec.coord_names`` (the batches carry them).
        controls: more keywords of ``model.sample`` (top_k, top_p, guidance), passed
            only when given. Each growth step is its own ``sample`` call, so a linear
            guidance ramp runs over the blocks (or slots) of one step: with next-scale
            on an octree (one block per step) every level gets the full scale.

    Returns:
        The complete items, with the templates' own given flags.

    Raises:
        ValueError: ``next_slots`` returned something that is not open slots of the
            item's structure, or grew an item past ``spec.max_len``.
    """
    from seqify.training import autocast

    max_len = int(tokenizer.spec.max_len)
    model.eval()
    out: list[TokenSet] = []
    for start in range(0, len(templates), batch_size):
        chunk = templates[start : start + batch_size]
        own_given = [t.given.cpu().clone() for t in chunk]  # restored on the samples
        items: list[TokenSet | None] = [None] * len(chunk)
        step = list(chunk)
        growing = list(range(len(chunk)))
        while growing:
            batch = collate(step, coord_names=coord_names).to(device)
            with autocast(device, precision):
                filled = model.sample(batch, orderer, rng=rng, temperature=temperature, **(controls or {})).unbatch()
            nxt_step, nxt_growing = [], []
            for i, got in zip(growing, filled):
                given = torch.cat([own_given[i], torch.zeros(len(got) - len(own_given[i]), dtype=torch.bool)])
                item = TokenSet(got.values, got.kinds, got.coords, given, got.meta, cond=chunk[i].cond)
                items[i] = item
                nxt = tokenizer.next_slots(item)
                if nxt is None:
                    continue
                nxt_step.append(extend(item, _check_next(tokenizer, item, nxt, max_len)))
                nxt_growing.append(i)
            step, growing = nxt_step, nxt_growing
        out.extend(item for item in items if item is not None)
        if on_batch is not None:
            on_batch(len(chunk))
    return out
