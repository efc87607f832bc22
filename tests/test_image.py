"""The image plugin: loaders, pixel tokenizer, FD, reconstruction, a smoke cell."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seqify.data import RowReport
from seqify.errors import DataError
from seqify.testing import check_tokenizer

from seqify_image.items import ImageItem
from seqify_image.metrics import feature_stats, frechet_distance
from seqify_image.modality import Image
from seqify_image.pixels import PixelTokenizer


def _load(dataset, path=None, *, seed=0, limit=None, report=None, **settings):
    """Splits of ``dataset`` made with split seed ``seed`` (modality settings as keywords)."""
    return Image(split_seed=seed, **settings).load(dataset, path, seed=0, limit=limit, report=report or RowReport())


def _png(path: Path, arr: np.ndarray, mode: str = "L") -> None:
    from PIL import Image as PILImage

    path.parent.mkdir(parents=True, exist_ok=True)
    img = PILImage.fromarray(arr)
    (img.convert(mode) if mode != img.mode else img).save(path)


# ------------------------------------------------------------------ data


def test_mnist_loader_sizes_values_and_determinism():
    s = _load("mnist")
    assert (len(s.train), len(s.val), len(s.test)) == (4000, 500, 500)
    items = s.train + s.val + s.test
    assert len(items) == 5000
    px = np.stack([it.pixels for it in items])
    assert px.shape == (5000, 28, 28) and px.dtype == np.float32
    assert px.min() == 0.0 and px.max() == 1.0
    assert {it.label for it in items} == set(range(10))
    assert s.info["split_seed"] == 0 and s.info["resolution"] == 28
    assert (s.info["n_train"], s.info["n_val"], s.info["n_test"]) == (4000, 500, 500)
    assert s.info["source_file"].endswith("mnist_5k.csv.gz")
    again = _load("mnist")
    assert [it.source for it in again.test] == [it.source for it in s.test]
    assert np.array_equal(again.train[7].pixels, s.train[7].pixels)
    other = _load("mnist", seed=1)
    assert [it.source for it in other.test] != [it.source for it in s.test]
    # limit keeps the first training items; the classifier's split stays whole
    cut = _load("mnist", limit=100)
    assert len(cut.train) == 100 and len(cut.full_train) == 4000
    assert [it.source for it in cut.train] == [it.source for it in s.train[:100]]


def test_digits_loader():
    s = _load("digits")
    assert (len(s.train), len(s.val), len(s.test)) == (1439, 179, 179)
    assert s.train[0].shape == (8, 8) and s.train[0].pixels.dtype == np.float32
    px = np.stack([it.pixels for it in s.train])
    assert px.min() >= 0 and px.max() == 1.0
    assert {it.label for it in s.train} == set(range(10))
    up = _load("digits", resolution=16)
    assert up.train[0].shape == (16, 16) and up.info["resolution"] == 16


def test_folder_loader_keeps_good_files_and_reports_bad_ones(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for label in ("3", "7"):
        for k in range(3):
            _png(root / label / f"{k}.png", rng.integers(0, 256, (20 + k, 24), dtype=np.uint8))
    _png(root / "7" / "colour.png", rng.integers(0, 256, (28, 28, 3), dtype=np.uint8), mode="RGB")
    good = root / "3" / "0.png"
    truncated = root / "7" / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (root / "3" / "notes.txt").write_text("not a picture\n")
    np.save(root / "3" / "stack.npy", np.zeros((2, 28, 28), np.uint8))
    report = RowReport()
    s = _load("folder", root, report=report, n_val=1, n_test=1)
    items = s.train + s.val + s.test
    assert len(items) == 7
    assert all(it.shape == (28, 28) and it.pixels.dtype == np.float32 for it in items)
    assert sorted(it.label for it in items) == [3, 3, 3, 7, 7, 7, 7]
    assert report.skipped == 3
    by_path = {b.source: b.reason for b in report.bad}
    assert set(by_path) == {str(truncated), str(root / "3" / "notes.txt"), str(root / "3" / "stack.npy")}
    assert by_path[str(truncated)].startswith("damaged image")
    assert by_path[str(root / "3" / "notes.txt")].startswith("not an image")
    assert "array file" in by_path[str(root / "3" / "stack.npy")]
    assert s.info["rows_skipped"] == 3 and s.info["labelled"] is True
    assert s.info["label_names"] == {"3": "3", "7": "7"}


def test_folder_loader_arrays_unlabelled_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    npy = tmp_path / "x.npy"
    np.save(npy, rng.integers(0, 256, (12, 10, 10), dtype=np.uint8))
    s = _load("folder", npy, resolution=14)
    assert len(s.train + s.val + s.test) == 12 and s.train[0].shape == (14, 14)
    assert all(it.label is None for it in s.train)
    # float images with labels; one image out of [0, 1] is reported and skipped
    images = rng.random((10, 28, 28, 3)).astype(np.float32)
    images[4, 0, 0] = np.nan
    npz = tmp_path / "y.npz"
    np.savez(npz, images=images, labels=np.arange(10) % 2)
    report = RowReport()
    s = _load("folder", npz, report=report)
    assert len(s.train + s.val + s.test) == 9 and report.skipped == 1
    assert report.bad[0].source == str(npz) and report.bad[0].row == 4 and "non-finite" in report.bad[0].reason
    assert {it.label for it in s.train + s.val + s.test} == {0, 1}
    # without labels no classifier: FD is None with the reason, nothing fails
    unl = _load("folder", npy)
    metrics = Image().evaluate([unl.test[0], unl.train[0]], unl)
    assert metrics["fd"] is None and "no labels" in metrics["fd_note"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no files"):
        _load("folder", empty)
    with pytest.raises(DataError, match="needs your images"):
        _load("folder", None)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 4), np.uint8))
    with pytest.raises(DataError, match="bad.npy"):
        _load("folder", bad)


# ------------------------------------------------------------------ pixel tokenizer


def test_pixel_tokenizer_round_trip_and_error_bound():
    tok = PixelTokenizer(resolution=6, levels=4)
    spec = tok.spec
    assert spec.max_len == 36 and spec.kinds[0].size == 4 and spec.coord_names == ("row", "col")
    assert not spec.lossless
    rng = np.random.default_rng(0)
    centres = tok.level_values[rng.integers(0, 4, (6, 6))]
    item = ImageItem(centres.astype(np.float32), 3, "test")
    back = tok.decode(tok.encode(item))
    assert np.array_equal(back.pixels, item.pixels) and back.shape == (6, 6)
    noisy = ImageItem(rng.random((6, 6)).astype(np.float32))
    err = np.abs(tok.decode(tok.encode(noisy)).pixels - noisy.pixels)
    assert err.max() <= 0.5 / 3 + 1e-6
    batch = tok.encode_batch([item, noisy])
    assert all(np.array_equal(b.values, tok.encode(x).values) for b, x in zip(batch, [item, noisy]))
    # another size is resized first; the input is left as it was
    big = ImageItem(np.kron(centres, np.ones((2, 2), np.float32)))
    before = big.pixels.copy()
    assert np.array_equal(tok.decode(tok.encode(big)).pixels, centres)
    assert np.array_equal(big.pixels, before)
    blank = tok.blank()
    assert len(blank) == 36 and not bool(blank.given.any())
    assert repr(tok) == "PixelTokenizer(resolution=6, levels=4)"
    assert PixelTokenizer(dataset="digits").resolution == 8 and PixelTokenizer().resolution == 14
    with pytest.raises(ValueError, match="expected an ImageItem"):
        tok.encode(np.zeros((6, 6)))


def test_pixel_tokenizer_conformance():
    items = _load("digits", limit=8).train
    check_tokenizer(PixelTokenizer(dataset="digits", levels=5), items)
    check_tokenizer(PixelTokenizer(), _load("mnist", limit=4).train)


# ------------------------------------------------------------------ metrics


def test_frechet_distance_self_noise_and_scipy_reference():
    from scipy import linalg

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8))
    mu, sigma = feature_stats(feats)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    noise = rng.normal(loc=3.0, scale=2.0, size=(400, 8))
    far = frechet_distance(mu, sigma, *feature_stats(noise))
    assert far > 50
    # the reference implementations' formula, with scipy's sqrtm
    mu2, sigma2 = feature_stats(noise)
    covmean = linalg.sqrtm(sigma @ sigma2).real
    ref = float(((mu - mu2) ** 2).sum() + np.trace(sigma) + np.trace(sigma2) - 2 * np.trace(covmean))
    assert far == pytest.approx(ref, rel=1e-6)


def test_evaluate_floor_at_the_sample_count():
    mod = Image(classifier={"steps": 60})
    s = mod.load("digits", None, seed=0, limit=None, report=RowReport())
    samples = list(s.val[:40]) + [None] * 3
    m = mod.evaluate(samples, s)
    assert m["n_samples"] == 43 and m["n_decoded"] == 40 and m["undecodable"] == 3
    assert m["fd_floor_n"] == 40 and m["fd"] is not None and m["fd_floor"] is not None
    assert 0 <= m["confident_share"] <= 40 / 43
    assert sum(m["class_histogram"].values()) == 40
    noise = [ImageItem(np.random.default_rng(i).random((8, 8)).astype(np.float32)) for i in range(40)]
    assert mod.evaluate(noise, s)["fd"] > 3 * m["fd"]
    assert 0 < m["classifier_test_accuracy"] <= 1


def test_pixel_reconstruction_has_the_expected_mse(tmp_path):
    tok = PixelTokenizer(resolution=14, levels=4)
    originals = [ImageItem(np.full((14, 14), 0.1, np.float32), None), ImageItem(np.full((14, 14), 0.5, np.float32))]
    decoded = [tok.decode(tok.encode(o)) for o in originals]
    # 0.1 -> level 0 (value 0), error 0.1; 0.5 -> level 2 (value 2/3), error 1/6
    expected = (0.1 ** 2 + (1 / 6) ** 2) / 2
    r = Image().reconstruction(originals, decoded, out=tmp_path)
    assert r["mse"] == pytest.approx(expected, rel=1e-5)
    assert r["psnr"] == pytest.approx(10 * np.log10(1 / expected), rel=1e-5)
    assert r["classifier_accuracy"] is None and "no splits" in r["classifier_note"]
    assert r["files"] == {"reconstructions": "reconstructions.png"} and (tmp_path / "reconstructions.png").is_file()
    # at the original resolution: a 28x28 original is compared with the decoded 14x14 enlarged
    big = ImageItem(np.zeros((28, 28), np.float32), 1)
    r2 = Image().reconstruction([big], [tok.decode(tok.encode(big))], out=tmp_path)
    assert r2["mse"] == 0.0 and r2["psnr"] is None


def test_reconstruction_uses_the_classifier_of_the_splits_it_is_passed(tmp_path):
    mod = Image(classifier={"steps": 60})
    s = mod.load("digits", None, seed=0, limit=None, report=RowReport())
    assert set(vars(mod)) == {"options"}  # nothing kept from load: the runner passes the splits
    originals = list(s.test[:24])
    blank = [ImageItem(np.zeros_like(o.pixels), o.label) for o in originals]
    alone = mod.reconstruction(originals, blank, out=tmp_path)  # no splits: no classifier
    assert alone["classifier_accuracy"] is None and "no splits" in alone["classifier_note"]
    r = mod.reconstruction(originals, list(originals), out=tmp_path, splits=s)
    classifier, _ = mod._classifier(s)
    truth = np.array([o.label for o in originals])
    expected = float((classifier.predict_items(originals)[1].argmax(1) == truth).mean())
    assert r["classifier_accuracy"] == r["originals_classifier_accuracy"] == pytest.approx(expected)
    assert r["classifier_accuracy"] > 0.2 and r["mse"] == 0.0  # above chance (0.1) after 60 steps
    wiped = mod.reconstruction(originals, blank, out=tmp_path, splits=s)
    assert wiped["classifier_accuracy"] < r["classifier_accuracy"]  # a blank image is not read as its digit


def test_render_and_save_samples(tmp_path):
    tok = PixelTokenizer(resolution=6)
    samples = [tok.decode(tok.blank()), None, ImageItem(np.ones((6, 6), np.float32))]
    mod = Image()
    assert mod.render(samples, tmp_path / "s.png").is_file()
    (path,) = mod.save_samples(samples, tmp_path)
    with np.load(path) as z:
        assert z["pixels"].shape == (3, 6, 6) and z["decoded"].tolist() == [True, False, True]
    templates = mod.templates(tok, [], 3, None)
    assert len(templates) == 3 and all(len(t) == 36 for t in templates)
    assert mod.budget("quick")["size"] in ("micro", "tiny", "small", "base", "large")


# ------------------------------------------------------------------ a whole cell


def _registry():
    from seqify.plugins import build_registry

    reg = build_registry(warn=False)
    if "image" in reg.names("modality"):
        return reg
    return build_registry(warn=False)


@pytest.mark.slow
def test_smoke_cell_writes_fd_and_pictures(tmp_path):
    from seqify.bench import BenchRequest, run_bench

    res = run_bench(BenchRequest(modality="image", tokenizer="pixels", orderer="raster", generator="causal",
                                 budget="smoke", out=tmp_path), registry=_registry())
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["dataset"] == "mnist" and results["tokenizer"] == "pixels"
    m = results["metrics"]
    assert m["fd"] is not None and m["fd_floor"] is not None and m["n_samples"] == 16
    assert set(results["headline"]) >= {"fd", "fd_floor"}
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "samples.npz").is_file()
    assert results["data"]["n_test"] == 500 and results["data"]["split_seed"] == 0
    assert res.results["metrics"]["fd"] == m["fd"]
