"""The pointcloud plugin: data (shapes, files), normalization, tokenizers, metrics, a smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


from seqify.data import RowReport
from seqify.testing import check_tokenizer
from seqify.types import collate

from seqify_pointcloud import data
from seqify_pointcloud.folders import files_splits
from seqify_pointcloud.items import PointCloudItem, normalize_box
from seqify_pointcloud.readers import BadFile, read_off
from seqify_pointcloud.shapes import CLASSES, shapes_splits
from seqify_pointcloud.metrics import (
    chamfer_matrix,
    chamfer_pairs,
    emd,
    emd_matrix,
    generation_metrics,
    mmd_cov_1nna,
    stack_clouds,
)
from seqify_pointcloud.modality import POINTCLOUD_BUDGETS, PointCloud
from seqify_pointcloud.octree import OctreeTokenizer, octree_cells, octree_codes
from seqify_pointcloud.tokenizers import CoordsTokenizer, morton_codes, quantize

ROOT = Path(__file__).resolve().parents[1]


def _blob(seed: int, n: int = 64, scale=(1.0, 0.6, 0.4)) -> PointCloudItem:
    """A normalized random Gaussian blob (no open3d needed)."""
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(n, 3)) * np.asarray(scale)
    return PointCloudItem(normalize_box(pts), seed % 3, f"blob/{seed}")


def test_data_module_keeps_every_name_of_the_split_modules():
    from seqify_pointcloud import folders, items, readers, shapes

    assert data.PointCloudItem is items.PointCloudItem and data.normalize_box is items.normalize_box
    assert data.shapes_splits is shapes.shapes_splits and data.make_shape is shapes.make_shape
    assert data.read_off is readers.read_off and data.BadFile is readers.BadFile
    assert data.files_splits is folders.files_splits and data.SUFFIXES == readers.SUFFIXES
    assert all(hasattr(data, name) for name in data.__all__) and len(data.__all__) == 12


# ------------------------------------------------------------------------ open3d


def test_listing_components_never_imports_open3d():
    code = ("import sys, seqify_pointcloud\n"
            "from seqify.plugins import build_registry\n"
            "reg = build_registry(warn=False)\n"
            "for kind, name, mod in (('modality', 'pointcloud', None), ('tokenizer', 'coords', 'pointcloud'),\n"
            "                        ('tokenizer', 'octree', 'pointcloud')):\n"
            "    reg.get(kind, name, mod) if mod else reg.get(kind, name)\n"
            "print('open3d' in sys.modules)\n")
    env_path = f"{ROOT / 'plugins'}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__('os').environ, "PYTHONPATH": env_path})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_missing_system_library_is_named_with_its_package():
    from seqify_pointcloud.o3d import _explain

    msg = _explain(OSError("libusb-1.0.so.0: cannot open shared object file: No such file or directory"))
    assert "libusb-1.0.so.0" in msg and "apt-get install libusb-1.0-0" in msg
    missing = ModuleNotFoundError("No module named 'open3d'", name="open3d")
    assert "pip install open3d-cpu" in _explain(missing)


def test_import_open3d_raises_a_clear_error(monkeypatch):
    from seqify_pointcloud import o3d

    monkeypatch.setattr(o3d, "_module", None)
    monkeypatch.setitem(sys.modules, "open3d", None)  # makes `import open3d` fail
    with pytest.raises(o3d.Open3DMissing, match="open3d-cpu"):
        o3d.import_open3d()


# -------------------------------------------------------------------------- data


def test_shapes_are_deterministic_balanced_and_sized():
    kw = dict(n_points=48, n_train=16, n_val=8, n_test=8, cache=False)
    a = shapes_splits(seed=0, **kw)
    b = shapes_splits(seed=0, **kw)
    c = shapes_splits(seed=1, **kw)
    assert (len(a.train), len(a.val), len(a.test)) == (16, 8, 8)
    assert {k: a.info[k] for k in ("n_train", "n_val", "n_test", "n_points")} == {
        "n_train": 16, "n_val": 8, "n_test": 8, "n_points": 48}
    assert a.info["classes"] == list(CLASSES) and len(CLASSES) == 8
    assert [it.label for it in a.train] == [k % 8 for k in range(16)]
    for x, y in zip(a.train + a.val + a.test, b.train + b.val + b.test):
        assert np.array_equal(x.points, y.points) and x.label == y.label
    assert not np.array_equal(a.train[0].points, c.train[0].points)
    assert not np.array_equal(a.train[0].points, a.test[0].points)  # splits differ
    assert "normalization" in a.info and "rotation" in a.info
    # cached: the same arrays come back from disk
    d = shapes_splits(seed=0, n_points=48, n_train=16, n_val=8, n_test=8)
    e = shapes_splits(seed=0, n_points=48, n_train=16, n_val=8, n_test=8)
    assert Path(e.info["cache"]).is_file()
    assert all(np.array_equal(x.points, y.points) for x, y in zip(d.train, a.train))
    assert all(np.array_equal(x.points, y.points) for x, y in zip(e.train, a.train))


def test_normalization_puts_every_cloud_in_the_box_touching_it():
    s = shapes_splits(seed=3, n_points=64, n_train=8, n_val=1, n_test=1, cache=False)
    for item in s.train:
        p = item.points
        assert p.dtype == np.float32 and p.shape == (64, 3)
        assert np.abs(p).max() <= 1.0
        assert np.isclose(np.abs(p).max(), 1.0, atol=1e-6)  # the longest axis spans [-1, 1]
        assert np.allclose((p.min(0) + p.max(0)) / 2, 0.0, atol=1e-6)  # bounding box centred
    with pytest.raises(ValueError, match="identical"):
        normalize_box(np.ones((5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        normalize_box(np.array([[0, 0, np.nan], [1, 1, 1]]))


CUBE_V = "\n".join(f"{x} {y} {z}" for x in (0, 1) for y in (0, 1) for z in (0, 1))
CUBE_F = "\n".join(f"3 {a} {b} {c}" for a, b, c in [(0, 1, 3), (0, 3, 2), (4, 6, 7), (4, 7, 5), (0, 4, 5), (0, 5, 1),
                                                      (2, 3, 7), (2, 7, 6), (0, 2, 6), (0, 6, 4), (1, 5, 7), (1, 7, 3)])


def test_read_off_accepts_a_fused_header_and_rejects_malformed_files(tmp_path):
    fused = tmp_path / "fused.off"
    fused.write_text(f"OFF8 12 0\n{CUBE_V}\n{CUBE_F}\n")
    plain = tmp_path / "plain.off"
    plain.write_text(f"OFF\n# a comment\n8 12 0\n{CUBE_V}\n{CUBE_F}\n")
    for p in (fused, plain):
        v, f = read_off(p)
        assert v.shape == (8, 3) and f.shape == (12, 3)
    quad = tmp_path / "quad.off"
    quad.write_text("OFF\n4 1 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n")
    assert read_off(quad)[1].tolist() == [[0, 1, 2], [0, 2, 3]]  # fan triangulation
    bad = {
        "header": ("OFX\n8 12 0\n", "malformed .off header"),
        "counts": ("OFF\neight twelve\n", "not integers"),
        "short": (f"OFF\n8 12 0\n{CUBE_V}\n3 0 1 2\n", "truncated"),
        "index": (f"OFF\n8 1 0\n{CUBE_V}\n3 0 1 99\n", "vertex 99 of 8"),
    }
    for name, (text, reason) in bad.items():
        p = tmp_path / f"{name}.off"
        p.write_text(text)
        with pytest.raises(BadFile, match=reason):
            read_off(p)


def _write_folder(root: Path) -> dict[str, str]:
    """Good and bad files in a ModelNet / ShapeNet-like layout; returns bad path -> reason fragment."""
    from seqify_pointcloud.o3d import import_open3d

    o3d = import_open3d()
    rng = np.random.default_rng(0)
    for cls in ("chair", "lamp"):
        for split in ("train", "test"):
            (root / cls / split).mkdir(parents=True)
    np.save(root / "chair/train/a.npy", rng.normal(size=(300, 3)).astype(np.float32))
    np.save(root / "chair/train/b.npy", rng.normal(size=(40, 3)).astype(np.float32))  # fewer than n_points
    np.save(root / "chair/test/c.npy", rng.normal(size=(300, 3)).astype(np.float32))
    (root / "lamp/train/d.off").write_text(f"OFF8 12 0\n{CUBE_V}\n{CUBE_F}\n")  # fused header
    (root / "lamp/test/e.off").write_text(f"OFF\n8 12 0\n{CUBE_V}\n{CUBE_F}\n")
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(rng.normal(size=(200, 3))))
    o3d.io.write_point_cloud(str(root / "lamp/train/f.ply"), cloud, write_ascii=False)
    o3d.io.write_point_cloud(str(root / "chair/train/g.pcd"), cloud)
    np.savetxt(root / "chair/train/h.xyz", rng.normal(size=(100, 3)))
    # bad files
    data = (root / "lamp/train/f.ply").read_bytes()
    (root / "lamp/train/truncated.ply").write_bytes(data[: len(data) // 3])
    np.save(root / "chair/train/empty.npy", np.zeros((0, 3), dtype=np.float32))
    nan = rng.normal(size=(50, 3))
    nan[7, 1] = np.nan
    np.save(root / "chair/train/nan.npy", nan)
    (root / "lamp/train/malformed.off").write_text("OFX 8 12 0\n1 2 3\n")
    (root / "chair/train/notes.txt").write_text("not a cloud")  # ignored: not a point-cloud suffix
    return {
        "lamp/train/truncated.ply": "truncated",
        "chair/train/empty.npy": "empty",
        "chair/train/nan.npy": "NaN",
        "lamp/train/malformed.off": "malformed .off header",
    }


def test_files_reader_reports_bad_files_and_keeps_the_rest(tmp_path):
    bad = _write_folder(tmp_path)
    report = RowReport()
    s = files_splits(tmp_path, seed=0, n_points=64, limit=None, max_val=100, max_test=100, report=report)
    reported = {Path(b.source).relative_to(tmp_path).as_posix(): b.reason for b in report.bad}
    assert set(reported) == set(bad), reported
    for path, fragment in bad.items():
        assert fragment in reported[path], (path, reported[path])
    assert report.read == 12 and report.skipped == 4
    # kept: 6 training files (one of them went to validation), 2 test files
    assert len(s.train) + len(s.val) == 6 and len(s.val) == 1 and len(s.test) == 2
    assert s.info["classes"] == ["chair", "lamp"] and s.info["files_skipped"] == 4
    assert s.info["clouds_upsampled_with_repeats"] == 1
    for item in s.train + s.val + s.test:
        assert item.points.shape == (64, 3) and np.abs(item.points).max() <= 1.0
        assert item.label == (0 if "/chair/" in item.source else 1)
    again = files_splits(tmp_path, seed=0, n_points=64, limit=None, max_val=100, max_test=100, report=RowReport())
    assert [x.source for x in again.train] == [x.source for x in s.train]
    assert all(np.array_equal(x.points, y.points) for x, y in zip(again.train, s.train))
    limited = files_splits(tmp_path, seed=0, n_points=64, limit=2, max_val=100, max_test=100, report=RowReport())
    assert len(limited.train) == 2


def test_loose_files_are_split_with_the_seed(tmp_path):
    rng = np.random.default_rng(1)
    for k in range(20):
        np.save(tmp_path / f"cloud{k}.npy", rng.normal(size=(30, 3)))
    s = files_splits(tmp_path, seed=0, n_points=16, limit=None, max_val=100, max_test=100, report=RowReport())
    assert (len(s.train), len(s.val), len(s.test)) == (17, 1, 2)
    assert "seeded split" in s.info["split"]


# -------------------------------------------------------------------- tokenizers


def _zyx_points(ts, n: int) -> np.ndarray:
    """The (z, y, x) quantized triples of a coords token set, in slot order."""
    return ts.values.numpy().reshape(n, 3)


def test_coords_sort_orders():
    item = _blob(0, n=50)
    q = quantize(item.points, 64)
    tok = CoordsTokenizer(bins=64, sort="zyx")
    tok.fit([item])
    zyx = _zyx_points(tok.encode(item), 50)
    assert [tuple(r) for r in zyx] == sorted(tuple(r) for r in zyx)  # lexicographic z, then y, then x
    assert sorted(map(tuple, zyx)) == sorted(map(tuple, q[:, ::-1]))  # the same points
    assert tok.encode(item).kinds[:3].tolist() == [2, 1, 0]  # slots z, y, x of kinds "z", "y", "x"
    assert tok.encode(item).coords[:6].tolist() == [[0, 2], [0, 1], [0, 0], [1, 2], [1, 1], [1, 0]]

    tok = CoordsTokenizer(bins=64, sort="morton")
    tok.fit([item])
    zyx = _zyx_points(tok.encode(item), 50)
    codes = morton_codes(zyx[:, ::-1], 6)
    assert (np.diff(codes) >= 0).all()
    assert morton_codes(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]), 1).tolist() == [1, 2, 4, 7]

    tok = CoordsTokenizer(bins=64, sort="random")
    tok.fit([item])
    a, b = tok.encode(item), tok.encode(item)
    assert torch.equal(a.values, b.values)  # deterministic per item (cacheable)
    other = tok.encode(PointCloudItem(item.points[::-1].copy(), None, "reversed"))
    assert sorted(map(tuple, _zyx_points(a, 50))) == sorted(map(tuple, _zyx_points(other, 50)))
    lex = [tuple(r) for r in _zyx_points(a, 50)]
    assert lex != sorted(lex)


@pytest.mark.parametrize("bins", [8, 64, 200])
def test_coords_round_trip_is_within_half_a_bin(bins):
    items = [_blob(s, n=40) for s in range(4)]
    tok = CoordsTokenizer(bins=bins, sort="zyx")
    tok.fit(items)
    for item in items:
        back = tok.decode(tok.encode(item)).points
        order = np.lexsort((quantize(item.points, bins)[:, 0], quantize(item.points, bins)[:, 1],
                            quantize(item.points, bins)[:, 2]))
        assert np.abs(back - item.points[order]).max() <= 1.0 / bins + 1e-6
    assert tok.spec.max_len == 120 and tok.spec.coord_sizes == (40, 3) and not tok.spec.lossless
    blank = tok.blank()
    assert len(blank) == 120 and not blank.given.any()
    with pytest.raises(ValueError, match="fitted on clouds of 40"):
        tok.encode(_blob(9, n=41))
    with pytest.raises(ValueError, match="outside"):
        tok.encode(PointCloudItem(np.full((40, 3), 2.0, dtype=np.float32)))


def test_octree_codes_of_known_clouds():
    octants = np.array([[sx, sy, sz] for sz in (-1, 1) for sy in (-1, 1) for sx in (-1, 1)], dtype=np.float32)
    pts = octants * 0.5  # one point in each octant
    assert octree_codes(pts, 1).tolist() == [255]
    # depth 2: each octant's point (+-0.5) lies in the upper half of its octant on every
    # axis when positive (child 7) and also when negative (-0.5 is in [-0.5, 0))
    assert octree_codes(pts, 2).tolist() == [255] + [128] * 8
    tok = OctreeTokenizer(depth=2)
    tok.fit([PointCloudItem(pts)])
    ts = tok.encode(PointCloudItem(pts))
    assert ts.values.tolist() == [254] + [127] * 8  # value = code - 1, no END
    # every slot knows its cell: (scale, x, y, z corner on the level-1 grid, octant)
    assert ts.coords.tolist() == [[0, 0, 0, 0, 0]] + [[1, k & 1, (k >> 1) & 1, k >> 2, k] for k in range(8)]
    centres = tok.decode(ts).points
    expected = np.where(octants > 0, 0.75, -0.25)
    assert sorted(map(tuple, centres.tolist())) == sorted(map(tuple, expected.tolist()))
    # two points in one octant: root code 1 (octant 0), then that cell's children
    two = np.array([[-0.9, -0.9, -0.9], [-0.1, -0.9, -0.9]], dtype=np.float32)
    assert octree_codes(two, 2).tolist() == [1, 0b11]
    assert octree_cells(np.array([1, 3]), 2).tolist() == [[0, 0, 0], [1, 0, 0]]
    # incomplete or over-long sequences decode to nothing
    assert octree_cells(np.array([255, 128]), 2) is None
    assert octree_cells(np.array([1, 3, 5]), 2) is None


def test_octree_lenient_decoding_reads_the_tree_as_far_as_it_goes():
    from seqify_pointcloud.octree import INCOMPLETE, octree_points_lenient

    full = np.array([255] + [128] * 8)
    pts, complete = octree_points_lenient(full, 2)
    assert complete and pts.shape == (8, 3)
    # codes for only 3 of the 8 level-1 cells: 3 leaves at depth 2, 5 coarse centres at level 1
    pts, complete = octree_points_lenient(full[:4], 2)
    assert not complete and pts.shape == (8, 3)
    assert sorted(np.abs(pts).ravel().tolist()).count(0.5) == 15  # the 5 coarse centres (+-0.5)
    # a tree stopping after the root: the 8 level-1 centres; extra codes are ignored
    assert octree_points_lenient(full[:1], 2)[0].shape == (8, 3)
    assert octree_points_lenient(np.append(full, [3, 3]), 2)[1] is False
    tok = OctreeTokenizer(depth=2, decode="lenient")
    tok.fit([PointCloudItem(np.array([[0.5, 0.5, 0.5], [-0.5, -0.5, -0.5]], dtype=np.float32))])
    ts = tok.encode(PointCloudItem(np.array([[0.5, 0.5, 0.5], [-0.5, -0.5, -0.5]], dtype=np.float32)))
    assert tok.decode(ts).source == "decoded"
    assert len(ts) == 3  # root code, two level-1 codes
    cut = type(ts)(ts.values[:2], ts.kinds[:2], ts.coords[:2], ts.given[:2])
    assert tok.decode(cut).source == INCOMPLETE and OctreeTokenizer(depth=2).decode(cut) is None
    assert repr(tok) == repr(OctreeTokenizer(depth=2))  # same tokens: same caches


def test_octree_grows_level_by_level_without_an_end_token():
    from seqify.protocols import GeneratorCaps
    from seqify_orderers.orderers import RAR, FixedRandom, Random, Raster, Reverse

    items = [_blob(s, n=48) for s in range(6)] + [PointCloudItem(normalize_box(np.eye(3)))]
    tok = OctreeTokenizer(depth=4)
    tok.fit(items)
    spec = tok.spec
    assert spec.grows and not spec.variable_length and spec.end_kind is None
    assert spec.kinds[0].size == 255 and not spec.lossless
    assert spec.coord_names == ("scale", "x", "y", "z", "octant") and spec.coord_sizes == (4, 8, 8, 8, 8)
    lengths = {len(tok.encode(it)) for it in items}
    assert len(lengths) > 1 and max(lengths) <= spec.max_len
    for it in items:
        ts = tok.encode(it)
        back = tok.decode(ts).points
        # leaf centres: every point is within half a leaf (1 / 2^depth) of its cell centre
        d = np.abs(it.points[:, None, :] - back[None, :, :]).max(-1).min(1)
        assert d.max() <= 1.0 / 16 + 1e-6
        # the scale coordinate rises level by level, coarse to fine, from the root
        scale = ts.coords[:, 0]
        assert int(scale[0]) == 0 and bool((scale[1:] >= scale[:-1]).all()) and int(scale[-1]) == 3
    # padding (as a batch of samples has) is removed by unbatch: the tree decodes
    batch = collate([tok.encode(it) for it in items[:2]])
    assert tok.decode(batch.unbatch()[0]) is not None
    caps = GeneratorCaps(any_order=True, blocks=True, adaptive=True, variable_length=True)
    for orderer in (Raster(), RAR(), Random()):
        assert orderer.check(spec, caps) is None, orderer
    for orderer in (Reverse(), FixedRandom()):
        assert "step by step" in orderer.check(spec, caps)


def test_octree_next_slots_give_the_coordinates_encode_gives():
    """Teacher forcing: growing the true tree with next_slots yields encode's slots exactly."""
    from seqify.grow import extend

    items = [_blob(s, n=64) for s in range(4)]
    tok = OctreeTokenizer(depth=5)
    tok.fit(items)
    for it in items:
        truth = tok.encode(it)
        grown, steps = tok.blank(), 0
        while True:
            grown = type(grown)(truth.values[: len(grown)].clone(), grown.kinds, grown.coords, grown.given)
            nxt = tok.next_slots(grown)
            if nxt is None:
                break
            assert not bool(nxt.given.any()) and bool((nxt.values == 0).all())
            grown, steps = extend(grown, nxt), steps + 1
        assert steps == tok.depth - 1  # the root, then one step per level
        assert torch.equal(grown.coords, truth.coords) and torch.equal(grown.kinds, truth.kinds)
        assert torch.equal(grown.values, truth.values)


def test_octree_next_slots_refuses_what_no_tree_starts_with():
    items = [_blob(s, n=64) for s in range(3)]
    tok = OctreeTokenizer(depth=4)
    tok.fit(items)
    ts = tok.encode(items[0])
    cut = type(ts)(ts.values[:3], ts.kinds[:3], ts.coords[:3], ts.given[:3])  # inside level 1
    with pytest.raises(ValueError, match="end inside level 1"):
        tok.next_slots(cut)
    bad = type(ts)(torch.tensor([255]), ts.kinds[:1], ts.coords[:1], ts.given[:1])
    with pytest.raises(ValueError, match="slot 0 holds value 255"):
        tok.next_slots(bad)
    moved = ts.coords[:1].clone()
    moved[0, 1] = 3
    with pytest.raises(ValueError, match="slot 0 has coordinates"):
        tok.next_slots(type(ts)(ts.values[:1], ts.kinds[:1], moved, ts.given[:1]))
    assert torch.equal(tok.next_slots(type(ts)(ts.values[:0], ts.kinds[:0], ts.coords[:0], ts.given[:0])).coords,
                       tok.blank().coords)


def test_octree_thins_children_that_would_not_fit_and_every_tree_completes():
    from seqify_pointcloud.octree import THINNED, full_tree, octree_walk

    # the full tree of depth 3 has 1 + 8 + 64 = 73 codes; with max_len 20 the level-2
    # cells are thinned to (20 - 9) // 1 = 11, round-robin: every level-1 cell keeps one
    codes = np.full(full_tree(3), 255)
    walk = octree_walk(codes[:9], 3, max_len=20)
    assert walk.thinned and walk.cells[2].shape[0] == 11 and not walk.complete
    parents = walk.cells[2] // 2
    assert len({tuple(p) for p in parents.tolist()}) == 8  # every parent kept a child
    walk = octree_walk(codes[:20], 3, max_len=20)
    assert walk.complete and walk.cells[3].shape[0] == 11 * 8
    tok = OctreeTokenizer(depth=3)
    tok.load_state_dict({"max_len": 20, "layout": 2})
    ts = type(tok.blank())(torch.full((20,), 254), torch.zeros(20, dtype=torch.long),
                           torch.zeros(20, 5, dtype=torch.long), torch.zeros(20, dtype=torch.bool))
    assert tok.decode(ts).source == THINNED
    # a training tree never needs thinning (max_len is at least its length)
    items = [_blob(s, n=64) for s in range(4)]
    tok = OctreeTokenizer(depth=5)
    tok.fit(items)
    assert not any(octree_walk(tok.encode(it).values.numpy() + 1, 5, tok.spec.max_len).thinned for it in items)


def test_octree_state_of_the_earlier_layout_is_refused():
    tok = OctreeTokenizer(depth=3)
    with pytest.raises(ValueError, match="earlier token layout"):
        tok.load_state_dict({"max_len": 40})
    with pytest.raises(ValueError, match="layout"):
        tok.load_state_dict({"max_len": 40, "layout": 1})


def test_check_tokenizer_passes_for_both_tokenizers():
    items = [_blob(s, n=32) for s in range(6)]
    for tok in (CoordsTokenizer(), CoordsTokenizer(bins=16, sort="morton"), CoordsTokenizer(sort="random"),
                OctreeTokenizer(), OctreeTokenizer(depth=3)):
        check_tokenizer(tok, items)
        fresh = type(tok)(**({"depth": tok.depth} if isinstance(tok, OctreeTokenizer) else
                             {"bins": tok.bins, "sort": tok.sort}))
        fresh.load_state_dict(tok.state_dict())
        assert torch.equal(fresh.encode(items[0]).values, tok.encode(items[0]).values)
        with pytest.raises(ValueError):
            fresh.load_state_dict({"codebook": 1})


# ----------------------------------------------------------------------- metrics


def test_chamfer_and_emd_basics():
    x = _blob(0, n=32).points
    t = torch.from_numpy(x)[None]
    assert chamfer_matrix(t, t)[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert chamfer_pairs(t, t)[0] == pytest.approx(0.0, abs=1e-12)
    assert emd(x, x) == pytest.approx(0.0, abs=1e-12)
    shift = np.array([0.3, 0.0, 0.4], dtype=np.float32)  # |shift| = 0.5
    assert emd(x, x + shift) == pytest.approx(0.5, abs=1e-6)
    a = torch.tensor([[[0.0, 0.0, 0.0]]])
    b = torch.tensor([[[0.0, 0.3, 0.0]]])
    assert chamfer_matrix(a, b)[0, 0] == pytest.approx(2 * 0.09, rel=1e-5)  # both directions, squared
    clouds = torch.from_numpy(np.stack([_blob(s, n=24).points for s in range(5)]))
    sym = chamfer_matrix(clouds)
    full = chamfer_matrix(clouds, clouds)
    np.fill_diagonal(full, 0.0)
    assert np.allclose(sym, full, atol=1e-6) and np.allclose(sym, sym.T)
    assert np.allclose(emd_matrix(clouds[:3]), emd_matrix(clouds[:3], clouds[:3]) * (1 - np.eye(3)), atol=1e-9)


def test_mmd_cov_1nna_identical_independent_and_disjoint_sets():
    refs = [_blob(s, n=32, scale=(1.0, 0.5 + 0.1 * (s % 5), 0.3)) for s in range(40)]
    r, _ = stack_clouds(refs, 32)
    m_rr = chamfer_matrix(r)
    # identical sets (samples = copies of the references): each cloud's nearest other cloud is
    # its twin in the other set, so COV = 1, MMD = 0 and 1-NNA = 0 (the memorization case)
    same = mmd_cov_1nna(m_rr, m_rr, m_rr)
    assert same["cov"] == 1.0 and same["mmd"] == pytest.approx(0.0, abs=1e-9) and same["1nna"] == 0.0
    # independent draws from the same distribution: 1-NNA near 0.5 (40 + 40 clouds: within 0.25..0.75)
    others = [_blob(1000 + s, n=32, scale=(1.0, 0.5 + 0.1 * (s % 5), 0.3)) for s in range(40)]
    o, _ = stack_clouds(others, 32)
    fair = mmd_cov_1nna(chamfer_matrix(r, o), m_rr, chamfer_matrix(o))
    assert 0.25 <= fair["1nna"] <= 0.75 and fair["cov"] > 0.3
    # disjoint sets (thin rods vs round blobs): told apart perfectly
    rods = [_blob(2000 + s, n=32, scale=(1.0, 0.02, 0.02)) for s in range(40)]
    d, _ = stack_clouds(rods, 32)
    apart = mmd_cov_1nna(chamfer_matrix(r, d), m_rr, chamfer_matrix(d))
    assert apart["1nna"] == 1.0 and apart["cov"] < 0.5


def test_failed_samples_count_against_the_generator():
    refs = [_blob(s, n=16) for s in range(8)]
    all_failed = generation_metrics([None] * 8, refs, points=16, emd_clouds=4, emd_points=16, cache=False)
    assert all_failed["valid"] == 0.0 and all_failed["cov_cd"] == 0.0 and all_failed["1nna_cd"] == 1.0
    assert all_failed["mmd_cd"] is None and all_failed["1nna_emd"] == 1.0
    half = generation_metrics(refs[:4] + [None] * 4, refs, refs, points=16, emd_clouds=8, emd_points=16, cache=False)
    assert half["valid"] == 0.5 and half["cov_cd"] == 0.5  # the 4 copies cover their 4 twins only
    assert half["floor_cov_cd"] == 1.0 and half["floor_1nna_cd"] == 0.0  # train = test here: identical sets
    assert {"mmd_emd", "cov_emd", "1nna_emd", "floor_mmd_emd", "n_samples", "emd_clouds"} <= set(half)


# ---------------------------------------------------------------------- modality


def test_budgets_and_modality_members():
    mod = PointCloud()
    for name in ("smoke", "quick", "full"):
        preset = mod.budget(name)
        assert set(preset) == {"train", "eval", "data", "modality", "size"}
        assert preset["size"] in ("micro", "tiny", "small", "base", "large")
        PointCloud(**preset["modality"])  # valid modality settings
    assert POINTCLOUD_BUDGETS["quick"]["modality"]["n_points"] == 128
    assert mod.file_datasets == ("files",) and mod.reconstruction_metric == "chamfer"
    assert mod.headline_metrics == ("1nna_cd", "cov_cd", "mmd_cd")


def test_reconstruction_render_and_samples_file(tmp_path):
    from seqify_pointcloud.render import read_samples_npz

    mod = PointCloud(emd_clouds=4)
    items = [_blob(s, n=32) for s in range(5)]
    tok = CoordsTokenizer(bins=32)
    tok.fit(items)
    decoded = [tok.decode(tok.encode(it)) for it in items]
    rec = mod.reconstruction(items, decoded[:4] + [None], out=tmp_path)
    assert rec["failed"] == 1 and rec["emd_items"] == 4
    assert 0 < rec["chamfer"] <= 2 * 3 * (1 / 32) ** 2  # each point moves at most half a bin per axis
    assert (tmp_path / rec["files"]["reconstruction"]).is_file()
    from seqify.protocols import Splits

    with_splits = mod.reconstruction(items, decoded[:4] + [None], out=tmp_path, splits=Splits(items, [], items))
    assert with_splits == rec  # the runner passes the splits; the distances do not use them
    png = mod.render(decoded[:3] + [None], tmp_path / "samples.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (npz,) = mod.save_samples(decoded[:2] + [None], tmp_path)
    back = read_samples_npz(npz)
    assert back[2] is None and np.array_equal(back[0], decoded[0].points)


@pytest.mark.slow
@pytest.mark.parametrize("tokenizer", ["coords", "octree"])
def test_smoke_bench_writes_metrics_floors_and_pictures(tmp_path, tokenizer):
    from seqify.bench import BenchRequest, run_bench
    from seqify.plugins import build_registry

    reg = build_registry(warn=False)
    out = tmp_path / tokenizer
    res = run_bench(BenchRequest(modality="pointcloud", orderer="raster", tokenizer=tokenizer, generator="causal",
                                 budget="smoke", out=out), registry=reg)
    saved = json.loads((out / "results.json").read_text())
    metrics = saved["metrics"]
    for key in ("1nna_cd", "cov_cd", "mmd_cd", "1nna_emd", "floor_1nna_cd", "floor_cov_cd", "floor_mmd_cd",
                "floor_1nna_emd", "valid"):
        assert key in metrics
    assert 0.0 <= metrics["1nna_cd"] <= 1.0 and metrics["floor_mmd_cd"] > 0
    assert set(saved["headline"]) <= {"1nna_cd", "cov_cd", "mmd_cd"} and "1nna_cd" in saved["headline"]
    assert saved["reconstruction"]["metric"] == "chamfer" and saved["reconstruction"]["chamfer"] > 0
    assert "normalization" in saved["data"] and saved["data"]["n_points"] == 32
    assert (out / "samples.png").is_file() and (out / "samples.npz").is_file()
    assert res.files["samples_png"] == "samples.png"
