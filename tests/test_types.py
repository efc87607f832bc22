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
