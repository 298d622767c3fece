"""Statistics for comparing training arms over seeds: a mean with its 95 % confidence interval,
and the paired difference of two arms run on the same seeds.

An experiment, not a run: each arm is trained with several pre-training and split seeds, and
two arms are compared on the same seeds, so that the split's luck cancels in the paired
difference. The intervals are Student-t intervals (n - 1 degrees of freedom), which is what
``scipy.stats.ttest_1samp(...).confidence_interval()`` gives; with n = 9 runs the half-width is
2.31 standard errors.

Example
-------
>>> from supercl.eval import mean_ci, paired_difference
>>> scratch = [70.1, 68.4, 71.0, 69.5]
>>> supercl = [72.3, 70.0, 73.1, 70.2]
>>> round(mean_ci(scratch)["mean"], 2)
69.75
>>> d = paired_difference(supercl, scratch)
>>> round(d["mean"], 2), d["n"], d["ci_low"] > 0
(1.65, 4, True)
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["mean_ci", "paired_difference"]


def _values(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or inf: {array.tolist()}")
    return array


def _check_confidence(confidence: float) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) \
            or not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return float(confidence)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean of ``values`` with its Student-t confidence interval.

    Returns ``{"mean", "ci_low", "ci_high", "half_width", "std", "n"}`` (floats, n an int);
    with one value the interval is (nan, nan): one run says nothing about the spread.
    """
    from scipy import stats

    x = _values(values, "values")
    confidence = _check_confidence(confidence)
    n = int(x.size)
    mean = float(x.mean())
    if n < 2:
        return {"mean": mean, "ci_low": math.nan, "ci_high": math.nan, "half_width": math.nan,
                "std": math.nan, "n": n}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n))
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "half_width": half,
            "std": std, "n": n}


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict:
    """``a - b`` over paired runs (same seeds, same order): the mean difference with its
    confidence interval, and the two-sided paired t-test's p-value.

    Returns :func:`mean_ci`'s keys plus ``"p_value"`` (nan for n < 2 or zero spread with a
    zero mean) and ``"excludes_zero"`` (the interval lies on one side of 0).
    """
    from scipy import stats

    x, y = _values(a, "a"), _values(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must pair up run for run, got {x.size} and {y.size} values")
    out = mean_ci(x - y, confidence)
    if out["n"] < 2:
        p = math.nan
    elif out["std"] == 0:
        p = math.nan if out["mean"] == 0 else 0.0
    else:
        p = float(stats.ttest_rel(x, y).pvalue)
    out["p_value"] = p
    out["excludes_zero"] = bool(out["ci_low"] > 0 or out["ci_high"] < 0)
    return out
