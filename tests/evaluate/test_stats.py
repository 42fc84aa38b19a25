"""Seed-level statistics against values worked by hand and scipy's own paired test."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from t2ir1.evaluate.stats import binomial_se, format_p, mean_ci, paired_difference


def test_mean_ci_by_hand():
    # mean 2, sd 1, n 3: se 1/sqrt(3); t(0.975, 2) = 4.302653
    interval = mean_ci([1.0, 2.0, 3.0])
    assert interval.mean == 2.0 and interval.n == 3
    assert interval.se == pytest.approx(1 / math.sqrt(3))
    assert interval.high - interval.mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert interval.format() == "2.0 [-0.5, 4.5]"


def test_one_value_has_no_interval_and_empty_is_an_error():
    one = mean_ci([5.0])
    assert one.n == 1 and math.isnan(one.low) and one.format() == "5.0"
    with pytest.raises(ValueError, match="no values"):
        mean_ci([])


def test_paired_difference_equals_scipys_paired_t_test():
    a = [31.2, 28.0, 35.1, 30.4, 29.9]
    b = [27.5, 27.9, 30.2, 29.0, 26.1]
    diff = paired_difference(a, b)
    reference = scipy_stats.ttest_rel(a, b)
    assert diff.mean == pytest.approx(np.mean(np.subtract(a, b)))
    assert diff.t == pytest.approx(reference.statistic) and diff.p == pytest.approx(reference.pvalue)
    assert diff.significant == (reference.pvalue < 0.05) and diff.low > 0
    assert diff.format().endswith(" *")


def test_pairing_removes_what_the_seeds_share():
    seeds = np.array([20.0, 30.0, 40.0, 25.0, 35.0])  # a large seed effect, shared by both arms
    better = seeds + np.array([2.0, 2.5, 1.5, 2.2, 1.8])
    assert paired_difference(better, seeds).significant
    # the unpaired intervals overlap: only pairing shows the difference
    assert mean_ci(better).low < mean_ci(seeds).high


def test_identical_pairs_and_constant_shifts():
    same = paired_difference([1.0, 2.0], [1.0, 2.0])
    assert same.t == 0.0 and same.p == 1.0 and not same.significant
    shifted = paired_difference([2.0, 3.0], [1.0, 2.0])
    assert shifted.t == math.inf and shifted.p == 0.0 and shifted.significant
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1.0], [1.0, 2.0])


def test_binomial_se():
    assert binomial_se(0.5, 100) == pytest.approx(0.05)
    with pytest.raises(ValueError):
        binomial_se(0.5, 0)


def test_p_values_near_five_percent_keep_a_third_digit():
    assert format_p(0.0497) == "0.0497" and format_p(0.0503) == "0.0503"  # both would print "0.05"
    assert format_p(0.25) == "0.25" and format_p(0.0042) == "0.0042" and format_p(0.0004) == "< 0.001"
