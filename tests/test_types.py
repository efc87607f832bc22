import pytest
import torch

from seqify.testing import toy_batch
from seqify.types import KindSpec, OrderBatch, TokenizerSpec, TokenSet, blocks_of_one, collate


def test_collate_pads_and_marks_targets():
    a = TokenSet(torch.tensor([1, 2, 3]), torch.zeros(3, dtype=torch.long), torch.zeros(3, 1, dtype=torch.long),
                 torch.tensor([True, False, False]))
    b = TokenSet(torch.tensor([4]), torch.zeros(1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long),
                 torch.tensor([False]))
    batch = collate([a, b])
    assert batch.values.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch.pad.tolist() == [[False] * 3, [False, True, True]]
    assert batch.target.tolist() == [[False, True, True], [True, False, False]]
    back = batch.unbatch()
    assert back[1].values.tolist() == [4] and back[0].given.tolist() == [True, False, False]


def test_spec_offsets_and_kind_mask():
    spec = TokenizerSpec((KindSpec("a", 3), KindSpec("b", 2)), ("i",), (5,), 5)
    assert spec.vocab_offsets == (0, 3) and spec.total_vocab == 5
    assert spec.kind_mask().tolist() == [[True] * 3 + [False] * 2, [False] * 3 + [True] * 2]
    with pytest.raises(ValueError, match="labels"):
        KindSpec("c", 2, ("x",))


def test_from_priorities_puts_given_first_and_respects_priority():
    batch = toy_batch(2)
    prio = torch.tensor([[0.0, 3.0, 1.0, 2.0], [9.0, 1.0, 2.0, 0.5]])
    order = OrderBatch.from_priorities(batch, prio)
    order.validate(batch)
    assert order.perm.tolist() == [[0, 2, 3, 1], [0, 3, 1, 2]]
    assert order.block.tolist() == [[-1, 0, 1, 2], [-1, 0, 1, 2]]
    assert order.rank()[0].tolist() == [0, 3, 1, 2]
    assert order.slot_block()[0].tolist() == [-1, 2, 0, 1]


@pytest.mark.parametrize(
    "perm,block,msg",
    [
        ([[1, 0, 2, 3]], [[-1, 0, 1, 2]], "given slots must come first"),
        ([[0, 1, 1, 3]], [[-1, 0, 1, 2]], "not a permutation"),
        ([[0, 1, 2, 3]], [[-1, 1, 2, 3]], "first predicted block must be 0"),
        ([[0, 1, 2, 3]], [[-1, 0, 2, 2]], "at most one"),
        ([[0, 1, 2, 3]], [[-1, 1, 0, 2]], "must not decrease"),
        ([[0, 1, 2, 3]], [[0, 0, 1, 2]], "-1 on given"),
    ],
)
def test_validate_rejects_bad_orders(perm, block, msg):
    batch = toy_batch(1)
    with pytest.raises(ValueError, match=msg):
        OrderBatch(torch.tensor(perm), torch.tensor(block)).validate(batch)


def test_blocks_of_one_with_padding():
    a = TokenSet(torch.tensor([1, 2]), torch.zeros(2, dtype=torch.long), torch.zeros(2, 1, dtype=torch.long),
                 torch.tensor([False, False]))
    c = TokenSet(torch.tensor([1, 2, 3]), torch.zeros(3, dtype=torch.long), torch.zeros(3, 1, dtype=torch.long),
                 torch.tensor([False, False, False]))
    batch = collate([a, c])
    order = blocks_of_one(batch, torch.tensor([[1, 0, 2], [2, 0, 1]]))
    order.validate(batch)
    assert order.block.tolist() == [[0, 1, -2], [0, 1, 2]]
    assert order.num_blocks.tolist() == [2, 3]


def _items(n_slots: list[int], given: list[list[int]]):
    out = []
    for n, g in zip(n_slots, given):
        flags = torch.zeros(n, dtype=torch.bool)
        flags[g] = True
        out.append(TokenSet(torch.arange(n) % 3, torch.zeros(n, dtype=torch.long), torch.arange(n)[:, None], flags))
    return collate(out)


def test_from_groups_sorts_by_group_then_priority_and_numbers_blocks_consecutively():
    batch = _items([6, 6], [[2], []])
    # groups with gaps and a given slot whose group would sort first
    group = torch.tensor([[7, 3, -5, 7, 3, 10], [1, 1, 1, 0, 0, 1]])
    order = OrderBatch.from_groups(batch, group)
    order.validate(batch)
    # row 0: given slot 2, then group 3 (slots 1, 4), group 7 (0, 3), group 10 (5); ties by slot index
    assert order.perm.tolist() == [[2, 1, 4, 0, 3, 5], [3, 4, 0, 1, 2, 5]]
    assert order.block.tolist() == [[-1, 0, 0, 1, 1, 2], [0, 0, 1, 1, 1, 1]]
    assert order.block_sizes().tolist() == [[2, 2, 1], [2, 4, 0]]
    assert not order.next_block_only
    # priority orders slots inside a group, never across groups
    prio = torch.tensor([[0.0, 5.0, 0.0, -1.0, 1.0, 0.0], [3.0, 2.0, 1.0, 9.0, 8.0, 0.0]])
    order = OrderBatch.from_groups(batch, group, prio)
    order.validate(batch)
    assert order.perm.tolist() == [[2, 4, 1, 3, 0, 5], [4, 3, 5, 2, 1, 0]]
    assert order.block.tolist() == [[-1, 0, 0, 1, 1, 2], [0, 0, 1, 1, 1, 1]]


def test_from_groups_with_padding_float_groups_and_bad_shapes():
    batch = _items([3, 5], [[0], [4]])
    group = torch.tensor([[0.5, 0.5, 2.0, -9.0, 1.0], [2.0, 0.5, 2.0, 0.5, 0.0]])
    order = OrderBatch.from_groups(batch, group)
    order.validate(batch)
    assert order.perm.tolist() == [[0, 1, 2, 3, 4], [4, 1, 3, 0, 2]]
    assert order.block.tolist() == [[-1, 0, 1, -2, -2], [-1, 0, 0, 1, 1]]
    # one group per slot = blocks of one, as from_priorities gives
    prio = torch.rand(batch.values.shape, generator=torch.Generator().manual_seed(0))
    by_groups = OrderBatch.from_groups(batch, prio)
    by_prio = OrderBatch.from_priorities(batch, prio)
    assert torch.equal(by_groups.perm, by_prio.perm) and torch.equal(by_groups.block, by_prio.block)
    with pytest.raises(ValueError, match="group_BL has shape"):
        OrderBatch.from_groups(batch, group[:, :4])
    with pytest.raises(ValueError, match="priority_BL has shape"):
        OrderBatch.from_groups(batch, group, prio[:1])


def test_order_to_keeps_next_block_only():
    batch = toy_batch(2)
    order = OrderBatch.from_priorities(batch, torch.rand(2, 4, generator=torch.Generator().manual_seed(0)))
    flagged = OrderBatch(order.perm, order.block, next_block_only=True)
    moved = flagged.to("cpu")
    assert moved.next_block_only and torch.equal(moved.perm, order.perm)
    assert not order.to("cpu").next_block_only
