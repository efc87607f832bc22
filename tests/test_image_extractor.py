"""The shipped feature extractor and the image metrics built on it (FD, KID, intervals)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from seqify.data import RowReport
from seqify.errors import DataError

from seqify_image.extractor import EXTRACTOR_DIR, SHIPPED, load_shipped, weights_fingerprint
from seqify_image.items import ImageItem
from seqify_image.metrics import feature_metrics, feature_stats, frechet_distance, kernel_distance
from seqify_image.modality import Image


def _splits(dataset, **settings):
    return Image(**settings).load(dataset, None, seed=0, limit=None, report=RowReport())


@pytest.mark.parametrize("dataset", sorted(SHIPPED))
def test_shipped_extractor_loads_and_classifies_the_splits_as_recorded(dataset):
    manifest = json.loads((EXTRACTOR_DIR / f"{SHIPPED[dataset]}.json").read_text())
    clf = load_shipped(dataset)
    assert clf is not None and clf.info["kind"] == "shipped"
    with np.load(EXTRACTOR_DIR / f"{SHIPPED[dataset]}.npz") as z:
        assert weights_fingerprint({k: z[k] for k in z.files}) == manifest["fingerprint"] == clf.info["fingerprint"]
    s = _splits(dataset)
    for split, items in (("test", s.test), ("val", s.val)):
        feats, probs = clf.predict_items(items)
        correct = int((probs.argmax(1) == np.array([it.label for it in items])).sum())
        assert (correct, len(items)) == (manifest[split]["n_correct"], manifest[split]["n"])
        if split == "test":  # the same features on every machine (float64), to the recorded digits
            assert float(feats.sum()) == pytest.approx(manifest["test_feature_sum"], abs=2e-3)
    # the extractor never saw the evaluation images of the standard split
    assert not {int(it.source.split(":")[1]) for it in s.test + s.val} & set(manifest["trained_on"]["sources"])
    assert len(manifest["trained_on"]["sources"]) == len(s.train)
    # the floor is the same figure everywhere
    floor = manifest["floor_val_vs_test"]
    fv, ft = clf.predict_items(s.val)[0], clf.predict_items(s.test)[0]
    assert round(frechet_distance(*feature_stats(fv), *feature_stats(ft)), 4) == pytest.approx(floor["fd"], abs=2e-4)


def test_a_damaged_weights_file_is_refused_with_its_name(tmp_path):
    name = SHIPPED["digits"]
    for suffix in (".npz", ".json"):
        shutil.copy(EXTRACTOR_DIR / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    with np.load(tmp_path / f"{name}.npz") as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["head.bias"][0] += 1e-3
    np.savez(tmp_path / f"{name}.npz", **arrays)
    with pytest.raises(DataError, match=rf"{name}.npz.*fingerprint"):
        load_shipped("digits", tmp_path)
    assert load_shipped("folder", tmp_path) is None  # no shipped extractor for a folder of yours


def _kid_by_loops(a, b):
    a, b = a / np.sqrt((b ** 2).mean()), b / np.sqrt((b ** 2).mean())
    k = lambda x, y: (x @ y / a.shape[1] + 1) ** 3  # noqa: E731
    m, n = len(a), len(b)
    xx = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(a[i], b[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_is_the_unbiased_mmd_and_tells_distributions_apart():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(12, 5)), rng.normal(1.0, 1.0, size=(9, 5))
    assert kernel_distance(a, b) == pytest.approx(_kid_by_loops(a, b), rel=1e-9)
    same = [kernel_distance(rng.normal(size=(40, 5)), rng.normal(size=(40, 5))) for _ in range(200)]
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(200)  # unbiased: zero in expectation
    assert min(same) < 0  # and so sometimes negative
    assert kernel_distance(rng.normal(size=(40, 5)), rng.normal(0.5, 1, size=(40, 5))) > 5 * np.std(same)


def test_bootstrap_resamples_are_the_naive_ones_and_the_interval_covers():
    rng = np.random.default_rng(1)
    s, r = np.abs(rng.normal(size=(30, 4))) * 5, np.abs(rng.normal(size=(50, 4))) * 5
    got = feature_metrics(s, r, n_boot=5, seed=3, return_draws=True)
    mu_r, sig_r = feature_stats(r)
    for idx, fd, kid in zip(got["draws"]["indices"], got["draws"]["fd"], got["draws"]["kid"]):
        assert fd == pytest.approx(frechet_distance(*feature_stats(s[idx]), mu_r, sig_r), rel=1e-9)
        sc = s[idx] / np.sqrt((r ** 2).mean())
        rs = r / np.sqrt((r ** 2).mean())
        k_ss = (sc @ sc.T / 4 + 1) ** 3
        distinct = idx[:, None] != idx[None, :]
        k_rr = (rs @ rs.T / 4 + 1) ** 3
        naive = k_ss[distinct].mean() + (k_rr.sum() - np.trace(k_rr)) / (50 * 49) - 2 * ((sc @ rs.T / 4 + 1) ** 3).mean()
        assert kid == pytest.approx(naive, rel=1e-9)
    lo, hi = got["fd_interval"]
    assert lo < got["fd"] < hi and got["fd_se"] > 0 and got["kid_interval"][0] < got["kid"] < got["kid_interval"][1]
    assert "fd_interval" not in feature_metrics(s, r, n_boot=0)


def test_evaluate_uses_the_shipped_extractor_and_the_validation_floor():
    mod = Image()
    s = mod.load("digits", None, seed=0, limit=None, report=RowReport())
    m = mod.evaluate(list(s.test[:60]), s)
    ext = m["feature_extractor"]
    assert ext["kind"] == "shipped" and ext["fingerprint"] == load_shipped("digits").info["fingerprint"]
    assert ext["trained_on_evaluated_images"] == 0
    assert m["floor_images"] == "validation" and m["fd_floor_n"] == 60
    assert m["kid"] is not None and m["fd_interval"][0] < m["fd"] < m["fd_interval"][1]
    noise = [ImageItem(np.random.default_rng(i).random((8, 8)).astype(np.float32)) for i in range(60)]
    far = mod.evaluate(noise, s)
    assert far["fd_interval"][0] > m["fd_interval"][1] and far["kid_interval"][0] > m["kid_interval"][1]
    # another split: the extractor saw some of its test images, and the note says so
    moved = Image(split_seed=1)
    s1 = moved.load("digits", None, seed=0, limit=None, report=RowReport())
    m1 = moved.evaluate(list(s1.test[:60]), s1)
    assert m1["feature_extractor"]["trained_on_evaluated_images"] > 0 and "was trained on" in m1["fd_note"]
    # features="fit": a classifier of the run, said to be one
    fitted = Image(features="fit", classifier={"steps": 30})
    mf = fitted.evaluate(list(s.test[:60]), s)
    assert mf["feature_extractor"]["kind"] == "fitted in this run" and "same machine" in mf["feature_extractor"]["note"]
    assert mf["feature_extractor"]["fingerprint"] != ext["fingerprint"]


def test_one_set_of_samples_gets_the_same_fd_whatever_the_thread_count():
    import torch

    mod = Image()
    s = mod.load("mnist", None, seed=0, limit=None, report=RowReport())
    samples = list(s.train[:200])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = mod.evaluate(samples, s)
        torch.set_num_threads(2)
        two = mod.evaluate(samples, s)
    finally:
        torch.set_num_threads(threads)
    for key in ("fd", "kid", "fd_floor", "kid_floor"):  # equal far below the printed digits
        assert one[key] == pytest.approx(two[key], rel=1e-9, abs=1e-12)
