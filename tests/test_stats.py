"""seqify.stats: the mean, its spread and the Student-t interval over seeds."""

import math
import sys

import pytest
from scipy import stats as scipy_stats

from seqify.stats import mean_interval, t_quantile


def test_mean_interval_matches_a_hand_computation_and_scipy():
    found = mean_interval([1.0, 2.0, 3.0, 4.0])
    sd = math.sqrt(sum((x - 2.5) ** 2 for x in (1, 2, 3, 4)) / 3)  # 1.2910
    half = scipy_stats.t.ppf(0.975, 3) * sd / 2
    assert found["n"] == 4 and found["mean"] == 2.5
    assert found["sd"] == pytest.approx(sd) == pytest.approx(1.2909944)
    assert found["half_width"] == pytest.approx(half) == pytest.approx(2.0542603)
    assert (found["low"], found["high"]) == pytest.approx((2.5 - half, 2.5 + half))
    low, high = scipy_stats.t.interval(0.95, 3, loc=2.5, scale=scipy_stats.sem([1, 2, 3, 4]))
    assert (found["low"], found["high"]) == pytest.approx((low, high))
    wider = mean_interval([1.0, 2.0, 3.0, 4.0], level=0.99)
    assert wider["half_width"] == pytest.approx(scipy_stats.t.ppf(0.995, 3) * sd / 2) and wider["half_width"] > half


def test_one_value_has_no_interval_and_none_has_no_mean():
    assert mean_interval([0.7]) == {"n": 1, "mean": 0.7, "sd": None, "half_width": None, "low": None, "high": None}
    assert mean_interval([]) == {"n": 0, "mean": None, "sd": None, "half_width": None, "low": None, "high": None}
    assert mean_interval([None, float("nan"), 2.0, 4.0])["n"] == 2  # a failed seed is left out
    assert mean_interval([3.0, 3.0])["half_width"] == 0.0


def test_without_scipy_the_table_gives_the_same_95_percent_quantiles(monkeypatch):
    want = {df: float(scipy_stats.t.ppf(0.975, df)) for df in (*range(1, 31), 40, 60, 120, 500)}
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    for df in range(1, 31):
        assert t_quantile(0.975, df) == pytest.approx(want[df], abs=1e-6)
    assert t_quantile(0.975, 45) == pytest.approx(want[40], abs=1e-6)  # between rows: the smaller df, wider
    assert t_quantile(0.975, 500) == pytest.approx(1.959964) and abs(want[500] - 1.959964) < 0.01
    assert mean_interval([1.0, 2.0, 3.0, 4.0])["half_width"] == pytest.approx(2.0542603, abs=1e-6)
    with pytest.raises(ValueError, match="needs scipy"):
        mean_interval([1.0, 2.0], level=0.9)
    with pytest.raises(ValueError, match="df >= 1"):
        t_quantile(0.975, 0)
