"""Spatial orderers (plugins/seqify_orderers/spatial.py): exact orders written by hand,
validity on every structure, applicability and the axis rules."""

import dataclasses

import pytest
import torch

from seqify.protocols import GeneratorCaps, orderer_kind
from seqify.testing import check_orderer
from seqify.types import KindSpec, TokenizerSpec, TokenSet, collate
from seqify_orderers.spatial import (
    Column,
    Diagonal,
    Hilbert,
    Morton,
    NextScale,
    Spiral,
    Zigzag,
    grid_layout,
    hilbert_index,
)

CAPS = GeneratorCaps(any_order=True, blocks=True)
KINDS = (KindSpec("v", 5),)
GRID_SPEC = TokenizerSpec(KINDS, ("row", "col"), (4, 4), 16)
SUDOKU_SPEC = TokenizerSpec(KINDS, ("row", "col", "box"), (4, 4, 4), 16)
SCALE_SPEC = TokenizerSpec(KINDS, ("scale", "row", "col"), (3, 3, 3), 14)
LINE_SPEC = TokenizerSpec(KINDS, ("position",), (8,), 8)
GRAPH_SPEC = TokenizerSpec(KINDS, ("i", "j"), (4, 4), 10)
POINT_SPEC = TokenizerSpec(KINDS, ("x", "y", "z"), (4, 4, 4), 8)

GRID_ORDERERS = [Spiral, Zigzag, Diagonal, Column, Hilbert]
ALL = GRID_ORDERERS + [Morton, NextScale]


def items(coords, n=2, given=()):
    """``n`` items with these slot coordinates (slot i at coords[i]), slots ``given`` given."""
    coords = torch.tensor(coords, dtype=torch.long)
    L = coords.shape[0]
    g = torch.zeros(L, dtype=torch.bool)
    g[list(given)] = True
    return [TokenSet(torch.arange(L) % 5, torch.zeros(L, dtype=torch.long), coords.clone(), g.clone()) for _ in range(n)]


def grid_coords(H, W):
    return [(r, c) for r in range(H) for c in range(W)]


def named(batch, spec):
    """The batch carrying the spec's coordinate names, as the runner's batches do."""
    return dataclasses.replace(batch, coord_names=tuple(spec.coord_names))


def perm_of(orderer, spec, batch):
    assert orderer.check(spec, CAPS) is None
    batch = named(batch, spec)
    order = orderer.infer_orders(batch, rng=torch.Generator().manual_seed(0))
    order.validate(batch)
    return order.perm.tolist()


# slot = 4 * row + col on a 4 x 4 grid
EXPECTED_4x4 = {
    # ring 0 clockwise from (0,0): top edge, right edge, bottom edge, left edge; then ring 1
    "spiral": [0, 1, 2, 3, 7, 11, 15, 14, 13, 12, 8, 4, 5, 6, 10, 9],
    # (0,0) (0,1) (1,0) (2,0) (1,1) (0,2) (0,3) (1,2) (2,1) (3,0) (3,1) (2,2) (1,3) (2,3) (3,2) (3,3)
    "zigzag": [0, 1, 4, 8, 5, 2, 3, 6, 9, 12, 13, 10, 7, 11, 14, 15],
    # r + c = 0, 1, ..., 6, top row first inside each
    "diagonal": [0, 1, 4, 2, 5, 8, 3, 6, 9, 12, 7, 10, 13, 11, 14, 15],
    "column": [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15],
    # (0,0) (0,1) (1,1) (1,0) (2,0) (3,0) (3,1) (2,1) (2,2) (3,2) (3,3) (2,3) (1,3) (1,2) (0,2) (0,3)
    "hilbert": [0, 1, 5, 4, 8, 12, 13, 9, 10, 14, 15, 11, 7, 6, 2, 3],
    # Z: 2x2 blocks in Z order, each in Z order
    "morton": [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15],
}


@pytest.mark.parametrize("cls", GRID_ORDERERS + [Morton], ids=lambda c: c.name)
def test_exact_order_on_a_4x4_grid(cls):
    batch = collate(items(grid_coords(4, 4), n=3))
    assert perm_of(cls(), GRID_SPEC, batch) == [EXPECTED_4x4[cls.name]] * 3


@pytest.mark.parametrize("cls", GRID_ORDERERS, ids=lambda c: c.name)
def test_sudoku_like_box_axis_is_ignored(cls):
    coords = [(r, c, (r // 2) * 2 + c // 2) for r, c in grid_coords(4, 4)]
    batch = collate(items(coords))
    assert perm_of(cls(), SUDOKU_SPEC, batch) == [EXPECTED_4x4[cls.name]] * 2


def test_given_slots_first_then_the_order():
    batch = collate(items(grid_coords(4, 4), given=(5, 15)))
    spiral = [s for s in EXPECTED_4x4["spiral"] if s not in (5, 15)]
    assert perm_of(Spiral(), GRID_SPEC, batch) == [[5, 15] + spiral] * 2


def test_grid_extent_comes_from_the_item_not_the_spec():
    # a 2 x 3 grid on a 4 x 4 spec, next to a padded 1 x 2 item
    batch = collate(items(grid_coords(2, 3), n=1) + items(grid_coords(1, 2), n=1))
    # (0,0) (0,1) (0,2) (1,2) (1,1) (1,0); then (0,0) (0,1) and padding
    assert perm_of(Spiral(), GRID_SPEC, batch) == [[0, 1, 2, 5, 4, 3], [0, 1, 2, 3, 4, 5]]
    # 2 x 3 covered by a 4 x 4 Hilbert square: (0,0) (0,1) (1,1) (1,0), then (1,2) (0,2)
    assert perm_of(Hilbert(), GRID_SPEC, batch)[0] == [0, 1, 4, 3, 5, 2]
    # a 2 x 2 Hilbert square starts downwards: (0,0) (1,0) (1,1) (0,1)
    two = collate(items(grid_coords(2, 2), n=1))
    assert perm_of(Hilbert(), GRID_SPEC, two) == [[0, 2, 3, 1]]


def test_morton_interleaves_all_axes_of_a_3d_point_set():
    # a 2 x 2 x 2 cube listed in a scrambled slot order; key = 4x + 2y + z
    cube = [(1, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 1), (0, 0, 0), (1, 1, 1), (0, 1, 0), (1, 0, 0)]
    spec = TokenizerSpec(KINDS, ("x", "y", "z"), (2, 2, 2), 8)
    batch = collate(items(cube))
    # (0,0,0) (0,0,1) (0,1,0) (0,1,1) (1,0,0) (1,0,1) (1,1,0) (1,1,1)
    assert perm_of(Morton(), spec, batch) == [[4, 1, 6, 3, 7, 2, 0, 5]] * 2
    # two bit levels: (1,1,1) = 0b000111 comes before (0,0,2) = 0b001000 (raster would swap them)
    batch = collate(items([(0, 0, 2), (1, 1, 1), (0, 0, 0)]))
    assert perm_of(Morton(), POINT_SPEC, batch) == [[2, 1, 0]] * 2


def test_hilbert_index_is_a_continuous_curve():
    n = 16
    r, c = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    d = hilbert_index(c.flatten(), r.flatten(), torch.full((n * n,), n))
    assert sorted(d.tolist()) == list(range(n * n))
    cells = torch.stack([r.flatten(), c.flatten()], 1)[torch.argsort(d)]
    assert bool(((cells[1:] - cells[:-1]).abs().sum(1) == 1).all())
    assert cells[0].tolist() == [0, 0] and cells[-1].tolist() == [0, n - 1]


# ---------------------------------------------------------------- scales


def scale_items(n=2, given=()):
    """Scales 1x1, 2x2, 3x3 listed finest first: slots 0-8 scale 2, slot 9 scale 0,
    slots 10-13 scale 1 (each scale raster inside)."""
    coords = [(2, r, c) for r, c in grid_coords(3, 3)] + [(0, 0, 0)] + [(1, r, c) for r, c in grid_coords(2, 2)]
    return items(coords, n=n, given=given)


def test_next_scale_one_block_per_scale_coarse_to_fine():
    batch = named(collate(scale_items()), SCALE_SPEC)
    ns = NextScale()
    assert ns.check(SCALE_SPEC, CAPS) is None
    rng = torch.Generator().manual_seed(0)
    infer = ns.infer_orders(batch, rng=rng)
    train = ns.train_orders(batch, progress=0.5, rng=rng)
    for order in (infer, train):
        order.validate(batch)
        assert order.perm.tolist() == [[9, 10, 11, 12, 13, 0, 1, 2, 3, 4, 5, 6, 7, 8]] * 2
        assert order.block_sizes().tolist() == [[1, 4, 9]] * 2
    assert train.next_block_only and not infer.next_block_only
    assert NextScale.produces_blocks and not NextScale.prefix_closed
    # given slots stay first, outside the blocks
    batch = named(collate(scale_items(given=(9,))), SCALE_SPEC)
    order = ns.infer_orders(batch, rng=rng)
    assert order.perm[0, 0].item() == 9 and order.block_sizes().tolist() == [[4, 9]] * 2


def test_next_scale_says_why_it_does_not_apply():
    reason = NextScale().check(GRID_SPEC, CAPS)
    assert "next-scale" in reason and "scale" in reason and "('row', 'col')" in reason
    late = TokenizerSpec(KINDS, ("row", "col", "scale"), (3, 3, 3), 14)
    assert "('row', 'col', 'scale')" in NextScale().check(late, CAPS)
    reason = NextScale().check(SCALE_SPEC, GeneratorCaps(any_order=True, blocks=False))
    assert "next-scale" in reason and "blocks" in reason
    assert "any order" in NextScale().check(SCALE_SPEC, GeneratorCaps(any_order=False, blocks=True))


def test_grid_orders_apply_within_each_scale_after_ordering_scales():
    batch = collate(scale_items())
    # scale 0: slot 9; scale 1 (slots 10-13 = (0,0) (0,1) (1,0) (1,1)); scale 2 (slots 0-8)
    spiral = [9, 10, 11, 13, 12, 0, 1, 2, 5, 8, 7, 6, 3, 4]
    zigzag = [9, 10, 11, 12, 13, 0, 1, 3, 6, 4, 2, 5, 7, 8]
    assert perm_of(Spiral(), SCALE_SPEC, batch) == [spiral] * 2
    assert perm_of(Zigzag(), SCALE_SPEC, batch) == [zigzag] * 2


# ---------------------------------------------------------- applicability


@pytest.mark.parametrize("cls", GRID_ORDERERS, ids=lambda c: c.name)
def test_grid_orders_refuse_a_one_axis_spec_with_a_reason(cls):
    reason = cls().check(LINE_SPEC, CAPS)
    assert cls.name in reason and "('position',)" in reason and "row" in reason
    assert "('x', 'y', 'z')" in cls().check(POINT_SPEC, CAPS)  # three axes, none named row/col
    var = TokenizerSpec(KINDS, ("row", "col"), (4, 4), 16, variable_length=True, end_kind=0, end_value=4)
    assert "variable-length" in cls().check(var, CAPS)


def test_morton_accepts_any_number_of_axes():
    assert Morton().check(LINE_SPEC, CAPS) is None
    assert Morton().check(POINT_SPEC, CAPS) is None
    batch = collate(items([(3,), (0,), (2,), (1,)]))
    assert perm_of(Morton(), LINE_SPEC, batch) == [[1, 3, 2, 0]] * 2
    assert "none" in Morton().check(TokenizerSpec(KINDS, (), (), 4), CAPS)


def test_axis_rule():
    assert grid_layout(("row", "col")) == (0, 1, None)
    assert grid_layout(("row", "col", "box")) == (0, 1, None)
    assert grid_layout(("scale", "row", "col")) == (1, 2, 0)
    assert grid_layout(("i", "j")) == (0, 1, None)
    assert grid_layout(("scale", "i", "j")) == (1, 2, 0)
    assert isinstance(grid_layout(("x", "y", "z")), str)
    assert isinstance(grid_layout(("position",)), str)


def test_a_batch_without_names_needs_exactly_two_axes():
    from seqify.errors import NotApplicableError

    batch = collate(items(grid_coords(2, 2)))
    assert Spiral().priority(batch, torch.Generator()).shape == (2, 4)  # two axes: (row, col)
    sudoku = collate(items([(r, c, 0) for r, c in grid_coords(2, 2)]))
    with pytest.raises(NotApplicableError, match="carries no coordinate names"):
        Spiral().priority(sudoku, torch.Generator())
    # the structure comes with the batch: no state is kept from check()
    orderer = Spiral()
    assert orderer.check(SUDOKU_SPEC, CAPS) is None and vars(orderer) == {}
    named_sudoku = collate(items([(r, c, 0) for r, c in grid_coords(2, 2)]), coord_names=SUDOKU_SPEC.coord_names)
    assert orderer.priority(named_sudoku, torch.Generator()).shape == (2, 4)
    # names that disagree with the batch's axes are an error, not a silent guess
    with pytest.raises(NotApplicableError, match="names 2 coordinate axes"):
        orderer.priority(dataclasses.replace(sudoku, coord_names=("row", "col")), torch.Generator())


# ------------------------------------------------------------- validity


def graph_batch():
    """Node (i, i) and edge (i, j) slots of two graphs of 4 and 3 nodes (padded), one node given."""
    def graph(N):
        pairs = [(i, j) for i in range(N) for j in range(i, N)]
        return items(pairs, n=1, given=(0,))[0]

    return collate([graph(4), graph(3)])


STRUCTURES = {
    "grid": (GRID_SPEC, lambda: collate(items(grid_coords(4, 4), given=(3,)) + items(grid_coords(2, 3), n=1))),
    "sudoku": (SUDOKU_SPEC, lambda: collate(items([(r, c, (r // 2) * 2 + c // 2) for r, c in grid_coords(4, 4)], given=(0, 7)))),
    "scales": (SCALE_SPEC, lambda: collate(scale_items(given=(3,)) + items([(0, 0, 0), (1, 0, 0), (1, 0, 1)], n=1))),
    "graph": (GRAPH_SPEC, graph_batch),
    "points": (POINT_SPEC, lambda: collate(items([(3, 0, 1), (0, 2, 2), (1, 1, 1), (2, 3, 0)]))),
    "line": (LINE_SPEC, lambda: collate(items([(i,) for i in range(8)], given=(2,)))),
}


@pytest.mark.parametrize("structure", list(STRUCTURES))
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.name)
def test_every_orderer_is_valid_or_says_why(cls, structure):
    spec, make = STRUCTURES[structure]
    orderer = cls()
    reason = orderer.check(spec, CAPS)
    applies = {
        "grid": cls is not NextScale,
        "sudoku": cls is not NextScale,
        "scales": True,
        "graph": cls is not NextScale,
        "points": cls is Morton,
        "line": cls is Morton,
    }[structure]
    assert (reason is None) == applies, reason
    if reason is not None:
        assert cls.name in reason and str(tuple(spec.coord_names)) in reason
        return
    batch = named(make(), spec)
    check_orderer(orderer, batch)
    a = orderer.infer_orders(batch, rng=torch.Generator().manual_seed(1))
    b = orderer.infer_orders(batch, rng=torch.Generator().manual_seed(2))
    assert torch.equal(a.perm, b.perm) and torch.equal(a.block, b.block)  # deterministic


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.name)
def test_flags_and_repr(cls):
    o = cls()
    assert not o.stochastic and not o.adaptive and orderer_kind(o) == "static" and o.needs_any_order
    assert o.produces_blocks == (cls is NextScale)
    assert repr(o) == f"{cls.__name__}()" and o.train_signature == repr(o)


def test_registered_and_conformant():
    from seqify.plugins import build_registry
    from seqify.testing import check_registered

    reg = build_registry()
    names = ["spiral", "zigzag", "diagonal", "column", "hilbert", "morton", "next-scale"]
    assert set(names) <= set(reg.names("orderer"))
    for name in names:
        info = [i for i in reg.infos("orderer") if i.name == name]
        assert info and info[0].description and "\n" not in info[0].description
        rows = check_registered("orderer", name, registry=reg)
        assert rows and all(row.status != "failed" for row in rows), rows
        status = {row.check: row.status for row in rows}
        if name == "next-scale":
            assert set(status.values()) == {"skipped"}  # no probe has scales
        else:
            assert status["check_orderer[grid]"] == "passed" and status["check_orderer[graph]"] == "passed"


def test_hilbert_index_with_mixed_square_sizes_matches_one_size_at_a_time():
    g = torch.Generator().manual_seed(0)
    n = torch.tensor([2, 4, 8, 16, 1, 8, 2, 16])
    x = (torch.rand(8, generator=g) * n).long()
    y = (torch.rand(8, generator=g) * n).long()
    mixed = hilbert_index(x, y, n)
    alone = [int(hilbert_index(x[k : k + 1], y[k : k + 1], n[k : k + 1])) for k in range(8)]
    assert mixed.tolist() == alone
    for size in (2, 8):  # every size: a continuous curve from (0, 0) to (0, size - 1)
        r, c = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        d = hilbert_index(c.flatten(), r.flatten(), torch.full((size * size,), size))
        cells = torch.stack([r.flatten(), c.flatten()], 1)[torch.argsort(d)]
        assert bool(((cells[1:] - cells[:-1]).abs().sum(1) == 1).all())
        assert cells[0].tolist() == [0, 0] and cells[-1].tolist() == [0, size - 1]
