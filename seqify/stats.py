"""Figures over several seeds: the mean, its spread and a Student-t interval.

A figure measured once says little about a figure measured again with another seed
(another fitted tokenizer, another initialisation): tables over seeds report

    mean ± t_{(1 + level) / 2, n - 1} · sd / √n

with ``sd`` the sample standard deviation (``n - 1`` in the denominator). The t
quantile comes from scipy when it imports, else from a small table (level 0.95 only).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["mean_interval", "t_quantile"]

#: t_{0.975, df} for df = 1..30, then a few larger df (a df between two rows takes the
#: smaller df's value: the wider, conservative interval); 1.959964 beyond the last row
_T975 = {
    1: 12.706205, 2: 4.302653, 3: 3.182446, 4: 2.776445, 5: 2.570582, 6: 2.446912, 7: 2.364624, 8: 2.306004,
    9: 2.262157, 10: 2.228139, 11: 2.200985, 12: 2.178813, 13: 2.160369, 14: 2.144787, 15: 2.131450,
    16: 2.119905, 17: 2.109816, 18: 2.100922, 19: 2.093024, 20: 2.085963, 21: 2.079614, 22: 2.073873,
    23: 2.068658, 24: 2.063899, 25: 2.059539, 26: 2.055529, 27: 2.051831, 28: 2.048407, 29: 2.045230,
    30: 2.042272, 40: 2.021075, 60: 2.000298, 120: 1.979930,
}


def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom.

    Args:
        q: the probability, e.g. 0.975 for a two-sided 95% interval.
        df: degrees of freedom (>= 1).
    """
    if df < 1:
        raise ValueError(f"a t quantile needs df >= 1, got {df}")
    try:
        from scipy.stats import t
    except ImportError:
        if not math.isclose(q, 0.975):
            raise ValueError(f"the t quantile {q} needs scipy (without it, only the 95% interval: q = 0.975)") from None
        return _T975[max(k for k in _T975 if k <= df)] if df <= 120 else 1.959964
    return float(t.ppf(q, df))


def mean_interval(values: Iterable[float], level: float = 0.95) -> dict[str, float | int | None]:
    """The mean of ``values``, their sample standard deviation and the Student-t
    interval for the mean at ``level``.

    Args:
        values: one figure per seed; None and NaN are left out (a failed seed).
        level: the interval's coverage (default 0.95).

    Returns:
        ``{"n", "mean", "sd", "half_width", "low", "high"}``. With no value, every
        entry but ``n`` (0) is None; with one value, ``mean`` is it and the spread and
        interval are None (one seed has none).
    """
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(xs)
    found: dict[str, float | int | None] = {"n": n, "mean": None, "sd": None, "half_width": None, "low": None,
                                            "high": None}
    if n == 0:
        return found
    mean = math.fsum(xs) / n
    found["mean"] = mean
    if n == 1:
        return found
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile((1 + level) / 2, n - 1) * sd / math.sqrt(n)
    found.update(sd=sd, half_width=half, low=mean - half, high=mean + half)
    return found
