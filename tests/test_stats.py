"""supercl.eval.stats against scipy.stats: Student-t intervals and the paired t-test."""

import math

import numpy as np
import pytest
from scipy import stats

from supercl.eval import mean_ci, paired_difference


@pytest.mark.parametrize("n", [2, 3, 9, 30])
def test_mean_ci_is_scipys_t_interval(n):
    x = np.random.default_rng(n).normal(70, 3, size=n)
    got = mean_ci(x)
    low, high = stats.ttest_1samp(x, 0).confidence_interval(0.95)
    assert got["mean"] == pytest.approx(x.mean())
    assert (got["ci_low"], got["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert got["n"] == n and got["std"] == pytest.approx(x.std(ddof=1))
    wider = mean_ci(x, confidence=0.99)
    assert wider["half_width"] > got["half_width"]


def test_one_value_has_no_interval():
    got = mean_ci([71.5])
    assert got["mean"] == 71.5 and got["n"] == 1 and math.isnan(got["ci_low"])


def test_paired_difference_is_the_paired_t_test():
    rng = np.random.default_rng(0)
    base = rng.normal(70, 5, size=9)      # the split's luck, shared by both arms
    a = base + 2 + rng.normal(0, 0.5, 9)  # a real +2 effect, small noise
    b = base
    got = paired_difference(a, b)
    result = stats.ttest_rel(a, b)
    low, high = result.confidence_interval(0.95)
    assert got["mean"] == pytest.approx((a - b).mean())
    assert (got["ci_low"], got["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert got["p_value"] == pytest.approx(result.pvalue) and got["excludes_zero"]
    # unpaired, the split's spread would hide the effect; paired it does not
    assert mean_ci(a)["ci_low"] < mean_ci(b)["ci_high"]
    same = paired_difference(b, b)
    assert same["mean"] == 0 and math.isnan(same["p_value"]) and not same["excludes_zero"]


@pytest.mark.parametrize("call, match", [
    (lambda: mean_ci([]), "values is empty"),
    (lambda: mean_ci([1.0, float("nan")]), "NaN"),
    (lambda: mean_ci([[1.0, 2.0]]), "1-D"),
    (lambda: mean_ci([1.0, 2.0], confidence=1.0), "confidence"),
    (lambda: paired_difference([1.0, 2.0], [1.0]), "pair up"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
